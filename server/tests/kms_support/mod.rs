//! A kurento-client stand-in for the `--kms-listen` tests: a JSON-RPC
//! client that numbers its requests from 0 like kurento-client 7.3.0, and
//! two real WebRTC peers as the tutorial's browsers.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use one2one_media::I420Frame;
use one2one_media::audio::{FRAME_SAMPLES, OpusDecoder, OpusEncoder, Tone};
use one2one_media::peer::{Peer, PeerEvent, PeerOptions, PeerState};
use one2one_media::vp8;
use serde_json::{Value, json};
use shared_proto::IceCandidate;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct Kms {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Replies and events read while waiting for something else.
    pub pending: VecDeque<Value>,
    /// Send frames as binary (like reconnect-ws from npm).
    pub binary: bool,
}

impl Kms {
    pub async fn connect(addr: SocketAddr) -> Kms {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/kurento")).await.expect("connect");
        Kms { ws, next_id: 0, pending: VecDeque::new(), binary: false }
    }

    pub async fn send_text(&mut self, text: String) {
        let m = if self.binary { Message::Binary(text.into_bytes().into()) } else { Message::Text(text.into()) };
        self.ws.send(m).await.expect("send");
    }

    /// Queues a frame without flushing (a burst goes out in one write).
    /// `false` once the socket is gone.
    pub async fn feed(&mut self, m: Message) -> bool {
        self.ws.feed(m).await.is_ok()
    }

    pub async fn flush(&mut self) -> bool {
        self.ws.flush().await.is_ok()
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// Sends a request; its id.
    pub async fn send(&mut self, method: &str, params: Option<Value>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({ "jsonrpc": "2.0", "id": id, "method": method });
        if let Some(p) = params {
            req["params"] = p;
        }
        self.send_text(req.to_string()).await;
        id
    }

    /// The next frame as JSON (`None` on close or timeout).
    pub async fn next_frame(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let f = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()??;
            match f {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("JSON from the server")),
                Ok(Message::Close(c)) => {
                    return Some(json!({ "close": c.map(|c| (u16::from(c.code), c.reason.to_string())) }));
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// The reply to request `id`, within the deadline; frames read
    /// meanwhile wait in `pending`.
    pub async fn reply(&mut self, id: u64) -> Value {
        if let Some(i) = self.pending.iter().position(|v| v["id"] == json!(id)) {
            return self.pending.remove(i).unwrap();
        }
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.next_frame(left).await.unwrap_or_else(|| panic!("no reply to request {id}"));
            if v["id"] == json!(id) {
                return v;
            }
            assert!(v.get("close").is_none(), "closed while waiting for reply {id}: {v}");
            self.pending.push_back(v);
        }
    }

    /// Sends and waits for the result (panics on an error reply).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, Some(params)).await;
        let r = self.reply(id).await;
        assert_eq!(r["jsonrpc"], "2.0", "{r}");
        r.get("result").cloned().unwrap_or_else(|| panic!("{method} failed: {r}"))
    }

    /// Sends and returns the error object (panics on a result).
    pub async fn call_err(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, Some(params)).await;
        let r = self.reply(id).await;
        r.get("error").cloned().unwrap_or_else(|| panic!("{method} did not fail: {r}"))
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Read until the server's close frame (or the end).
        while let Ok(Some(Ok(_))) = tokio::time::timeout(DEADLINE, self.ws.next()).await {}
    }
}

/// kurento-client's IceCandidate for an addIceCandidate.
pub fn candidate_param(c: &IceCandidate) -> Value {
    json!({
        "candidate": c.candidate,
        "sdpMid": c.sdp_mid.clone().unwrap_or_else(|| "0".into()),
        "sdpMLineIndex": c.sdp_mline_index.unwrap_or(0),
        "__module__": "kurento",
        "__type__": "IceCandidate",
    })
}

/// One of the tutorial's browsers: a real peer and its events.
pub struct Browser {
    pub peer: Arc<Peer>,
    pub events: mpsc::UnboundedReceiver<PeerEvent>,
    pub offer: String,
}

impl Browser {
    pub async fn new(ip: std::net::IpAddr) -> Browser {
        let (tx, events) = mpsc::unbounded_channel();
        let peer = Peer::new(&PeerOptions { bind_ips: vec![ip], ..Default::default() }, tx).await.expect("peer");
        let offer = peer.create_offer().await.expect("offer");
        Browser { peer: Arc::new(peer), events, offer }
    }

