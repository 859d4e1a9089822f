//! A WebRTC offerer whose offer the test chooses (audio only, video
//! receive-only, or nothing sent at all), for relay tests that the full
//! client peer (`one2one_media::peer::Peer`, always audio + VP8 sendrecv)
//! cannot play.
#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use one2one_media::audio::{FRAME_SAMPLES, OpusEncoder, Tone};
use one2one_media::rtc_setup::{VideoCodec, candidate_init, interceptors, media_engine_for, opus, track_def};
use rtc::media::Sample;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use shared_proto::{ClientMsg, IceCandidate, ServerMsg, decode_server};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

use crate::common::{DEADLINE, Done, MediaUser, Received, Source, Ws};

/// What a test peer offers.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// An Opus m-line, sendrecv.
    pub audio: bool,
    /// A VP8 m-line in this direction, or none.
    pub video: Option<RTCRtpTransceiverDirection>,
}

impl Spec {
    /// A microphone and no camera: one audio m-line.
    pub const MIC_ONLY: Spec = Spec { audio: true, video: None };
    /// A microphone, and video it only receives.
    pub const WATCHER: Spec = Spec { audio: true, video: Some(RTCRtpTransceiverDirection::Recvonly) };
}

#[derive(Debug)]
pub enum Ev {
    Candidate(IceCandidate),
    State(RTCPeerConnectionState),
    Rtp(RtpCodecKind),
}

struct Handler {
    tx: mpsc::UnboundedSender<Ev>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, ev: RTCPeerConnectionIceEvent) {
        if let Ok(init) = ev.candidate.to_json() {
            let _ = self.tx.send(Ev::Candidate(IceCandidate::new(init.candidate, Some("0".into()), Some(0))));
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(Ev::State(state));
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let kind = track.kind().await;
            while let Some(ev) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(_) = ev
                    && tx.send(Ev::Rtp(kind)).is_err()
                {
                    return;
                }
            }
        });
    }
}

pub struct TestPeer {
    pub pc: Arc<dyn PeerConnection>,
    audio: Option<(Arc<TrackLocalStaticSample>, u32)>,
    audio_pt: u8,
    pub events: mpsc::UnboundedReceiver<Ev>,
    /// Remote candidates that came before the answer.
    pending: Vec<IceCandidate>,
    answered: bool,
    /// Every remote candidate line, in order of arrival.
    remote: Vec<String>,
}

/// What a test peer saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub connected: bool,
    pub audio_packets: usize,
    pub video_packets: usize,
    /// Signaling messages other than candidates, in order.
    pub signals: Vec<String>,
}

