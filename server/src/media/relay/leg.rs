//! One relay leg: a server-side peer connection that answers one offer on
//! its own, and [`connect`] that forwards one leg's incoming media to
//! another leg's outgoing tracks.
//!
//! A leg knows nothing of calls, users or KMS objects: it is built from an
//! offer and a [`LegSpec`] (which codecs to register and which kinds to send
//! back), reports [`LegEvent`]s through a callback, and forwards whatever
//! arrives to its current sink. The embedded call is two legs connected
//! both ways; a `--kms-listen` WebRtcEndpoint is one leg, connected when the
//! client says so.
//!
//! Forwarding never decodes and never copies a payload: only the SSRC and
//! payload type are rewritten and header extensions are dropped (their ids
//! are per leg). A kind is forwarded only when both legs negotiated the same
//! codec for it. Keyframe requests (PLI/FIR) that the receiver on a leg
//! sends become a PLI towards the user of the leg that feeds it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use one2one_media::rtc_setup::{interceptors, is_keyframe_request, media_engine_for, opus, track_def};
use one2one_media::sdp_check::{CommonMedia, OfferError, OfferSummary, VideoCodec};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use shared_proto::IceCandidate;
use tokio::sync::watch;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceServer,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};
use webrtc::runtime::{Runtime, TokioRuntime};

use super::{PortPolicy, PortPool, RelayConfig, advertise, advertise_sdp, first_mid, lock};
use crate::metrics::Metrics;

/// What a leg registers and sends back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegSpec {
    /// Opus is registered (audio can be received and sent).
    pub audio: bool,
    /// The one video codec registered.
    pub video: Option<VideoCodec>,
    /// The leg sends audio to its user (an outgoing Opus track).
    pub send_audio: bool,
    /// The leg sends video to its user.
    pub send_video: bool,
}

impl LegSpec {
    /// What one offer can carry on its own: Opus if it has it, VP8 if it
    /// has it, else H.264; the leg sends back each of those kinds the
    /// offer receives (sendrecv for a sendrecv offer).
    pub fn for_offer(offer: &OfferSummary) -> Result<LegSpec, OfferError> {
        let audio = offer.audio.as_ref().filter(|s| s.opus);
        let video_section = offer.video.as_ref();
        let video = video_section.and_then(|s| {
            if s.vp8 {
                Some(VideoCodec::Vp8)
            } else if s.h264 {
                Some(VideoCodec::H264)
            } else {
                None
            }
        });
        if audio.is_none() && video.is_none() {
            return Err(if offer.audio.is_none() && offer.video.is_none() {
                OfferError::NoMedia
            } else {
                OfferError::NoUsableCodec
            });
        }
        Ok(LegSpec {
            audio: audio.is_some(),
            video,
            send_audio: audio.is_some_and(|s| s.direction.receives()),
            send_video: video.is_some() && video_section.is_some_and(|s| s.direction.receives()),
        })
    }

    /// The two legs of a call between two offers (`[caller, callee]`):
    /// the same codecs on both, and each leg sends only what the other
    /// side sends and its own user receives.
    pub fn for_call(common: &CommonMedia) -> [LegSpec; 2] {
        let leg = |from_other: usize| LegSpec {
            audio: common.audio,
            video: common.video,
            send_audio: common.audio_to[from_other],
            send_video: common.video.is_some() && common.video_to[from_other],
        };
        [leg(1), leg(0)]
    }
}

/// What a leg reports. Called from the stack's tasks: the callback must
/// not block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    /// A local candidate for the leg's user.
    Candidate(IceCandidate),
    /// ICE and DTLS are up.
    Connected,
    /// ICE or DTLS failed.
    Failed,
    /// The first packet from this leg's user was forwarded to a sink.
    Flowing,
}

/// Where a leg's events go.
pub type LegEvents = Arc<dyn Fn(LegEvent) + Send + Sync>;

/// Why a leg could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegError {
    /// The offer cannot be applied.
    #[error("{0}")]
    BadOffer(String),
    /// No port or other resource left.
    #[error("{0}")]
    NoCapacity(String),
    #[error("{0}")]
    Internal(String),
}

