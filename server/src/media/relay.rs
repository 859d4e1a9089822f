//! The embedded back-to-back WebRTC relay (the `webrtc` crate).
//!
//! Each call has two peer connections on the server, one per user ("leg").
//! Each user's offer is answered on its own leg, exactly as KMS does. RTP
//! that arrives on one leg is forwarded, undecoded, to the other leg's
//! outgoing track of the same kind: only the SSRC and payload type are
//! rewritten and header extensions are dropped (their ids are per leg).
//! Keyframe requests (PLI/FIR) that a receiver sends on its leg become a PLI
//! towards the sender on the other leg. NACKs are answered per hop from the
//! send cache of the default interceptors, and each leg NACKs its own
//! sender, so loss on either hop is repaired where it happens.
//!
//! Both legs are built with the same codecs, so that no transcoding is ever
//! needed: Opus when both offers have it, and one video codec (VP8, or
//! H.264 when both offers have it and VP8 is missing on one side) when both
//! have one ([`one2one_media::sdp_check::common_media`]). A kind that only one
//! side can carry is refused on both legs: a caller's camera is simply not
//! forwarded to a callee without video, and the call is audio-only.
//!
//! A call is reported [`MediaEvent::Established`] once the first RTP packet
//! has been forwarded in each direction that carries media, not when ICE
//! or DTLS come up.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use one2one_media::rtc_setup::{interceptors, is_keyframe_request, media_engine_for, opus, track_def};
use one2one_media::sdp_check::{CommonMedia, OfferError, common_media, summarize};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use shared_proto::IceCandidate;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceServer,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};
use webrtc::runtime::{Runtime, TokioRuntime};

use super::{CallId, EventSink, Leg, MediaBackend, MediaCmd, MediaError, MediaEvent};
use crate::IceServer;
use crate::metrics::Metrics;

/// Which UDP ports media legs bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortPolicy {
    /// Any free port.
    #[default]
    Ephemeral,
    /// One port per leg from LOW..=HIGH.
    Range(u16, u16),
}

#[derive(Debug, Clone, Default)]
pub struct RelayConfig {
    pub ports: PortPolicy,
    /// Local addresses to gather on; empty = every non-loopback interface.
    pub media_ips: Vec<IpAddr>,
    /// Public addresses of a 1:1 NAT: each host candidate is also
    /// advertised with the public address of its family (as a server
    /// reflexive candidate whose related address is the host one).
    pub public_ips: Vec<IpAddr>,
    /// Advertise only the public addresses: host candidates are rewritten
    /// instead of being kept next to them (`--public-ip-only`).
    pub public_ip_only: bool,
    pub ice_servers: Vec<IceServer>,
}

/// Free ports of a `--udp-port-range`.
#[derive(Debug, Default)]
struct PortPool {
    range: Option<(u16, u16)>,
    used: HashSet<u16>,
    next: u16,
}

impl PortPool {
    fn alloc(&mut self, ips: &[IpAddr]) -> Result<Option<u16>, String> {
        let Some((lo, hi)) = self.range else {
            return Ok(None);
        };
        let span = u32::from(hi - lo) + 1;
        for i in 0..span {
            let port = lo + ((u32::from(self.next) + i) % span) as u16;
            if self.used.contains(&port) {
                continue;
            }
            let free = if ips.is_empty() {
                std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok()
            } else {
                ips.iter().all(|ip| std::net::UdpSocket::bind((*ip, port)).is_ok())
            };
            if free {
                self.used.insert(port);
                self.next = ((u32::from(port - lo) + 1) % span) as u16;
                return Ok(Some(port));
            }
        }
        Err(format!("no free UDP port left in {lo}-{hi}"))
    }
    fn free(&mut self, port: Option<u16>) {
        if let Some(p) = port {
            self.used.remove(&p);
        }
    }
}

/// A call's command queue and the task that applies it.
type CallTask = (mpsc::UnboundedSender<MediaCmd>, tokio::task::JoinHandle<()>);

