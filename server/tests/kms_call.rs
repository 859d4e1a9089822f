//! `--kms-listen`: a client doing exactly what kurento-client 7.3.0 sends
//! for the tutorial, with two real WebRTC peers as the browsers; each
//! decodes the other's colour and tone through one2one-server's relay.

mod common;
mod kms_support;

use std::time::Duration;

use common::{media_config, media_ip, start_server, tail};
use kms_support::*;
use one2one_media::analysis::dominant_frequency;
use one2one_media::audio::SAMPLE_RATE;
use one2one_media::colour_distance;
use serde_json::json;

const RED: [u8; 3] = [220, 40, 40];
const BLUE: [u8; 3] = [40, 60, 220];

fn enough(g: &Got) -> bool {
    g.frames >= 30 && g.pcm.len() >= SAMPLE_RATE as usize * 3 / 2
}

fn check(who: &str, got: &Got, want: ([u8; 3], f32)) {
    let rgb = got.last_rgb.unwrap_or_else(|| panic!("{who} decoded no video"));
    assert!(got.frames >= 30, "{who} decoded only {} frames", got.frames);
    assert!(colour_distance(rgb, want.0) <= 24, "{who} saw colour {rgb:?}, the other side sent {:?}", want.0);
    let f = dominant_frequency(tail(&got.pcm, 1.0), SAMPLE_RATE).expect("enough audio");
    assert!((f - want.1).abs() / want.1 < 0.02, "{who} heard {f:.1} Hz, the other side sent {} Hz", want.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorials_sequence_carries_a_call_both_ways() {
    let mut config = media_config();
    config.kms_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = start_server(config).await;
    let addr = server.kms_addr.expect("kms address");
    let mut kms = Kms::connect(addr).await;
    // reconnect-ws from npm sends binary frames.
    kms.binary = true;
    let mut a = Browser::new(media_ip()).await;
    let mut b = Browser::new(media_ip()).await;
    let call = tutorial_call(&mut kms, &mut a, &mut b, true).await;
    assert_eq!(metric_when(&server.metrics, "one2one_kms_endpoints", |v| v == 2).await, 2);
    assert_eq!(metric_when(&server.metrics, "one2one_kms_pipelines", |v| v == 1).await, 1);
    assert_eq!(metric_when(&server.metrics, "one2one_kms_sessions", |v| v == 1).await, 1);

    let sources = [(RED, 440.0), (BLUE, 660.0)];
    let [at_a, at_b] = exchange(&mut kms, &call, [&mut a, &mut b], sources, Duration::from_secs(20), enough).await;
    check("a", &at_a, sources[1]);
    check("b", &at_b, sources[0]);

    let r = kms.call("release", json!({ "object": call.pipeline, "sessionId": call.session })).await;
    assert_eq!(r, json!({ "sessionId": call.session }));
    metric_when(&server.metrics, "one2one_kms_endpoints", |v| v == 0).await;
    metric_when(&server.metrics, "one2one_kms_pipelines", |v| v == 0).await;
    // The released objects are gone.
    let e = kms
        .call_err("invoke", json!({ "object": call.ea, "operation": "gatherCandidates", "sessionId": call.session }))
        .await;
    assert_eq!(e["code"], 40101, "{e}");
    let pong = kms.call("ping", json!({})).await;
    assert_eq!(pong, json!({ "value": "pong" }));
    a.peer.close().await;
    b.peer.close().await;
    kms.close().await;
    metric_when(&server.metrics, "one2one_kms_sessions", |v| v == 0).await;
    server.shutdown().await;
}
