//! A user who vanishes (issue 14, item 1): the server pings quiet sockets
//! and closes those that send nothing, not even a pong, for the idle
//! timeout; that frees the name and ends the call with a reason.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Raw = WebSocketStream<TcpStream>;

/// A raw client whose socket is bound to `src`.
async fn raw_from(src: IpAddr, server: SocketAddr) -> Raw {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(src, 0)).unwrap();
    let tcp = sock.connect(server).await.unwrap();
    tokio_tungstenite::client_async(format!("ws://{server}/one2one"), tcp).await.unwrap().0
}

/// The next text frame (answering pings meanwhile, as any client does).
async fn next_text(ws: &mut Raw) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.expect("no message in time") {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(_)) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
}

async fn register(ws: &mut Raw, name: &str) {
    ws.send(Message::Text(format!(r#"{{"id":"register","name":"{name}"}}"#).into())).await.unwrap();
    assert_eq!(next_text(ws).await, r#"{"id":"registerResponse","response":"accepted"}"#);
}

async fn wait_for(server: &one2one_server::Server, needle: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = server.metrics.render();
        if m.contains(needle) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{needle} did not show within {within:?} in\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Packets of one TCP connection vanish (no FIN, no RST), as when a user's
/// network drops: a blackhole policy route for the client's address and
/// port, both ways. Local traffic is routed through the `local` table, so
/// its rule moves behind ours (added before the old one goes: no gap for
/// the other tests in the namespace); dropping the guard restores it.
struct Blackhole {
    rules: [String; 2],
}

fn ip(args: &str) -> bool {
    Command::new("ip").args(args.split(' ')).status().map(|s| s.success()).unwrap_or(false)
}

impl Blackhole {
    fn new(client: SocketAddr) -> Blackhole {
        ip("rule add pref 100 lookup local");
        ip("rule del pref 0 lookup local");
        let (addr, port) = (client.ip(), client.port());
        let rules = [
            format!("pref 10 from {addr} ipproto tcp sport {port} blackhole"),
            format!("pref 11 to {addr} ipproto tcp dport {port} blackhole"),
        ];
        for r in &rules {
            assert!(ip(&format!("rule add {r}")), "ip rule add {r} failed (needs root in a private namespace)");
        }
        Blackhole { rules }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        for r in &self.rules {
            ip(&format!("rule del {r}"));
        }
        ip("rule add pref 0 lookup local");
        ip("rule del pref 100 lookup local");
    }
}

/// alice's network vanishes mid-call: within the idle timeout (plus a
/// margin) bob's call is ended with a reason, alice's name is free, and
/// `registered_users` counts only bob. Needs `scripts/netns-run`.
#[tokio::test]
async fn a_vanished_user_is_dropped_within_the_idle_timeout() {
    let idle = Duration::from_secs(2);
    let margin = Duration::from_millis(1500);
    let server_ip = media_ip();
    let client_ip: IpAddr =
        std::env::var("ONE2ONE_TEST_IP2").expect("ONE2ONE_TEST_IP2 (scripts/netns-run)").parse().unwrap();
    let mut config = media_config();
    config.limits.idle_timeout = idle;
    init_tracing();
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(server_ip, 0)).await.unwrap();
    let server = one2one_server::start(listener, one2one_server::Transport::Http, config).await.unwrap();
    let url = format!("ws://{}/one2one", server.addr);

    let mut alice = raw_from(client_ip, server.addr).await;
    let alice_addr = alice.get_ref().local_addr().unwrap();
    register(&mut alice, "alice").await;
    let mut bob = Ws::connect_url(&url, "bob").await.unwrap();
    bob.send(r#"{"id":"register","name":"bob"}"#).await;
    bob.expect(r#"{"id":"registerResponse","response":"accepted"}"#).await;
    let (_pa, offer_a) = real_offer().await;
    let (_pb, offer_b) = real_offer().await;
    let call = shared_proto::ClientMsg::Call { from: "alice".into(), to: "bob".into(), sdp_offer: offer_a };
    alice.send(Message::Text(shared_proto::encode(&call).into())).await.unwrap();
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    bob.send_msg(&shared_proto::ClientMsg::accept("alice", offer_b)).await;
    assert!(bob.recv_signal().await.starts_with(r#"{"id":"startCommunication""#));
    loop {
        let m = next_text(&mut alice).await;
        if m.starts_with(r#"{"id":"callResponse""#) {
            assert!(m.starts_with(r#"{"id":"callResponse","response":"accepted""#), "{m}");
            break;
        }
    }
    wait_for(&server, "one2one_registered_users 2", DEADLINE).await;

    let hole = Blackhole::new(alice_addr);
    let cut = tokio::time::Instant::now();
    // alice's client goes on reading (it would answer every ping), but no
    // packet gets through either way.
    let alice = tokio::spawn(async move { while alice.next().await.is_some() {} });
    // bob keeps reading (and so answers the server's pings).
    let stop = bob.recv_signal().await;
    let took = cut.elapsed();
    assert!(stop.starts_with(r#"{"id":"stopCommunication","message":""#), "{stop}");
    assert!(took <= idle + margin, "bob's call ended after {took:?}");
    wait_for(&server, "one2one_registered_users 1", margin).await;
    wait_for(&server, "one2one_active_calls 0", margin).await;
    // The name is free for alice on another connection.
    let mut again = Ws::connect_url(&url, "alice again").await.unwrap();
    again.send(r#"{"id":"register","name":"alice"}"#).await;
    again.expect(r#"{"id":"registerResponse","response":"accepted"}"#).await;
    assert!(cut.elapsed() <= idle + margin + Duration::from_secs(1), "alice free only after {:?}", cut.elapsed());
    drop(hole);
    alice.abort();
    server.shutdown().await;
}

/// A quiet client that answers pings (any client that reads its socket)
/// stays registered well past the idle timeout.
#[tokio::test]
async fn a_quiet_client_that_answers_pings_stays() {
    let mut config = default_config();
    config.limits.idle_timeout = Duration::from_millis(600);
    let server = start_server(config).await;
    let mut ws = raw_from("127.0.0.1".parse().unwrap(), server.addr).await;
    register(&mut ws, "alice").await;
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(until, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 4, "only {pings} pings in 3 s with a 0.6 s idle timeout");
    wait_for(&server, "one2one_registered_users 1", Duration::ZERO).await;
    server.shutdown().await;
}

/// A client that never answers (it does not even read) is closed with 1001
/// "idle timeout" after the timeout, and its name is freed.
#[tokio::test]
async fn a_client_that_never_answers_is_closed_with_1001() {
    let mut config = default_config();
    config.limits.idle_timeout = Duration::from_millis(800);
    let server = start_server(config).await;
    let mut ws = raw_from("127.0.0.1".parse().unwrap(), server.addr).await;
    register(&mut ws, "alice").await;
    let start = tokio::time::Instant::now();
    wait_for(&server, "one2one_registered_users 0", DEADLINE).await;
    assert!(start.elapsed() >= Duration::from_millis(700), "dropped after only {:?}", start.elapsed());
    let mut others = Ws::connect(&server, "alice again").await;
    others.send(r#"{"id":"register","name":"alice"}"#).await;
    others.expect(r#"{"id":"registerResponse","response":"accepted"}"#).await;
    // Reading at last, the client finds a ping, then the close frame.
    let mut frames = vec![];
    loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.expect("no close") {
            Some(Ok(Message::Close(c))) => {
                let c = c.expect("a code");
                assert_eq!((c.code, c.reason.as_str()), (CloseCode::Away, "idle timeout"));
                break;
            }
            Some(Ok(f)) => frames.push(f),
            other => panic!("{other:?} after {frames:?}"),
        }
    }
    assert!(matches!(frames.as_slice(), [Message::Ping(_)]), "{frames:?}");
    server.shutdown().await;
}