/// The relay's shared parts: settings, ports, counters. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<RelayInner>,
}

struct RelayInner {
    cfg: RelayConfig,
    metrics: Arc<Metrics>,
    runtime: Arc<dyn Runtime>,
    ports: Mutex<PortPool>,
}

impl Relay {
    pub fn new(cfg: RelayConfig, metrics: Arc<Metrics>) -> Relay {
        let range = match cfg.ports {
            PortPolicy::Ephemeral => None,
            PortPolicy::Range(lo, hi) => Some((lo, hi)),
        };
        let ports = Mutex::new(PortPool { range, ..Default::default() });
        Relay { inner: Arc::new(RelayInner { cfg, metrics, runtime: Arc::new(TokioRuntime), ports }) }
    }

    /// Builds a leg that answers `offer` with the codecs of `spec`; the
    /// answer SDP comes back with it. On an error nothing is left behind.
    pub async fn answer(
        &self,
        label: &str,
        offer: &str,
        spec: LegSpec,
        events: LegEvents,
    ) -> Result<(RelayLeg, String), LegError> {
        let inner = &self.inner;
        let err = |what: &str, e: &dyn std::fmt::Display| LegError::Internal(format!("{what}: {e}"));
        // Codecs of a kind are registered only when the spec has them: the
        // answer then refuses a kind that cannot be carried.
        let mut me = media_engine_for(spec.audio, spec.video).map_err(|e| err("media engine", &e))?;
        let registry = interceptors(&mut me).map_err(|e| err("interceptors", &e))?;
        let ice_servers: Vec<RTCIceServer> = inner
            .cfg
            .ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect();
        let config = RTCConfigurationBuilder::new().with_ice_servers(ice_servers).build();
        // ICE-lite when the relay has only host candidates (no STUN/TURN of
        // its own): it never sends checks, it answers the client's. A full
        // agent sent its first checks before the caller had applied the
        // answer; the caller dropped them, and the leg connected only a
        // second later.
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_lite(inner.cfg.ice_servers.is_empty())
            .build();
        let port = PortLease::take(self)?;
        let p = port.port.unwrap_or(0);
        let addrs: Vec<String> = if inner.cfg.media_ips.is_empty() {
            vec![format!("0.0.0.0:{p}")]
        } else {
            inner.cfg.media_ips.iter().map(|ip| std::net::SocketAddr::new(*ip, p).to_string()).collect()
        };
        let cell: Arc<OnceLock<Arc<LegLink>>> = Arc::new(OnceLock::new());
        let handler = Arc::new(LegHandler {
            mid: first_mid(offer),
            public_ips: inner.cfg.public_ips.clone(),
            public_ip_only: inner.cfg.public_ip_only,
            events: events.clone(),
            link: cell.clone(),
            runtime: inner.runtime.clone(),
        });
        let built = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(handler)
            .with_runtime(inner.runtime.clone())
            .with_udp_addrs(addrs)
            .build()
            .await;
        let pc: Arc<dyn PeerConnection> = match built {
            Ok(pc) => Arc::new(pc),
            Err(e) => return Err(err("creating a peer connection", &e)),
        };
        match negotiate(inner, label, offer, spec, &pc, events).await {
            Ok((link, sdp)) => {
                let _ = cell.set(link.clone());
                let mut tasks = Vec::new();
                if link.video_out.is_some() {
                    tasks.push(inner.runtime.spawn(Box::pin(relay_keyframe_requests(link.clone()))));
                }
                Ok((RelayLeg { link, pc, _port: port, tasks }, sdp))
            }
            Err(e) => {
                if let Err(c) = pc.close().await {
                    tracing::debug!(leg = label, error = %c, "closing a leg that did not negotiate");
                }
                Err(e)
            }
        }
    }
}

