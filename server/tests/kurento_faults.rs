//! `--media kurento` when the media server fails: every way it can fail a
//! call ends with the caller's `callResponse` rejected (or, once the call
//! was answered, its `stopCommunication`) and the callee's
//! `stopCommunication`, both with a readable reason, within 5 s; and the
//! server keeps serving calls.
//!
//! Real sockets throughout: the server under test in this process, users
//! on its `/one2one` WebSocket, and a scripted media server
//! (`kurento_support::fake_kms`) in this process or, to be killed with
//! SIGKILL, in a child process.

mod common;
mod kurento_support;

use std::time::{Duration, Instant};

use kurento_support::fake_kms::{Action, FakeKms};
use kurento_support::*;

/// The child process of the kill -9 and restart tests (does nothing when
/// run as a test).
#[tokio::test]
async fn fake_kms_process() {
    serve_if_asked().await;
}

/// What the callee is told when the caller hangs up (the original's words).
const HANGUP: &str = "remote user hanged out";

fn log_told(what: &str, since: Instant) {
    eprintln!("{what}: both users told after {} ms", since.elapsed().as_millis());
}

/// Both users are told `reason` while the call is being set up: the
/// caller a rejected `callResponse`, the callee a `stopCommunication`.
async fn both_told_during_setup(a: &mut Ws, b: &mut Ws, reason: &str, accepted: Instant) {
    let by = accepted + TOLD_WITHIN;
    b.expect_by(&stopped(reason), by).await;
    a.expect_by(&rejected(reason), by).await;
}

