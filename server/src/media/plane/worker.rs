//! The worker thread: one socket, the demultiplexer, a timer heap, the
//! legs, and the control channel. Everything a leg does happens here, so a
//! packet never crosses threads.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::mpsc;

use super::demux::{Demux, is_stun};
use super::{Cmd, LegId, PlaneError, PlaneEvent, PlaneEventKind, PlaneStats};

/// At most one keyframe request towards a sender per this long.
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(200);
/// Keyframe requests repeated (one per [`KEYFRAME_INTERVAL`]) after a leg connects.
const CONNECT_PLIS: u8 = 3;
/// The longest the worker blocks without looking at its timers.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// Rebuild the timer heap when stale entries outnumber live ones by this.
const HEAP_SLACK: usize = 4;

struct Leg {
    rtc: Rtc,
    /// The media sections of the offer, in order.
    mids: Vec<(Mid, MediaKind)>,
    /// Where this leg's incoming RTP goes, and which leg feeds this one.
    sink: Option<LegId>,
    source: Option<LegId>,
    /// RTP waiting to be written towards this leg's user.
    inbox: Vec<(Codec, RtpPacket)>,
    /// Incoming payload type → codec (a few entries).
    pt_in: Vec<(Pt, Option<Codec>)>,
    /// Codec → (mid, outgoing payload type), for what this leg sends.
    out: Vec<(Codec, Option<(Mid, Pt)>)>,
    want_keyframe: bool,
    /// Keyframe requests still to repeat after connecting (the first PLI
    /// can arrive before the client has its SRTP keys and be dropped).
    connect_plis: u8,
    last_keyframe: Option<Instant>,
    /// The deadline this leg is filed under in the timer heap.
    timer: Option<Instant>,
    connected: bool,
    flowing: bool,
    /// Test hook: panic on the next input.
    poisoned: bool,
}

enum Step<'a> {
    Receive(SocketAddr, &'a [u8]),
    Timeout,
    Poll,
}

pub(super) struct Worker {
    socket: UdpSocket,
    local: SocketAddr,
    waker: SocketAddr,
    cmds: std::sync::mpsc::Receiver<Cmd>,
    events: mpsc::UnboundedSender<PlaneEvent>,
    stats: Arc<PlaneStats>,
    legs: HashMap<LegId, Leg>,
    demux: Demux,
    timers: BinaryHeap<Reverse<(Instant, LegId)>>,
    /// Legs with work queued by another leg (forwarded RTP, a keyframe request).
    dirty: Vec<LegId>,
    /// Reused between steps, so a step allocates nothing in the steady state.
    fx: Effects,
    next_id: LegId,
    cert: DtlsCert,
    crypto: Arc<CryptoProvider>,
    wait: Duration,
}

