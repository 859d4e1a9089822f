//! `--kms-listen` against bad input: every case gets its JSON-RPC error
//! (exact code and message) or a close, the server process keeps serving
//! calls afterwards, and many rounds leave no fds or memory behind.

mod common;
mod kms_support;

use std::time::Duration;

use common::{media_ip, real_offer};
use kms_support::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn assert_error(e: &Value, code: i64, message: &str) {
    assert_eq!(e["code"], code, "{e}");
    assert_eq!(e["message"], message, "{e}");
}

/// Sends one raw frame and returns the error of the reply.
async fn raw_error(kms: &mut Kms, frame: Message) -> Value {
    kms.send_raw(frame).await;
    let v = kms.next_frame(DEADLINE).await.expect("a reply");
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    v
}

/// A session with a pipeline and two endpoints.
async fn objects(kms: &mut Kms) -> (String, String, String, String) {
    let s = kms.call("describe", json!({ "object": "manager_ServerManager" })).await["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = kms.call("create", json!({ "type": "MediaPipeline", "properties": {}, "sessionId": s })).await["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let ep = json!({ "type": "WebRtcEndpoint", "constructorParams": { "mediaPipeline": p }, "sessionId": s });
    let ea = kms.call("create", ep.clone()).await["value"].as_str().unwrap().to_owned();
    let eb = kms.call("create", ep).await["value"].as_str().unwrap().to_owned();
    (s, p, ea, eb)
}

fn invoke(s: &str, object: &str, operation: &str, params: Value) -> Value {
    json!({ "object": object, "operation": operation, "operationParams": params, "sessionId": s })
}

/// Every case of bad input on one connection (and a second one for the
/// foreign session), with its exact error.
async fn bad_inputs(server: &KmsServer) {
    let mut kms = Kms::connect(server.kms).await;
    // Not JSON, as text and as binary.
    let v = raw_error(&mut kms, Message::Text("not json".into())).await;
    assert_eq!(v, json!({"error":{"code":-32700,"message":"Parse error."},"id":null,"jsonrpc":"2.0"}));
    let v = raw_error(&mut kms, Message::Binary(vec![0xff, 0xfe, 0x00].into())).await;
    assert_error(&v["error"], -32700, "Parse error.");
    // Not a request.
    for (frame, id) in [
        ("[1,2]", Value::Null),
        (r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, json!(1)),
        (r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#, Value::Null),
        (r#"{"jsonrpc":"2.0","id":2}"#, json!(2)),
    ] {
        let v = raw_error(&mut kms, Message::Text(frame.into())).await;
        assert_error(&v["error"], -32600, "Invalid JSON-RPC request.");
        assert_eq!(v["id"], id, "{frame}: {v}");
    }
    let v =
        raw_error(&mut kms, Message::Text(r#"{"jsonrpc":"2.0","id":3,"method":"create","params":[1]}"#.into())).await;
    assert_error(&v["error"], -32602, "'params' is required");
    assert_error(&kms.call_err("frobnicate", json!({})).await, -32601, "Method not found.");
    assert_error(&kms.call_err("create", json!({})).await, -32000, "'type' parameter is required");
    assert_error(&kms.call_err("create", json!({ "type": 5 })).await, -32000, "'type' parameter should be a string");
    // Outside the one-to-one topology.
    for t in ["RecorderEndpoint", "PlayerEndpoint", "FaceOverlayFilter", "Composite"] {
        let e = kms.call_err("create", json!({ "type": t, "constructorParams": {} })).await;
        assert_error(
            &e,
            40100,
            &format!(
                "one2one-server does not support {t}: it carries one-to-one calls with MediaPipeline and \
                 WebRtcEndpoint only"
            ),
        );
        assert_eq!(e["data"]["type"], "MEDIA_OBJECT_TYPE_NOT_FOUND");
    }
    assert_error(&kms.call_err("create", json!({ "type": "Banana" })).await, 40100, "Unknown type 'Banana'");
    assert_error(
        &kms.call_err("create", json!({ "type": "WebRtcEndpoint" })).await,
        40001,
        "'mediaPipeline' parameter is required",
    );
    let ghost = "00000000-0000-4000-8000-000000000000_kurento.MediaPipeline";
    assert_error(
        &kms.call_err("create", json!({ "type": "WebRtcEndpoint", "constructorParams": { "mediaPipeline": ghost } }))
            .await,
        40101,
        &format!("Object '{ghost}' not found"),
    );
    let (s, p, ea, eb) = objects(&mut kms).await;
    let s = s.as_str();
    assert_error(
        &kms.call_err("invoke", invoke(s, &format!("{ghost}/x"), "gatherCandidates", json!({}))).await,
        40101,
        &format!("Object '{ghost}/x' not found"),
    );
    assert_error(
        &kms.call_err("invoke", invoke(s, &ea, "frobnicate", json!({}))).await,
        40105,
        "Operation 'frobnicate' not found on WebRtcEndpoint",
    );
    assert_error(
        &kms.call_err("invoke", invoke(s, &ea, "generateOffer", json!({}))).await,
        40006,
        "one2one-server does not support generateOffer: its WebRtcEndpoints only answer offers",
    );
    assert_error(
        &kms.call_err("invoke", invoke(s, &ea, "processOffer", json!({}))).await,
        40001,
        "'offer' parameter is required",
    );
    assert_error(
        &kms.call_err("invoke", invoke(s, &ea, "processOffer", json!({ "offer": 5 }))).await,
        40001,
        "'offer' parameter should be a string",
    );
    assert_error(
        &kms.call_err("invoke", invoke(s, &ea, "processOffer", json!({ "offer": "" }))).await,
        40201,
        "Empty offer not valid",
    );
    assert_error(
        &kms.call_err("invoke", invoke(s, &ea, "processOffer", json!({ "offer": "garbage" }))).await,
        40201,
        "Error parsing SDP",
    );
    let av1 =
        "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 98\r\na=rtpmap:98 AV1/90000\r\n";
    assert_error(
        &kms.call_err("invoke", invoke(s, &ea, "processOffer", json!({ "offer": av1 }))).await,
        40205,
        "Error processing offer: the offer has neither Opus audio nor VP8 or H.264 video",
    );
    let bad_candidate = json!({ "candidate": { "candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": "0" } });
    assert_error(
        &kms.call_err("invoke", invoke(s, &ea, "addIceCandidate", bad_candidate)).await,
        40001,
        "'candidate.sdpMLineIndex' should be an integer",
    );
    assert_error(
        &kms.call_err("invoke", invoke(s, &ea, "addIceCandidate", json!({}))).await,
        40001,
        "'candidate' parameter is required (an IceCandidate)",
    );
    assert_error(
        &kms.call_err("subscribe", json!({ "object": ea, "type": "OnIceCandidate", "sessionId": s })).await,
        40106,
        "Event 'OnIceCandidate' not supported",
    );
    assert_error(
        &kms.call_err("invoke", invoke(s, &ea, "connect", json!({}))).await,
        40001,
        "'sink' parameter is required",
    );
    assert_error(
        &kms.call_err("invoke", invoke(s, &ea, "connect", json!({ "sink": ea }))).await,
        40004,
        "one2one-server does not support connecting an endpoint to itself (loopback)",
    );
    assert_error(
        &kms.call_err("invoke", invoke(s, &ea, "connect", json!({ "sink": eb, "mediaType": "VIDEO" }))).await,
        40006,
        "one2one-server connects all media of an endpoint: mediaType and media descriptions are not supported",
    );
    // A third endpoint next to a connected pair.
    kms.call("invoke", invoke(s, &ea, "connect", json!({ "sink": eb }))).await;
    kms.call("invoke", invoke(s, &eb, "connect", json!({ "sink": ea }))).await;
    let ec = kms
        .call(
            "create",
            json!({ "type": "WebRtcEndpoint", "constructorParams": { "mediaPipeline": p }, "sessionId": s }),
        )
        .await["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_error(
        &kms.call_err("invoke", invoke(s, &ec, "connect", json!({ "sink": ea }))).await,
        40004,
        &format!("one2one-server carries one-to-one calls only: {ea} is already connected to {eb}"),
    );
    assert_error(
        &kms.call_err("invoke", invoke(s, &ea, "connect", json!({ "sink": ec }))).await,
        40004,
        &format!("one2one-server carries one-to-one calls only: {ea} is already connected to {eb}"),
    );
    assert_error(
        &kms.call_err("transaction", json!({ "operations": [], "sessionId": s })).await,
        40006,
        "one2one-server does not support transactions: send each request on its own",
    );
    // Negotiated once only.
    let (_peer, offer) = real_offer().await;
    let answer = kms.call("invoke", invoke(s, &ea, "processOffer", json!({ "offer": offer }))).await;
    assert!(answer["value"].as_str().unwrap().starts_with("v=0"));
    assert_error(
        &kms.call_err("invoke", invoke(s, &ea, "processOffer", json!({ "offer": offer }))).await,
        40208,
        "Endpoint already negotiated",
    );
    // Another connection: someone else's session and objects.
    let mut other = Kms::connect(server.kms).await;
    assert_error(
        &other.call_err("create", json!({ "type": "MediaPipeline", "sessionId": s })).await,
        40007,
        &format!("Session '{s}' belongs to another connection"),
    );
    assert_error(
        &other.call_err("invoke", json!({ "object": ea, "operation": "gatherCandidates", "sessionId": 5 })).await,
        -32000,
        "'sessionId' parameter should be a string",
    );
    let e = other.call_err("invoke", json!({ "object": ea, "operation": "gatherCandidates" })).await;
    assert_error(&e, 40101, &format!("Object '{ea}' not found"));
    assert_error(
        &other.call_err("connect", json!({ "sessionId": "not-a-session" })).await,
        40007,
        "Invalid session 'not-a-session'",
    );
    other.close().await;
    // Released objects.
    assert_eq!(kms.call("release", json!({ "object": p, "sessionId": s })).await, json!({ "sessionId": s }));
    for object in [&p, &ea, &eb, &ec] {
        assert_error(
            &kms.call_err("release", json!({ "object": object, "sessionId": s })).await,
            40101,
            &format!("Object '{object}' not found"),
        );
    }
    assert_error(
        &kms.call_err("invoke", invoke(s, &ea, "gatherCandidates", json!({}))).await,
        40101,
        &format!("Object '{ea}' not found"),
    );
    // Too large: an error; far too large: the socket is closed.
    let big = format!(r#"{{"jsonrpc":"2.0","id":99,"method":"ping","params":{{"pad":"{}"}}}}"#, "x".repeat(300 * 1024));
    let v = raw_error(&mut kms, Message::Text(big.into())).await;
    assert_eq!(v["id"], 99);
    assert_eq!(v["error"]["code"], -32600, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("Request too large: "), "{v}");
    kms.send_raw(Message::Text("y".repeat(2 * 1024 * 1024).into())).await;
    let end = kms.next_frame(DEADLINE).await;
    assert!(end.is_none() || end.as_ref().is_some_and(|v| v.get("close").is_some()), "{end:?}");
}

/// A connection that floods gets rate errors, then a 1008 close.
async fn flood(server: &KmsServer) {
    let mut kms = Kms::connect(server.kms).await;
    let (mut pongs, mut limited, mut id) = (0, 0, 0u32);
    let mut close = None;
    // A flooder keeps sending: batches until the server closes (at most
    // 20 of them), each larger than the burst of 4000 plus what a second
    // refills (2000).
    'flood: for _ in 0..20 {
        for _ in 0..6500 {
            id += 1;
            let _ = kms.feed(Message::Text(format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#).into())).await;
        }
        let _ = kms.flush().await;
        while let Some(v) = kms.next_frame(Duration::from_millis(200)).await {
            if let Some(c) = v.get("close") {
                close = Some(c.clone());
                break 'flood;
            }
            if v["result"]["value"] == "pong" {
                pongs += 1;
            } else {
                assert_error(&v["error"], -32000, "Too many requests: at most 2000 per second");
                limited += 1;
            }
        }
    }
    assert!(pongs >= 4000 && limited >= 200, "{pongs} pongs, {limited} refused");
    assert_eq!(close, Some(json!([1008, "rate limit"])), "{pongs} pongs, {limited} refused");
}

/// The tutorial's call with media both ways, then released.
async fn good_call(server: &KmsServer) {
    let mut kms = Kms::connect(server.kms).await;
    let mut a = Browser::new(media_ip()).await;
    let mut b = Browser::new(media_ip()).await;
    let call = tutorial_call(&mut kms, &mut a, &mut b, true).await;
    let sources = [([220, 40, 40], 440.0), ([40, 60, 220], 660.0)];
    let enough = |g: &Got| g.frames >= 10 && g.pcm.len() >= 48_000 / 2;
    let got = exchange(&mut kms, &call, [&mut a, &mut b], sources, Duration::from_secs(20), enough).await;
    for (g, (rgb, _)) in got.iter().zip([sources[1], sources[0]]) {
        let seen = g.last_rgb.expect("video decoded");
        assert!(one2one_media::colour_distance(seen, rgb) <= 24, "{seen:?} vs {rgb:?}");
        assert!(g.pcm.len() >= 48_000 / 2);
    }
    kms.call("release", json!({ "object": call.pipeline, "sessionId": call.session })).await;
    a.peer.close().await;
    b.peer.close().await;
    kms.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_error_and_calls_still_work() {
    let server = KmsServer::start(&[]);
    // A path other than /kurento is not upgraded.
    let wrong = tokio_tungstenite::connect_async(format!("ws://{}/other", server.kms)).await;
    assert!(matches!(wrong, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 404), "{wrong:?}");
    bad_inputs(&server).await;
    flood(&server).await;
    server.metric_when("one2one_kms_endpoints", 0).await;
    good_call(&server).await;
    server.metric_when("one2one_kms_endpoints", 0).await;
    server.metric_when("one2one_kms_pipelines", 0).await;
    server.metric_when("one2one_kms_sessions", 0).await;
    assert!(server.metric("one2one_kms_errors_total") > 40);
}

/// Rounds of bad input, legs built and released, and sockets dropped
/// without a close: the server's fds and memory stay flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rounds_leave_no_fds_or_memory_behind() {
    let server = KmsServer::start(&[]);
    let round = |n: usize| {
        let server = &server;
        async move {
            let mut kms = Kms::connect(server.kms).await;
            let (s, p, ea, eb) = objects(&mut kms).await;
            for frame in
                ["nope", "[]", r#"{"jsonrpc":"2.0","id":"x","method":"create","params":{"type":"PlayerEndpoint"}}"#]
            {
                kms.send_raw(Message::Text(frame.into())).await;
                kms.next_frame(DEADLINE).await.expect("error reply");
            }
            for ep in [&ea, &eb] {
                let (_peer, offer) = real_offer().await;
                kms.call("invoke", invoke(&s, ep, "processOffer", json!({ "offer": offer }))).await;
                kms.call("invoke", invoke(&s, ep, "gatherCandidates", json!({}))).await;
            }
            kms.call("release", json!({ "object": p, "sessionId": s })).await;
            if n.is_multiple_of(2) {
                kms.close().await;
            }
            // Odd rounds just drop the socket.
        }
    };
    for n in 0..5 {
        round(n).await;
    }
    server.metric_when("one2one_kms_sessions", 0).await;
    let (fds, rss) = (server.fds(), server.rss_kib());
    for n in 0..40 {
        round(n).await;
    }
    server.metric_when("one2one_kms_endpoints", 0).await;
    server.metric_when("one2one_kms_sessions", 0).await;
    server.metric_when("one2one_kms_connections", 0).await;
    // Legs close their sockets a moment after the release.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while server.fds() > fds + 4 {
        assert!(tokio::time::Instant::now() < deadline, "fds grew from {fds} to {}", server.fds());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grown = server.rss_kib().saturating_sub(rss);
    assert!(grown < 24 * 1024, "RSS grew by {grown} KiB over 40 rounds (from {rss} KiB)");
    println!("fds {fds} -> {}, RSS {rss} KiB -> {} KiB", server.fds(), server.rss_kib());
    good_call(&server).await;
}