    /// The candidates found so far (the page's queue before the endpoint exists).
    pub fn queued_candidates(&mut self) -> Vec<IceCandidate> {
        let mut out = vec![];
        while let Ok(ev) = self.events.try_recv() {
            if let PeerEvent::Candidate(c) = ev {
                out.push(c);
            }
        }
        out
    }
}

/// The ids of one call set up the tutorial's way.
#[derive(Debug, Clone)]
pub struct Call {
    pub session: String,
    pub pipeline: String,
    pub ea: String,
    pub eb: String,
}

fn result_value(r: &Value) -> String {
    r["value"].as_str().unwrap_or_else(|| panic!("no string value in {r}")).to_owned()
}

/// What kurento-client 7.3.0 sends for the tutorial's first call, in its
/// order (pipelined where it does not wait), checking every reply's shape.
pub async fn tutorial_call(kms: &mut Kms, a: &mut Browser, b: &mut Browser, first: bool) -> Call {
    let session = if first {
        let pong = kms.call("ping", json!({ "interval": 5000 })).await;
        assert_eq!(pong, json!({ "value": "pong" }));
        let d = kms.call("describe", json!({ "object": "manager_ServerManager" })).await;
        let session = d["sessionId"].as_str().expect("sessionId").to_owned();
        assert_eq!(
            d,
            json!({"hierarchy":["kurento.MediaObject"],"qualifiedType":"kurento.ServerManager","sessionId":session,"type":"ServerManager"})
        );
        let info = kms
            .call("invoke", json!({ "object": "manager_ServerManager", "operation": "getInfo", "sessionId": session }))
            .await;
        assert_eq!(info["sessionId"], json!(session));
        let names: Vec<&str> =
            info["value"]["modules"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
        for m in ["core", "elements", "filters"] {
            assert!(names.contains(&m), "{info}");
        }
        session
    } else {
        kms.call("describe", json!({ "object": "manager_ServerManager" })).await["sessionId"].as_str().unwrap().into()
    };
    let s = session.as_str();
    let p = kms.call("create", json!({ "type": "MediaPipeline", "properties": {}, "sessionId": s })).await;
    assert_eq!(p["sessionId"], json!(s));
    let pipeline = result_value(&p);
    assert!(pipeline.ends_with("_kurento.MediaPipeline") && pipeline.len() == 36 + 22, "{pipeline}");
    let ep_params = json!({ "type": "WebRtcEndpoint", "constructorParams": { "mediaPipeline": pipeline }, "properties": {}, "sessionId": s });
    let ea = result_value(&kms.call("create", ep_params.clone()).await);
    assert!(ea.starts_with(&format!("{pipeline}/")) && ea.ends_with("_kurento.WebRtcEndpoint"), "{ea}");
    for c in a.queued_candidates() {
        let r = kms
            .call(
                "invoke",
                json!({ "object": ea, "operation": "addIceCandidate", "operationParams": { "candidate": candidate_param(&c) }, "sessionId": s }),
            )
            .await;
        assert_eq!(r, json!({ "sessionId": s }));
    }
    let eb = result_value(&kms.call("create", ep_params).await);
    assert_ne!(ea, eb);
    let sub_a = kms.send("subscribe", Some(json!({ "object": ea, "type": "IceCandidateFound", "sessionId": s }))).await;
    for c in b.queued_candidates() {
        kms.send(
            "invoke",
            Some(json!({ "object": eb, "operation": "addIceCandidate", "operationParams": { "candidate": candidate_param(&c) }, "sessionId": s })),
        )
        .await;
    }
    let sub_b = kms.send("subscribe", Some(json!({ "object": eb, "type": "IceCandidateFound", "sessionId": s }))).await;
    for id in [sub_a, sub_b] {
        let r = kms.reply(id).await;
        assert_eq!(r["result"]["sessionId"], json!(s), "{r}");
        assert_eq!(r["result"]["value"].as_str().map(str::len), Some(36), "{r}");
    }
    let c1 = kms
        .send(
            "invoke",
            Some(json!({ "object": ea, "operation": "connect", "operationParams": { "sink": eb }, "sessionId": s })),
        )
        .await;
    assert_eq!(kms.reply(c1).await["result"], json!({ "sessionId": s }));
    let c2 = kms
        .send(
            "invoke",
            Some(json!({ "object": eb, "operation": "connect", "operationParams": { "sink": ea }, "sessionId": s })),
        )
        .await;
    for (browser, ep) in [(a, &ea), (b, &eb)] {
        let po = kms
            .send(
                "invoke",
                Some(json!({ "object": ep, "operation": "processOffer", "operationParams": { "offer": browser.offer }, "sessionId": s })),
            )
            .await;
        let gc =
            kms.send("invoke", Some(json!({ "object": ep, "operation": "gatherCandidates", "sessionId": s }))).await;
        let answer = kms.reply(po).await;
        assert_eq!(answer["result"]["sessionId"], json!(s), "{answer}");
        let sdp = answer["result"]["value"].as_str().unwrap_or_else(|| panic!("no answer: {answer}"));
        assert!(sdp.starts_with("v=0"), "{sdp}");
        browser.peer.apply_answer(sdp).await.expect("answer applies");
        assert_eq!(kms.reply(gc).await["result"], json!({ "sessionId": s }));
    }
    assert_eq!(kms.reply(c2).await["result"], json!({ "sessionId": s }));
    Call { session, pipeline, ea, eb }
}

/// What one side received and decoded.
#[derive(Debug, Default)]
pub struct Got {
    pub frames: usize,
    pub last_rgb: Option<[u8; 3]>,
    pub pcm: Vec<i16>,
}

pub const W: u32 = 160;
pub const H: u32 = 120;

struct Side {
    enc: vp8::Encoder,
    dec: vp8::Decoder,
    opus: OpusEncoder,
    opus_dec: OpusDecoder,
    tone: Tone,
    frame: I420Frame,
    force_key: bool,
    got: Got,
}

/// Both browsers send a colour and a tone and decode what arrives, while
/// candidates go both ways through the KMS socket, until `enough` holds
/// for both or `within` passes.
pub async fn exchange(
    kms: &mut Kms,
    call: &Call,
    browsers: [&mut Browser; 2],
    sources: [([u8; 3], f32); 2],
    within: Duration,
    enough: impl Fn(&Got) -> bool,
) -> [Got; 2] {
    let [a, b] = browsers;
    let eps = [call.ea.clone(), call.eb.clone()];
    let mut sides: Vec<Side> = sources
        .iter()
        .map(|(rgb, hz)| Side {
            enc: vp8::Encoder::new(&vp8::EncoderConfig {
                width: W,
                height: H,
                bitrate_kbps: 300,
                ..Default::default()
            })
            .unwrap(),
            dec: vp8::Decoder::new().unwrap(),
            opus: OpusEncoder::new(1, 32_000).unwrap(),
            opus_dec: OpusDecoder::new(1).unwrap(),
            tone: Tone::new(*hz, 0.4),
            frame: I420Frame::solid_rgb(W, H, *rgb),
            force_key: true,
            got: Got::default(),
        })
        .collect();
    let peers = [a.peer.clone(), b.peer.clone()];
    let mut video_tick = tokio::time::interval(Duration::from_millis(33));
    let mut audio_tick = tokio::time::interval(Duration::from_millis(20));
    let deadline = tokio::time::Instant::now() + within;
    let mut pcm = vec![0i16; FRAME_SAMPLES];
    // Events that arrived before the exchange started.
    let early: Vec<Value> = kms.pending.drain(..).collect();
    for v in early {
        route_event(&v, &eps, &peers).await;
    }
    loop {
        let s = &call.session;
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            _ = video_tick.tick() => {
                for (side, peer) in sides.iter_mut().zip(&peers) {
                    for f in side.enc.encode(&side.frame, std::mem::take(&mut side.force_key)).unwrap() {
                        let _ = peer.send_video(Bytes::from(f.data), Duration::from_millis(33)).await;
                    }
                }
            }
            _ = audio_tick.tick() => {
                for (side, peer) in sides.iter_mut().zip(&peers) {
                    side.tone.fill(&mut pcm);
                    let pkt = side.opus.encode(&pcm).unwrap();
                    let _ = peer.send_audio(Bytes::from(pkt), Duration::from_millis(20)).await;
                }
            }
            ev = a.events.recv() => on_peer_event(kms, s, &eps[0], &peers[0], &mut sides[0], ev).await,
            ev = b.events.recv() => on_peer_event(kms, s, &eps[1], &peers[1], &mut sides[1], ev).await,
            v = kms.next_frame(Duration::from_secs(3600)) => {
                if let Some(v) = v
                    && !route_event(&v, &eps, &peers).await
                {
                    // A reply to a trickled addIceCandidate.
                    assert!(v.get("result").is_some(), "unexpected frame {v}");
                }
            }
        }
        if enough(&sides[0].got) && enough(&sides[1].got) {
            break;
        }
    }
    let [x, y]: [Side; 2] = sides.try_into().ok().unwrap();
    [x.got, y.got]
}