/// A call after a failure still works on the same server.
async fn still_serves(server: &one2one_server::Server, caller: &str, callee: &str) {
    let (mut a, mut b) = established_call(server, caller, callee).await;
    a.send(r#"{"id":"stop"}"#).await;
    b.expect(&stopped(HANGUP)).await;
}

#[tokio::test]
async fn kms_not_running_at_call_time() {
    let uri = format!("ws://127.0.0.1:{}/kurento", free_port());
    let server = start_server(kurento(std::slice::from_ref(&uri))).await;
    let (status, body) = http_get(&server, "/healthz").await;
    assert_eq!((status, body.trim()), (503, "degraded: no Kurento Media Server reachable"));
    let (mut a, mut b) = ring(&server, "alice", "bob").await;
    let accepted = accept(&mut b, "alice").await;
    both_told_during_setup(&mut a, &mut b, "media server unreachable: no Kurento Media Server answers", accepted).await;
    log_told("not running", accepted);
    let m = metrics_when(&server, "the dead server", |m| m.contains("one2one_kms_up")).await;
    assert_eq!(series(&m, &format!("one2one_kms_up{{uri=\"{uri}\"}}")), Some(0), "{m}");
    assert_eq!(series(&m, &format!("one2one_kms_active_calls{{uri=\"{uri}\"}}")), Some(0), "{m}");
    // The users can call again (and are told again).
    a.send_json(serde_json::json!({"id":"call","from":"alice","to":"bob","sdpOffer":OFFER_A})).await;
    b.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_error_reply_fails_the_call_with_its_message() {
    let kms = FakeKms::start().await;
    kms.fail("invoke:processOffer", Action::Error(40205, "Error processing offer".into()), 1);
    let server = start_server(kurento(&[kms.uri()])).await;
    kms_up(&server, &kms.uri()).await;
    let (mut a, mut b) = ring(&server, "alice", "bob").await;
    let accepted = accept(&mut b, "alice").await;
    let reason = "media server refused processOffer for the caller: Error processing offer (code 40205)";
    both_told_during_setup(&mut a, &mut b, reason, accepted).await;
    log_told("error reply", accepted);
    // The pipeline is released, and the next call works.
    kms.wait_for(DEADLINE, |f| f.iter().any(|l| l.method() == "release")).await.expect("release");
    assert_eq!(kms.live_pipelines(), 0);
    still_serves(&server, "carol", "dave").await;
    let m = metrics_when(&server, "an error", |m| {
        series(m, &format!("one2one_kms_request_errors_total{{uri=\"{}\"}}", kms.uri())) == Some(1)
    })
    .await;
    assert_eq!(series(&m, &format!("one2one_kms_up{{uri=\"{}\"}}", kms.uri())), Some(1));
    server.shutdown().await;
}

#[tokio::test]
async fn a_reply_that_never_comes_fails_the_call_in_time() {
    let kms = FakeKms::start().await;
    kms.fail("invoke:processOffer", Action::Never, 1);
    let server = start_server(kurento(&[kms.uri()])).await;
    kms_up(&server, &kms.uri()).await;
    let (mut a, mut b) = ring(&server, "alice", "bob").await;
    let accepted = accept(&mut b, "alice").await;
    both_told_during_setup(
        &mut a,
        &mut b,
        "media server did not answer processOffer for the caller within 4 s",
        accepted,
    )
    .await;
    log_told("no reply", accepted);
    kms.wait_for(DEADLINE, |f| f.iter().any(|l| l.method() == "release")).await.expect("release");
    assert_eq!(kms.live_pipelines(), 0);
    still_serves(&server, "carol", "dave").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_malformed_frame_fails_the_call_it_may_have_answered() {
    let kms = FakeKms::start().await;
    kms.fail("create:WebRtcEndpoint", Action::Garbage("}{ not json".into()), 1);
    let server = start_server(kurento(&[kms.uri()])).await;
    kms_up(&server, &kms.uri()).await;
    let (mut a, mut b) = ring(&server, "alice", "bob").await;
    let accepted = accept(&mut b, "alice").await;
    both_told_during_setup(&mut a, &mut b, "media error: the media server sent a malformed frame", accepted).await;
    log_told("malformed frame", accepted);
    kms.wait_for(DEADLINE, |f| f.iter().any(|l| l.method() == "release")).await.expect("release");
    assert_eq!(kms.live_pipelines(), 0);
    still_serves(&server, "carol", "dave").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_null_result_fails_the_call() {
    let kms = FakeKms::start().await;
    kms.fail("create:MediaPipeline", Action::Garbage(r#"{"id":3,"jsonrpc":"2.0","result":null}"#.into()), 1);
    let server = start_server(kurento(&[kms.uri()])).await;
    kms_up(&server, &kms.uri()).await;
    let (mut a, mut b) = ring(&server, "alice", "bob").await;
    let accepted = accept(&mut b, "alice").await;
    let reason = "media error: the media server sent a malformed answer to create MediaPipeline";
    both_told_during_setup(&mut a, &mut b, reason, accepted).await;
    still_serves(&server, "carol", "dave").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_kms_killed_mid_call_ends_it_for_both() {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let kms = KmsProcess::start("fake_kms_process", addr);
    let uri = kms.uri();
    let server = start_server(kurento(std::slice::from_ref(&uri))).await;
    kms_up(&server, &uri).await;
    let (mut a, mut b) = established_call(&server, "alice", "bob").await;
    kms.kill9();
    let killed = Instant::now();
    let reason = "media server lost: the connection to it broke and did not come back within 2 s";
    b.expect_by(&stopped(reason), killed + TOLD_WITHIN).await;
    a.expect_by(&stopped(reason), killed + TOLD_WITHIN).await;
    log_told("killed -9", killed);
    let (status, body) = http_get(&server, "/healthz").await;
    assert_eq!((status, body.trim()), (503, "degraded: no Kurento Media Server reachable"));
    // Nothing to put calls on now: refused at once.
    a.send_json(serde_json::json!({"id":"call","from":"alice","to":"bob","sdpOffer":OFFER_A})).await;
    b.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    let accepted = accept(&mut b, "alice").await;
    both_told_during_setup(&mut a, &mut b, "media server unreachable: no Kurento Media Server answers", accepted).await;
    // It comes back: calls go there again.
    let _kms = KmsProcess::start("fake_kms_process", addr);
    kms_up(&server, &uri).await;
    still_serves(&server, "carol", "dave").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_restarted_kms_has_forgotten_the_session() {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let kms = KmsProcess::start("fake_kms_process", addr);
    let uri = kms.uri();
    let server = start_server(kurento(std::slice::from_ref(&uri))).await;
    kms_up(&server, &uri).await;
    let (mut a, mut b) = established_call(&server, "alice", "bob").await;
    kms.kill9();
    let killed = Instant::now();
    let _kms = KmsProcess::start("fake_kms_process", addr);
    eprintln!("restarted after {} ms", killed.elapsed().as_millis());
    let reason = "media server lost: it restarted and no longer knows this call";
    b.expect_by(&stopped(reason), killed + TOLD_WITHIN).await;
    a.expect_by(&stopped(reason), killed + TOLD_WITHIN).await;
    log_told("restarted", killed);
    // A new session on the restarted server carries new calls.
    kms_up(&server, &uri).await;
    still_serves(&server, "carol", "dave").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_resumed_session_keeps_its_calls() {
    let kms = FakeKms::start().await;
    let server = start_server(kurento(&[kms.uri()])).await;
    kms_up(&server, &kms.uri()).await;
    let (mut a, mut b) = established_call(&server, "alice", "bob").await;
    let session = kms.frames().iter().find_map(|l| l.frame["params"]["sessionId"].as_str().map(str::to_owned)).unwrap();
    // The socket breaks; the server is still there and knows the session.
    kms.drop_connections();
    kms.wait_for(DEADLINE, |f| f.iter().any(|l| l.method() == "connect")).await.expect("connect {sessionId}");
    let frames = kms.frames();
    let resumed = frames.iter().find(|l| l.method() == "connect").unwrap();
    assert_eq!(resumed.frame["params"], serde_json::json!({ "sessionId": session }));
    let before = frames.iter().position(|l| l.method() == "connect").unwrap();
    assert_eq!(frames[before - 1].method(), "ping", "a ping first on the new socket");
    kms_up(&server, &kms.uri()).await;
    // Past the grace, the call is still up, and its candidates still go.
    a.send_json(serde_json::json!({"id":"onIceCandidate","candidate":{"candidate":"candidate:9 1 udp 1 192.0.2.9 9 typ host","sdpMid":"0","sdpMLineIndex":0}})).await;
    kms.wait_for(DEADLINE, |f| f.iter().any(|l| l.key() == "invoke:addIceCandidate")).await.expect("candidate");
    assert_eq!(a.signal_within(Duration::from_millis(2500)).await, None);
    assert_eq!(b.signal_within(Duration::from_millis(100)).await, None);
    a.send(r#"{"id":"stop"}"#).await;
    b.expect(&stopped(HANGUP)).await;
    kms.wait_for(DEADLINE, |f| f.iter().any(|l| l.method() == "release")).await.expect("release");
    assert_eq!(kms.live_pipelines(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn two_kms_one_dead_calls_go_to_the_live_one() {
    let dead = format!("ws://127.0.0.1:{}/kurento", free_port());
    let live = FakeKms::start().await;
    let server = start_server(kurento(&[dead.clone(), live.uri()])).await;
    kms_up(&server, &live.uri()).await;
    let (status, _) = http_get(&server, "/healthz").await;
    assert_eq!(status, 200);
    let (_a, _b) = established_call(&server, "alice", "bob").await;
    let (_c, _d) = established_call(&server, "carol", "dave").await;
    let m = metrics_when(&server, "two calls", |m| {
        series(m, &format!("one2one_kms_active_calls{{uri=\"{}\"}}", live.uri())) == Some(2)
    })
    .await;
    assert_eq!(series(&m, &format!("one2one_kms_up{{uri=\"{dead}\"}}")), Some(0), "{m}");
    assert_eq!(series(&m, &format!("one2one_kms_active_calls{{uri=\"{dead}\"}}")), Some(0), "{m}");
    assert_eq!(series(&m, &format!("one2one_kms_up{{uri=\"{}\"}}", live.uri())), Some(1), "{m}");
    assert_eq!(live.live_pipelines(), 2);
    server.shutdown().await;
    // Shutdown releases what is on the live one.
    assert_eq!(live.live_pipelines(), 0);
}

#[tokio::test]
async fn new_calls_go_to_the_server_with_fewest_calls() {
    let one = FakeKms::start().await;
    let two = FakeKms::start().await;
    let server = start_server(kurento(&[one.uri(), two.uri()])).await;
    kms_up(&server, &one.uri()).await;
    kms_up(&server, &two.uri()).await;
    let (mut a, mut b) = established_call(&server, "alice", "bob").await;
    let (_c, _d) = established_call(&server, "carol", "dave").await;
    assert_eq!((one.live_pipelines(), two.live_pipelines()), (1, 1));
    a.send(r#"{"id":"stop"}"#).await;
    b.expect(&stopped(HANGUP)).await;
    one.wait_for(DEADLINE, |f| f.iter().any(|l| l.method() == "release")).await.expect("release");
    let (_e, _f) = established_call(&server, "erin", "frank").await;
    assert_eq!((one.live_pipelines(), two.live_pipelines()), (1, 1));
    server.shutdown().await;
}

#[tokio::test]
async fn a_hang_up_before_the_pipeline_exists_releases_it_once_it_does() {
    let kms = FakeKms::start().await;
    kms.fail("create:MediaPipeline", Action::Late(Duration::from_millis(500)), 1);
    let server = start_server(kurento(&[kms.uri()])).await;
    kms_up(&server, &kms.uri()).await;
    let (mut a, mut b) = ring(&server, "alice", "bob").await;
    accept(&mut b, "alice").await;
    kms.wait_for(DEADLINE, |f| f.iter().any(|l| l.key() == "create:MediaPipeline")).await.expect("create");
    a.send(r#"{"id":"stop"}"#).await;
    b.expect(&stopped(HANGUP)).await;
    kms.wait_for(DEADLINE, |f| f.iter().any(|l| l.method() == "release")).await.expect("release");
    let frames = kms.frames();
    assert_eq!(kms.live_pipelines(), 0);
    assert!(!frames.iter().any(|l| l.key() == "create:WebRtcEndpoint"), "nothing more built: {frames:?}");
    still_serves(&server, "carol", "dave").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_hang_up_mid_setup_releases_the_pipeline() {
    let kms = FakeKms::start().await;
    kms.fail("invoke:processOffer", Action::Never, 1);
    let server = start_server(kurento(&[kms.uri()])).await;
    kms_up(&server, &kms.uri()).await;
    let (mut a, mut b) = ring(&server, "alice", "bob").await;
    accept(&mut b, "alice").await;
    kms.wait_for(DEADLINE, |f| f.iter().any(|l| l.key() == "invoke:processOffer")).await.expect("processOffer");
    b.send(r#"{"id":"stop"}"#).await;
    a.expect(&rejected(HANGUP)).await;
    kms.wait_for(DEADLINE, |f| f.iter().any(|l| l.method() == "release")).await.expect("release");
    assert_eq!(kms.live_pipelines(), 0);
    // The processOffer's timeout, later, tells nobody anything.
    assert_eq!(a.signal_within(Duration::from_millis(4500)).await, None);
    server.shutdown().await;
}
