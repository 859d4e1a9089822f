//! A scripted WebSocket client walks every sequence of the protocol against
//! a real server (real sockets) and checks the exact messages each side
//! receives. The call rules need no real SDP: the media backend is the
//! scripted one ([`one2one_server::media::scripted`]), which answers at
//! once, late, never, or fails as each test says. The real relay's own
//! sequences are in relay_flow.rs and media_relay.rs.

mod common;

use std::time::Duration;

use common::*;
use one2one_server::media::scripted::{self, Reply, Script};
use one2one_server::media::{Leg, MediaCmd, MediaConfig, MediaError};
use tokio_tungstenite::tungstenite::Message;

const SILENCE: Duration = Duration::from_millis(300);

fn call_json(from: &str, to: &str, sdp: &str) -> String {
    shared_proto::encode(&shared_proto::ClientMsg::Call { from: from.into(), to: to.into(), sdp_offer: sdp.into() })
}

fn accept_json(from: &str, sdp: &str) -> String {
    shared_proto::encode(&shared_proto::ClientMsg::accept(from, sdp))
}

/// What the users offer: the scripted backend reads none of it.
const OFFER_A: &str = "v=0 alice's offer";
const OFFER_B: &str = "v=0 bob's offer";

/// A server whose media backend answers as `reply` says (and as each
/// `script.push` says for the next calls).
async fn scripted_server(reply: Reply) -> (one2one_server::Server, Script) {
    let script = Script::new(reply);
    let mut config = default_config();
    config.media = MediaConfig::Custom(script.factory());
    (start_server(config).await, script)
}

async fn scripted() -> one2one_server::Server {
    scripted_server(Reply::Now).await.0
}

