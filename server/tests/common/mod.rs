//! Real sockets: the server on a real listener, real WebSocket clients, and
//! real WebRTC peers that send and check real media.
#![allow(dead_code)]

mod process;
#[allow(unused_imports)]
pub use process::{Proc, free_port};

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use one2one_media::I420Frame;
use one2one_media::audio::{FRAME_SAMPLES, OpusDecoder, OpusEncoder, SAMPLE_RATE, Tone};
use one2one_media::peer::{Peer, PeerEvent, PeerOptions, PeerState};
use one2one_media::vp8;
use one2one_server::{ServerConfig, Transport};
use shared_proto::{ClientMsg, ServerMsg, decode_server, encode};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,one2one_server=info".into()))
        .with_test_writer()
        .try_init();
}

/// The address media tests gather on. WebRTC stacks skip loopback, so the
/// tests run in a private network namespace with a veth pair
/// (`scripts/netns-run`), which exports it.
pub fn media_ip() -> IpAddr {
    match std::env::var("ONE2ONE_TEST_IP") {
        Ok(ip) => ip.parse().expect("ONE2ONE_TEST_IP is not an IP address"),
        Err(_) => panic!(
            "media tests need a private network namespace: run them through \
             `scripts/netns-run cargo nextest run` (needs root and iproute2), as `scripts/test` does"
        ),
    }
}

pub async fn start_server(config: ServerConfig) -> one2one_server::Server {
    init_tracing();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    one2one_server::start(listener, Transport::Http, config).await.unwrap()
}

pub fn default_config() -> ServerConfig {
    ServerConfig::default()
}

pub fn media_config() -> ServerConfig {
    let mut c = default_config();
    c.relay.media_ips = vec![media_ip()];
    c
}

pub struct Ws {
    pub name: String,
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn connect(server: &one2one_server::Server, name: &str) -> Ws {
        let url = format!("ws://{}/one2one", server.addr);
        let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
        Ws { name: name.into(), stream }
    }

    /// Connects to a URL; `None` while nothing listens there.
    pub async fn connect_url(url: &str, name: &str) -> Option<Ws> {
        let (stream, _) = tokio_tungstenite::connect_async(url).await.ok()?;
        Some(Ws { name: name.into(), stream })
    }