impl TestPeer {
    pub async fn new(spec: Spec, ip: IpAddr) -> (TestPeer, String) {
        let video = spec.video.map(|_| VideoCodec::Vp8);
        let mut me = media_engine_for(spec.audio, video).expect("media engine");
        let registry = interceptors(&mut me).expect("interceptors");
        let settings =
            SettingEngineBuilder::new().with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled).build();
        let (tx, events) = mpsc::unbounded_channel();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(Arc::new(Handler { tx }))
            .with_udp_addrs(vec![std::net::SocketAddr::new(ip, 0).to_string()])
            .build()
            .await
            .expect("peer connection");
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let mut audio = None;
        if spec.audio {
            let ssrc = 0x1234_5678;
            let def = track_def("test", "audio", RtpCodecKind::Audio, ssrc, opus());
            let track = Arc::new(TrackLocalStaticSample::new(Instant::now(), def).expect("track"));
            pc.add_track(track.clone()).await.expect("audio track");
            audio = Some((track, ssrc));
        }
        if let Some(direction) = spec.video {
            let init = RTCRtpTransceiverInit { direction, ..Default::default() };
            pc.add_transceiver_from_kind(RtpCodecKind::Video, Some(init)).await.expect("video transceiver");
        }
        let offer = pc.create_offer(None).await.expect("offer");
        let sdp = offer.sdp.clone();
        pc.set_local_description(offer).await.expect("local offer");
        (TestPeer { pc, audio, audio_pt: 0, events, pending: Vec::new(), answered: false, remote: Vec::new() }, sdp)
    }

    pub async fn apply_answer(&mut self, sdp: &str) {
        let answer = RTCSessionDescription::answer(sdp.to_owned()).expect("answer");
        self.pc.set_remote_description(answer).await.expect("apply answer");
        self.answered = true;
        self.remote.extend(
            sdp.lines().filter_map(|l| l.strip_prefix("a=")).filter(|l| l.starts_with("candidate:")).map(str::to_owned),
        );
        if self.audio.is_some() {
            for sender in self.pc.get_senders().await {
                if let Ok(p) = sender.get_parameters().await
                    && let Some(c) = p.rtp_parameters.codecs.iter().find(|c| c.rtp_codec.mime_type == "audio/opus")
                {
                    self.audio_pt = c.payload_type;
                }
            }
        }
        for c in std::mem::take(&mut self.pending) {
            self.add_candidate(c).await;
        }
    }

    /// The server's candidates so far (trickled and in the answer).
    pub fn remote_candidates(&self) -> Vec<String> {
        self.remote.clone()
    }

    pub async fn add_candidate(&mut self, c: IceCandidate) {
        self.remote.push(c.candidate.clone());
        if !self.answered {
            self.pending.push(c);
            return;
        }
        if let Some(init) = candidate_init(c) {
            let _ = self.pc.add_ice_candidate(init).await;
        }
    }

    /// Sends `call` with this peer's offer and waits for the answer.
    pub async fn call(spec: Spec, ws: &mut Ws, ip: IpAddr, to: &str) -> TestPeer {
        let (mut peer, offer) = TestPeer::new(spec, ip).await;
        ws.send_msg(&ClientMsg::Call { from: ws.name.clone(), to: to.into(), sdp_offer: offer }).await;
        peer.trickle_until(ws, |m| matches!(m, ServerMsg::CallResponse { .. })).await;
        peer
    }

    /// Waits for `incomingCall` from `from`, accepts with this peer's offer
    /// and waits for the answer.
    pub async fn answer(spec: Spec, ws: &mut Ws, ip: IpAddr, from: &str) -> TestPeer {
        ws.expect(&format!(r#"{{"id":"incomingCall","from":"{from}"}}"#)).await;
        let (mut peer, offer) = TestPeer::new(spec, ip).await;
        ws.send_msg(&ClientMsg::accept(from, offer)).await;
        peer.trickle_until(ws, |m| matches!(m, ServerMsg::StartCommunication { .. })).await;
        peer
    }

    async fn trickle_until(&mut self, ws: &mut Ws, done: impl Fn(&ServerMsg) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            tokio::select! {
                ev = self.events.recv() => {
                    if let Some(Ev::Candidate(c)) = ev {
                        ws.send_msg(&ClientMsg::OnIceCandidate { candidate: c }).await;
                    }
                }
                m = ws.try_recv(deadline - tokio::time::Instant::now()) => {
                    let m = m.unwrap_or_else(|| panic!("{}: no answer in time", ws.name));
                    let msg = decode_server(&m).unwrap_or_else(|e| panic!("{m}: {e}"));
                    match msg {
                        ServerMsg::IceCandidate { candidate } => self.add_candidate(candidate).await,
                        ref msg if done(msg) => {
                            let answer = match msg {
                                ServerMsg::CallResponse { sdp_answer: Some(a), .. } => a.clone(),
                                ServerMsg::StartCommunication { sdp_answer } => sdp_answer.clone(),
                                other => panic!("{}: call failed: {other:?}", ws.name),
                            };
                            self.apply_answer(&answer).await;
                            return;
                        }
                        other => panic!("{}: unexpected {other:?}", ws.name),
                    }
                }
            }
        }
    }

    /// For `within`: trickles candidates, sends a tone (if `send` and the
    /// peer has audio) and counts what arrives; stops early once `enough`.
    pub async fn run(&mut self, ws: &mut Ws, send: bool, within: Duration, enough: impl Fn(&Seen) -> bool) -> Seen {
        let mut seen = Seen::default();
        let mut opus_enc = OpusEncoder::new(1, 32_000).unwrap();
        let mut tone = Tone::new(523.0, 0.4);
        let mut pcm = vec![0i16; FRAME_SAMPLES];
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let deadline = tokio::time::Instant::now() + within;
        while !enough(&seen) {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                _ = tick.tick() => {
                    if let (true, Some((track, ssrc)), pt) = (send, &self.audio, self.audio_pt)
                        && pt != 0
                    {
                        tone.fill(&mut pcm);
                        let pkt = opus_enc.encode(&pcm).unwrap();
                        let sample = Sample { data: Bytes::from(pkt), duration: Duration::from_millis(20), ..Sample::new(Instant::now()) };
                        let _ = track.sample_writer(*ssrc, pt).write_sample(&sample).await;
                    }
                }
                ev = self.events.recv() => match ev {
                    Some(Ev::Candidate(c)) => ws.send_msg(&ClientMsg::OnIceCandidate { candidate: c }).await,
                    Some(Ev::State(RTCPeerConnectionState::Connected)) => seen.connected = true,
                    Some(Ev::State(_)) => {}
                    Some(Ev::Rtp(RtpCodecKind::Video)) => seen.video_packets += 1,
                    Some(Ev::Rtp(_)) => seen.audio_packets += 1,
                    None => break,
                },
                m = ws.try_recv(Duration::from_secs(3600)) => {
                    match m.as_deref().map(decode_server) {
                        Some(Ok(ServerMsg::IceCandidate { candidate })) => self.add_candidate(candidate).await,
                        Some(_) => seen.signals.extend(m),
                        None => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
        }
        seen
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// How long the full peer sends (it cannot see when the test peer has enough).
pub const SEND_FOR: Duration = Duration::from_secs(4);

/// The test peer (on `ws`) and the full peer `full` both send for
/// [`SEND_FOR`], the full one `src`; what each of them received.
pub async fn talk(peer: &mut TestPeer, ws: &mut Ws, full: &mut MediaUser, src: Source) -> (Seen, Received) {
    let done = Done::of(1);
    tokio::join!(peer.run(ws, true, SEND_FOR, |_| false), full.exchange(src, SEND_FOR, &done, |_| false))
}

/// `/metrics` once the metric `name` passes `test` (the hub stores its
/// gauges after it has sent what the core said), or as it is after
/// [`DEADLINE`].
pub async fn metrics_when(server: &one2one_server::Server, name: &str, test: impl Fn(u64) -> bool) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let m = server.metrics.render();
        if test(metric(&m, name)) || Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A metric's value from `/metrics` text (the first line that starts with `name `).
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}
