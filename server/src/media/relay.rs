//! The embedded back-to-back WebRTC relay (the `webrtc` crate).
//!
//! The unit is a leg ([`leg`]): a peer connection on the server that
//! answers one user's offer on its own, exactly as a KMS WebRtcEndpoint
//! does, and forwards what arrives to the leg it is connected to. RTP is
//! forwarded undecoded to the other leg's outgoing track of the same kind:
//! only the SSRC and payload type are rewritten and header extensions are
//! dropped (their ids are per leg). Keyframe requests (PLI/FIR) that a
//! receiver sends on its leg become a PLI towards the sender on the other
//! leg. NACKs are answered per hop from the send cache of the default
//! interceptors, and each leg NACKs its own sender, so loss on either hop is
//! repaired where it happens.
//!
//! A call of the `/one2one` signaling ([`RelayBackend`]) is two legs
//! connected both ways, built with the same codecs so that no transcoding
//! is ever needed: Opus when both offers have it, and one video codec (VP8,
//! or H.264 when both offers have it and VP8 is missing on one side) when
//! both have one ([`one2one_media::sdp_check::common_media`]). A kind that
//! only one side can carry is refused on both legs: a caller's camera is
//! simply not forwarded to a callee without video, and the call is
//! audio-only. The `--kms-listen` endpoint builds single legs
//! ([`LegSpec::for_offer`]) and connects them as its client says.
//!
//! A call is reported [`MediaEvent::Established`] once the first RTP packet
//! has been forwarded in each direction that carries media, not when ICE
//! or DTLS come up.

pub mod leg;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::FutureExt as _;
use one2one_media::sdp_check::{OfferError, common_media, summarize};
use tokio::sync::mpsc;

pub use self::leg::{
    Forwarding, LegError, LegEvent, LegEvents, LegLink, LegSpec, Relay, RelayLeg, connect, disconnect,
};
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
    relay: Relay,
    events: EventSink,
    calls: Mutex<HashMap<CallId, CallTask>>,
}

pub struct RelayBackend {
    shared: Arc<Shared>,
}

impl RelayBackend {
    pub fn new(cfg: RelayConfig, events: EventSink, metrics: Arc<Metrics>) -> Self {
        Self::on(Relay::new(cfg, metrics), events)
    }

    /// A backend on a relay shared with others (`--kms-listen`'s legs): one
    /// port pool for every leg of the process.
    pub fn on(relay: Relay, events: EventSink) -> Self {
        let shared = Shared { relay, events, calls: Mutex::new(HashMap::new()) };
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

/// Which directions of a call carry media and which have had their first
/// packet forwarded.
struct CallFlow {
    call: CallId,
    events: EventSink,
    /// `[caller → callee, callee → caller]` carries media; set before the
    /// legs are connected, so before anything can flow.
    expect: OnceLock<[bool; 2]>,
    flowed: [AtomicBool; 2],
    /// `Established` was reported.
    established: AtomicBool,
}

impl CallFlow {
    /// The first packet from `from` was forwarded; reports the call
    /// established once every direction that carries media has had its
    /// first packet (SeqCst: of two legs racing here, one sees the other).
    fn first_forwarded(&self, from: Leg) {
        self.flowed[from.index()].store(true, Ordering::SeqCst);
        let Some(expect) = self.expect.get() else {
            return;
        };
        let done = (0..2).all(|i| !expect[i] || self.flowed[i].load(Ordering::SeqCst));
        if done && !self.established.swap(true, Ordering::SeqCst) {
            tracing::debug!(call = %self.call, "media flowing both ways");
            let _ = self.events.send(MediaEvent::Established { call: self.call });
        }
    }
}

/// A leg's events as the call core hears them.
fn call_leg_events(flow: &Arc<CallFlow>, leg: Leg) -> LegEvents {
    let flow = flow.clone();
    Arc::new(move |ev| {
        let call = flow.call;
        match ev {
            LegEvent::Candidate(candidate) => {
                let _ = flow.events.send(MediaEvent::Candidate { call, leg, candidate });
            }
            LegEvent::Failed => {
                let error = MediaError::ConnectionFailed { leg };
                let _ = flow.events.send(MediaEvent::Failed { call, error });
            }
            LegEvent::Flowing => flow.first_forwarded(leg),
            LegEvent::Connected => {}
        }
    })
}

async fn run_call(shared: Arc<Shared>, call: CallId, mut rx: mpsc::UnboundedReceiver<MediaCmd>) {
    let Some(MediaCmd::Start { caller_offer, callee_offer, .. }) = rx.recv().await else {
        return;
    };
    let mut legs: Vec<(Leg, RelayLeg)> = Vec::new();
    match setup_call(&shared, call, [&caller_offer, &callee_offer], &mut legs).await {
        Ok(answers) => {
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
                if let Some((_, l)) = legs.iter().find(|(l, _)| *l == leg) {
                    l.add_candidate(candidate).await;
                }
            }
            MediaCmd::Release { .. } => break,
            MediaCmd::Start { .. } => {}
        }
    }
    for (_, leg) in legs {
        leg.close().await;
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

fn leg_error(leg: Leg, e: LegError) -> MediaError {
    match e {
        LegError::BadOffer(reason) => MediaError::BadOffer { leg, reason },
        LegError::NoCapacity(s) => MediaError::NoCapacity(s),
        LegError::Internal(s) => MediaError::Internal(s),
    }
}

/// Builds both legs (each answering its own user's offer) and connects
/// them both ways; the legs built so far are in `legs` whatever happens.
async fn setup_call(
    shared: &Shared,
    call: CallId,
    offers: [&str; 2],
    legs: &mut Vec<(Leg, RelayLeg)>,
) -> Result<[String; 2], MediaError> {
    let caller = summarize(offers[0]).map_err(|e| offer_error(Leg::Caller, e))?;
    let callee = summarize(offers[1]).map_err(|e| offer_error(Leg::Callee, e))?;
    let common = common_media(&caller, &callee).map_err(|e| offer_error(Leg::Caller, e))?;
    let specs = LegSpec::for_call(&common);
    let flow = Arc::new(CallFlow {
        call,
        events: shared.events.clone(),
        expect: OnceLock::new(),
        flowed: Default::default(),
        established: AtomicBool::new(false),
    });
    let mut answers = Vec::new();
    for leg in Leg::BOTH {
        let label = format!("{call}-{leg}");
        let events = call_leg_events(&flow, leg);
        let (l, sdp) = shared
            .relay
            .answer(&label, offers[leg.index()], specs[leg.index()], events)
            .await
            .map_err(|e| leg_error(leg, e))?;
        legs.push((leg, l));
        answers.push(sdp);
    }
    let (a, b) = (legs[0].1.link().clone(), legs[1].1.link().clone());
    // A direction counts as carrying media only if the leg it goes out on
    // got a track for it.
    let expect = [b.sends_audio() || b.sends_video(), a.sends_audio() || a.sends_video()];
    if !expect[0] && !expect[1] {
        return Err(MediaError::NoCommonCodec);
    }
    let _ = flow.expect.set(expect);
    connect(&a, &b);
    connect(&b, &a);
    tracing::debug!(%call, audio = ?common.audio_to, video = ?common.video_to, codec = ?common.video, "call media");
    let [x, y]: [String; 2] = answers.try_into().map_err(|_| MediaError::Internal("answer count".into()))?;
    Ok([x, y])
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
