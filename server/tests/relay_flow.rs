//! Issue 14, item 6: with `--public-ip`, clients that reach only the
//! private address still connect (the public address is added, the host
//! candidates kept); and a call is established only once media has flowed
//! both ways, not when ICE connects.

mod common;
mod relay_support;

use std::time::Duration;

use common::*;
use relay_support::*;

fn established_total(server: &one2one_server::Server) -> u64 {
    metric(&server.metrics.render(), "one2one_calls_established_total")
}

async fn wait_established(server: &one2one_server::Server, want: u64) -> u64 {
    let m = metrics_when(server, "one2one_calls_established_total", |v| v >= want).await;
    metric(&m, "one2one_calls_established_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ip_keeps_the_private_candidates() {
    let mut config = media_config();
    // A documentation address nothing in the namespace can reach.
    config.relay.public_ips = vec!["203.0.113.7".parse().unwrap()];
    let server = start_server(config).await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut bob = MediaUser::new(&server, "bob").await;
    // alice's peer shows what the server advertises.
    let (mut peer, ()) =
        tokio::join!(TestPeer::call(Spec::MIC_ONLY, &mut alice, media_ip(), "bob"), bob.answer("alice"));
    let (at_alice, at_bob) = talk(&mut peer, &mut alice, &mut bob, Source { rgb: [200, 30, 30], tone_hz: 440.0 }).await;
    assert!(at_alice.connected, "alice did not connect with --public-ip set");
    assert!(
        at_alice.audio_packets >= 25 && at_bob.audio_packets >= 25,
        "alice {at_alice:?}, bob {:?}",
        at_bob.audio_packets
    );
    let private = media_ip().to_string();
    let seen = peer.remote_candidates();
    assert!(
        seen.iter().any(|c| c.contains(&format!(" {private} ")) && c.contains("typ host")),
        "no host candidate: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|c| c.contains(" 203.0.113.7 ") && c.contains("typ srflx") && c.contains(&format!("raddr {private}"))),
        "no public candidate: {seen:?}"
    );
    assert_eq!(wait_established(&server, 1).await, 1);
    bob.hang_up().await;
    peer.close().await;
    server.shutdown().await;
}

/// alice connects and listens but sends nothing, bob sends: returns what
/// alice saw in `within` (or until the call ended).
async fn silent_caller(alice: &mut Ws, bob: &mut MediaUser, within: Duration) -> (TestPeer, Seen, Received) {
    let (mut peer, ()) = tokio::join!(TestPeer::call(Spec::MIC_ONLY, alice, media_ip(), "bob"), bob.answer("alice"));
    let done = Done::of(1);
    let src = Source { rgb: [200, 30, 30], tone_hz: 440.0 };
    let ended = |s: &Seen| s.signals.iter().any(|m| m.contains("stopCommunication"));
    let (at_alice, at_bob) = tokio::join!(
        peer.run(alice, false, within, ended),
        bob.exchange(src, Duration::from_secs(3), &done, |_| false)
    );
    assert!(at_alice.connected, "alice's leg never connected");
    assert!(at_alice.audio_packets > 0, "bob's audio did not reach alice: {at_alice:?}");
    assert_eq!(at_bob.audio_packets, 0, "alice sent nothing");
    (peer, at_alice, at_bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_waits_for_media_both_ways() {
    let server = start_server(media_config()).await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut bob = MediaUser::new(&server, "bob").await;
    // ICE and DTLS up on both legs, media one way only: not established.
    let (peer, _, _) = silent_caller(&mut alice, &mut bob, Duration::from_secs(3)).await;
    assert_eq!(established_total(&server), 0, "established although alice never sent media");
    assert_eq!(metric(&server.metrics.render(), "one2one_call_setup_seconds_count"), 0);
    alice.send(r#"{"id":"stop"}"#).await;
    peer.close().await;
    bob.ws.expect(r#"{"id":"stopCommunication","message":"remote user hanged out"}"#).await;
    bob.drop_peer().await;

    // The same users, both sending: established once media went both ways.
    let (mut peer, ()) =
        tokio::join!(TestPeer::call(Spec::MIC_ONLY, &mut alice, media_ip(), "bob"), bob.answer("alice"));
    assert_eq!(established_total(&server), 0, "established at the answers, before any media");
    let (at_alice, at_bob) = talk(&mut peer, &mut alice, &mut bob, Source { rgb: [200, 30, 30], tone_hz: 440.0 }).await;
    assert!(
        at_alice.audio_packets >= 25 && at_bob.audio_packets >= 25,
        "alice {at_alice:?}, bob {}",
        at_bob.audio_packets
    );
    assert_eq!(wait_established(&server, 1).await, 1);
    assert_eq!(metric(&server.metrics.render(), "one2one_call_setup_seconds_count"), 1);
    bob.hang_up().await;
    peer.close().await;

    // Issue 14 item 11, after real calls: every call that rang ended once,
    // with one reason, and the set-up sample sits in a bucket under 10 s.
    let m = metrics_when(&server, "one2one_active_calls", |v| v == 0).await;
    assert_eq!(metric(&m, "one2one_active_calls"), 0, "calls still active: {m}");
    let sum = |prefix: &str| -> u64 {
        m.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    };
    let started = metric(&m, "one2one_calls_started_total");
    assert_eq!(started, 2, "{m}");
    assert_eq!(sum("one2one_calls_ended_total{"), started, "ended by reason must add up to started: {m}");
    assert!(m.contains("one2one_call_setup_seconds_bucket{le=\"0.05\"}"), "{m}");
    assert!(m.contains("one2one_call_setup_seconds_bucket{le=\"+Inf\"} 1"), "{m}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_media_never_flows_both_ways_ends_at_the_setup_timeout() {
    let mut config = media_config();
    config.signaling.setup_timeout = Duration::from_secs(4);
    let server = start_server(config).await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut bob = MediaUser::new(&server, "bob").await;
    let (peer, at_alice, _) = silent_caller(&mut alice, &mut bob, Duration::from_secs(10)).await;
    assert!(
        at_alice.signals.iter().any(|m| m.contains("stopCommunication")),
        "the setup timeout did not end the call: {:?}",
        at_alice.signals
    );
    let m = metrics_when(&server, "one2one_active_calls", |v| v == 0).await;
    assert_eq!(metric(&m, "one2one_calls_established_total"), 0, "{m}");
    assert_eq!(metric(&m, "one2one_active_calls"), 0, "{m}");
    peer.close().await;
    server.shutdown().await;
}