impl Worker {
    pub(super) fn new(
        socket: UdpSocket,
        local: SocketAddr,
        waker: SocketAddr,
        cmds: std::sync::mpsc::Receiver<Cmd>,
        events: mpsc::UnboundedSender<PlaneEvent>,
        stats: Arc<PlaneStats>,
    ) -> Result<Worker, PlaneError> {
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        // One certificate for every leg of the worker: key generation is
        // the slowest part of building a connection.
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| PlaneError::Internal("no DTLS certificate".into()))?;
        Ok(Worker {
            socket,
            local,
            waker,
            cmds,
            events,
            stats,
            legs: HashMap::new(),
            demux: Demux::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            fx: Effects::default(),
            next_id: 1,
            cert,
            crypto,
            wait: Duration::ZERO,
        })
    }

    pub(super) fn run(mut self) {
        let mut buf = vec![0u8; 2048];
        loop {
            let now = Instant::now();
            self.fire_timers(now);
            self.drain_dirty(now);
            let next = self.timers.peek().map(|Reverse((t, _))| *t);
            let wait = next
                .map_or(MAX_WAIT, |t| t.saturating_duration_since(Instant::now()))
                .clamp(Duration::from_millis(1), MAX_WAIT);
            // A shorter wait is set at once; a longer one only when it is
            // much longer (waking early is harmless).
            if (wait < self.wait || wait > self.wait * 2) && self.socket.set_read_timeout(Some(wait)).is_ok() {
                self.wait = wait;
            }
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if from == self.waker {
                        if !self.control() {
                            return;
                        }
                        continue;
                    }
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                    self.datagram(from, &buf[..n]);
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => {
                    // ICMP errors (a peer gone) surface here on Linux.
                    tracing::debug!(error = %e, "plane: recv");
                }
            }
        }
    }

    fn datagram(&mut self, from: SocketAddr, data: &[u8]) {
        let Some(id) = self.demux.route(from, data) else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let now = Instant::now();
        self.drive(id, now, Step::Receive(from, data));
        self.drain_dirty(now);
    }

    fn fire_timers(&mut self, now: Instant) {
        // A budget per pass: a leg that keeps filing deadlines in the past
        // cannot spin the worker; what is left fires on the next pass.
        let mut budget = 4 * self.legs.len() + 64;
        while let Some(Reverse((t, id))) = self.timers.peek().copied() {
            if t > now || budget == 0 {
                break;
            }
            budget -= 1;
            self.timers.pop();
            // Lazily invalidated: an entry counts only if the leg is still
            // filed under that deadline.
            if self.legs.get(&id).is_some_and(|l| l.timer == Some(t)) {
                if let Some(l) = self.legs.get_mut(&id) {
                    l.timer = None;
                }
                self.drive(id, now, Step::Timeout);
            }
        }
        if self.timers.len() > HEAP_SLACK * (self.legs.len() + 16) {
            self.timers = self.legs.iter().filter_map(|(id, l)| l.timer.map(|t| Reverse((t, *id)))).collect();
        }
    }

    fn drain_dirty(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop() {
            self.drive(id, now, Step::Poll);
        }
    }

    /// False when the worker is to stop.
    fn control(&mut self) -> bool {
        while let Ok(cmd) = self.cmds.try_recv() {
            let now = Instant::now();
            match cmd {
                Cmd::Create { offer, reply } => {
                    let r = self.create(&offer, now);
                    let _ = reply.send(r);
                }
                Cmd::Candidate { leg, candidate } => {
                    let s = candidate.trim().trim_start_matches("a=");
                    match Candidate::from_sdp_string(s) {
                        Ok(c) => {
                            if let Some(l) = self.legs.get_mut(&leg) {
                                l.rtc.add_remote_candidate(c);
                                self.drive(leg, now, Step::Poll);
                            }
                        }
                        Err(e) => tracing::debug!(leg, error = %e, "plane: a remote candidate that does not parse"),
                    }
                }
                Cmd::Connect { from, to } => {
                    if self.legs.contains_key(&from) && self.legs.contains_key(&to) {
                        // A new sink replaces the old one, which loses its source.
                        let old = self.legs.get(&from).and_then(|l| l.sink);
                        if let Some(o) = old
                            && let Some(l) = self.legs.get_mut(&o)
                            && l.source == Some(from)
                        {
                            l.source = None;
                        }
                        if let Some(l) = self.legs.get_mut(&from) {
                            l.sink = Some(to);
                            l.want_keyframe = true;
                        }
                        if let Some(l) = self.legs.get_mut(&to) {
                            l.source = Some(from);
                            l.out.clear();
                        }
                        self.drive(from, now, Step::Poll);
                    }
                }
                Cmd::Release { leg } => self.remove(leg, false),
                Cmd::InjectPanic { leg } => {
                    if let Some(l) = self.legs.get_mut(&leg) {
                        l.poisoned = true;
                    }
                }
                Cmd::CpuTime { reply } => {
                    let _ = reply.send(thread_cpu_time());
                }
                Cmd::Shutdown => return false,
            }
            self.drain_dirty(now);
        }
        true
    }

    fn create(&mut self, offer: &str, now: Instant) -> Result<(LegId, String), PlaneError> {
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| PlaneError::BadOffer(e.to_string()))?;
        let mids = offer_mids(&offer.to_sdp_string());
        let local = self.local;
        let (cert, crypto) = (self.cert.clone(), self.crypto.clone());
        let built = catch_unwind(AssertUnwindSafe(move || -> Result<(Rtc, String, String, String), PlaneError> {
            let mut rtc = Rtc::builder()
                .set_ice_lite(true)
                .set_rtp_mode(true)
                .set_crypto_provider(crypto)
                .set_dtls_cert(cert)
                .clear_codecs()
                .enable_opus(true, false)
                .enable_vp8(true)
                .enable_h264(true)
                .build(now);
            let cand = Candidate::host(local, Protocol::Udp).map_err(|e| PlaneError::Internal(e.to_string()))?;
            let cand_sdp = cand.to_sdp_string();
            rtc.add_local_candidate(cand);
            let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| PlaneError::BadOffer(e.to_string()))?;
            let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
            Ok((rtc, answer.to_sdp_string(), ufrag, cand_sdp))
        }));
        let (rtc, answer, ufrag, cand) = match built {
            Ok(r) => r?,
            Err(_) => return Err(PlaneError::Internal("the leg's state machine panicked on the offer".into())),
        };
        let id = self.next_id;
        self.next_id += 1;
        let answer = fresh_msids(&answer, id);
        if !self.demux.add_leg(id, &ufrag) {
            return Err(PlaneError::Internal("ufrag collision".into()));
        }
        let leg = Leg {
            rtc,
            mids,
            sink: None,
            source: None,
            inbox: Vec::new(),
            pt_in: Vec::new(),
            out: Vec::new(),
            want_keyframe: false,
            connect_plis: 0,
            last_keyframe: None,
            timer: None,
            connected: false,
            flowing: false,
            poisoned: false,
        };
        self.legs.insert(id, leg);
        self.stats.legs.store(self.legs.len(), Ordering::SeqCst);
        self.emit(id, PlaneEventKind::Candidate(cand));
        self.drive(id, now, Step::Poll);
        Ok((id, answer))
    }

    fn emit(&self, leg: LegId, kind: PlaneEventKind) {
        let _ = self.events.send(PlaneEvent { leg, kind });
    }

    /// Ends a leg: its routes, its links, its timers (lazily).
    fn remove(&mut self, id: LegId, failed: bool) {
        let Some(leg) = self.legs.remove(&id) else { return };
        self.unlink(id, &leg);
        drop(leg);
        self.demux.remove_leg(id);
        self.stats.legs.store(self.legs.len(), Ordering::SeqCst);
        self.stats.addrs.store(self.demux.sizes().2, Ordering::SeqCst);
        if failed {
            self.emit(id, PlaneEventKind::Failed);
        }
    }

    fn unlink(&mut self, id: LegId, leg: &Leg) {
        if let Some(s) = leg.sink
            && let Some(l) = self.legs.get_mut(&s)
            && l.source == Some(id)
        {
            l.source = None;
        }
        if let Some(s) = leg.source
            && let Some(l) = self.legs.get_mut(&s)
            && l.sink == Some(id)
        {
            l.sink = None;
        }
    }

    /// Runs one step of one leg, contained: a panic ends this leg only.
    fn drive(&mut self, id: LegId, now: Instant, step: Step) {
        let Some(mut leg) = self.legs.remove(&id) else { return };
        let mut out = std::mem::take(&mut self.fx);
        out.keyframe_upstream = false;
        out.connected = false;
        out.timeout = None;
        let (socket, local) = (&self.socket, self.local);
        let r = catch_unwind(AssertUnwindSafe(|| step_leg(&mut leg, id, now, step, socket, local, &mut out)));
        let alive = match r {
            Ok(alive) => alive,
            Err(_) => {
                tracing::warn!(leg = id, "plane: a leg's state machine panicked; the leg is released");
                self.stats.panics.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        for addr in out.learned.drain(..) {
            self.demux.learn(addr, id);
        }
        self.stats.addrs.store(self.demux.sizes().2, Ordering::Relaxed);
        for kind in out.events.drain(..) {
            self.emit(id, kind);
        }
        if !alive {
            // Put it back for the unlink, then remove it as failed.
            out.forward.clear();
            self.fx = out;
            self.legs.insert(id, leg);
            self.remove(id, true);
            return;
        }
        // Forwarded RTP goes into the sink's inbox; it is written when the
        // sink is driven, inside the sink's own containment.
        if !out.forward.is_empty()
            && let Some(sink) = leg.sink
            && let Some(s) = self.legs.get_mut(&sink)
        {
            self.stats.relayed.fetch_add(out.forward.len() as u64, Ordering::Relaxed);
            s.inbox.append(&mut out.forward);
            self.dirty.push(sink);
            if !leg.flowing {
                leg.flowing = true;
                self.emit(id, PlaneEventKind::Flowing);
            }
        }
        if out.keyframe_upstream
            && let Some(src) = leg.source
            && let Some(s) = self.legs.get_mut(&src)
        {
            s.want_keyframe = true;
            self.dirty.push(src);
        }
        if out.connected
            && let Some(src) = leg.source
            && let Some(s) = self.legs.get_mut(&src)
        {
            // A leg that connects asks its source for a key frame.
            s.want_keyframe = true;
            self.dirty.push(src);
        }
        if let Some(t) = out.timeout
            && leg.timer != Some(t)
        {
            leg.timer = Some(t);
            self.timers.push(Reverse((t, id)));
        }
        out.forward.clear();
        self.fx = out;
        self.legs.insert(id, leg);
    }
}

#[derive(Default)]
struct Effects {
    events: Vec<PlaneEventKind>,
    forward: Vec<(Codec, RtpPacket)>,
    learned: Vec<SocketAddr>,
    keyframe_upstream: bool,
    connected: bool,
    timeout: Option<Instant>,
}

/// One step of one leg: input, queued work, then its output drained.
/// Returns false when the leg is dead.
fn step_leg(
    leg: &mut Leg,
    id: LegId,
    now: Instant,
    step: Step,
    socket: &UdpSocket,
    local: SocketAddr,
    out: &mut Effects,
) -> bool {
    if leg.poisoned {
        panic!("plane: injected panic in leg {id}");
    }
    match step {
        Step::Receive(from, data) => {
            let Ok(contents) = data.try_into() else { return true };
            let input =
                Input::Receive(now, Receive { proto: Protocol::Udp, source: from, destination: local, contents });
            if !leg.rtc.accepts(&input) {
                return true;
            }
            if let Err(e) = leg.rtc.handle_input(input) {
                tracing::debug!(leg = id, error = %e, "plane: input");
            }
        }
        Step::Timeout => {
            if let Err(e) = leg.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(leg = id, error = %e, "plane: timeout");
            }
        }
        Step::Poll => {}
    }
    write_inbox(leg, now);
    let mut kf_at = None;
    if leg.want_keyframe && leg.connected {
        let due = leg.last_keyframe.map_or(now, |t| t + KEYFRAME_INTERVAL);
        if due <= now {
            if request_keyframe(leg) {
                tracing::debug!(leg = id, "plane: PLI to the user");
                leg.last_keyframe = Some(now);
                leg.want_keyframe = leg.connect_plis > 0;
                leg.connect_plis = leg.connect_plis.saturating_sub(1);
            }
        } else {
            kf_at = Some(due);
        }
    }
    loop {
        let o = match leg.rtc.poll_output() {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(leg = id, error = %e, "plane: poll");
                return false;
            }
        };
        match o {
            Output::Timeout(t) => {
                out.timeout = Some(kf_at.map_or(t, |k| k.min(t)));
                break;
            }
            Output::Transmit(t) => {
                if is_stun(&t.contents) {
                    out.learned.push(t.destination);
                }
                if let Err(e) = socket.send_to(&t.contents, t.destination) {
                    tracing::debug!(leg = id, error = %e, "plane: send");
                }
            }
            Output::Event(ev) => match ev {
                Event::Connected => {
                    leg.connected = true;
                    leg.want_keyframe = leg.sink.is_some();
                    leg.connect_plis = CONNECT_PLIS;
                    out.connected = true;
                    out.events.push(PlaneEventKind::Connected);
                }
                Event::IceConnectionStateChange(IceConnectionState::Disconnected) => return false,
                Event::RtpPacket(p) => {
                    if leg.sink.is_some()
                        && let Some(c) = codec_in(leg, p.header.payload_type)
                    {
                        out.forward.push((c, p));
                    }
                }
                Event::KeyframeRequest(r) => {
                    tracing::debug!(leg = id, mid = %r.mid, kind = ?r.kind, "plane: the user asks for a key frame");
                    out.keyframe_upstream = true;
                }
                Event::Closed => return false,
                _ => {}
            },
        }
    }
    leg.rtc.is_alive()
}

