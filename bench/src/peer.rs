//! A load-generator peer: webrtc-rs with Opus and VP8 tracks that it feeds
//! with pre-built RTP packets (no codec work during the run), and a receiver
//! that reads the trailer of every packet that arrives. It can offer (our
//! protocol, the caller on Janus) or answer (the callee on Janus).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use one2one_media::rtc_setup::{VideoCodec, interceptors, media_engine, opus, track_def};
use rtc::rtp::header::Header;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use shared_proto::IceCandidate;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

use crate::media::{self, AUDIO_TICKS, Media, VIDEO_TICKS};
use crate::stats::{Stream, Window};

#[derive(Debug)]
pub enum PeerEvent {
    Candidate(IceCandidate),
    State(RTCPeerConnectionState),
}

/// The streams a peer receives (filled by its poll loops).
#[derive(Debug, Default)]
pub struct Inbound {
    pub audio: Arc<Stream>,
    pub video: Arc<Stream>,
}

struct Handler {
    events: mpsc::UnboundedSender<PeerEvent>,
    inbound: Arc<Inbound>,
    window: Arc<Window>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, ev: RTCPeerConnectionIceEvent) {
        if let Ok(init) = ev.candidate.to_json() {
            let _ =
                self.events.send(PeerEvent::Candidate(IceCandidate::new(init.candidate, Some("0".into()), Some(0))));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(PeerEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let stream = match track.kind().await {
            RtpCodecKind::Video => self.inbound.video.clone(),
            _ => self.inbound.audio.clone(),
        };
        let window = self.window.clone();
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = ev
                    && let Some((index, sent)) = media::read_trailer(&p.payload)
                {
                    let now = media::now_ns();
                    stream.recv().record(index, sent, now, &window);
                }
            }
        });
    }
}

struct Outgoing {
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    pt: AtomicU8,
}

pub struct BenchPeer {
    pc: Arc<dyn PeerConnection>,
    audio: Outgoing,
    video: Outgoing,
    pending: Mutex<Option<Vec<RTCIceCandidateInit>>>,
    pub inbound: Arc<Inbound>,
}

fn ssrc(seed: u32) -> u32 {
    use std::sync::atomic::AtomicU32;
    static N: AtomicU32 = AtomicU32::new(0x1234_5678);
    let n = N.fetch_add(0x9E37_79B9, Ordering::Relaxed);
    (n ^ seed.rotate_left(7) ^ std::process::id()).max(1)
}

impl BenchPeer {
    pub async fn new(
        ip: IpAddr,
        window: Arc<Window>,
        inbound: Arc<Inbound>,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> anyhow::Result<BenchPeer> {
        let mut me = media_engine(VideoCodec::Vp8).context("media engine")?;
        let registry = interceptors(&mut me).context("interceptors")?;
        let settings =
            SettingEngineBuilder::new().with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled).build();
        let handler = Arc::new(Handler { events, inbound: inbound.clone(), window });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(handler)
            .with_udp_addrs(vec![std::net::SocketAddr::new(ip, 0).to_string()])
            .build()
            .await
            .context("creating a peer connection")?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let seed = media::now_ns() as u32;
        let assrc = ssrc(seed ^ 0xA5A5);
        let audio = Outgoing {
            track: Arc::new(TrackLocalStaticRTP::new(track_def("bench", "audio", RtpCodecKind::Audio, assrc, opus()))),
            ssrc: assrc,
            pt: AtomicU8::new(0),
        };
        let vssrc = ssrc(seed ^ 0x5A5A);
        let video = Outgoing {
            track: Arc::new(TrackLocalStaticRTP::new(track_def(
                "bench",
                "video",
                RtpCodecKind::Video,
                vssrc,
                VideoCodec::Vp8.codec(),
            ))),
            ssrc: vssrc,
            pt: AtomicU8::new(0),
        };
        Ok(BenchPeer { pc, audio, video, pending: Mutex::new(Some(Vec::new())), inbound })
    }

    async fn add_tracks(&self) -> anyhow::Result<()> {
        self.pc.add_track(self.audio.track.clone()).await.context("adding the audio track")?;
        self.pc.add_track(self.video.track.clone()).await.context("adding the video track")?;
        Ok(())
    }

    /// Offerer: adds the tracks, creates and applies the offer.
    pub async fn offer(&self) -> anyhow::Result<String> {
        self.add_tracks().await?;
        let offer = self.pc.create_offer(None).await.context("creating the offer")?;
        let sdp = offer.sdp.clone();
        self.pc.set_local_description(offer).await.context("applying the offer")?;
        Ok(sdp)
    }

    /// Offerer: applies the answer, then the candidates that waited for it.
    pub async fn apply_answer(&self, sdp: &str) -> anyhow::Result<()> {
        let answer = RTCSessionDescription::answer(sdp.to_owned()).context("the answer is not valid SDP")?;
        self.pc.set_remote_description(answer).await.context("the answer was refused")?;
        self.after_negotiation().await
    }