struct Shared {
    cfg: RelayConfig,
    events: EventSink,
    metrics: Arc<Metrics>,
    runtime: Arc<dyn Runtime>,
    ports: Mutex<PortPool>,
    calls: Mutex<HashMap<CallId, CallTask>>,
}

pub struct RelayBackend {
    shared: Arc<Shared>,
}

impl RelayBackend {
    pub fn new(cfg: RelayConfig, events: EventSink, metrics: Arc<Metrics>) -> Self {
        let range = match cfg.ports {
            PortPolicy::Ephemeral => None,
            PortPolicy::Range(lo, hi) => Some((lo, hi)),
        };
        let shared = Shared {
            cfg,
            events,
            metrics,
            runtime: Arc::new(TokioRuntime),
            ports: Mutex::new(PortPool { range, ..Default::default() }),
            calls: Mutex::new(HashMap::new()),
        };
        RelayBackend { shared: Arc::new(shared) }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these short locks is a bug elsewhere;
    // the data (maps of handles) stays usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MediaBackend for RelayBackend {
    fn submit(&self, cmd: MediaCmd) {
        let mut calls = lock(&self.shared.calls);
        match cmd {
            MediaCmd::Start { call, .. } => {
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = tx.send(cmd);
                let task = tokio::spawn(run_call(self.shared.clone(), call, rx));
                calls.insert(call, (tx, task));
            }
            MediaCmd::AddCandidate { call, .. } => {
                if let Some((tx, _)) = calls.get(&call) {
                    let _ = tx.send(cmd);
                }
            }
            MediaCmd::Release { call } => {
                if let Some((tx, _)) = calls.remove(&call) {
                    let _ = tx.send(cmd);
                }
            }
        }
    }

    fn shutdown(&self) -> futures_util::future::BoxFuture<'static, ()> {
        let all: Vec<_> = lock(&self.shared.calls).drain().collect();
        async move {
            let mut tasks = Vec::new();
            for (call, (tx, task)) in all {
                let _ = tx.send(MediaCmd::Release { call });
                tasks.push(task);
            }
            for t in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
            }
        }
        .boxed()
    }
}

/// An outgoing track of a leg, as negotiated.
struct Out {
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    pt: u8,
}

/// What the forwarding tasks of one leg need of the other.
struct LegIo {
    /// `None` when the other side sends nothing of that kind this user can take.
    audio_out: Option<Out>,
    video_out: Option<Out>,
    /// The user's video as it arrives, for sending keyframe requests to it.
    remote_video: Mutex<Option<(Arc<dyn TrackRemote>, u32)>>,
    /// DTLS is up: packets written before that would only be dropped.
    connected: AtomicBool,
    /// A packet from this leg's user has been forwarded to the other leg.
    flowed: AtomicBool,
}

struct CallIo {
    call: CallId,
    legs: [LegIo; 2],
    metrics: Arc<Metrics>,
    /// Media is negotiated from this leg to the other.
    expect: [bool; 2],
    /// `Established` was reported.
    established: AtomicBool,
    events: EventSink,
}

fn idx(leg: Leg) -> usize {
    leg.index()
}

impl CallIo {
    /// The first packet from `from` was forwarded; reports the call
    /// established once every direction that carries media has had its
    /// first packet (SeqCst: of two legs racing here, one sees the other).
    fn first_forwarded(&self, from: Leg) {
        self.legs[idx(from)].flowed.store(true, Ordering::SeqCst);
        let done = (0..2).all(|i| !self.expect[i] || self.legs[i].flowed.load(Ordering::SeqCst));
        if done && !self.established.swap(true, Ordering::SeqCst) {
            tracing::debug!(call = %self.call, "media flowing both ways");
            let _ = self.events.send(MediaEvent::Established { call: self.call });
        }
    }

    /// Asks the user on `leg` for a key frame.
    async fn request_keyframe(&self, leg: Leg) {
        let remote = lock(&self.legs[idx(leg)].remote_video).clone();
        if let Some((track, ssrc)) = remote {
            let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc };
            let _ = track.write_rtcp(vec![Box::new(pli)]).await;
        }
    }
}