    /// Connects and registers under `name`.
    pub async fn user(server: &one2one_server::Server, name: &str) -> Ws {
        let mut ws = Ws::connect(server, name).await;
        ws.send(&format!(r#"{{"id":"register","name":"{name}"}}"#)).await;
        ws.expect(r#"{"id":"registerResponse","response":"accepted"}"#).await;
        ws
    }

    pub async fn send(&mut self, text: &str) {
        self.stream.send(Message::Text(text.into())).await.expect("send");
    }

    pub async fn send_msg(&mut self, msg: &ClientMsg) {
        self.send(&encode(msg)).await;
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.stream.send(msg).await.expect("send");
    }

    /// The next text frame, within the deadline.
    pub async fn recv(&mut self) -> String {
        self.try_recv(DEADLINE).await.unwrap_or_else(|| panic!("{}: no message within {DEADLINE:?}", self.name))
    }

    pub async fn try_recv(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.stream.next()).await.ok()??;
            match frame {
                Ok(Message::Text(t)) => return Some(t.to_string()),
                Ok(Message::Close(c)) => return Some(format!("CLOSE {c:?}")),
                Ok(_) => continue,
                Err(e) => return Some(format!("ERROR {e}")),
            }
        }
    }

    pub async fn send_json(&mut self, v: serde_json::Value) {
        self.send(&v.to_string()).await;
    }

    /// The next message that is not an `iceCandidate`, within `within`.
    pub async fn signal_within(&mut self, within: Duration) -> Option<String> {
        let end = tokio::time::Instant::now() + within;
        loop {
            let m = self.try_recv(end.saturating_duration_since(tokio::time::Instant::now())).await?;
            if !m.starts_with(r#"{"id":"iceCandidate""#) {
                return Some(m);
            }
        }
    }

    /// Expects `want` before `by`.
    pub async fn expect_by(&mut self, want: &str, by: Instant) {
        let left = by.saturating_duration_since(Instant::now());
        let got = self.signal_within(left).await;
        assert_eq!(got.as_deref(), Some(want), "{}: not told in time (or told something else)", self.name);
    }

    /// Every message until `done` matches one (returned last).
    pub async fn recv_until(&mut self, done: impl Fn(&str) -> bool) -> Vec<String> {
        let mut seen = vec![];
        loop {
            let m = self
                .try_recv(DEADLINE)
                .await
                .unwrap_or_else(|| panic!("{}: nothing more within {DEADLINE:?}; so far {seen:?}", self.name));
            let stop = done(&m);
            seen.push(m);
            if stop {
                return seen;
            }
        }
    }

    /// The next message that is not an `iceCandidate`.
    pub async fn recv_signal(&mut self) -> String {
        loop {
            let m = self.recv().await;
            if !m.starts_with(r#"{"id":"iceCandidate""#) {
                return m;
            }
        }
    }

    pub async fn expect(&mut self, want: &str) {
        let got = self.recv_signal().await;
        assert_eq!(got, want, "{} received something else", self.name);
    }

    /// Asserts that nothing but candidates arrives for `within`.
    pub async fn expect_silence(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while let Some(m) = self.try_recv(deadline - tokio::time::Instant::now()).await {
            assert!(m.starts_with(r#"{"id":"iceCandidate""#), "{}: unexpected {m}", self.name);
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// A real SDP offer (audio + VP8) from a real peer.
pub async fn real_offer() -> (Peer, String) {
    let (tx, _rx) = mpsc::unbounded_channel();
    let peer = Peer::new(&PeerOptions::default(), tx).await.expect("peer");
    let sdp = peer.create_offer().await.expect("offer");
    (peer, sdp)
}

/// Counts the sides of an exchange that have received enough.
pub struct Done {
    count: std::sync::atomic::AtomicUsize,
    parties: usize,
}

impl Done {
    pub fn of(parties: usize) -> Done {
        Done { count: Default::default(), parties }
    }
}

/// What one side of a media test sends.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub rgb: [u8; 3],
    pub tone_hz: f32,
}

/// What one side received and decoded.
#[derive(Debug, Default)]
pub struct Received {
    pub frames: usize,
    pub last_rgb: Option<[u8; 3]>,
    pub size: Option<(u32, u32)>,
    pub audio_packets: usize,
    pub pcm: Vec<i16>,
}

/// A user with a WebSocket and, during a call, a WebRTC peer sending a
/// solid colour (VP8) and a tone (Opus).
pub struct MediaUser {
    pub ws: Ws,
    pub peer: Option<std::sync::Arc<Peer>>,
    events: Option<mpsc::UnboundedReceiver<PeerEvent>>,
    ip: IpAddr,
}

pub const W: u32 = 160;
pub const H: u32 = 120;

impl MediaUser {
    pub async fn new(server: &one2one_server::Server, name: &str) -> MediaUser {
        MediaUser { ws: Ws::user(server, name).await, peer: None, events: None, ip: media_ip() }
    }

    async fn new_peer(&mut self) -> String {
        let (tx, rx) = mpsc::unbounded_channel();
        let opts = PeerOptions { bind_ips: vec![self.ip], ..Default::default() };
        let peer = Peer::new(&opts, tx).await.expect("peer");
        let offer = peer.create_offer().await.expect("offer");
        self.peer = Some(std::sync::Arc::new(peer));
        self.events = Some(rx);
        offer
    }

    /// Sends `call` and waits for the accepted `callResponse`.
    pub async fn call(&mut self, to: &str) {
        let offer = self.new_peer().await;
        let msg = ClientMsg::Call { from: self.ws.name.clone(), to: to.into(), sdp_offer: offer };
        self.ws.send_msg(&msg).await;
        self.trickle_until(|m| matches!(m, ServerMsg::CallResponse { .. })).await;
    }

    /// Waits for `incomingCall` and accepts it, then waits for `startCommunication`.
    pub async fn answer(&mut self, from: &str) {
        self.ws.expect(&format!(r#"{{"id":"incomingCall","from":"{from}"}}"#)).await;
        let offer = self.new_peer().await;
        self.ws.send_msg(&ClientMsg::accept(from, offer)).await;
        self.trickle_until(|m| matches!(m, ServerMsg::StartCommunication { .. })).await;
    }

    /// Forwards candidates both ways until `done` matches a server message,
    /// then applies the answer it carries.
    async fn trickle_until(&mut self, done: impl Fn(&ServerMsg) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let peer = self.peer.clone().unwrap();
        loop {
            let events = self.events.as_mut().unwrap();
            tokio::select! {
                ev = events.recv() => {
                    if let Some(PeerEvent::Candidate(c)) = ev {
                        self.ws.send_msg(&ClientMsg::OnIceCandidate { candidate: c }).await;
                    }
                }
                m = self.ws.try_recv(deadline - tokio::time::Instant::now()) => {
                    let m = m.unwrap_or_else(|| panic!("{}: no answer in time", self.ws.name));
                    let msg = decode_server(&m).unwrap_or_else(|e| panic!("{m}: {e}"));
                    match &msg {
                        ServerMsg::IceCandidate { candidate } => peer.add_remote_candidate(candidate.clone()).await,
                        _ if done(&msg) => {
                            let answer = match msg {
                                ServerMsg::CallResponse { sdp_answer: Some(a), .. } => a,
                                ServerMsg::StartCommunication { sdp_answer } => sdp_answer,
                                other => panic!("{}: call failed: {other:?}", self.ws.name),
                            };
                            peer.apply_answer(&answer).await.expect("answer");
                            return;
                        }
                        other => panic!("{}: unexpected {other:?}", self.ws.name),
                    }
                }
            }
        }
    }

    /// Sends `src` and decodes what arrives until `enough` holds for every
    /// side sharing `done` (each side keeps sending until then) or the
    /// deadline passes; keeps answering candidates meanwhile.
    pub async fn exchange(
        &mut self,
        src: Source,
        within: Duration,
        done: &Done,
        enough: impl Fn(&Received) -> bool,
    ) -> Received {
        let peer = self.peer.clone().unwrap();
        let mut events = self.events.take().unwrap();
        let mut enc =
            vp8::Encoder::new(&vp8::EncoderConfig { width: W, height: H, bitrate_kbps: 300, ..Default::default() })
                .unwrap();
        let mut dec = vp8::Decoder::new().unwrap();
        let mut opus = OpusEncoder::new(1, 32_000).unwrap();
        let mut opus_dec = OpusDecoder::new(1).unwrap();
        let mut tone = Tone::new(src.tone_hz, 0.4);
        let frame = I420Frame::solid_rgb(W, H, src.rgb);
        let mut video_tick = tokio::time::interval(Duration::from_millis(33));
        let mut audio_tick = tokio::time::interval(Duration::from_millis(20));
        let mut force_key = true;
        let mut got = Received::default();
        let deadline = tokio::time::Instant::now() + within;
        let mut pcm = vec![0i16; FRAME_SAMPLES];
        let mut counted = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                _ = video_tick.tick() => {
                    for f in enc.encode(&frame, std::mem::take(&mut force_key)).unwrap() {
                        let _ = peer.send_video(Bytes::from(f.data), Duration::from_millis(33)).await;
                    }
                }
                _ = audio_tick.tick() => {
                    tone.fill(&mut pcm);
                    let pkt = opus.encode(&pcm).unwrap();
                    let _ = peer.send_audio(Bytes::from(pkt), Duration::from_millis(20)).await;
                }
                ev = events.recv() => match ev {
                    Some(PeerEvent::KeyframeRequested) => force_key = true,
                    Some(PeerEvent::Candidate(c)) => self.ws.send_msg(&ClientMsg::OnIceCandidate { candidate: c }).await,
                    Some(PeerEvent::Video { data, .. }) => {
                        match dec.decode(&data) {
                            Ok(frames) => for f in frames {
                                got.frames += 1;
                                got.size = Some((f.width, f.height));
                                got.last_rgb = Some(f.mean_rgb(f.width / 4, f.height / 4, f.width / 2, f.height / 2));
                            },
                            Err(_) => peer.request_keyframe().await,
                        }
                    }
                    Some(PeerEvent::Audio { data, .. }) => {
                        got.audio_packets += 1;
                        if let Ok(s) = opus_dec.decode(&data) {
                            got.pcm.extend_from_slice(s);
                        }
                    }
                    Some(PeerEvent::State(PeerState::Failed)) => panic!("{}: ICE failed", self.ws.name),
                    Some(PeerEvent::State(_)) => {}
                    None => break,
                },
                m = self.ws.try_recv(Duration::from_secs(3600)) => {
                    if let Some(m) = m
                        && let Ok(ServerMsg::IceCandidate { candidate }) = decode_server(&m) {
                        peer.add_remote_candidate(candidate).await;
                    }
                }
            }
            if !counted && enough(&got) {
                counted = true;
                done.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            if done.count.load(std::sync::atomic::Ordering::SeqCst) >= done.parties {
                break;
            }
        }
        self.events = Some(events);
        got
    }

    pub async fn hang_up(&mut self) {
        self.ws.send(r#"{"id":"stop"}"#).await;
        self.drop_peer().await;
    }

    pub async fn drop_peer(&mut self) {
        if let Some(p) = self.peer.take() {
            p.close().await;
        }
        self.events = None;
    }
}

/// Keeps only the last `seconds` of received audio.
pub fn tail(pcm: &[i16], seconds: f32) -> &[i16] {
    let n = (SAMPLE_RATE as f32 * seconds) as usize;
    &pcm[pcm.len().saturating_sub(n)..]
}

pub fn now() -> Instant {
    Instant::now()
}