    /// Answerer: applies the offer, adds the tracks, returns the answer.
    pub async fn answer(&self, offer: &str) -> anyhow::Result<String> {
        let offer = RTCSessionDescription::offer(offer.to_owned()).context("the offer is not valid SDP")?;
        self.pc.set_remote_description(offer).await.context("the offer was refused")?;
        self.add_tracks().await?;
        let answer = self.pc.create_answer(None).await.context("creating the answer")?;
        self.pc.set_local_description(answer).await.context("applying the answer")?;
        let sdp = self.pc.local_description().await.map(|d| d.sdp).ok_or_else(|| anyhow!("the answer vanished"))?;
        self.after_negotiation().await?;
        Ok(sdp)
    }

    async fn after_negotiation(&self) -> anyhow::Result<()> {
        for sender in self.pc.get_senders().await {
            let Ok(params) = sender.get_parameters().await else {
                continue;
            };
            for (out, mime) in [(&self.audio, "audio/opus"), (&self.video, "video/VP8")] {
                if !params.encodings.iter().any(|e| e.rtp_coding_parameters.ssrc == Some(out.ssrc)) {
                    continue;
                }
                if let Some(c) =
                    params.rtp_parameters.codecs.iter().find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                {
                    out.pt.store(c.payload_type, Ordering::Release);
                }
            }
        }
        if self.audio.pt.load(Ordering::Acquire) == 0 || self.video.pt.load(Ordering::Acquire) == 0 {
            return Err(anyhow!("negotiation left out Opus or VP8"));
        }
        let queued = self.pending.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or_default();
        for c in queued {
            if let Err(e) = self.pc.add_ice_candidate(c).await {
                tracing::debug!(error = %e, "remote candidate refused");
            }
        }
        Ok(())
    }

    /// A remote candidate; buffered until negotiation is done.
    pub async fn add_remote_candidate(&self, c: IceCandidate) {
        let Some(init) = one2one_media::rtc_setup::candidate_init(c) else {
            return;
        };
        {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(q) = pending.as_mut() {
                q.push(init);
                return;
            }
        }
        if let Err(e) = self.pc.add_ice_candidate(init).await {
            tracing::debug!(error = %e, "remote candidate refused");
        }
    }

    /// Sends the looped media until `stop` fires, counting what leaves
    /// inside the window into `out_audio` / `out_video`.
    pub async fn send_loop(
        self: Arc<Self>,
        media: Arc<Media>,
        window: Arc<Window>,
        out: Arc<Inbound>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut video_tick = tokio::time::interval(media::VIDEO_INTERVAL);
        let mut audio_tick = tokio::time::interval(media::AUDIO_INTERVAL);
        video_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        audio_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let start = (media::now_ns() as u32).wrapping_mul(2_654_435_761);
        let (mut vseq, mut aseq) = (start as u16, (start >> 16) as u16);
        let (mut vts, mut ats) = (start, start.rotate_left(11));
        let (mut vindex, mut aindex) = (0u32, 0u32);
        let (mut frame_no, mut audio_no) = (0usize, 0usize);
        let vpt = self.video.pt.load(Ordering::Acquire);
        let apt = self.audio.pt.load(Ordering::Acquire);
        loop {
            tokio::select! {
                () = crate::stopped(&mut stop) => break,
                _ = video_tick.tick() => {
                    let frame = &media.video[frame_no % media.video.len()];
                    frame_no += 1;
                    let last = frame.payloads.len().saturating_sub(1);
                    for (i, payload) in frame.payloads.iter().enumerate() {
                        let sent = media::now_ns();
                        let header = Header {
                            version: 2,
                            marker: i == last,
                            payload_type: vpt,
                            sequence_number: vseq,
                            timestamp: vts,
                            ssrc: self.video.ssrc,
                            ..Default::default()
                        };
                        let p = rtc::rtp::Packet { header, payload: media::with_trailer(payload, vindex, sent) };
                        vseq = vseq.wrapping_add(1);
                        vindex += 1;
                        if window.contains(sent) {
                            out.video.sent.packets.fetch_add(1, Ordering::Relaxed);
                        }
                        if self.video.track.write_rtp(p).await.is_err() {
                            return;
                        }
                    }
                    vts = vts.wrapping_add(VIDEO_TICKS);
                }
                _ = audio_tick.tick() => {
                    let payload = &media.audio[audio_no % media.audio.len()];
                    audio_no += 1;
                    let sent = media::now_ns();
                    let header = Header {
                        version: 2,
                        marker: false,
                        payload_type: apt,
                        sequence_number: aseq,
                        timestamp: ats,
                        ssrc: self.audio.ssrc,
                        ..Default::default()
                    };
                    let p = rtc::rtp::Packet { header, payload: media::with_trailer(payload, aindex, sent) };
                    aseq = aseq.wrapping_add(1);
                    aindex += 1;
                    ats = ats.wrapping_add(AUDIO_TICKS);
                    if window.contains(sent) {
                        out.audio.sent.packets.fetch_add(1, Ordering::Relaxed);
                    }
                    if self.audio.track.write_rtp(p).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// When the first packet reached this peer, of any kind.
pub fn first_arrival(inbound: &Inbound) -> Option<Instant> {
    let a = inbound.audio.recv().first;
    let v = inbound.video.recv().first;
    match (a, v) {
        (Some(a), Some(v)) => Some(a.min(v)),
        (x, y) => x.or(y),
    }
}