struct LegHandler {
    call: CallId,
    leg: Leg,
    mid: String,
    public_ips: Vec<IpAddr>,
    public_ip_only: bool,
    events: EventSink,
    io: Arc<OnceLock<Arc<CallIo>>>,
    runtime: Arc<dyn Runtime>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for LegHandler {
    async fn on_ice_candidate(&self, ev: RTCPeerConnectionIceEvent) {
        let Ok(init) = ev.candidate.to_json() else {
            return;
        };
        for line in advertise(&init.candidate, &self.public_ips, self.public_ip_only) {
            let candidate = IceCandidate::new(line, Some(self.mid.clone()), Some(0));
            let _ = self.events.send(MediaEvent::Candidate { call: self.call, leg: self.leg, candidate });
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(call = %self.call, leg = ?self.leg, ?state, "leg state");
        match state {
            RTCPeerConnectionState::Connected => {
                // A receiver that just arrived needs a key frame from the other side.
                if let Some(io) = self.io.get().cloned() {
                    io.legs[idx(self.leg)].connected.store(true, Ordering::Release);
                    let other = self.leg.other();
                    self.runtime.spawn(Box::pin(async move { io.request_keyframe(other).await }));
                }
            }
            RTCPeerConnectionState::Failed => {
                let error = MediaError::ConnectionFailed { leg: self.leg };
                let _ = self.events.send(MediaEvent::Failed { call: self.call, error });
            }
            _ => {}
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let io = self.io.clone();
        let leg = self.leg;
        let call = self.call;
        self.runtime.spawn(Box::pin(async move { forward(call, leg, track, io).await }));
    }
}

/// Moves one user's track to the other leg until the track ends.
async fn forward(call: CallId, from: Leg, track: Arc<dyn TrackRemote>, io: Arc<OnceLock<Arc<CallIo>>>) {
    let kind = track.kind().await;
    let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
    let Some(io) = io.get().cloned() else {
        tracing::warn!(%call, leg = ?from, "media before negotiation finished; track ignored");
        return;
    };
    if kind == RtpCodecKind::Video {
        *lock(&io.legs[idx(from)].remote_video) = Some((track.clone(), ssrc));
        // Whoever watches gets a key frame now rather than at the next interval.
        io.request_keyframe(from).await;
    }
    let out = &io.legs[idx(from.other())];
    let target = match kind {
        RtpCodecKind::Video => out.video_out.as_ref(),
        _ => out.audio_out.as_ref(),
    };
    let Some(Out { track: out_track, ssrc: out_ssrc, pt: out_pt }) = target else {
        // Nobody on the other side takes this kind: read and drop, so that
        // the stack's queue for the track never backs up.
        tracing::debug!(%call, leg = ?from, ?kind, ssrc, "track not forwarded: the other side cannot take it");
        while track.poll().await.is_some() {}
        return;
    };
    let (out_ssrc, out_pt) = (*out_ssrc, *out_pt);
    tracing::debug!(%call, leg = ?from, ?kind, ssrc, "forwarding track");
    let mut first = true;
    while let Some(ev) = track.poll().await {
        if let TrackRemoteEvent::OnRtpPacket(mut p) = ev {
            if !out.connected.load(Ordering::Acquire) {
                continue;
            }
            let size = 12 + 4 * p.header.csrc.len() + p.payload.len();
            p.header.ssrc = out_ssrc;
            p.header.payload_type = out_pt;
            if p.header.extension {
                p.header.extension = false;
                p.header.extension_profile = 0;
                p.header.extensions.clear();
            }
            io.metrics.relayed(size);
            if out_track.write_rtp(p).await.is_err() {
                break;
            }
            if std::mem::take(&mut first) {
                io.first_forwarded(from);
            }
        }
    }
    tracing::debug!(%call, leg = ?from, ?kind, "track ended");
}

/// Turns keyframe requests from the receiver on `leg` into a PLI towards
/// the sender on the other leg.
async fn relay_keyframe_requests(leg: Leg, io: Arc<CallIo>) {
    let Some(out) = io.legs[idx(leg)].video_out.as_ref().map(|o| o.track.clone()) else {
        return;
    };
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
        io.request_keyframe(leg.other()).await;
    }
}

/// The lines to advertise for one of our candidates. A host candidate
/// whose family has a public address gets a server reflexive twin with that
/// address (same port, lower priority, the host as its related address), or,
/// with `only`, is rewritten to the public address. Anything else is kept.
fn advertise(candidate: &str, public_ips: &[IpAddr], only: bool) -> Vec<String> {
    let keep = || vec![candidate.to_owned()];
    let fields: Vec<&str> = candidate.split(' ').collect();
    if public_ips.is_empty() || fields.len() < 8 || fields[6] != "typ" || fields[7] != "host" {
        return keep();
    }
    let Ok(local) = fields[4].parse::<IpAddr>() else {
        return keep();
    };
    let Some(public) = public_ips.iter().find(|p| p.is_ipv4() == local.is_ipv4()) else {
        return keep();
    };
    if *public == local {
        return keep();
    }
    let public = public.to_string();
    if only {
        let mut f = fields;
        f[4] = &public;
        return vec![f.join(" ")];
    }
    // RFC 8445 5.1.2.1: type preference 126 for host, 100 for srflx; the
    // local preference and component stay.
    let Ok(priority) = fields[3].parse::<u32>() else {
        return keep();
    };
    let priority = (100 << 24) | (priority & 0x00ff_ffff);
    // A different foundation: the two have different types.
    let foundation = fields[0].strip_prefix("candidate:").unwrap_or(fields[0]);
    let mut foundation = format!("{foundation}1");
    foundation.truncate(32);
    let mut srflx = format!(
        "candidate:{foundation} {} {} {priority} {public} {} typ srflx raddr {local} rport {}",
        fields[1], fields[2], fields[5], fields[5]
    );
    for extra in &fields[8..] {
        srflx.push(' ');
        srflx.push_str(extra);
    }
    vec![candidate.to_owned(), srflx]
}

/// [`advertise`] applied to the `a=candidate:` lines of an SDP.
fn advertise_sdp(sdp: &str, public_ips: &[IpAddr], only: bool) -> String {
    if public_ips.is_empty() || !sdp.contains("a=candidate:") {
        return sdp.to_owned();
    }
    let mut out = String::with_capacity(sdp.len() + 256);
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let Some(c) = body.strip_prefix("a=") else {
            out.push_str(line);
            continue;
        };
        if !c.starts_with("candidate:") {
            out.push_str(line);
            continue;
        }
        let eol = &line[body.len()..];
        for l in advertise(c, public_ips, only) {
            out.push_str("a=");
            out.push_str(&l);
            out.push_str(if eol.is_empty() { "\r\n" } else { eol });
        }
    }
    out
}

/// The first `a=mid:` of an SDP (what browsers bundle on).
fn first_mid(sdp: &str) -> String {
    sdp.lines().find_map(|l| l.strip_prefix("a=mid:")).map(|m| m.trim().to_owned()).unwrap_or_else(|| "0".into())
}

struct LegPc {
    pc: Arc<dyn PeerConnection>,
    port: Option<u16>,
}

async fn run_call(shared: Arc<Shared>, call: CallId, mut rx: mpsc::UnboundedReceiver<MediaCmd>) {
    let Some(MediaCmd::Start { caller_offer, callee_offer, .. }) = rx.recv().await else {
        return;
    };
    let io_cell: Arc<OnceLock<Arc<CallIo>>> = Arc::new(OnceLock::new());
    let mut legs: Vec<LegPc> = Vec::new();
    let mut tasks: Vec<Box<dyn webrtc::runtime::JoinHandle>> = Vec::new();
    let setup = setup_call(&shared, call, [&caller_offer, &callee_offer], &io_cell, &mut legs).await;
    match setup {
        Ok(answers) => {
            if let Some(io) = io_cell.get() {
                for leg in [Leg::Caller, Leg::Callee] {
                    let io = io.clone();
                    tasks.push(shared.runtime.spawn(Box::pin(relay_keyframe_requests(leg, io))));
                }
            }
            for (leg, sdp) in Leg::BOTH.into_iter().zip(answers) {
                let _ = shared.events.send(MediaEvent::Answer { call, leg, sdp });
            }
        }
        Err(error) => {
            tracing::warn!(%call, %error, "media setup failed");
            let _ = shared.events.send(MediaEvent::Failed { call, error });
        }
    }
    // Candidates and the release, in order.
    while let Some(cmd) = rx.recv().await {
        match cmd {
            MediaCmd::AddCandidate { leg, candidate, .. } => {
                let Some(pc) = legs.get(idx(leg)) else {
                    continue;
                };
                let Some(init) = one2one_media::rtc_setup::candidate_init(candidate) else {
                    continue;
                };
                if let Err(e) = pc.pc.add_ice_candidate(init).await {
                    tracing::debug!(%call, ?leg, error = %e, "remote candidate refused");
                }
            }
            MediaCmd::Release { .. } => break,
            MediaCmd::Start { .. } => {}
        }
    }
    for leg in &legs {
        if let Err(e) = leg.pc.close().await {
            tracing::debug!(%call, error = %e, "closing a leg");
        }
    }
    drop(tasks);
    let mut ports = lock(&shared.ports);
    for leg in &legs {
        ports.free(leg.port);
    }
    tracing::debug!(%call, "media released");
}

/// Why two offers cannot make a call, as the users are told.
fn offer_error(leg: Leg, e: OfferError) -> MediaError {
    match e {
        OfferError::NoCommonCodec => MediaError::NoCommonCodec,
        e => MediaError::BadOffer { leg, reason: e.to_string() },
    }
}

async fn setup_call(
    shared: &Shared,
    call: CallId,
    offers: [&str; 2],
    io_cell: &Arc<OnceLock<Arc<CallIo>>>,
    legs: &mut Vec<LegPc>,
) -> Result<[String; 2], MediaError> {
    let caller = summarize(offers[0]).map_err(|e| offer_error(Leg::Caller, e))?;
    let callee = summarize(offers[1]).map_err(|e| offer_error(Leg::Callee, e))?;
    let common = common_media(&caller, &callee).map_err(|e| offer_error(Leg::Caller, e))?;
    let mut ios = Vec::new();
    let mut answers = Vec::new();
    for (leg, offer) in [Leg::Caller, Leg::Callee].into_iter().zip(offers) {
        let (io, answer) = build_leg(shared, call, leg, offer, &common, io_cell, legs).await?;
        ios.push(io);
        answers.push(answer);
    }
    let [a, b]: [LegIo; 2] = ios.try_into().map_err(|_| MediaError::Internal("leg count".into()))?;
    // A direction counts as carrying media only if the leg it goes out on
    // got a track for it.
    let expect = [b.audio_out.is_some() || b.video_out.is_some(), a.audio_out.is_some() || a.video_out.is_some()];
    if !expect[0] && !expect[1] {
        return Err(MediaError::NoCommonCodec);
    }
    tracing::debug!(%call, audio = ?common.audio_to, video = ?common.video_to, codec = ?common.video, "call media");
    let _ = io_cell.set(Arc::new(CallIo {
        call,
        legs: [a, b],
        metrics: shared.metrics.clone(),
        expect,
        established: AtomicBool::new(false),
        events: shared.events.clone(),
    }));
    let [x, y]: [String; 2] = answers.try_into().map_err(|_| MediaError::Internal("answer count".into()))?;
    Ok([x, y])
}

async fn build_leg(
    shared: &Shared,
    call: CallId,
    leg: Leg,
    offer: &str,
    common: &CommonMedia,
    io_cell: &Arc<OnceLock<Arc<CallIo>>>,
    legs: &mut Vec<LegPc>,
) -> Result<(LegIo, String), MediaError> {
    let err = |what: &str, e: &dyn std::fmt::Display| MediaError::Internal(format!("{what}: {e}"));
    // Codecs of a kind are registered only when both sides have one: the
    // answer then refuses a kind that cannot be carried, and nobody sends
    // what would be dropped.
    let mut me = media_engine_for(common.audio, common.video).map_err(|e| err("media engine", &e))?;
    let registry = interceptors(&mut me).map_err(|e| err("interceptors", &e))?;
    let ice_servers: Vec<RTCIceServer> = shared
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
    // ICE-lite when the relay has only host candidates (no STUN/TURN of its
    // own): it never sends checks, it answers the client's. A full agent
    // sent its first checks before the caller had applied the answer; the
    // caller dropped them, and the leg connected only a second later.
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_lite(shared.cfg.ice_servers.is_empty())
        .build();
    let port = lock(&shared.ports).alloc(&shared.cfg.media_ips).map_err(MediaError::NoCapacity)?;
    let p = port.unwrap_or(0);
    let addrs: Vec<String> = if shared.cfg.media_ips.is_empty() {
        vec![format!("0.0.0.0:{p}")]
    } else {
        shared.cfg.media_ips.iter().map(|ip| std::net::SocketAddr::new(*ip, p).to_string()).collect()
    };
    let handler = Arc::new(LegHandler {
        call,
        leg,
        mid: first_mid(offer),
        public_ips: shared.cfg.public_ips.clone(),
        public_ip_only: shared.cfg.public_ip_only,
        events: shared.events.clone(),
        io: io_cell.clone(),
        runtime: shared.runtime.clone(),
    });
    let built = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(handler)
        .with_runtime(shared.runtime.clone())
        .with_udp_addrs(addrs)
        .build()
        .await;
    let pc: Arc<dyn PeerConnection> = match built {
        Ok(pc) => Arc::new(pc),
        Err(e) => {
            lock(&shared.ports).free(port);
            return Err(err("creating a peer connection", &e));
        }
    };
    legs.push(LegPc { pc: pc.clone(), port });

    let bad = |what: &str, e: &dyn std::fmt::Display| MediaError::BadOffer { leg, reason: format!("{what}: {e}") };
    let remote = RTCSessionDescription::offer(offer.to_owned()).map_err(|e| bad("not valid SDP", &e))?;
    pc.set_remote_description(remote).await.map_err(|e| bad("refused", &e))?;
    let stream = format!("one2one-{}", call.0);
    // This leg sends what the other user sends and this one receives.
    let from_other = idx(leg.other());
    let mut audio = None;
    if common.audio_to[from_other] {
        audio = Some(
            add_out(&pc, &stream, RtpCodecKind::Audio, opus()).await.map_err(|e| err("adding the audio track", &e))?,
        );
    }
    let mut video = None;
    if let Some(codec) = common.video.filter(|_| common.video_to[from_other]) {
        video = Some((
            add_out(&pc, &stream, RtpCodecKind::Video, codec.codec())
                .await
                .map_err(|e| err("adding the video track", &e))?,
            codec,
        ));
    }
    let answer = pc.create_answer(None).await.map_err(|e| err("creating the answer", &e))?;
    pc.set_local_description(answer).await.map_err(|e| err("applying the answer", &e))?;
    let sdp = pc.local_description().await.map(|d| d.sdp).ok_or(MediaError::Internal("the answer vanished".into()))?;
    let sdp = advertise_sdp(&sdp, &shared.cfg.public_ips, shared.cfg.public_ip_only);
    // A track whose codec did not make it into the answer sends nothing.
    let audio_out = match audio {
        Some((sender, out)) => negotiated(sender, out, "audio/opus").await,
        None => None,
    };
    let video_out = match video {
        Some(((sender, out), codec)) => negotiated(sender, out, codec.mime()).await,
        None => None,
    };
    tracing::debug!(
        %call, ?leg,
        audio_pt = audio_out.as_ref().map(|o| o.pt),
        video_pt = video_out.as_ref().map(|o| o.pt),
        video = ?common.video,
        "leg negotiated"
    );
    let io = LegIo {
        audio_out,
        video_out,
        remote_video: Mutex::new(None),
        connected: AtomicBool::new(false),
        flowed: AtomicBool::new(false),
    };
    Ok((io, sdp))
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
    let track = Arc::new(local_track(stream, id, kind, ssrc, codec));
    let sender = pc.add_track(track.clone()).await?;
    Ok((sender, (track, ssrc)))
}

/// The track with the payload type its codec got in the answer, if any.
async fn negotiated(sender: Sender, (track, ssrc): (Arc<TrackLocalStaticRTP>, u32), mime: &str) -> Option<Out> {
    let params = sender.get_parameters().await.ok()?;
    let pt =
        params.rtp_parameters.codecs.iter().find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))?.payload_type;
    (pt != 0).then_some(Out { track, ssrc, pt })
}

