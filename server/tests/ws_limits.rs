//! The WebSocket done by the book (issue 14, item 7): every close is a close
//! frame with its code and reason, bursts of any size end in 1008 after all
//! their error replies (no reset), binary frames count against the rate
//! limit, a message over the size limit gets an error the page can show, and
//! each close is logged once with the connection and the peer's address.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Raw = WebSocketStream<TcpStream>;

async fn raw(addr: std::net::SocketAddr) -> Raw {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(format!("ws://{addr}/one2one"), tcp).await.unwrap().0
}

/// What the client saw until the end: text frames, the close frame, and
/// whether the connection then ended cleanly (`None`) or with an error
/// (a reset: the "1006" a browser would report).
struct Seen {
    texts: Vec<String>,
    close: Option<CloseFrame>,
    end: Option<String>,
}

async fn read_to_end(ws: &mut Raw) -> Seen {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut seen = Seen { texts: vec![], close: None, end: None };
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await.expect("the server never ended the connection");
        match next {
            None => return seen,
            Some(Ok(Message::Text(t))) => {
                assert!(seen.close.is_none(), "text after the close frame: {t}");
                seen.texts.push(t.to_string());
            }
            Some(Ok(Message::Close(c))) => seen.close = Some(c.expect("a close frame without a code")),
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                seen.end = Some(e.to_string());
                return seen;
            }
        }
    }
}

fn assert_closed(seen: &Seen, code: CloseCode, reason: &str) {
    let close =
        seen.close.as_ref().unwrap_or_else(|| panic!("no close frame; the connection ended with {:?}", seen.end));
    assert_eq!((close.code, close.reason.as_str()), (code, reason));
    assert_eq!(seen.end, None, "the connection did not end cleanly after the close frame");
}

#[tokio::test]
async fn a_clients_close_gets_a_close_frame_back() {
    let server = start_server(default_config()).await;
    let mut ws = raw(server.addr).await;
    ws.send(Message::Text(r#"{"id":"register","name":"alice"}"#.into())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().to_text().unwrap(),
        r#"{"id":"registerResponse","response":"accepted"}"#
    );
    ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).await.unwrap();
    let seen = read_to_end(&mut ws).await;
    assert!(seen.texts.is_empty(), "{:?}", seen.texts);
    assert_closed(&seen, CloseCode::Normal, "bye");
    server.shutdown().await;
}