/// An IceCandidateFound event goes to the browser of its endpoint.
async fn route_event(v: &Value, eps: &[String; 2], peers: &[Arc<Peer>; 2]) -> bool {
    if v["method"] != "onEvent" {
        return false;
    }
    let value = &v["params"]["value"];
    assert_eq!(value["type"], "IceCandidateFound", "{v}");
    let data = &value["data"];
    assert_eq!(data["source"], value["object"], "{v}");
    assert_eq!(data["type"], "IceCandidateFound");
    assert_eq!(data["tags"], json!([]));
    assert!(data["timestampMillis"].as_str().is_some_and(|t| t.parse::<u64>().is_ok()), "{v}");
    let c = &data["candidate"];
    assert_eq!(c["__module__"], "kurento");
    assert_eq!(c["__type__"], "IceCandidate");
    let candidate = IceCandidate::new(
        c["candidate"].as_str().unwrap().to_owned(),
        c["sdpMid"].as_str().map(str::to_owned),
        c["sdpMLineIndex"].as_u64().map(|i| i as u16),
    );
    let i = eps.iter().position(|e| value["object"] == json!(e)).unwrap_or_else(|| panic!("event for {v}"));
    peers[i].add_remote_candidate(candidate).await;
    true
}

async fn on_peer_event(kms: &mut Kms, s: &str, ep: &str, peer: &Peer, side: &mut Side, ev: Option<PeerEvent>) {
    match ev {
        Some(PeerEvent::KeyframeRequested) => side.force_key = true,
        Some(PeerEvent::Candidate(c)) => {
            kms.send(
                "invoke",
                Some(json!({ "object": ep, "operation": "addIceCandidate", "operationParams": { "candidate": candidate_param(&c) }, "sessionId": s })),
            )
            .await;
        }
        Some(PeerEvent::Video { data, .. }) => match side.dec.decode(&data) {
            Ok(frames) => {
                for f in frames {
                    side.got.frames += 1;
                    side.got.last_rgb = Some(f.mean_rgb(f.width / 4, f.height / 4, f.width / 2, f.height / 2));
                }
            }
            Err(_) => peer.request_keyframe().await,
        },
        Some(PeerEvent::Audio { data, .. }) => {
            if let Ok(s) = side.opus_dec.decode(&data) {
                side.got.pcm.extend_from_slice(s);
            }
        }
        Some(PeerEvent::State(PeerState::Failed)) => panic!("ICE failed on {ep}"),
        Some(PeerEvent::State(_)) | None => {}
    }
}

