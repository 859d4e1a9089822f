//! The client's WebRTC peer: always the offerer, sendrecv audio and video,
//! trickle ICE with remote candidates buffered until the answer is applied.
//!
//! It moves encoded media only: the caller hands it VP8 frames and Opus
//! packets, and gets back VP8 frames (assembled by [`crate::vp8_assembler`],
//! each as soon as its last packet is in) and Opus packets as
//! [`PeerEvent`]s. Encoding, decoding and devices live elsewhere.

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::media::Sample;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use shared_proto::IceCandidate;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit,
    RTCIceServer, RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

use crate::rtc_setup::{VideoCodec, interceptors, is_keyframe_request, media_engine, opus, track_def};
use crate::vp8_assembler::{Output, Vp8Assembler};

/// Key frames asked for after lost frames, at most this often.
const PLI_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("WebRTC: {0}")]
    Rtc(String),
    #[error("the answer is not usable: {0}")]
    BadAnswer(String),
}

fn rtc_err(what: &str) -> impl Fn(webrtc::error::Error) -> PeerError + '_ {
    move |e| PeerError::Rtc(format!("{what}: {e}"))
}

#[derive(Debug, Clone, Default)]
pub struct PeerOptions {
    /// Local addresses to gather on; empty = every non-loopback interface.
    pub bind_ips: Vec<IpAddr>,
    /// STUN/TURN: (url, username, credential).
    pub ice_servers: Vec<(String, String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

#[derive(Debug)]
pub enum PeerEvent {
    /// A local candidate, to send as `onIceCandidate`.
    Candidate(IceCandidate),
    State(PeerState),
    /// One complete VP8 frame from the remote side.
    Video {
        data: Bytes,
        rtp_timestamp: u32,
        arrived: Instant,
    },
    /// One Opus packet from the remote side.
    Audio {
        data: Bytes,
        rtp_timestamp: u32,
        seq: u16,
        arrived: Instant,
    },
    /// The remote receiver asked for a key frame.
    KeyframeRequested,
}

pub type PeerEvents = mpsc::UnboundedSender<PeerEvent>;

/// The remote video track and its SSRC, once it arrives (for PLIs).
type RemoteVideo = Arc<Mutex<Option<(Arc<dyn TrackRemote>, u32)>>>;

struct Handler {
    events: PeerEvents,
    remote_video: RemoteVideo,
    video_dropped: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, ev: RTCPeerConnectionIceEvent) {
        if let Ok(init) = ev.candidate.to_json() {
            let c = IceCandidate::new(init.candidate, Some("0".into()), Some(0));
            let _ = self.events.send(PeerEvent::Candidate(c));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let s = match state {
            RTCPeerConnectionState::Connected => PeerState::Connected,
            RTCPeerConnectionState::Disconnected => PeerState::Disconnected,
            RTCPeerConnectionState::Failed => PeerState::Failed,
            RTCPeerConnectionState::Closed => PeerState::Closed,
            _ => PeerState::Connecting,
        };
        let _ = self.events.send(PeerEvent::State(s));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let events = self.events.clone();
        let remote_video = self.remote_video.clone();
        tokio::spawn(receive(track, events, remote_video, self.video_dropped.clone()));
    }
}

async fn receive(track: Arc<dyn TrackRemote>, events: PeerEvents, remote_video: RemoteVideo, dropped: Arc<AtomicU64>) {
    let kind = track.kind().await;
    let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
    if kind == RtpCodecKind::Video {
        *lock(&remote_video) = Some((track.clone(), ssrc));
        let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc };
        let _ = track.write_rtcp(vec![Box::new(pli)]).await;
    }
    // Frames out on their last packet. Under loss a complete frame waits
    // up to the repair wait (100 ms) for a retransmission of what is missing
    // before it; an incomplete one waits at most 256 packets or 0.5 s. The
    // assembler's deadline is kept even when no packet comes.
    let mut assembler = Vp8Assembler::default();
    let mut last_pli: Option<Instant> = None;
    loop {
        let deadline = assembler.poll_timeout();
        // `None`: the deadline passed, no packet.
        let ev: Option<Option<TrackRemoteEvent>> = tokio::select! {
            ev = track.poll() => Some(ev),
            () = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            } => {
                assembler.handle_timeout(Instant::now());
                None
            }
        };
        let p = match ev {
            Some(Some(TrackRemoteEvent::OnRtpPacket(p))) => Some(p),
            Some(Some(_)) => continue,
            Some(None) => return,
            None => None,
        };
        let now = Instant::now();
        if kind == RtpCodecKind::Video {
            if let Some(p) = &p {
                let h = &p.header;
                if let Err(e) = assembler.push(now, h.sequence_number, h.timestamp, h.marker, &p.payload) {
                    tracing::trace!(error = %e, seq = h.sequence_number, "video packet not taken");
                }
            }
            let mut lost = false;
            while let Some(out) = assembler.poll_output() {
                match out {
                    Output::Frame(f) => {
                        let ev = PeerEvent::Video { data: f.data, rtp_timestamp: f.rtp_timestamp, arrived: f.arrived };
                        if events.send(ev).is_err() {
                            return;
                        }
                    }
                    Output::Dropped(d) => {
                        tracing::debug!(?d, "incomplete video frame given up");
                        dropped.fetch_add(1, Relaxed);
                        lost = true;
                    }
                }
            }
            // The decoder cannot go on without the lost frame: ask for a key
            // frame, at most every PLI_INTERVAL.
            if lost && last_pli.is_none_or(|t| now.duration_since(t) >= PLI_INTERVAL) {
                last_pli = Some(now);
                let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc };
                let _ = track.write_rtcp(vec![Box::new(pli)]).await;
            }
        } else if let Some(p) = p {
            let ev = PeerEvent::Audio {
                data: p.payload,
                rtp_timestamp: p.header.timestamp,
                seq: p.header.sequence_number,
                arrived: now,
            };
            if events.send(ev).is_err() {
                return;
            }
        }
    }
}