/// A burst far over the limit: every reply the server owes arrives, then a
/// 1008 close frame, and the connection ends without a reset.
async fn burst(n: usize, frame: Message, first_reply: &str) {
    let mut config = default_config();
    // No refill during the burst: exactly `burst` allowed, then
    // `max_violations` refused, then the close.
    config.limits.rate_per_sec = 0.01;
    let (burst, violations) = (config.limits.burst as usize, config.limits.max_violations as usize);
    let server = start_server(config).await;
    let mut ws = raw(server.addr).await;
    for _ in 0..n {
        ws.feed(frame.clone()).await.unwrap();
    }
    ws.flush().await.unwrap();
    let seen = read_to_end(&mut ws).await;
    assert_closed(&seen, CloseCode::Policy, "rate limit exceeded");
    assert_eq!(seen.texts.len(), burst + violations, "burst of {n}");
    assert!(seen.texts[..burst].iter().all(|t| t == first_reply), "{:?}", &seen.texts[..3]);
    assert!(
        seen.texts[burst..].iter().all(|t| t == r#"{"id":"error","message":"rate limit exceeded: message dropped"}"#),
        "{:?}",
        &seen.texts[burst..burst + 3]
    );
    // The close is counted by reason (issue 14 item 11).
    let m = server.metrics.render();
    assert!(m.contains("one2one_ws_closed_total{reason=\"rate_limit\"} 1"), "{m}");
    assert!(m.contains("one2one_ws_closed_total{reason=\"too_big\"} 0"), "{m}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_450_ends_in_1008_after_every_reply() {
    burst(
        450,
        Message::Text(r#"{"id":"dance"}"#.into()),
        r#"{"id":"error","message":"invalid message: unknown id `dance`"}"#,
    )
    .await;
}

#[tokio::test]
async fn a_burst_of_3000_ends_in_1008_after_every_reply() {
    burst(
        3000,
        Message::Text(r#"{"id":"dance"}"#.into()),
        r#"{"id":"error","message":"invalid message: unknown id `dance`"}"#,
    )
    .await;
}

#[tokio::test]
async fn binary_frames_count_against_the_rate_limit() {
    burst(
        3000,
        Message::Binary(vec![1u8, 2, 3].into()),
        r#"{"id":"error","message":"invalid message: binary frames are not supported, send JSON text"}"#,
    )
    .await;
}

/// With `--max-message-bytes 1000`, a browser's SDP offer gets an error the
/// page can show, and the socket stays usable.
#[tokio::test]
async fn a_message_over_the_limit_gets_an_error_and_the_socket_stays_open() {
    let mut config = default_config();
    config.limits.max_message = 1000;
    let server = start_server(config).await;
    let mut alice = Ws::user(&server, "alice").await;
    let _bob = Ws::user(&server, "bob").await;
    let (_peer, offer) = real_offer().await;
    let call = shared_proto::encode(&shared_proto::ClientMsg::Call {
        from: "alice".into(),
        to: "bob".into(),
        sdp_offer: offer,
    });
    assert!(call.len() > 1000, "{}", call.len());
    alice.send(&call).await;
    alice
        .expect(&format!(
            r#"{{"id":"error","message":"invalid message: {} bytes is over the limit of 1000 bytes"}}"#,
            call.len()
        ))
        .await;
    alice.send(r#"{"id":"register","name":"alice"}"#).await;
    alice.expect(r#"{"id":"registerResponse","response":"rejected ","message":"This connection is already registered as alice"}"#).await;
    server.shutdown().await;
}

/// Far over the limit: the frame is not read; the client gets the error,
/// then a 1009 close frame.
#[tokio::test]
async fn a_frame_over_the_hard_limit_gets_an_error_then_1009() {
    let mut config = default_config();
    config.limits.max_message = 1000;
    let hard = config.limits.hard_limit();
    let server = start_server(config).await;
    let mut ws = raw(server.addr).await;
    ws.send(Message::Text("y".repeat(hard + 1).into())).await.unwrap();
    let seen = read_to_end(&mut ws).await;
    assert_eq!(
        seen.texts,
        [format!(
            r#"{{"id":"error","message":"invalid message: over {hard} bytes, the limit is 1000 bytes; closing the connection"}}"#
        )]
    );
    let close = seen.close.as_ref().expect("no close frame");
    assert_eq!((close.code, close.reason.as_str()), (CloseCode::Size, "message too big"));
    wait_for(&server, "one2one_connections 0").await;
    server.shutdown().await;
}

async fn wait_for(server: &one2one_server::Server, needle: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let m = server.metrics.render();
        if m.contains(needle) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{needle} never showed in\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real binary: each kind of close (rate 1008, size 1009, idle 1001)
/// is logged exactly once, with the connection id and the peer's address;
/// a client's close reason is escaped in the log (item 9).
#[tokio::test]
async fn each_close_is_logged_once_with_conn_and_peer() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Proc::spawn(
        &["--http", "--listen", &listen, "--ws-idle-timeout", "1", "--max-message-bytes", "1000", "--rate-limit", "1"],
        Some("info"),
    );
    server.wait_line("listening");
    let addr: std::net::SocketAddr = listen.parse().unwrap();

    // 1008: a burst.
    let mut chatty = raw(addr).await;
    let chatty_port = chatty.get_ref().local_addr().unwrap().port();
    for _ in 0..600 {
        chatty.feed(Message::Text(r#"{"id":"dance"}"#.into())).await.unwrap();
    }
    chatty.flush().await.unwrap();
    assert_closed(&read_to_end(&mut chatty).await, CloseCode::Policy, "rate limit exceeded");
    // 1009: far too big.
    let mut big = raw(addr).await;
    let big_port = big.get_ref().local_addr().unwrap().port();
    big.send(Message::Text("y".repeat(70_000).into())).await.unwrap();
    assert_eq!(read_to_end(&mut big).await.close.map(|c| c.code), Some(CloseCode::Size));
    // 1001: never answers a ping (never reads) for the idle timeout.
    let mut quiet = raw(addr).await;
    let quiet_port = quiet.get_ref().local_addr().unwrap().port();
    // The client's own close, with a reason that tries to forge a log line.
    let mut polite = raw(addr).await;
    let polite_port = polite.get_ref().local_addr().unwrap().port();
    let forged = "bye\n2099-01-01T00:00:00Z  INFO one2one_server::signaling: registered conn=9 user=admin\x1b[31m";
    polite.close(Some(CloseFrame { code: CloseCode::Normal, reason: forged.into() })).await.unwrap();
    assert_closed(&read_to_end(&mut polite).await, CloseCode::Normal, forged);

    let want_idle = format!("peer=127.0.0.1:{quiet_port}");
    server.wait_for("with the idle-timeout close", |l| l.contains("idle timeout") && l.contains(&want_idle));
    // The quiet client, reading at last, finds the pings and the close.
    assert_closed(&read_to_end(&mut quiet).await, CloseCode::Away, "idle timeout");
    let (code, lines) = server.terminate();
    let log = lines.join("\n");
    let count = |needle: &str, port: u16| {
        let peer = format!("peer=127.0.0.1:{port}");
        lines.iter().filter(|l| l.contains(needle) && l.contains(&peer) && l.contains("conn=")).count()
    };
    assert_eq!(count("closing: over the rate limit", chatty_port), 1, "{log}");
    assert_eq!(count("closing: frame over the hard size limit", big_port), 1, "{log}");
    assert_eq!(count("closing: no traffic", quiet_port), 1, "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("code=1008") && l.contains(&format!("127.0.0.1:{chatty_port}"))),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("code=1009") && l.contains(&format!("127.0.0.1:{big_port}"))),
        "{log}"
    );
    // The client's reason is one escaped field, not a second line.
    let polite_line = lines
        .iter()
        .find(|l| l.contains("socket closed by the client") && l.contains(&format!("127.0.0.1:{polite_port}")))
        .unwrap_or_else(|| panic!("no client close logged:\n{log}"));
    assert!(
        polite_line.contains(r#"reason=bye\n2099-01-01T00:00:00Z  INFO one2one_server::signaling: regist…"#),
        "{polite_line}"
    );
    assert!(!log.contains("\x1b["), "raw escape codes in the log: {log:?}");
    assert!(!lines.iter().any(|l| l.starts_with("2099-01-01")), "a forged line: {log}");
    assert_eq!(code, Some(0));
}
