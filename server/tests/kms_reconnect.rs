//! `--kms-listen` sessions across socket loss: a closed socket's objects
//! (and their relay legs) are released once the grace period passes; a
//! `connect {sessionId}` within it keeps them, and the call goes on.

mod common;
mod kms_support;

use std::sync::Arc;
use std::time::Duration;

use common::{media_ip, real_offer};
use kms_support::*;
use one2one_server::kms::{self, KmsConfig};
use one2one_server::media::relay::{Relay, RelayConfig};
use one2one_server::metrics::Metrics;
use serde_json::json;

const GRACE: Duration = Duration::from_millis(1500);

async fn endpoint() -> (kms::KmsEndpoint, Arc<Metrics>) {
    common::init_tracing();
    let metrics = Arc::new(Metrics::default());
    let relay = Relay::new(RelayConfig { media_ips: vec![media_ip()], ..Default::default() }, metrics.clone());
    let mut cfg = KmsConfig::default();
    cfg.core.grace = GRACE;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (kms::serve(listener, cfg, relay, metrics.clone()).await.unwrap(), metrics)
}

/// A session with a pipeline and two endpoints that answered offers.
async fn negotiated(kms: &mut Kms) -> (String, String, String, String) {
    let s = kms.call("describe", json!({ "object": "manager_ServerManager" })).await["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = kms.call("create", json!({ "type": "MediaPipeline", "properties": {}, "sessionId": s })).await["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut eps = vec![];
    for _ in 0..2 {
        let ep = kms
            .call(
                "create",
                json!({ "type": "WebRtcEndpoint", "constructorParams": { "mediaPipeline": p }, "sessionId": s }),
            )
            .await["value"]
            .as_str()
            .unwrap()
            .to_owned();
        let (_peer, offer) = real_offer().await;
        kms.call(
            "invoke",
            json!({ "object": ep, "operation": "processOffer", "operationParams": { "offer": offer }, "sessionId": s }),
        )
        .await;
        eps.push(ep);
    }
    let eb = eps.pop().unwrap();
    let ea = eps.pop().unwrap();
    (s, p, ea, eb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_sockets_objects_are_released_after_the_grace() {
    let (server, metrics) = endpoint().await;
    let mut kms = Kms::connect(server.addr).await;
    let _ = negotiated(&mut kms).await;
    metric_when(&metrics, "one2one_kms_endpoints", |v| v == 2).await;
    let closed = tokio::time::Instant::now();
    kms.close().await;
    metric_when(&metrics, "one2one_kms_connections", |v| v == 0).await;
    // Kept during the grace...
    assert_eq!(metric_when(&metrics, "one2one_kms_endpoints", |_| true).await, 2);
    assert_eq!(metric_when(&metrics, "one2one_kms_sessions", |_| true).await, 1);
    // ...and released after it.
    metric_when(&metrics, "one2one_kms_endpoints", |v| v == 0).await;
    assert!(closed.elapsed() >= GRACE, "released after {:?}", closed.elapsed());
    metric_when(&metrics, "one2one_kms_pipelines", |v| v == 0).await;
    metric_when(&metrics, "one2one_kms_sessions", |v| v == 0).await;
    // The session is gone: a reconnect is told so.
    let mut again = Kms::connect(server.addr).await;
    let e = again.call_err("connect", json!({ "sessionId": "gone" })).await;
    assert_eq!(e["code"], 40007, "{e}");
    assert_eq!(e["data"]["type"], "INVALID_SESSION");
    again.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_the_session_id_within_the_grace_keeps_the_call() {
    let (server, metrics) = endpoint().await;
    let mut kms = Kms::connect(server.addr).await;
    let mut a = Browser::new(media_ip()).await;
    let mut b = Browser::new(media_ip()).await;
    let call = tutorial_call(&mut kms, &mut a, &mut b, true).await;
    let s = call.session.clone();
    let sources = [([220, 40, 40], 440.0), ([40, 60, 220], 660.0)];
    let enough = |g: &Got| g.frames >= 10 && g.pcm.len() >= 48_000 / 2;
    exchange(&mut kms, &call, [&mut a, &mut b], sources, Duration::from_secs(20), enough).await;
    // The socket drops (no close handshake) and kurento-client reconnects:
    // ping, then connect with its session, then what waited.
    drop(kms);
    metric_when(&metrics, "one2one_kms_connections", |v| v == 0).await;
    let mut kms = Kms::connect(server.addr).await;
    assert_eq!(kms.call("ping", json!({})).await, json!({ "value": "pong" }));
    let r = kms.call("connect", json!({ "sessionId": s })).await;
    assert_eq!(r["sessionId"], json!(s), "{r}");
    assert_eq!(r["serverId"].as_str().map(str::len), Some(36), "{r}");
    // Past the grace, everything is still there and the media flows.
    tokio::time::sleep(GRACE + Duration::from_millis(300)).await;
    assert_eq!(metric_when(&metrics, "one2one_kms_endpoints", |_| true).await, 2);
    let got = exchange(&mut kms, &call, [&mut a, &mut b], sources, Duration::from_secs(20), enough).await;
    for (g, (rgb, _)) in got.iter().zip([sources[1], sources[0]]) {
        let seen = g.last_rgb.expect("video decoded");
        assert!(one2one_media::colour_distance(seen, rgb) <= 24, "{seen:?} vs {rgb:?}");
    }
    // Requests after the reconnect work on the old objects.
    let r = kms.call("invoke", json!({ "object": call.ea, "operation": "gatherCandidates", "sessionId": s })).await;
    assert_eq!(r, json!({ "sessionId": s }));
    kms.call("release", json!({ "object": call.pipeline, "sessionId": s })).await;
    metric_when(&metrics, "one2one_kms_endpoints", |v| v == 0).await;
    a.peer.close().await;
    b.peer.close().await;
    kms.close().await;
    metric_when(&metrics, "one2one_kms_sessions", |v| v == 0).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_an_expired_session_gets_a_new_one() {
    let (server, metrics) = endpoint().await;
    let mut kms = Kms::connect(server.addr).await;
    let (s, ..) = negotiated(&mut kms).await;
    kms.close().await;
    metric_when(&metrics, "one2one_kms_sessions", |v| v == 0).await;
    // kurento-client keeps sending its old sessionId after a 40007; the
    // reply carries the new one, which it adopts.
    let mut kms = Kms::connect(server.addr).await;
    let e = kms.call_err("connect", json!({ "sessionId": s })).await;
    assert_eq!(e["message"], format!("Invalid session '{s}'"));
    let r = kms.call("create", json!({ "type": "MediaPipeline", "sessionId": s })).await;
    let new = r["sessionId"].as_str().unwrap();
    assert_ne!(new, s);
    assert!(r["value"].as_str().unwrap().ends_with("_kurento.MediaPipeline"));
    kms.close().await;
    server.shutdown().await;
}