struct Outgoing {
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    pt: Mutex<u8>,
}

/// One call's peer connection.
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    audio: Outgoing,
    video: Outgoing,
    remote_video: RemoteVideo,
    video_dropped: Arc<AtomicU64>,
    /// Remote candidates waiting for the answer.
    pending: Mutex<Option<Vec<RTCIceCandidateInit>>>,
}

impl Peer {
    pub async fn new(opts: &PeerOptions, events: PeerEvents) -> Result<Peer, PeerError> {
        let mut me = media_engine(VideoCodec::Vp8).map_err(rtc_err("media engine"))?;
        let registry = interceptors(&mut me).map_err(rtc_err("interceptors"))?;
        let ice = opts
            .ice_servers
            .iter()
            .map(|(u, n, c)| RTCIceServer { urls: vec![u.clone()], username: n.clone(), credential: c.clone() })
            .collect();
        let config = RTCConfigurationBuilder::new().with_ice_servers(ice).build();
        let settings =
            SettingEngineBuilder::new().with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled).build();
        let addrs: Vec<String> = if opts.bind_ips.is_empty() {
            vec!["0.0.0.0:0".into()]
        } else {
            opts.bind_ips.iter().map(|ip| std::net::SocketAddr::new(*ip, 0).to_string()).collect()
        };
        let remote_video = Arc::new(Mutex::new(None));
        let video_dropped = Arc::new(AtomicU64::new(0));
        let handler = Arc::new(Handler {
            events: events.clone(),
            remote_video: remote_video.clone(),
            video_dropped: video_dropped.clone(),
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(handler)
            .with_udp_addrs(addrs)
            .build()
            .await
            .map_err(rtc_err("creating the peer connection"))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let seed =
            std::process::id() ^ Instant::now().elapsed().subsec_nanos() ^ (Arc::as_ptr(&remote_video) as usize as u32);
        let audio = Self::outgoing(&pc, RtpCodecKind::Audio, seed | 1).await?;
        let video = Self::outgoing(&pc, RtpCodecKind::Video, seed.rotate_left(16) | 1).await?;
        let track = video.track.clone();
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(pkts) = ev
                    && pkts.iter().any(|p| is_keyframe_request(p.as_ref()))
                    && events.send(PeerEvent::KeyframeRequested).is_err()
                {
                    break;
                }
            }
        });
        Ok(Peer { pc, audio, video, remote_video, video_dropped, pending: Mutex::new(Some(Vec::new())) })
    }

    async fn outgoing(pc: &Arc<dyn PeerConnection>, kind: RtpCodecKind, ssrc: u32) -> Result<Outgoing, PeerError> {
        let (id, codec) = match kind {
            RtpCodecKind::Video => ("video", VideoCodec::Vp8.codec()),
            _ => ("audio", opus()),
        };
        let track = track_def("one2one", id, kind, ssrc, codec);
        let track = Arc::new(TrackLocalStaticSample::new(Instant::now(), track).map_err(rtc_err("local track"))?);
        pc.add_track(track.clone()).await.map_err(rtc_err("adding a track"))?;
        Ok(Outgoing { track, ssrc, pt: Mutex::new(0) })
    }

    /// Creates and applies the offer; returns its SDP.
    pub async fn create_offer(&self) -> Result<String, PeerError> {
        let offer = self.pc.create_offer(None).await.map_err(rtc_err("creating the offer"))?;
        let sdp = offer.sdp.clone();
        self.pc.set_local_description(offer).await.map_err(rtc_err("applying the offer"))?;
        Ok(sdp)
    }

    /// Applies the answer, then the candidates that waited for it.
    pub async fn apply_answer(&self, sdp: &str) -> Result<(), PeerError> {
        let answer = RTCSessionDescription::answer(sdp.to_owned()).map_err(|e| PeerError::BadAnswer(e.to_string()))?;
        self.pc.set_remote_description(answer).await.map_err(|e| PeerError::BadAnswer(e.to_string()))?;
        // Nothing is sent on an m-line the answer refused (port 0, as the
        // relay answers a kind the other user cannot take) or does not
        // receive on.
        let answered = crate::sdp_check::summarize(sdp).unwrap_or_default();
        let takes = |s: &Option<crate::sdp_check::Section>| s.as_ref().is_some_and(|s| s.direction.receives());
        for (out, mime, ok) in
            [(&self.audio, "audio/opus", takes(&answered.audio)), (&self.video, "video/VP8", takes(&answered.video))]
        {
            let pt = if ok { self.sender_pt(out.ssrc, mime).await } else { 0 };
            *lock(&out.pt) = pt;
        }
        let queued = lock(&self.pending).take().unwrap_or_default();
        for c in queued {
            if let Err(e) = self.pc.add_ice_candidate(c).await {
                tracing::debug!(error = %e, "remote candidate refused");
            }
        }
        Ok(())
    }

    async fn sender_pt(&self, ssrc: u32, mime: &str) -> u8 {
        for sender in self.pc.get_senders().await {
            let Ok(params) = sender.get_parameters().await else {
                continue;
            };
            if !params.encodings.iter().any(|e| e.rtp_coding_parameters.ssrc == Some(ssrc)) {
                continue;
            }
            if let Some(c) =
                params.rtp_parameters.codecs.iter().find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
            {
                return c.payload_type;
            }
        }
        0
    }

    /// A remote candidate; buffered until the answer is applied.
    pub async fn add_remote_candidate(&self, c: IceCandidate) {
        let Some(init) = crate::rtc_setup::candidate_init(c) else {
            return;
        };
        {
            let mut pending = lock(&self.pending);
            if let Some(q) = pending.as_mut() {
                q.push(init);
                return;
            }
        }
        if let Err(e) = self.pc.add_ice_candidate(init).await {
            tracing::debug!(error = %e, "remote candidate refused");
        }
    }

    /// Sends one encoded VP8 frame that lasts `duration`.
    pub async fn send_video(&self, data: Bytes, duration: Duration) -> Result<(), PeerError> {
        Self::send(&self.video, data, duration).await
    }

    /// Sends one Opus packet that lasts `duration` (20 ms).
    pub async fn send_audio(&self, data: Bytes, duration: Duration) -> Result<(), PeerError> {
        Self::send(&self.audio, data, duration).await
    }

    async fn send(out: &Outgoing, data: Bytes, duration: Duration) -> Result<(), PeerError> {
        let pt = *lock(&out.pt);
        if pt == 0 {
            return Ok(()); // not negotiated (yet)
        }
        let sample = Sample { data, duration, ..Sample::new(Instant::now()) };
        out.track.sample_writer(out.ssrc, pt).write_sample(&sample).await.map_err(rtc_err("sending media"))
    }

    /// Asks the remote sender for a key frame.
    pub async fn request_keyframe(&self) {
        let remote = lock(&self.remote_video).clone();
        if let Some((track, ssrc)) = remote {
            let _ = track.write_rtcp(vec![Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc })]).await;
        }
    }

    /// Losses in the remote video so far: incomplete frames given up, and
    /// holes in the sequence before a frame. Each also asks the sender for a
    /// key frame (at most one PLI every 0.5 s).
    pub fn video_frames_dropped(&self) -> u64 {
        self.video_dropped.load(Relaxed)
    }

    pub fn connection(&self) -> &Arc<dyn PeerConnection> {
        &self.pc
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}
