//! `/metrics` text with the core's counters (issue 14, item 11): outcome
//! and refusal series by reason, calls started, and the set-up histogram
//! with buckets from 50 ms to 10 s.

use std::time::{Duration, Instant};

use one2one_server::metrics::{Metrics, SETUP_BUCKETS};
use one2one_server::signaling::*;
use shared_proto::ClientMsg;

fn reg(sig: &mut Signaling, now: Instant, conn: ConnId, name: &str) {
    sig.handle(now, Input::Connected(conn));
    sig.handle(now, Input::Message(conn, ClientMsg::Register { name: name.into() }));
}

fn call(sig: &mut Signaling, now: Instant, conn: ConnId, to: &str) {
    sig.handle(
        now,
        Input::Message(conn, ClientMsg::Call { from: String::new(), to: to.into(), sdp_offer: "O".into() }),
    );
}

#[test]
fn metrics_render_outcomes_refusals_and_setup() {
    let metrics = Metrics::default();
    let mut sig = Signaling::new(Config { max_calls: Some(1), ..Config::default() });
    let mut now = Instant::now();
    reg(&mut sig, now, 1, "alice");
    reg(&mut sig, now, 2, "bob");
    reg(&mut sig, now, 3, "carol");
    reg(&mut sig, now, 4, "dave");
    reg(&mut sig, now, 5, "BOB"); // name_taken
    reg(&mut sig, now, 5, "bob\u{200b}"); // name_invalid
    reg(&mut sig, now, 1, "again"); // already_registered
    // alice calls bob; bob accepts; media flows 1.2 s after the accept.
    call(&mut sig, now, 1, "bob");
    sig.handle(now, Input::Message(2, ClientMsg::accept("alice", "OB")));
    let c = CallId(1);
    for leg in Leg::BOTH {
        sig.handle(now, Input::Media(MediaEvent::Answer { call: c, leg, sdp: leg.to_string() }));
    }
    now += Duration::from_millis(1200);
    sig.handle(now, Input::Media(MediaEvent::Established { call: c }));
    call(&mut sig, now, 3, "dave"); // server_busy (max_calls 1)
    call(&mut sig, now, 3, "zed"); // unknown_user
    call(&mut sig, now, 3, "carol"); // self_call
    call(&mut sig, now, 3, "Alice"); // busy
    sig.handle(now, Input::Message(1, ClientMsg::Stop)); // hang-up
    call(&mut sig, now, 3, "dave");
    sig.handle(now, Input::Message(4, ClientMsg::reject("carol", "user declined"))); // declined
    while let Some(out) = sig.poll_output() {
        if let Output::Established { setup, .. } = out {
            metrics.observe_setup(setup);
        }
    }
    metrics.observe_setup(Duration::from_millis(40));
    metrics.observe_setup(Duration::from_millis(4000));
    metrics.store_core(sig.counters());
    let text = metrics.render();
    let want = [
        "# TYPE one2one_calls_started_total counter",
        "one2one_calls_started_total 2",
        "# TYPE one2one_calls_ended_total counter",
        "one2one_calls_ended_total{reason=\"declined\"} 1",
        "one2one_calls_ended_total{reason=\"busy\"} 0",
        "one2one_calls_ended_total{reason=\"cancelled\"} 0",
        "one2one_calls_ended_total{reason=\"no answer\"} 0",
        "one2one_calls_ended_total{reason=\"hang-up\"} 1",
        "one2one_calls_ended_total{reason=\"disconnected\"} 0",
        "one2one_calls_ended_total{reason=\"media failed\"} 0",
        "one2one_calls_ended_total{reason=\"shutdown\"} 0",
        "# TYPE one2one_calls_refused_total counter",
        "one2one_calls_refused_total{reason=\"busy\"} 1",
        "one2one_calls_refused_total{reason=\"glare\"} 0",
        "one2one_calls_refused_total{reason=\"already_in_call\"} 0",
        "one2one_calls_refused_total{reason=\"self_call\"} 1",
        "one2one_calls_refused_total{reason=\"unknown_user\"} 1",
        "one2one_calls_refused_total{reason=\"no_offer\"} 0",
        "one2one_calls_refused_total{reason=\"server_busy\"} 1",
        "one2one_calls_refused_total{reason=\"no_codec\"} 0",
        "# TYPE one2one_registrations_refused_total counter",
        "one2one_registrations_refused_total{reason=\"name_taken\"} 1",
        "one2one_registrations_refused_total{reason=\"name_invalid\"} 1",
        "one2one_registrations_refused_total{reason=\"already_registered\"} 1",
        "one2one_calls_established_total 3",
        "# HELP one2one_call_setup_seconds From the callee's accept to media flowing both ways.",
        "# TYPE one2one_call_setup_seconds histogram",
        "one2one_call_setup_seconds_bucket{le=\"0.05\"} 1",
        "one2one_call_setup_seconds_bucket{le=\"0.1\"} 1",
        "one2one_call_setup_seconds_bucket{le=\"1\"} 1",
        "one2one_call_setup_seconds_bucket{le=\"1.5\"} 2",
        "one2one_call_setup_seconds_bucket{le=\"3\"} 2",
        "one2one_call_setup_seconds_bucket{le=\"5\"} 3",
        "one2one_call_setup_seconds_bucket{le=\"10\"} 3",
        "one2one_call_setup_seconds_bucket{le=\"+Inf\"} 3",
        "one2one_call_setup_seconds_sum 5.24",
        "one2one_call_setup_seconds_count 3",
    ];
    let lines: Vec<&str> = text.lines().collect();
    for line in want {
        assert!(lines.contains(&line), "{line} missing in\n{text}");
    }
    // The outcome counters add up to the calls started.
    let c = sig.counters();
    assert_eq!(c.ended_total() + sig.active_calls() as u64, c.calls_started);
    // Buckets resolve 50 ms to 10 s.
    assert_eq!(SETUP_BUCKETS.first(), Some(&0.05));
    assert_eq!(SETUP_BUCKETS.last(), Some(&10.0));
    assert!(SETUP_BUCKETS.windows(2).all(|w| w[0] < w[1] && w[1] / w[0] <= 2.0));
}