fn codec_in(leg: &mut Leg, pt: Pt) -> Option<Codec> {
    if let Some((_, c)) = leg.pt_in.iter().find(|(p, _)| *p == pt) {
        return *c;
    }
    let c = leg.rtc.codec_config().find(|p| p.pt() == pt).map(|p| p.spec().codec);
    leg.pt_in.push((pt, c));
    c
}

/// The mid and payload type this leg sends `codec` with.
fn codec_out(leg: &mut Leg, codec: Codec) -> Option<(Mid, Pt)> {
    if let Some((_, r)) = leg.out.iter().find(|(c, _)| *c == codec) {
        return *r;
    }
    let kind = if codec.is_audio() { MediaKind::Audio } else { MediaKind::Video };
    let r = leg.mids.iter().find(|(_, k)| *k == kind).and_then(|(mid, _)| {
        let media = leg.rtc.media(*mid)?;
        let remote = media.remote_pts().to_vec();
        let pt = leg.rtc.codec_config().find(|p| p.spec().codec == codec && remote.contains(&p.pt()))?.pt();
        Some((*mid, pt))
    });
    leg.out.push((codec, r));
    r
}

/// Writes forwarded RTP towards this leg's user: the payload is shared;
/// str0m sets this leg's SSRC, and the payload type is this leg's.
fn write_inbox(leg: &mut Leg, now: Instant) {
    if leg.inbox.is_empty() {
        return;
    }
    let mut inbox = std::mem::take(&mut leg.inbox);
    for (codec, p) in inbox.drain(..) {
        let Some((mid, pt)) = codec_out(leg, codec) else { continue };
        let mut api = leg.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else { continue };
        let w = RtpWrite::new(pt, p.seq_no, p.header.timestamp, now, p.payload)
            .marker(p.header.marker)
            .nackable(codec.is_video());
        tx.write_rtp(w);
    }
    // Keep the allocation for the next batch.
    leg.inbox = inbox;
}

