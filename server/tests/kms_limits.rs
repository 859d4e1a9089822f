//! `--kms-listen`'s limits against clients that misbehave: what they hold
//! (sockets, legs, sessions) is freed, and the server process's fds come
//! back to where they were.

mod common;
mod kms_support;

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use kms_support::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// A client that floods and never reads a reply: its replies fill its tiny
/// receive window, the server cuts it off, and the server's socket is
/// freed at once although the client keeps its end open and unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_that_never_reads_is_cut_off_and_its_socket_freed() {
    let server = KmsServer::start(&[]);
    // One ordinary connection first: whatever the first one opens for good.
    let kms = Kms::connect(server.kms).await;
    kms.close().await;
    server.metric_when("one2one_kms_connections", 0).await;
    let fds = server.fds();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.kms).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{}/kurento", server.kms), stream).await.expect("handshake");
    server.metric_when("one2one_kms_connections", 1).await;
    // 200 pipelines: a getPipelines reply is then some 12 KB, and a few
    // thousand fill any socket buffer.
    let mut id = 0u64;
    let mut call = async |ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, method: &str, params| {
        id += 1;
        let req = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        ws.send(Message::Text(req.to_string().into())).await.unwrap();
        loop {
            let m = tokio::time::timeout(DEADLINE, ws.next()).await.expect("a reply").unwrap().unwrap();
            if let Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["id"] == json!(id) {
                    return v["result"].clone();
                }
            }
        }
    };
    let s = call(&mut ws, "describe", json!({ "object": "manager_ServerManager" })).await["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..200 {
        call(&mut ws, "create", json!({ "type": "MediaPipeline", "sessionId": s })).await;
    }
    // The flood, never read; the server stops reading once it has cut the
    // client off, and then a batch no longer goes out.
    let mut sent = 0;
    for _ in 0..40 {
        let batch = async {
            for _ in 0..250 {
                id += 1;
                let req = json!({"jsonrpc":"2.0","id":id,"method":"invoke","params":{"object":"manager_ServerManager","operation":"getPipelines","sessionId":s}});
                ws.feed(Message::Text(req.to_string().into())).await?;
            }
            ws.flush().await
        };
        match tokio::time::timeout(Duration::from_secs(2), batch).await {
            Ok(Ok(())) => sent += 250,
            _ => break,
        }
    }
    assert!(sent >= 500, "only {sent} frames went out");
    // The client still holds its end, unread: the server's end is gone.
    server.fds_back_to(fds, "a client that never reads").await;
    server.metric_when("one2one_kms_connections", 0).await;
    drop(ws);
    // And the server still serves.
    let mut kms = Kms::connect(server.kms).await;
    assert_eq!(kms.call("ping", json!({})).await, json!({ "value": "pong" }));
    kms.close().await;
}

/// An offer that passes the first check but that the leg refuses (no ICE
/// credentials, no fingerprint): the endpoint can be released like any
/// other, and the failed legs are not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_the_leg_refuses_leave_no_legs_behind() {
    let server = KmsServer::start(&[]);
    let offer = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n\
                 a=mid:0\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n";
    let mut kms = Kms::connect(server.kms).await;
    let s = kms.call("describe", json!({ "object": "manager_ServerManager" })).await["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let fds = server.fds();
    for _ in 0..100 {
        let p = kms.call("create", json!({ "type": "MediaPipeline", "sessionId": s })).await["value"]
            .as_str()
            .unwrap()
            .to_owned();
        let ep = json!({ "type": "WebRtcEndpoint", "constructorParams": { "mediaPipeline": p }, "sessionId": s });
        let ep = kms.call("create", ep).await["value"].as_str().unwrap().to_owned();
        let e = kms
            .call_err(
                "invoke",
                json!({ "object": ep, "operation": "processOffer", "operationParams": { "offer": offer }, "sessionId": s }),
            )
            .await;
        assert_eq!(e["code"], 40205, "{e}");
        assert!(e["message"].as_str().unwrap().starts_with("Error processing offer: refused: "), "{e}");
        kms.call("release", json!({ "object": ep, "sessionId": s })).await;
        kms.call("release", json!({ "object": p, "sessionId": s })).await;
    }
    server.metric_when("one2one_kms_endpoints", 0).await;
    server.metric_when("one2one_kms_legs", 0).await;
    server.fds_back_to(fds + 2, "refused offers").await;
    kms.close().await;
}