fn accepted_json(leg: Leg) -> String {
    let sdp = scripted::answer_for(leg);
    match leg {
        Leg::Callee => format!(r#"{{"id":"startCommunication","sdpAnswer":"{sdp}"}}"#),
        Leg::Caller => format!(r#"{{"id":"callResponse","response":"accepted","sdpAnswer":"{sdp}"}}"#),
    }
}

/// alice calls bob and bob accepts; returns both sockets in the call.
async fn established(server: &one2one_server::Server) -> (Ws, Ws) {
    let mut alice = Ws::user(server, "alice").await;
    let mut bob = Ws::user(server, "bob").await;
    alice.send(&call_json("alice", "bob", OFFER_A)).await;
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    bob.send(&accept_json("alice", OFFER_B)).await;
    bob.expect(&accepted_json(Leg::Callee)).await;
    alice.expect(&accepted_json(Leg::Caller)).await;
    (alice, bob)
}

#[tokio::test]
async fn success_then_caller_hangs_up() {
    let server = scripted().await;
    let (mut alice, mut bob) = established(&server).await;
    alice.send(r#"{"id":"stop"}"#).await;
    bob.expect(r#"{"id":"stopCommunication","message":"remote user hanged out"}"#).await;
    alice.expect_silence(SILENCE).await;
    server.shutdown().await;
}

#[tokio::test]
async fn callee_hangs_up() {
    let server = scripted().await;
    let (mut alice, mut bob) = established(&server).await;
    bob.send(r#"{"id":"stop"}"#).await;
    alice.expect(r#"{"id":"stopCommunication","message":"remote user hanged out"}"#).await;
    bob.expect_silence(SILENCE).await;
    server.shutdown().await;
}

#[tokio::test]
async fn server_candidates_carry_kurento_tags() {
    let server = scripted().await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut bob = Ws::user(&server, "bob").await;
    alice.send(&call_json("alice", "bob", OFFER_A)).await;
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    bob.send(&accept_json("alice", OFFER_B)).await;
    let mut saw_candidate = false;
    for _ in 0..20 {
        let m = alice.recv().await;
        if m.starts_with(r#"{"id":"iceCandidate","candidate":{"candidate":"candidate:"#) {
            assert!(
                m.ends_with(r#","sdpMid":"0","sdpMLineIndex":0,"__module__":"kurento","__type__":"IceCandidate"}}"#),
                "{m}"
            );
            saw_candidate = true;
        }
        if saw_candidate && m.starts_with(r#"{"id":"callResponse""#) {
            break;
        }
    }
    assert!(saw_candidate, "alice got no iceCandidate");
    server.shutdown().await;
}

#[tokio::test]
async fn rejected() {
    let server = scripted().await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut bob = Ws::user(&server, "bob").await;
    alice.send(&call_json("alice", "bob", "v=0\r\n")).await;
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    bob.send(r#"{"id":"incomingCallResponse","from":"alice","callResponse":"reject","message":"user declined"}"#).await;
    alice.expect(r#"{"id":"callResponse","response":"rejected","message":"user declined"}"#).await;
    bob.expect_silence(SILENCE).await;
    server.shutdown().await;
}

#[tokio::test]
async fn busy_callee_is_not_disturbed() {
    let server = scripted().await;
    let (mut alice, mut bob) = established(&server).await;
    let mut carol = Ws::user(&server, "carol").await;
    carol.send(&call_json("carol", "bob", "v=0\r\n")).await;
    carol.expect(r#"{"id":"callResponse","response":"rejected","message":"user busy"}"#).await;
    bob.expect_silence(SILENCE).await;
    // A browser that is busy auto-rejects with "bussy"; the caller learns it is busy.
    let mut dave = Ws::user(&server, "dave").await;
    dave.send(&call_json("dave", "carol", "v=0\r\n")).await;
    carol.expect(r#"{"id":"incomingCall","from":"dave"}"#).await;
    carol.send(r#"{"id":"incomingCallResponse","from":"dave","callResponse":"reject","message":"bussy"}"#).await;
    dave.expect(r#"{"id":"callResponse","response":"rejected","message":"user busy"}"#).await;
    // bob hangs up: only alice hears of it.
    bob.send(r#"{"id":"stop"}"#).await;
    alice.expect(r#"{"id":"stopCommunication","message":"remote user hanged out"}"#).await;
    carol.expect_silence(SILENCE).await;
    server.shutdown().await;
}

#[tokio::test]
async fn glare_second_caller_hears_busy_and_can_still_accept() {
    let server = scripted().await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut bob = Ws::user(&server, "bob").await;
    alice.send(&call_json("alice", "bob", OFFER_A)).await;
    // The incomingCall only tells the test that alice's call reached the
    // server first; bob's client calls as if it had not seen it yet.
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    bob.send(&call_json("bob", "alice", OFFER_B)).await;
    bob.expect(r#"{"id":"callResponse","response":"rejected","message":"user busy"}"#).await;
    // alice's call is untouched: she hears nothing, and bob can accept it.
    alice.expect_silence(SILENCE).await;
    bob.send(&accept_json("alice", OFFER_B)).await;
    bob.expect(&accepted_json(Leg::Callee)).await;
    alice.expect(&accepted_json(Leg::Caller)).await;
    bob.send(r#"{"id":"stop"}"#).await;
    alice.expect(r#"{"id":"stopCommunication","message":"remote user hanged out"}"#).await;
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_user_and_self_call() {
    let server = scripted().await;
    let mut alice = Ws::user(&server, "alice").await;
    alice.send(&call_json("alice", "zed", "v=0\r\n")).await;
    alice.expect(r#"{"id":"callResponse","response":"rejected: ","message":"User zed is not registered"}"#).await;
    alice.send(&call_json("alice", "alice", "v=0\r\n")).await;
    alice.expect(r#"{"id":"callResponse","response":"rejected","message":"You cannot call yourself"}"#).await;
    server.shutdown().await;
}

#[tokio::test]
async fn caller_cancels_and_caller_closes_while_ringing() {
    let server = scripted().await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut bob = Ws::user(&server, "bob").await;
    alice.send(&call_json("alice", "bob", "v=0\r\n")).await;
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    alice.send(r#"{"id":"stop"}"#).await;
    bob.expect(r#"{"id":"stopCommunication","message":"caller cancelled"}"#).await;

    alice.send(&call_json("alice", "bob", "v=0\r\n")).await;
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    alice.close().await;
    bob.expect(r#"{"id":"stopCommunication","message":"caller cancelled"}"#).await;
    // The original's reply to a late answer.
    bob.send(&accept_json("alice", "v=0\r\n")).await;
    bob.expect(r#"{"id":"stopCommunication","message":"unknown from = alice"}"#).await;
    // alice's name is free again.
    let _again = Ws::user(&server, "alice").await;
    server.shutdown().await;
}

#[tokio::test]
async fn callee_closes_while_ringing() {
    let server = scripted().await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut bob = Ws::user(&server, "bob").await;
    alice.send(&call_json("alice", "bob", "v=0\r\n")).await;
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    bob.close().await;
    alice.expect(r#"{"id":"callResponse","response":"rejected","message":"User bob is no longer available"}"#).await;
    server.shutdown().await;
}

#[tokio::test]
async fn ring_timeout() {
    let mut config = default_config();
    config.media = MediaConfig::Custom(Script::new(Reply::Now).factory());
    config.signaling.ring_timeout = Duration::from_millis(300);
    let server = start_server(config).await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut bob = Ws::user(&server, "bob").await;
    alice.send(&call_json("alice", "bob", "v=0\r\n")).await;
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    alice.expect(r#"{"id":"callResponse","response":"rejected","message":"no answer"}"#).await;
    bob.expect(r#"{"id":"stopCommunication","message":"no answer"}"#).await;
    server.shutdown().await;
}

#[tokio::test]
async fn close_during_setup_releases_everything() {
    let server = scripted().await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut bob = Ws::user(&server, "bob").await;
    alice.send(&call_json("alice", "bob", OFFER_A)).await;
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    bob.send(&accept_json("alice", OFFER_B)).await;
    bob.close().await;
    // Either the media was not ready yet (the call never started) or it just
    // was (the call started and ended); both are complete, exact sequences.
    let first = alice.recv_signal().await;
    if first.starts_with(r#"{"id":"callResponse","response":"accepted""#) {
        alice.expect(r#"{"id":"stopCommunication","message":"remote user hanged out"}"#).await;
    } else {
        assert_eq!(first, r#"{"id":"callResponse","response":"rejected","message":"remote user hanged out"}"#);
    }
    wait_for_metric(&server, "one2one_active_calls 0").await;
    alice.expect_silence(SILENCE).await;
    server.shutdown().await;
}

#[tokio::test]
async fn close_mid_call() {
    let server = scripted().await;
    let (mut alice, bob) = established(&server).await;
    bob.close().await;
    alice.expect(r#"{"id":"stopCommunication","message":"remote user hanged out"}"#).await;
    wait_for_metric(&server, "one2one_registered_users 1").await;
    server.shutdown().await;
}

#[tokio::test]
async fn third_party_cannot_answer_or_stop() {
    let server = scripted().await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut bob = Ws::user(&server, "bob").await;
    let mut eve = Ws::user(&server, "eve").await;
    alice.send(&call_json("alice", "bob", "v=0\r\n")).await;
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    eve.send(&accept_json("alice", "v=0\r\n")).await;
    eve.expect(r#"{"id":"stopCommunication","message":"unknown from = alice"}"#).await;
    eve.send(r#"{"id":"stop"}"#).await;
    eve.send(r#"{"id":"onIceCandidate","candidate":{"candidate":"candidate:1 1 udp 1 10.9.9.9 9 typ host","sdpMid":"0","sdpMLineIndex":0}}"#).await;
    alice.expect_silence(SILENCE).await;
    bob.expect_silence(Duration::ZERO).await;
    bob.send(r#"{"id":"incomingCallResponse","from":"alice","callResponse":"reject","message":"user declined"}"#).await;
    alice.expect(r#"{"id":"callResponse","response":"rejected","message":"user declined"}"#).await;
    server.shutdown().await;
}

#[tokio::test]
async fn registration_rules() {
    let server = scripted().await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut other = Ws::connect(&server, "other").await;
    other.send(r#"{"id":"call","from":"x","to":"alice","sdpOffer":"v=0"}"#).await;
    other.expect(r#"{"id":"error","message":"You must register before sending `call`"}"#).await;
    other.send(r#"{"id":"register","name":"alice"}"#).await;
    other
        .expect(r#"{"id":"registerResponse","response":"rejected ","message":"User alice is already registered"}"#)
        .await;
    other.send(r#"{"id":"register","name":""}"#).await;
    other.expect(r#"{"id":"registerResponse","response":"rejected ","message":"empty user name"}"#).await;
    alice.send(r#"{"id":"register","name":"alice2"}"#).await;
    alice.expect(r#"{"id":"registerResponse","response":"rejected ","message":"This connection is already registered as alice"}"#).await;
    server.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_the_socket_stays_usable() {
    let server = scripted().await;
    let mut ws = Ws::connect(&server, "fuzzy").await;
    let cases: &[(&str, &str)] = &[
        ("hello", r#"{"id":"error","message":"invalid message: not JSON (expected value at line 1 column 1)"}"#),
        ("[]", r#"{"id":"error","message":"invalid message: expected a JSON object"}"#),
        (r#"{"name":"a"}"#, r#"{"id":"error","message":"invalid message: missing field `id`"}"#),
        (r#"{"id":"dance"}"#, r#"{"id":"error","message":"invalid message: unknown id `dance`"}"#),
        (r#"{"id":"register"}"#, r#"{"id":"error","message":"invalid `register` message: missing field `name`"}"#),
        (
            r#"{"id":"register","name":42}"#,
            r#"{"id":"error","message":"invalid `register` message: invalid type: integer `42`, expected a string"}"#,
        ),
    ];
    for (input, want) in cases {
        ws.send(input).await;
        ws.expect(want).await;
    }
    ws.send_raw(Message::Binary(vec![1u8, 2, 3].into())).await;
    ws.expect(r#"{"id":"error","message":"invalid message: binary frames are not supported, send JSON text"}"#).await;
    let big = format!(r#"{{"id":"register","name":"{}"}}"#, "x".repeat(70 * 1024));
    ws.send(&big).await;
    ws.expect(&format!(
        r#"{{"id":"error","message":"invalid message: {} bytes is over the limit of 65536 bytes"}}"#,
        big.len()
    ))
    .await;
    // Still usable.
    ws.send(r#"{"id":"register","name":"fuzzy"}"#).await;
    ws.expect(r#"{"id":"registerResponse","response":"accepted"}"#).await;
    // Far beyond the limit: an error, then the socket is closed with 1009.
    ws.send(&"y".repeat(1024 * 1024)).await;
    ws.expect(
        r#"{"id":"error","message":"invalid message: over 262144 bytes, the limit is 65536 bytes; closing the connection"}"#,
    )
    .await;
    let closed = ws.recv().await;
    assert!(closed.starts_with("CLOSE Some(CloseFrame { code: Size"), "{closed}");
    wait_for_metric(&server, "one2one_registered_users 0").await;
    server.shutdown().await;
}

#[tokio::test]
async fn rate_limit() {
    let mut config = default_config();
    config.limits.rate_per_sec = 5.0;
    config.limits.burst = 10.0;
    config.limits.max_violations = 1000;
    let server = start_server(config).await;
    let mut ws = Ws::connect(&server, "chatty").await;
    for _ in 0..30 {
        ws.send(r#"{"id":"dance"}"#).await;
    }
    let mut limited = 0;
    for _ in 0..30 {
        if ws.recv().await == r#"{"id":"error","message":"rate limit exceeded: message dropped"}"# {
            limited += 1;
        }
    }
    assert!(limited >= 15, "only {limited} of 30 messages were limited");
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_tells_users() {
    let server = scripted().await;
    let (mut alice, mut bob) = established(&server).await;
    server.shutdown().await;
    alice.expect(r#"{"id":"stopCommunication","message":"server shutting down"}"#).await;
    bob.expect(r#"{"id":"stopCommunication","message":"server shutting down"}"#).await;
    let closed = alice.recv().await;
    assert!(closed.contains("Away") && closed.contains("server shutting down"), "{closed}");
}

#[tokio::test]
async fn health_metrics_and_client_config() {
    let mut config = default_config();
    config.ice_servers = vec![one2one_server::IceServer {
        urls: vec!["turn:turn.example.org:3478".into()],
        username: Some("u".into()),
        credential: Some("p".into()),
    }];
    let server = start_server(config).await;
    let get = |path: &'static str| http_get(server.addr, path);
    assert!(get("/healthz").await.ends_with("ok\n"));
    let cfg = get("/api/config").await;
    assert!(
        cfg.ends_with(r#"{"iceServers":[{"credential":"p","urls":["turn:turn.example.org:3478"],"username":"u"}]}"#),
        "{cfg}"
    );
    let page = get("/").await;
    assert!(page.contains("<video") && page.contains("app.js"), "{page}");
    let _a = Ws::user(&server, "alice").await;
    let m = get("/metrics").await;
    for needle in [
        "one2one_registered_users 1",
        "one2one_active_calls 0",
        "one2one_relayed_packets_total 0",
        "one2one_relayed_bytes_total 0",
        "# TYPE one2one_call_setup_seconds histogram",
        "one2one_call_setup_seconds_bucket{le=\"+Inf\"} 0",
    ] {
        assert!(m.contains(needle), "{needle} missing in\n{m}");
    }
    server.shutdown().await;
}

async fn wait_for_metric(server: &one2one_server::Server, needle: &str) {
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

#[tokio::test]
async fn garbage_from_many_sockets_never_breaks_the_server() {
    let server = scripted().await;
    let mut alice = Ws::user(&server, "alice").await;
    let pieces = [
        r#"{"id":"call","to":"alice","sdpOffer":"v=0"}"#,
        r#"{"id":"register","name":"alice"}"#,
        r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":""}"#,
        r#"{"id":"onIceCandidate","candidate":{"candidate":"\u0000","sdpMLineIndex":65535}}"#,
        r#"{"id":"stop"}"#,
        "{",
        "}",
        "\"",
        "null",
        "[[[[[[[[[[",
        "\u{feff}",
        "💥",
        r#"{"id":{"id":"stop"}}"#,
    ];
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut sent = 0;
    for conn in 0..10 {
        let mut ws = Ws::connect(&server, &format!("garbage{conn}")).await;
        if conn % 2 == 0 {
            ws.send(&format!(r#"{{"id":"register","name":"g{conn}"}}"#)).await;
        }
        for _ in 0..100 {
            let n = (next() % 4) as usize + 1;
            let text: String = (0..n).map(|_| pieces[(next() % pieces.len() as u64) as usize]).collect();
            ws.send(&text).await;
            sent += 1;
        }
        ws.close().await;
    }
    // The server still works for everyone else. (The garbage rang alice
    // too; those calls ended when their sockets closed.)
    let mut bob = Ws::user(&server, "bob").await;
    wait_for_metric(&server, "one2one_active_calls 0").await;
    bob.send(&call_json("bob", "alice", "v=0\r\n")).await;
    while alice.recv_signal().await != r#"{"id":"incomingCall","from":"bob"}"# {}
    println!("{sent} garbage frames sent on 10 sockets");
    server.shutdown().await;
}

#[tokio::test]
async fn media_ports_come_from_the_configured_range() {
    let mut config = default_config();
    config.relay.ports = one2one_server::media::relay::PortPolicy::Range(47100, 47103);
    let server = start_server(config).await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut bob = Ws::user(&server, "bob").await;
    let (_pa, offer_a) = real_offer().await;
    let (_pb, offer_b) = real_offer().await;
    alice.send(&call_json("alice", "bob", &offer_a)).await;
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    bob.send(&accept_json("alice", &offer_b)).await;
    let mut ports = vec![];
    loop {
        let m = alice.recv().await;
        if let Ok(shared_proto::ServerMsg::IceCandidate { candidate }) = shared_proto::decode_server(&m) {
            let port: u16 = candidate.candidate.split(' ').nth(5).unwrap().parse().unwrap();
            ports.push(port);
        }
        if m.starts_with(r#"{"id":"callResponse""#) && !ports.is_empty() {
            break;
        }
    }
    assert!(ports.iter().all(|p| (47100..=47103).contains(p)), "{ports:?}");
    // Two legs, two ports: a second call fits, a third does not.
    let mut carol = Ws::user(&server, "carol").await;
    let mut dave = Ws::user(&server, "dave").await;
    carol.send(&call_json("carol", "dave", &offer_a)).await;
    dave.expect(r#"{"id":"incomingCall","from":"carol"}"#).await;
    dave.send(&accept_json("carol", &offer_b)).await;
    assert!(carol.recv_signal().await.starts_with(r#"{"id":"callResponse","response":"accepted""#));
    let mut erin = Ws::user(&server, "erin").await;
    let mut frank = Ws::user(&server, "frank").await;
    erin.send(&call_json("erin", "frank", &offer_a)).await;
    frank.expect(r#"{"id":"incomingCall","from":"erin"}"#).await;
    frank.send(&accept_json("erin", &offer_b)).await;
    erin.expect(
        r#"{"id":"callResponse","response":"rejected","message":"server busy: no free UDP port left in 47100-47103"}"#,
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn web_root_serves_another_page_next_to_the_signaling() {
    let dir = std::env::temp_dir().join(format!("one2one-webroot-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("js")).unwrap();
    std::fs::write(dir.join("index.html"), "<title>the tutorial's page</title>").unwrap();
    std::fs::write(dir.join("js/index.js"), "var ws = new WebSocket('wss://' + location.host + '/one2one');").unwrap();
    let mut config = default_config();
    config.web_root = Some(dir.clone());
    let server = start_server(config).await;
    let get = |path: &'static str| http_get(server.addr, path);
    assert!(get("/").await.ends_with("<title>the tutorial's page</title>"));
    assert!(get("/js/index.js").await.contains("/one2one"));
    assert!(get("/missing.js").await.starts_with("HTTP/1.1 404"));
    let _alice = Ws::user(&server, "alice").await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A plain HTTP/1.1 GET; the whole response, headers included.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// alice calls bob, bob accepts: the media backend takes it from there.
async fn accept(server: &one2one_server::Server) -> (Ws, Ws) {
    let mut alice = Ws::user(server, "alice").await;
    let mut bob = Ws::user(server, "bob").await;
    alice.send(&call_json("alice", "bob", OFFER_A)).await;
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    bob.send(&accept_json("alice", OFFER_B)).await;
    (alice, bob)
}

async fn all_released(script: &Script) {
    let released = script
        .wait_for(DEADLINE, |cmds| {
            let started = cmds.iter().filter(|c| matches!(c, MediaCmd::Start { .. })).count();
            let released = cmds.iter().filter(|c| matches!(c, MediaCmd::Release { .. })).count();
            started > 0 && started == released
        })
        .await;
    assert!(released.is_ok(), "not every call was released: {released:?}");
    assert_eq!(script.live_calls(), 0);
}

#[tokio::test]
async fn late_answers_still_make_the_call() {
    let (server, script) = scripted_server(Reply::After(Duration::from_millis(400))).await;
    let (mut alice, mut bob) = accept(&server).await;
    // Each leg's candidate comes before its answer (the page library
    // queues it).
    let tagged = format!(
        r#"{{"id":"iceCandidate","candidate":{{"candidate":"{}","sdpMid":"0","sdpMLineIndex":0,"__module__":"kurento","__type__":"IceCandidate"}}}}"#,
        scripted::CANDIDATE
    );
    assert_eq!(bob.recv().await, tagged);
    assert_eq!(bob.recv().await, accepted_json(Leg::Callee));
    assert_eq!(alice.recv().await, tagged);
    assert_eq!(alice.recv().await, accepted_json(Leg::Caller));
    wait_for_metric(&server, "one2one_calls_established_total 1").await;
    alice.send(r#"{"id":"stop"}"#).await;
    bob.expect(r#"{"id":"stopCommunication","message":"remote user hanged out"}"#).await;
    all_released(&script).await;
    server.shutdown().await;
}

#[tokio::test]
async fn media_that_never_answers_ends_in_the_setup_timeout() {
    let script = Script::new(Reply::Never);
    let mut config = default_config();
    config.media = MediaConfig::Custom(script.factory());
    config.signaling.setup_timeout = Duration::from_millis(500);
    let server = start_server(config).await;
    let started = std::time::Instant::now();
    let (mut alice, mut bob) = accept(&server).await;
    alice.expect(r#"{"id":"callResponse","response":"rejected","message":"media setup timed out"}"#).await;
    bob.expect(r#"{"id":"stopCommunication","message":"media setup timed out"}"#).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    all_released(&script).await;
    // The next call goes through.
    script.push(Reply::Now);
    alice.send(&call_json("alice", "bob", OFFER_A)).await;
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    bob.send(&accept_json("alice", OFFER_B)).await;
    bob.expect(&accepted_json(Leg::Callee)).await;
    alice.expect(&accepted_json(Leg::Caller)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_media_failure_reaches_both_users_with_its_reason() {
    let error = MediaError::Refused { what: "processOffer".into(), code: 40001, message: "SDP parse error".into() };
    let (server, script) = scripted_server(Reply::Fail(error)).await;
    let (mut alice, mut bob) = accept(&server).await;
    let msg = "media server refused processOffer: SDP parse error (code 40001)";
    alice.expect(&format!(r#"{{"id":"callResponse","response":"rejected","message":"{msg}"}}"#)).await;
    bob.expect(&format!(r#"{{"id":"stopCommunication","message":"{msg}"}}"#)).await;
    all_released(&script).await;
    wait_for_metric(&server, r#"one2one_calls_ended_total{reason="media failed"} 1"#).await;
    server.shutdown().await;
}

#[tokio::test]
async fn media_lost_after_one_answer_ends_the_call_for_both() {
    let error = MediaError::Lost("the connection to ws://kms:8888/kurento broke".into());
    let (server, script) = scripted_server(Reply::AnswerThenFail(Duration::from_millis(200), error)).await;
    let (mut alice, mut bob) = accept(&server).await;
    let msg = "media server lost: the connection to ws://kms:8888/kurento broke";
    // Only one answer came: neither user was told the call is up.
    alice.expect(&format!(r#"{{"id":"callResponse","response":"rejected","message":"{msg}"}}"#)).await;
    bob.expect(&format!(r#"{{"id":"stopCommunication","message":"{msg}"}}"#)).await;
    all_released(&script).await;
    server.shutdown().await;
}

#[tokio::test]
async fn candidates_reach_the_backend_in_order_for_their_leg() {
    let (server, script) = scripted_server(Reply::Never).await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut bob = Ws::user(&server, "bob").await;
    let cand = |c: &str| {
        format!(
            r#"{{"id":"onIceCandidate","candidate":{{"candidate":"candidate:{c} 1 udp 1 192.0.2.9 9 typ host","sdpMid":"0","sdpMLineIndex":0}}}}"#
        )
    };
    // Before the call, while ringing, and after the accept.
    alice.send(&cand("a1")).await;
    alice.send(&call_json("alice", "bob", OFFER_A)).await;
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    alice.send(&cand("a2")).await;
    bob.send(&cand("b1")).await;
    bob.send(&accept_json("alice", OFFER_B)).await;
    alice.send(&cand("a3")).await;
    bob.send(&cand("b2")).await;
    let seen = script
        .wait_for(DEADLINE, |cmds| cmds.iter().filter(|c| matches!(c, MediaCmd::AddCandidate { .. })).count() == 5)
        .await;
    assert!(seen.is_ok(), "{seen:?}");
    let cmds = script.commands();
    assert!(
        matches!(&cmds[0], MediaCmd::Start { caller_offer, callee_offer, .. } if caller_offer == OFFER_A && callee_offer == OFFER_B)
    );
    let per_leg = |leg: Leg| -> Vec<String> {
        cmds.iter()
            .filter_map(|c| match c {
                MediaCmd::AddCandidate { leg: l, candidate, .. } if *l == leg => {
                    Some(candidate.candidate.split(' ').next().unwrap_or("").to_owned())
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(per_leg(Leg::Caller), ["candidate:a1", "candidate:a2", "candidate:a3"]);
    assert_eq!(per_leg(Leg::Callee), ["candidate:b1", "candidate:b2"]);
    alice.close().await;
    bob.expect(r#"{"id":"stopCommunication","message":"remote user hanged out"}"#).await;
    all_released(&script).await;
    server.shutdown().await;
}