fn local_track(stream: &str, id: &str, kind: RtpCodecKind, ssrc: u32, codec: RTCRtpCodec) -> TrackLocalStaticRTP {
    TrackLocalStaticRTP::new(track_def(stream, id, kind, ssrc, codec))
}

fn rand_ssrc() -> u32 {
    // Any non-zero value unique within the leg will do; mix the clock and a
    // counter rather than pulling in a RNG.
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0x5eed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let n = N.fetch_add(0x9E37_79B9, Ordering::Relaxed);
    (t ^ n).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_ip_is_added_next_to_host_candidates() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let host = "candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host";
        assert_eq!(
            advertise(host, &[ip], false),
            [host, "candidate:11 1 udp 1694498815 203.0.113.7 40000 typ srflx raddr 10.0.0.5 rport 40000"]
        );
        // Trailing attributes are kept on both.
        let gen0 = "candidate:3 1 udp 2130706431 10.0.0.5 40000 typ host generation 0";
        assert_eq!(
            advertise(gen0, &[v6, ip], false)[1],
            "candidate:31 1 udp 1694498815 203.0.113.7 40000 typ srflx raddr 10.0.0.5 rport 40000 generation 0"
        );
        // Only the family's own public address; none of it: unchanged.
        assert_eq!(advertise(host, &[v6], false), [host]);
        // The public address itself is not doubled.
        assert_eq!(advertise("candidate:1 1 udp 2130706431 203.0.113.7 40000 typ host", &[ip], false).len(), 1);
        let srflx = "candidate:2 1 udp 1694498815 198.51.100.1 40000 typ srflx raddr 10.0.0.5 rport 40000";
        assert_eq!(advertise(srflx, &[ip], false), [srflx]);
        assert_eq!(advertise("garbage", &[ip], false), ["garbage"]);
        assert_eq!(advertise("", &[ip], false), [""]);
        assert_eq!(advertise(host, &[], false), [host]);
    }

    #[test]
    fn public_ip_only_replaces_host_addresses() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(
            advertise("candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host", &[ip], true),
            ["candidate:1 1 udp 2130706431 203.0.113.7 40000 typ host"]
        );
        let srflx = "candidate:2 1 udp 1694498815 198.51.100.1 40000 typ srflx raddr 10.0.0.5 rport 40000";
        assert_eq!(advertise(srflx, &[ip], true), [srflx]);
    }

    #[test]
    fn candidates_in_an_answer_are_advertised_too() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let sdp = "v=0\r\nm=audio 9 UDP 111\r\na=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host\r\na=end-of-candidates\r\n";
        assert_eq!(
            advertise_sdp(sdp, &[ip], false),
            "v=0\r\nm=audio 9 UDP 111\r\na=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host\r\n\
             a=candidate:11 1 udp 1694498815 203.0.113.7 40000 typ srflx raddr 10.0.0.5 rport 40000\r\na=end-of-candidates\r\n"
        );
        assert_eq!(
            advertise_sdp(sdp, &[ip], true),
            "v=0\r\nm=audio 9 UDP 111\r\na=candidate:1 1 udp 2130706431 203.0.113.7 40000 typ host\r\na=end-of-candidates\r\n"
        );
        assert_eq!(advertise_sdp(sdp, &[], false), sdp);
    }

    #[test]
    fn port_pool_hands_out_each_port_once() {
        let mut pool = PortPool { range: Some((47100, 47101)), ..Default::default() };
        let a = pool.alloc(&[]).unwrap();
        let b = pool.alloc(&[]).unwrap();
        assert_ne!(a, b);
        assert!(pool.alloc(&[]).is_err());
        pool.free(a);
        assert_eq!(pool.alloc(&[]).unwrap(), a);
    }
}