async fn negotiate(
    inner: &RelayInner,
    label: &str,
    offer: &str,
    spec: LegSpec,
    pc: &Arc<dyn PeerConnection>,
    events: LegEvents,
) -> Result<(Arc<LegLink>, String), LegError> {
    let err = |what: &str, e: &dyn std::fmt::Display| LegError::Internal(format!("{what}: {e}"));
    let bad = |what: &str, e: &dyn std::fmt::Display| LegError::BadOffer(format!("{what}: {e}"));
    let remote = RTCSessionDescription::offer(offer.to_owned()).map_err(|e| bad("not valid SDP", &e))?;
    pc.set_remote_description(remote).await.map_err(|e| bad("refused", &e))?;
    let stream = format!("one2one-{label}");
    let mut audio = None;
    if spec.audio && spec.send_audio {
        audio = Some(
            add_out(pc, &stream, RtpCodecKind::Audio, opus()).await.map_err(|e| err("adding the audio track", &e))?,
        );
    }
    let mut video = None;
    if let Some(codec) = spec.video.filter(|_| spec.send_video) {
        video = Some((
            add_out(pc, &stream, RtpCodecKind::Video, codec.codec())
                .await
                .map_err(|e| err("adding the video track", &e))?,
            codec,
        ));
    }
    let answer = pc.create_answer(None).await.map_err(|e| err("creating the answer", &e))?;
    pc.set_local_description(answer).await.map_err(|e| err("applying the answer", &e))?;
    let sdp = pc.local_description().await.map(|d| d.sdp).ok_or(LegError::Internal("the answer vanished".into()))?;
    let sdp = advertise_sdp(&sdp, &inner.cfg.public_ips, inner.cfg.public_ip_only);
    // A track whose codec did not make it into the answer sends nothing.
    let audio_out = match audio {
        Some((sender, out)) => negotiated(sender, out, "audio/opus", None).await,
        None => None,
    };
    let video_out = match video {
        Some(((sender, out), codec)) => negotiated(sender, out, codec.mime(), Some(codec)).await,
        None => None,
    };
    tracing::debug!(
        leg = label,
        audio_pt = audio_out.as_ref().map(|o| o.pt),
        video_pt = video_out.as_ref().map(|o| o.pt),
        video = ?spec.video,
        "leg negotiated"
    );
    let link = Arc::new(LegLink {
        label: label.to_owned(),
        spec,
        audio_out,
        video_out,
        remote_video: Mutex::new(None),
        connected: AtomicBool::new(false),
        flowed: AtomicBool::new(false),
        sink: watch::Sender::new(None),
        source: Mutex::new(None),
        metrics: inner.metrics.clone(),
        runtime: inner.runtime.clone(),
        events,
    });
    Ok((link, sdp))
}

/// An outgoing track of a leg, as negotiated.
pub(super) struct Out {
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    pt: u8,
    /// The video codec (`None` for audio).
    codec: Option<VideoCodec>,
}

/// Where a leg's incoming media goes, and which kinds of it.
#[derive(Clone)]
struct Sink {
    leg: Weak<LegLink>,
    audio: bool,
    video: bool,
}

/// The part of a leg that other legs and the forwarding tasks see.
pub struct LegLink {
    label: String,
    spec: LegSpec,
    audio_out: Option<Out>,
    video_out: Option<Out>,
    /// The user's video as it arrives, for sending keyframe requests to it.
    remote_video: Mutex<Option<(Arc<dyn TrackRemote>, u32)>>,
    /// DTLS is up: packets written before that would only be dropped.
    connected: AtomicBool,
    /// A packet from this leg's user has been forwarded.
    flowed: AtomicBool,
    /// Where this leg's incoming media goes ([`connect`]).
    sink: watch::Sender<Option<Sink>>,
    /// The leg whose media this leg sends out (keyframe requests go there).
    source: Mutex<Option<Weak<LegLink>>>,
    metrics: Arc<Metrics>,
    runtime: Arc<dyn Runtime>,
    events: LegEvents,
}

impl LegLink {
    /// This leg sends audio (an Opus track made it into the answer).
    pub fn sends_audio(&self) -> bool {
        self.audio_out.is_some()
    }

    /// This leg sends video.
    pub fn sends_video(&self) -> bool {
        self.video_out.is_some()
    }

