//! Log lines of the signaling core (issue 14, items 9 and 10): every
//! client-supplied string is escaped, quoted and cut, so that no client can
//! forge a log line or drive the operator's terminal; refused registrations
//! and self-calls are logged with the connection id.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use one2one_server::signaling::*;
use shared_proto::ClientMsg;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Buf {
        self.clone()
    }
}

/// Runs `inputs` through a fresh core and returns the log, one entry a line.
fn log_of(inputs: Vec<Input>) -> Vec<String> {
    let buf = Buf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buf.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut sig = Signaling::new(Config::default());
        let now = Instant::now();
        for i in inputs {
            sig.handle(now, i);
            while sig.poll_output().is_some() {}
        }
    });
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_owned).collect()
}

fn register(conn: ConnId, name: &str) -> [Input; 2] {
    [Input::Connected(conn), Input::Message(conn, ClientMsg::Register { name: name.into() })]
}

fn call(conn: ConnId, to: &str) -> Input {
    Input::Message(conn, ClientMsg::Call { from: "x".into(), to: to.into(), sdp_offer: "O".into() })
}

/// The log lines after alice (conn 1) registered and called `to`.
fn call_log(to: &str) -> Vec<String> {
    let mut inputs = register(1, "alice").to_vec();
    inputs.push(call(1, to));
    let log = log_of(inputs);
    assert_eq!(log[0], r#" INFO one2one_server::signaling: registered conn=1 user="alice""#);
    log[1..].to_vec()
}

#[test]
fn a_forged_log_line_in_to_stays_on_one_escaped_line() {
    let log = call_log("ghost\n2099-01-01T00:00:00Z  INFO one2one_server::signaling: registered conn=9 user=admin");
    assert_eq!(
        log,
        [
            r#" INFO one2one_server::signaling: call refused conn=1 caller="alice" callee="ghost\n2099-01-01T00:00:00Z  INFO one2one_server::signaling: regi…" reason="unknown_user""#
        ]
    );
}

#[test]
fn ansi_escapes_in_to_are_escaped() {
    let log = call_log("\x1b[31mRED");
    assert_eq!(
        log,
        [
            r#" INFO one2one_server::signaling: call refused conn=1 caller="alice" callee="\u{1b}[31mRED" reason="unknown_user""#
        ]
    );
    assert!(!log[0].contains('\x1b'));
}

#[test]
fn a_huge_to_is_logged_truncated() {
    let log = call_log(&"A".repeat(60_000));
    assert_eq!(
        log,
        [format!(
            r#" INFO one2one_server::signaling: call refused conn=1 caller="alice" callee="{}…" reason="unknown_user""#,
            "A".repeat(64)
        )]
    );
}

#[test]
fn refused_registrations_and_self_calls_are_logged() {
    let mut inputs = register(1, "alice").to_vec();
    inputs.extend(register(2, "ALICE"));
    inputs.push(Input::Message(2, ClientMsg::Register { name: "bob\u{202e}\n".into() }));
    inputs.push(call(1, "Alice"));
    let log = log_of(inputs);
    assert_eq!(
        log,
        [
            r#" INFO one2one_server::signaling: registered conn=1 user="alice""#,
            r#" INFO one2one_server::signaling: registration refused conn=2 name="ALICE" reason="name_taken" detail="User alice is already registered""#,
            r#" INFO one2one_server::signaling: registration refused conn=2 name="bob\u{202e}\n" reason="name_invalid" detail="user name contains bidirectional text controls""#,
            r#" INFO one2one_server::signaling: call refused conn=1 caller="alice" callee="Alice" reason="self_call""#,
        ]
    );
}

#[test]
fn a_wrong_from_is_logged_escaped() {
    let mut inputs = register(1, "alice").to_vec();
    inputs.extend(register(2, "bob"));
    inputs.push(call(1, "bob"));
    inputs.push(Input::Message(2, ClientMsg::accept("carol\r\n\u{1b}[2J", "OB")));
    let log = log_of(inputs);
    assert_eq!(
        log[2..],
        [
            r#" INFO one2one_server::signaling: call ringing id=call-1 conn=1 caller="alice" callee="bob""#,
            r#" INFO one2one_server::signaling: incomingCallResponse refused: wrong from; the call still rings id=call-1 conn=2 from="carol\r\n\u{1b}[2J" caller="alice""#,
        ]
    );
}