/// The value of a metric line `name value` once `test` holds for it.
pub async fn metric_when(metrics: &one2one_server::metrics::Metrics, name: &str, test: impl Fn(u64) -> bool) -> u64 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let text = metrics.render();
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        if test(v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} stayed at {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A one2one-server process with `--kms-listen`, for the tests that watch
/// what the process holds (fds, memory) and its `/metrics`.
pub struct KmsServer {
    pub proc: crate::common::Proc,
    pub kms: SocketAddr,
    pub http: SocketAddr,
}

impl KmsServer {
    /// `--http` and `--kms-listen` on free ports, media on the test address,
    /// plus `extra` flags.
    pub fn start(extra: &[&str]) -> KmsServer {
        let (http, kms) = (crate::common::free_port(), crate::common::free_port());
        let http_addr = format!("127.0.0.1:{http}");
        let kms_addr = format!("127.0.0.1:{kms}");
        let ip = crate::common::media_ip().to_string();
        let mut args = vec!["--http", "--listen", &http_addr, "--kms-listen", &kms_addr, "--media-ip", &ip];
        args.extend_from_slice(extra);
        let proc = crate::common::Proc::start(&args);
        KmsServer { proc, kms: kms_addr.parse().unwrap(), http: http_addr.parse().unwrap() }
    }

    pub fn metric(&self, name: &str) -> u64 {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(self.http).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {body}"))
    }

    pub async fn metric_when(&self, name: &str, want: u64) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let v = self.metric(name);
            if v == want {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{name} stayed at {v}, wanted {want}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.proc.id())).map(|d| d.count()).unwrap()
    }

    /// Waits until the server has at most `fds` open.
    pub async fn fds_back_to(&self, fds: usize, what: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.fds() > fds {
            assert!(tokio::time::Instant::now() < deadline, "{what}: fds stayed at {} (from {fds})", self.fds());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}