    /// Asks the user on this leg for a key frame.
    async fn request_keyframe(&self) {
        let remote = lock(&self.remote_video).clone();
        if let Some((track, ssrc)) = remote {
            let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc };
            let _ = track.write_rtcp(vec![Box::new(pli)]).await;
        }
    }

    fn source(&self) -> Option<Arc<LegLink>> {
        lock(&self.source).as_ref().and_then(Weak::upgrade)
    }
}

/// Which kinds [`connect`] forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Forwarding {
    pub audio: bool,
    pub video: bool,
}

impl Forwarding {
    pub fn any(self) -> bool {
        self.audio || self.video
    }
}

/// Forwards `from`'s incoming media to `to`'s outgoing tracks of the same
/// kind, from now on, and `to`'s keyframe requests to `from`'s user. A
/// kind whose codecs differ on the two legs is not forwarded (no
/// transcoding). Replaces `from`'s previous sink.
pub fn connect(from: &Arc<LegLink>, to: &Arc<LegLink>) -> Forwarding {
    let audio = from.spec.audio && to.audio_out.is_some();
    let video = match (from.spec.video, to.video_out.as_ref().and_then(|o| o.codec)) {
        (Some(a), Some(b)) if a == b => true,
        (Some(a), Some(b)) => {
            tracing::info!(
                from = from.label,
                to = to.label,
                ?a,
                ?b,
                "video not forwarded: the legs use different codecs"
            );
            false
        }
        _ => false,
    };
    if from.spec.audio && to.spec.send_audio && !audio {
        tracing::info!(from = from.label, to = to.label, "audio not forwarded: the receiving leg has no Opus track");
    }
    from.sink.send_replace(Some(Sink { leg: Arc::downgrade(to), audio, video }));
    *lock(&to.source) = Some(Arc::downgrade(from));
    if video {
        // Whoever watches from now on gets a key frame now.
        let from = from.clone();
        from.runtime.clone().spawn(Box::pin(async move { from.request_keyframe().await }));
    }
    tracing::debug!(from = from.label, to = to.label, audio, video, "legs connected");
    Forwarding { audio, video }
}

/// Stops forwarding `from`'s media anywhere.
pub fn disconnect(from: &Arc<LegLink>) {
    if let Some(Some(to)) = from.sink.send_replace(None).map(|s| s.leg.upgrade()) {
        let mut src = lock(&to.source);
        if src.as_ref().is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(from))) {
            *src = None;
        }
    }
}

/// A leg: its peer connection, its port, its tasks. [`RelayLeg::close`]
/// frees them; dropping one without closing leaves the stack to clean up.
pub struct RelayLeg {
    link: Arc<LegLink>,
    pc: Arc<dyn PeerConnection>,
    /// Freed last, when the leg is dropped (closed or not).
    _port: PortLease,
    tasks: Vec<Box<dyn webrtc::runtime::JoinHandle>>,
}

impl RelayLeg {
    pub fn link(&self) -> &Arc<LegLink> {
        &self.link
    }

    /// Adds a candidate of the leg's user; a malformed one is ignored.
    pub async fn add_candidate(&self, candidate: IceCandidate) {
        let Some(init) = one2one_media::rtc_setup::candidate_init(candidate) else {
            return;
        };
        if let Err(e) = self.pc.add_ice_candidate(init).await {
            tracing::debug!(leg = self.link.label, error = %e, "remote candidate refused");
        }
    }

    /// Stops forwarding both ways and frees the peer connection and port.
    pub async fn close(self) {
        disconnect(&self.link);
        *lock(&self.link.source) = None;
        if let Err(e) = self.pc.close().await {
            tracing::debug!(leg = self.link.label, error = %e, "closing a leg");
        }
        drop(self.tasks);
    }
}

/// A port of the pool (none with ephemeral ports), given back when
/// dropped: on every error path, and when a build is abandoned midway.
struct PortLease {
    relay: Relay,
    port: Option<u16>,
}

