//! The real `one2one-server` binary: it starts, serves, and on SIGTERM tells
//! everyone in a call, closes the sockets with 1001 and exits 0.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

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
    use std::io::{BufRead, BufReader};
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_one2one-server"))
        .args(["--http", "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else { break };
            if tx.send(String::from_utf8_lossy(&line).into_owned()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + DEADLINE;
    let mut lines: Vec<String> = Vec::new();
    // The banner, then the first tracing line ("listening") after it.
    while !lines.iter().any(|l| l.contains("one2one-server is up")) || !lines.iter().any(|l| l.contains("listening")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no banner and log line within {DEADLINE:?} ({e}); stderr so far: {lines:#?}");
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
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
    use std::io::BufRead as _;
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_one2one-server"))
        .args(["--http", "--log-format", "json", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
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
    let mut seen = vec![];
    let want = ["registered", "registration refused", "call refused"];
    let deadline = Instant::now() + DEADLINE;
    while !want.iter().all(|w| seen.iter().any(|l: &serde_json::Value| l["fields"]["message"] == *w)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("missing log lines; saw {seen:#?}"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        seen.push(v);
    }
    for w in want {
        let line = seen.iter().find(|l| l["fields"]["message"] == w).unwrap();
        let text = line.to_string();
        assert!(text.contains(r#""peer":"127.0.0.1:"#), "{w}: no client address: {text}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
