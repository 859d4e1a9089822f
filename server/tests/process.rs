//! The real `one2one-server` binary: it starts, serves, and on SIGTERM tells
//! everyone in a call, closes the sockets with 1001 and exits 0.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn sigterm_tells_users_and_exits_cleanly() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_one2one-server"))
        .args(["--http", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/one2one");
    let deadline = Instant::now() + DEADLINE;
    let mut alice = loop {
        match Ws::connect_url(&url, "alice").await {
            Some(ws) => break ws,
            None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            None => panic!("the server never listened on {url}"),
        }
    };
    let mut bob = Ws::connect_url(&url, "bob").await.unwrap();
    alice.send(r#"{"id":"register","name":"alice"}"#).await;
    alice.expect(r#"{"id":"registerResponse","response":"accepted"}"#).await;
    bob.send(r#"{"id":"register","name":"bob"}"#).await;
    bob.expect(r#"{"id":"registerResponse","response":"accepted"}"#).await;
    let (_pa, offer_a) = real_offer().await;
    let (_pb, offer_b) = real_offer().await;
    alice.send_msg(&shared_proto::ClientMsg::Call { from: "alice".into(), to: "bob".into(), sdp_offer: offer_a }).await;
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    bob.send_msg(&shared_proto::ClientMsg::accept("alice", offer_b)).await;
    assert!(bob.recv_signal().await.starts_with(r#"{"id":"startCommunication""#));
    assert!(alice.recv_signal().await.starts_with(r#"{"id":"callResponse","response":"accepted""#));

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    alice.expect(r#"{"id":"stopCommunication","message":"server shutting down"}"#).await;
    bob.expect(r#"{"id":"stopCommunication","message":"server shutting down"}"#).await;
    let closed = alice.recv().await;
    assert!(closed.contains("Away"), "{closed}");
    let deadline = Instant::now() + DEADLINE;
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "the server did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, Some(0));
}

/// The start-up banner names the address the server really listens on, and
/// a log that is not a terminal carries no colour codes.
#[test]
fn banner_names_the_real_address_and_piped_logs_have_no_ansi() {
    let port = free_port();
    let mut server = Proc::spawn(&["--http", "--listen", &format!("127.0.0.1:{port}")], Some("info"));
    // The banner, then the first tracing line ("listening") after it.
    server.wait_line("listening");
    if !server.seen.iter().any(|l| l.contains("one2one-server is up")) {
        server.wait_line("one2one-server is up");
    }
    let lines = std::mem::take(&mut server.seen);
    drop(server);
    let banner = lines.iter().find(|l| l.contains("one2one-server is up")).unwrap();
    assert!(banner.contains(&format!("Open http://127.0.0.1:{port}/ ")), "{banner}");
    assert!(banner.contains(&format!("ws://127.0.0.1:{port}/one2one")), "{banner}");
    assert!(!banner.contains("localhost"), "{banner}");
    let all = lines.join("\n");
    assert!(!all.contains("\x1b["), "ANSI escapes in a piped log: {all:?}");
}

/// Issue 14 item 10: `--log-format json` writes one JSON object per line;
/// registrations, refused registrations and self-calls are logged with the
/// client's address; client text is escaped.
#[tokio::test]
async fn json_logs_carry_the_clients_address() {
    let port = free_port();
    let mut server = Proc::spawn(&["--http", "--log-format", "json", "--listen", &format!("127.0.0.1:{port}")], None);
    let url = format!("ws://127.0.0.1:{port}/one2one");
    let deadline = Instant::now() + DEADLINE;
    let mut alice = loop {
        match Ws::connect_url(&url, "alice").await {
            Some(ws) => break ws,
            None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            None => panic!("the server never listened on {url}"),
        }
    };
    alice.send(r#"{"id":"register","name":"alice"}"#).await;
    alice.expect(r#"{"id":"registerResponse","response":"accepted"}"#).await;
    let mut again = Ws::connect_url(&url, "again").await.unwrap();
    again.send(r#"{"id":"register","name":"alice"}"#).await;
    assert!(again.recv_signal().await.contains("already registered"));
    alice.send(r#"{"id":"call","from":"alice","to":"alice","sdpOffer":"v=0"}"#).await;
    assert!(alice.recv_signal().await.contains("You cannot call yourself"));

    // Every line is JSON; the three events carry the client's address.
    let mut seen: Vec<serde_json::Value> = vec![];
    let want = ["registered", "registration refused", "call refused"];
    while !want.iter().all(|w| seen.iter().any(|l| l["fields"]["message"] == *w)) {
        let line = server.wait_for("(any)", |_| true);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        seen.push(v);
    }
    for w in want {
        let line = seen.iter().find(|l| l["fields"]["message"] == w).unwrap();
        let text = line.to_string();
        assert!(text.contains(r#""peer":"127.0.0.1:"#), "{w}: no client address: {text}");
    }
}