impl PortLease {
    fn take(relay: &Relay) -> Result<PortLease, LegError> {
        let inner = &relay.inner;
        let port = lock(&inner.ports).alloc(&inner.cfg.media_ips).map_err(LegError::NoCapacity)?;
        Ok(PortLease { relay: relay.clone(), port })
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        lock(&self.relay.inner.ports).free(self.port);
    }
}

struct LegHandler {
    mid: String,
    public_ips: Vec<IpAddr>,
    public_ip_only: bool,
    events: LegEvents,
    link: Arc<OnceLock<Arc<LegLink>>>,
    runtime: Arc<dyn Runtime>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for LegHandler {
    async fn on_ice_candidate(&self, ev: RTCPeerConnectionIceEvent) {
        let Ok(init) = ev.candidate.to_json() else {
            return;
        };
        for line in advertise(&init.candidate, &self.public_ips, self.public_ip_only) {
            (self.events)(LegEvent::Candidate(IceCandidate::new(line, Some(self.mid.clone()), Some(0))));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let label = self.link.get().map(|l| l.label.as_str()).unwrap_or("");
        tracing::debug!(leg = label, ?state, "leg state");
        match state {
            RTCPeerConnectionState::Connected => {
                // A receiver that just arrived needs a key frame from the other side.
                if let Some(link) = self.link.get().cloned() {
                    link.connected.store(true, Ordering::Release);
                    if let Some(source) = link.source() {
                        self.runtime.spawn(Box::pin(async move { source.request_keyframe().await }));
                    }
                }
                (self.events)(LegEvent::Connected);
            }
            RTCPeerConnectionState::Failed => (self.events)(LegEvent::Failed),
            _ => {}
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let link = self.link.clone();
        self.runtime.spawn(Box::pin(async move { forward(track, link).await }));
    }
}

/// Moves one user's track to the leg's current sink until the track ends.
async fn forward(track: Arc<dyn TrackRemote>, cell: Arc<OnceLock<Arc<LegLink>>>) {
    let kind = track.kind().await;
    let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
    let Some(me) = cell.get().cloned() else {
        tracing::warn!(?kind, "media before negotiation finished; track ignored");
        while track.poll().await.is_some() {}
        return;
    };
    drop(cell);
    let video = kind == RtpCodecKind::Video;
    if video {
        *lock(&me.remote_video) = Some((track.clone(), ssrc));
        // Whoever watches gets a key frame now rather than at the next interval.
        me.request_keyframe().await;
    }
    let mut sinks = me.sink.subscribe();
    let mut sink = sinks.borrow_and_update().clone();
    tracing::debug!(leg = me.label, ?kind, ssrc, "track arrived");
    let mut first = true;
    while let Some(ev) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(mut p) = ev else {
            continue;
        };
        if sinks.has_changed().unwrap_or(false) {
            sink = sinks.borrow_and_update().clone();
        }
        // Nobody takes this kind: read and drop, so that the stack's queue
        // for the track never backs up.
        let Some(s) = sink.as_ref().filter(|s| if video { s.video } else { s.audio }) else {
            continue;
        };
        let Some(to) = s.leg.upgrade() else {
            continue;
        };
        let Some(out) = (if video { to.video_out.as_ref() } else { to.audio_out.as_ref() }) else {
            continue;
        };
        if !to.connected.load(Ordering::Acquire) {
            continue;
        }
        let size = 12 + 4 * p.header.csrc.len() + p.payload.len();
        p.header.ssrc = out.ssrc;
        p.header.payload_type = out.pt;
        if p.header.extension {
            p.header.extension = false;
            p.header.extension_profile = 0;
            p.header.extensions.clear();
        }
        me.metrics.relayed(size);
        if out.track.write_rtp(p).await.is_err() {
            // The sink is closing; a new one may come.
            continue;
        }
        if std::mem::take(&mut first) && !me.flowed.swap(true, Ordering::SeqCst) {
            (me.events)(LegEvent::Flowing);
        }
    }
    tracing::debug!(leg = me.label, ?kind, "track ended");
}

/// Turns keyframe requests from the receiver on `link` into a PLI towards
/// the user of the leg that feeds it.
async fn relay_keyframe_requests(link: Arc<LegLink>) {
    let Some(out) = link.video_out.as_ref().map(|o| o.track.clone()) else {
        return;
    };
    let link = Arc::downgrade(&link);
    let mut last = None::<Instant>;
    while let Some(ev) = out.poll().await {
        let TrackLocalEvent::OnRtcpPacket(pkts) = ev else {
            continue;
        };
        if !pkts.iter().any(|p| is_keyframe_request(p.as_ref())) {
            continue;
        }
        // Browsers repeat requests while they wait; one PLI per 200 ms is plenty.
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_millis(200)) {
            continue;
        }
        last = Some(now);
        let Some(source) = link.upgrade().and_then(|l| l.source()) else {
            continue;
        };
        source.request_keyframe().await;
    }
}

type Sender = Arc<dyn webrtc::rtp_transceiver::RtpSender>;

/// Adds an outgoing track of `kind` with a fresh SSRC.
async fn add_out(
    pc: &Arc<dyn PeerConnection>,
    stream: &str,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
) -> webrtc::error::Result<(Sender, (Arc<TrackLocalStaticRTP>, u32))> {
    let ssrc = rand_ssrc();
    let id = if kind == RtpCodecKind::Video { "video" } else { "audio" };
    let track = Arc::new(TrackLocalStaticRTP::new(track_def(stream, id, kind, ssrc, codec)));
    let sender = pc.add_track(track.clone()).await?;
    Ok((sender, (track, ssrc)))
}

/// The track with the payload type its codec got in the answer, if any.
async fn negotiated(
    sender: Sender,
    (track, ssrc): (Arc<TrackLocalStaticRTP>, u32),
    mime: &str,
    codec: Option<VideoCodec>,
) -> Option<Out> {
    let params = sender.get_parameters().await.ok()?;
    let pt =
        params.rtp_parameters.codecs.iter().find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))?.payload_type;
    (pt != 0).then_some(Out { track, ssrc, pt, codec })
}