/// A PLI towards this leg's user for its video. False if there is no
/// video stream to ask yet.
fn request_keyframe(leg: &mut Leg) -> bool {
    let Some((mid, _)) = leg.mids.iter().find(|(_, k)| *k == MediaKind::Video).copied() else {
        return true;
    };
    let mut api = leg.rtc.direct_api();
    match api.stream_rx_by_mid(mid, None) {
        Some(rx) => {
            tracing::trace!(ssrc = %rx.ssrc(), "plane: PLI for");
            rx.request_keyframe(KeyframeRequestKind::Pli);
            true
        }
        None => false,
    }
}

/// The answer with stream and track ids of the relay's own. str0m reflects
/// the offer's `msid` (the user's own stream and track ids) back; a stack
/// that keys tracks by id (webrtc-rs 0.21) then files the remote track
/// under its own local track's id, and RTCP about what it sends (PLI, FIR)
/// goes to the remote track once that exists: only the first keyframe
/// request was ever heard.
fn fresh_msids(answer: &str, leg: LegId) -> String {
    let stream = format!("o2o-relay-{leg}");
    let mut out = String::with_capacity(answer.len() + 64);
    let mut section = 0usize;
    for line in answer.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let eol = &line[body.len()..];
        if body.starts_with("m=") {
            section += 1;
        }
        let track = format!("o2o-relay-{leg}-{section}");
        if body.starts_with("a=msid-semantic:") {
            out.push_str(&format!("a=msid-semantic: WMS {stream}{eol}"));
        } else if body.starts_with("a=msid:") {
            out.push_str(&format!("a=msid:{stream} {track}{eol}"));
        } else if let Some(rest) = body.strip_prefix("a=ssrc:")
            && let Some((ssrc, attr)) = rest.split_once(' ')
            && attr.starts_with("msid:")
        {
            out.push_str(&format!("a=ssrc:{ssrc} msid:{stream} {track}{eol}"));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The (mid, kind) of each media section of an SDP.
fn offer_mids(sdp: &str) -> Vec<(Mid, MediaKind)> {
    let mut out = Vec::new();
    let mut kind = None;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            kind = if m.starts_with("audio") {
                Some(MediaKind::Audio)
            } else if m.starts_with("video") {
                Some(MediaKind::Video)
            } else {
                None
            };
        } else if let Some(mid) = line.strip_prefix("a=mid:")
            && let Some(k) = kind
        {
            out.push((Mid::from(mid.trim()), k));
        }
    }
    out
}