fn rand_ssrc() -> u32 {
    // Any non-zero value unique within the leg will do; mix the clock and a
    // counter rather than pulling in a RNG.
    use std::sync::atomic::AtomicU32;
    static N: AtomicU32 = AtomicU32::new(0x5eed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let n = N.fetch_add(0x9E37_79B9, Ordering::Relaxed);
    (t ^ n).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use one2one_media::sdp_check::summarize;

    const HEAD: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
    fn spec(body: &str) -> Result<LegSpec, OfferError> {
        LegSpec::for_offer(&summarize(&format!("{HEAD}{body}")).unwrap())
    }
    const AUDIO: &str = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n";

    #[test]
    fn a_port_lease_frees_its_port_when_dropped() {
        let cfg = RelayConfig { ports: PortPolicy::Range(47110, 47110), ..Default::default() };
        let relay = Relay::new(cfg, Arc::new(Metrics::default()));
        let lease = PortLease::take(&relay).unwrap();
        assert_eq!(lease.port, Some(47110));
        assert!(matches!(PortLease::take(&relay), Err(LegError::NoCapacity(_))));
        drop(lease);
        assert_eq!(PortLease::take(&relay).unwrap().port, Some(47110));
    }

    #[test]
    fn one_offer_gets_opus_and_vp8_before_h264() {
        let both =
            "m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n";
        let s = spec(&format!("{AUDIO}{both}")).unwrap();
        assert_eq!(s, LegSpec { audio: true, video: Some(VideoCodec::Vp8), send_audio: true, send_video: true });
        let h264 = "m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:1\r\na=sendonly\r\na=rtpmap:102 H264/90000\r\n";
        let s = spec(&format!("{AUDIO}{h264}")).unwrap();
        assert_eq!(s, LegSpec { audio: true, video: Some(VideoCodec::H264), send_audio: true, send_video: false });
        let av1 = "m=video 9 UDP/TLS/RTP/SAVPF 98\r\na=mid:1\r\na=rtpmap:98 AV1/90000\r\n";
        assert_eq!(spec(av1), Err(OfferError::NoUsableCodec));
        assert_eq!(spec(""), Err(OfferError::NoMedia));
    }
}