/// This thread's CPU time, from /proc (nanosecond resolution).
fn thread_cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_gets_stream_and_track_ids_of_its_own() {
        let answer = "v=0\r\na=msid-semantic: WMS one2one\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                      a=msid:one2one audio\r\na=ssrc:5 cname:x\r\na=ssrc:5 msid:one2one audio\r\n\
                      m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:one2one video\r\n";
        let out = fresh_msids(answer, 7);
        assert!(!out.contains("one2one"), "{out}");
        assert!(out.contains("a=msid-semantic: WMS o2o-relay-7\r\n"), "{out}");
        assert!(out.contains("a=msid:o2o-relay-7 o2o-relay-7-1\r\n"), "{out}");
        assert!(out.contains("a=ssrc:5 msid:o2o-relay-7 o2o-relay-7-1\r\n"), "{out}");
        assert!(out.contains("a=msid:o2o-relay-7 o2o-relay-7-2\r\n"), "{out}");
        assert!(out.contains("a=ssrc:5 cname:x\r\n"), "{out}");
        assert_eq!(out.lines().count(), answer.lines().count());
    }

    #[test]
    fn offer_mids_pairs_each_mid_with_its_kind() {
        let sdp =
            "v=0\r\nm=audio 9 X 111\r\na=mid:a0\r\nm=application 9 X\r\na=mid:d\r\nm=video 9 X 96\r\na=mid:v1\r\n";
        assert_eq!(offer_mids(sdp), vec![(Mid::from("a0"), MediaKind::Audio), (Mid::from("v1"), MediaKind::Video)]);
    }
}
