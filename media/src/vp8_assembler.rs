//! VP8 frames from RTP packets, released on their last packet (sans IO).
//!
//! A frame is the run of packets from its first (VP8 payload descriptor
//! S = 1, PID = 0) to its last (RTP marker bit), all with one RTP timestamp
//! and consecutive sequence numbers. [`Vp8Assembler`] releases it the moment
//! that run is complete, whichever packet completes it: the marker packet in
//! the usual case, a late middle packet after reordering. It never waits
//! for the next frame, unlike a sample builder that finds a frame's end by
//! seeing the next one begin. (A frame whose marker bit never arrives is
//! still ended by the first packet of the next frame, as a fallback.)
//!
//! Frames come out in sequence order. A complete frame with packets
//! missing before it (loss) waits up to [`AssemblerConfig::repair_wait`]
//! for them, so that a NACK's retransmission can still save the frame
//! before it; only then is the incomplete frame given up (as superseded).
//! An incomplete frame is also given up when the buffer exceeds its packet
//! or byte limit, or when it has waited [`AssemblerConfig::max_wait`]; every
//! give-up (and every hole in the sequence before a released frame) is
//! reported as a [`Dropped`] so the caller can ask for a key frame. Without
//! loss nothing waits.
//!
//! Time only comes in as `now`; work goes out through [`Vp8Assembler::poll_output`].
//! No input can make it panic, and it holds at most
//! [`AssemblerConfig::max_packets`] packets and [`AssemblerConfig::max_bytes`]
//! payload bytes, plus at most [`MAX_OUTPUTS`] outputs not yet polled.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer;

/// Outputs kept for the caller at most; older ones are discarded beyond it
/// (counted in [`AssemblerStats::outputs_discarded`]).
pub const MAX_OUTPUTS: usize = 64;

/// A sequence number further than this from the newest one seen is taken
/// as a new stream (sender restart, SSRC change), not as loss or lateness.
const MAX_JUMP: i64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssemblerConfig {
    /// Packets buffered at most; the oldest frame is given up beyond it.
    pub max_packets: usize,
    /// Payload bytes buffered at most; the oldest frame is given up beyond it.
    pub max_bytes: usize,
    /// How long the oldest buffered packet may wait for its frame to complete.
    pub max_wait: Duration,
    /// How long a complete frame waits for the missing packets before it
    /// (a NACK's retransmission) before they are given up. Only under loss:
    /// a frame with nothing missing before it is released at once.
    pub repair_wait: Duration,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        AssemblerConfig {
            max_packets: 256,
            max_bytes: 4 << 20,
            max_wait: Duration::from_millis(500),
            repair_wait: Duration::from_millis(100),
        }
    }
}

/// One complete VP8 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vp8Frame {
    /// The VP8 bitstream of the frame (payload descriptors stripped).
    pub data: Bytes,
    pub rtp_timestamp: u32,
    /// The `now` of the packet that completed the frame.
    pub arrived: Instant,
    /// Whether the frame is a key frame (VP8 frame tag, P bit clear).
    pub keyframe: bool,
    /// RTP packets it came in.
    pub packets: usize,
}

/// Why frames were given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A newer frame completed first.
    Superseded,
    /// Sequence numbers before a released frame never arrived at all (a whole
    /// frame may have been lost).
    Gap,
    /// The packet or byte limit was reached.
    Overflow,
    /// It waited longer than `max_wait`.
    Timeout,
    /// The sequence numbers jumped (new stream): everything buffered was given up.
    Reset,
}

/// Frames (or sequence numbers) given up; the decoder needs a key frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// The frame's timestamp, when any of its packets arrived.
    pub rtp_timestamp: Option<u32>,
    /// Packets given up (buffered ones), or missing ones for [`DropReason::Gap`].
    pub packets: usize,
    pub reason: DropReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Frame(Vp8Frame),
    Dropped(Dropped),
}

/// Why a packet was not taken. Not a failure of the assembler: the caller
/// may ignore it (it is also counted in [`AssemblerStats`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("not a VP8 RTP payload: {0}")]
    Malformed(String),
    #[error("duplicate packet")]
    Duplicate,
    #[error("packet of a frame already released or given up")]
    Late,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    pub frames: u64,
    /// [`Dropped`] outputs of every reason.
    pub dropped: u64,
    pub duplicates: u64,
    pub late: u64,
    pub malformed: u64,
    /// Empty payloads (padding), which only fill their sequence number.
    pub padding: u64,
    pub resets: u64,
    pub outputs_discarded: u64,
}

#[derive(Debug)]
struct Slot {
    timestamp: u32,
    marker: bool,
    /// First packet of a frame: S = 1 and PID = 0.
    head: bool,
    /// The VP8 data; `None` for padding.
    data: Option<Bytes>,
    arrived: Instant,
}

impl Slot {
    fn len(&self) -> usize {
        self.data.as_ref().map_or(0, Bytes::len)
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Vp8Assembler {
    cfg: AssemblerConfig,
    /// By extended sequence number.
    packets: BTreeMap<u64, Slot>,
    bytes: usize,
    /// The newest extended sequence number seen.
    highest: Option<u64>,
    /// Every sequence number at or below this was released or given up.
    done_through: Option<u64>,
    out: VecDeque<Output>,
    stats: AssemblerStats,
    /// Since when a complete frame waits behind missing packets.
    held_since: Option<Instant>,
    /// Giving up the missing packets now (the repair wait is over).
    forcing: bool,
}

impl Default for Vp8Assembler {
    fn default() -> Self {
        Self::new(AssemblerConfig::default())
    }
}

impl Vp8Assembler {
    pub fn new(cfg: AssemblerConfig) -> Self {
        let cfg = AssemblerConfig { max_packets: cfg.max_packets.max(1), ..cfg };
        Vp8Assembler {
            cfg,
            packets: BTreeMap::new(),
            bytes: 0,
            highest: None,
            done_through: None,
            out: VecDeque::new(),
            stats: AssemblerStats::default(),
            held_since: None,
            forcing: false,
        }
    }

    /// Takes one RTP packet of the video stream: its sequence number,
    /// timestamp, marker bit and payload (with the VP8 payload descriptor).
    /// Any frame it completes, and anything given up, is then waiting in
    /// [`poll_output`](Self::poll_output).
    pub fn push(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &Bytes,
    ) -> Result<(), Rejected> {
        self.handle_timeout(now);
        let parsed = if payload.is_empty() {
            None
        } else {
            match parse(payload) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.stats.malformed += 1;
                    return Err(e);
                }
            }
        };
        let ext = self.extend(seq);
        if self.done_through.is_some_and(|d| ext <= d) {
            self.stats.late += 1;
            return Err(Rejected::Late);
        }
        if self.packets.contains_key(&ext) {
            self.stats.duplicates += 1;
            return Err(Rejected::Duplicate);
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        let slot = match parsed {
            Some((head, data)) => Slot { timestamp, marker, head, data: Some(data), arrived: now },
            None => {
                self.stats.padding += 1;
                Slot { timestamp, marker: false, head: false, data: None, arrived: now }
            }
        };
        self.bytes += slot.len();
        self.packets.insert(ext, slot);

        let released_before = self.stats.frames;
        // A first packet may end the frame before it (no marker seen), so
        // that frame is tried first: frames come out in order.
        if let (Some(prev), Some(this)) =
            (ext.checked_sub(1).and_then(|p| self.packets.get(&p)), self.packets.get(&ext))
            && prev.timestamp != this.timestamp
        {
            self.try_complete(ext - 1, now);
        }
        if self.packets.contains_key(&ext) {
            self.try_complete(ext, now);
        }
        self.skip_leading_padding();
        // A frame held behind missing packets may go now; with nothing
        // released and nothing held there is nothing to look for.
        if self.stats.frames != released_before || self.held_since.is_some() {
            self.release_ready(now);
        }
        while self.packets.len() > self.cfg.max_packets || self.bytes > self.cfg.max_bytes {
            self.drop_front(DropReason::Overflow, u64::MAX);
        }
        Ok(())
    }

    /// The next frame or report, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) would give up the
    /// oldest incomplete frame.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let oldest = self.packets.values().next().map(|s| s.arrived + self.cfg.max_wait);
        let held = self.held_since.map(|t| t + self.cfg.repair_wait);
        match (oldest, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Gives up the frames that waited too long, and the missing packets
    /// that a held frame waited for.
    pub fn handle_timeout(&mut self, now: Instant) {
        loop {
            if let Some(since) = self.held_since
                && since + self.cfg.repair_wait <= now
            {
                self.held_since = None;
                self.forcing = true;
                self.release_first_complete(now);
                self.forcing = false;
                self.release_ready(now);
                continue;
            }
            match self.packets.values().next().map(|s| s.arrived + self.cfg.max_wait) {
                Some(deadline) if deadline <= now => {
                    self.drop_front(DropReason::Timeout, u64::MAX);
                    self.release_ready(now);
                }
                _ => break,
            }
        }
    }

    /// Releases the frames at the front that are complete, in order.
    fn release_ready(&mut self, now: Instant) {
        while let Some(&first) = self.packets.keys().next() {
            let before = (self.done_through, self.packets.len());
            self.try_complete(first, now);
            self.skip_leading_padding();
            if (self.done_through, self.packets.len()) == before {
                break;
            }
        }
    }

    /// Releases the oldest complete frame, giving up what is missing or
    /// incomplete before it.
    fn release_first_complete(&mut self, now: Instant) {
        let heads: Vec<u64> = self.packets.iter().filter(|(_, s)| s.head).map(|(k, _)| *k).collect();
        for k in heads {
            let before = self.stats.frames;
            self.try_complete(k, now);
            if self.stats.frames != before {
                return;
            }
        }
    }

    pub fn stats(&self) -> AssemblerStats {
        self.stats
    }

    /// Packets waiting for their frame to complete.
    pub fn buffered_packets(&self) -> usize {
        self.packets.len()
    }

    /// The extended sequence number nearest to the newest one; a jump
    /// further than `MAX_JUMP` starts over.
    fn extend(&mut self, seq: u16) -> u64 {
        // Start high, so that sequence numbers below the first still fit.
        let Some(h) = self.highest else {
            return (1 << 32) | u64::from(seq);
        };
        let delta = i64::from(seq.wrapping_sub(h as u16) as i16);
        if delta.abs() > MAX_JUMP || h.checked_add_signed(delta).is_none() {
            self.reset();
            return (1 << 32) | u64::from(seq);
        }
        h.wrapping_add_signed(delta)
    }

    fn reset(&mut self) {
        self.stats.resets += 1;
        while !self.packets.is_empty() {
            self.drop_front(DropReason::Reset, u64::MAX);
        }
        self.highest = None;
        self.done_through = None;
    }

    fn emit(&mut self, o: Output) {
        if matches!(o, Output::Dropped(_)) {
            self.stats.dropped += 1;
        }
        if self.out.len() >= MAX_OUTPUTS {
            self.out.pop_front();
            self.stats.outputs_discarded += 1;
        }
        self.out.push_back(o);
    }

    /// Releases the frame holding packet `ext` if all of it is here.
    fn try_complete(&mut self, ext: u64, now: Instant) {
        let Some(ts) = self.packets.get(&ext).filter(|s| s.data.is_some()).map(|s| s.timestamp) else {
            return;
        };
        let same = |s: &Slot| s.timestamp == ts && s.data.is_some();
        let mut start = ext;
        loop {
            match self.packets.get(&start) {
                Some(s) if same(s) && s.head => break,
                Some(s) if same(s) => {}
                _ => return,
            }
            match start.checked_sub(1) {
                Some(p) => start = p,
                None => return,
            }
        }
        let mut end = ext;
        loop {
            let Some(s) = self.packets.get(&end).filter(|s| same(s)) else {
                return;
            };
            if s.marker {
                break;
            }
            match self.packets.get(&(end + 1)) {
                Some(next) if same(next) && !next.head => end += 1,
                // The next frame began: this one ended without a marker.
                Some(next) if next.timestamp != ts && next.data.is_some() => break,
                _ => return,
            }
        }
        self.release(start, end, ts, now);
    }

    fn release(&mut self, start: u64, end: u64, ts: u32, now: Instant) {
        // Packets missing before this frame may still come (a NACK's
        // retransmission): wait a little before giving them up.
        let older = self.packets.first_key_value().is_some_and(|(&k, _)| k < start);
        let gap = self.done_through.is_some_and(|d| start > d + 1);
        if (older || gap) && !self.forcing {
            let since = *self.held_since.get_or_insert(now);
            if now < since + self.cfg.repair_wait {
                return;
            }
        }
        self.held_since = None;
        // Older frames can no longer be decoded in order: give them up.
        while let Some((&k, _)) = self.packets.first_key_value() {
            if k >= start {
                break;
            }
            self.drop_front(DropReason::Superseded, start);
        }
        if let Some(d) = self.done_through {
            // `done_through` moved up to the last packet given up just now.
            let missing = start.saturating_sub(d + 1);
            if missing > 0 {
                self.emit(Output::Dropped(Dropped {
                    rtp_timestamp: None,
                    packets: usize::try_from(missing).unwrap_or(usize::MAX),
                    reason: DropReason::Gap,
                }));
            }
        }
        let rest = self.packets.split_off(&(end + 1));
        let frame = std::mem::replace(&mut self.packets, rest);
        let parts: Vec<Bytes> = frame.into_values().filter_map(|s| s.data).collect();
        let size: usize = parts.iter().map(Bytes::len).sum();
        self.bytes = self.bytes.saturating_sub(size);
        let packets = parts.len();
        let data = if packets == 1 {
            parts.into_iter().next().unwrap_or_default()
        } else {
            let mut b = BytesMut::with_capacity(size);
            for p in &parts {
                b.extend_from_slice(p);
            }
            b.freeze()
        };
        self.done_through = Some(end);
        self.stats.frames += 1;
        let keyframe = data.first().is_some_and(|b| b & 1 == 0);
        self.emit(Output::Frame(Vp8Frame { data, rtp_timestamp: ts, arrived: now, keyframe, packets }));
    }

    /// Gives up the oldest frame: the packets at the front with its
    /// timestamp, below `limit`.
    fn drop_front(&mut self, reason: DropReason, limit: u64) {
        let Some((&first, slot)) = self.packets.first_key_value() else {
            return;
        };
        if slot.data.is_none() {
            self.remove_front_padding(first);
            return;
        }
        let ts = slot.timestamp;
        let mut n = 0;
        while let Some(entry) = self.packets.first_entry() {
            let s = entry.get();
            if *entry.key() >= limit || (s.data.is_some() && s.timestamp != ts) {
                break;
            }
            let k = *entry.key();
            let s = entry.remove();
            self.bytes = self.bytes.saturating_sub(s.len());
            self.done_through = Some(k);
            n += usize::from(s.data.is_some());
        }
        self.emit(Output::Dropped(Dropped { rtp_timestamp: Some(ts), packets: n, reason }));
    }

    fn remove_front_padding(&mut self, k: u64) {
        self.packets.remove(&k);
        self.done_through = Some(k);
    }

    /// Padding right after what was released or given up fills its
    /// sequence number and is forgotten.
    fn skip_leading_padding(&mut self) {
        while let Some((&k, s)) = self.packets.first_key_value() {
            let next = self.done_through.is_some_and(|d| k == d + 1);
            if s.data.is_some() || !next {
                break;
            }
            self.remove_front_padding(k);
        }
    }
}

/// Whether the packet begins a frame, and its VP8 data.
fn parse(payload: &Bytes) -> Result<(bool, Bytes), Rejected> {
    // A fresh one each time: `depacketize` leaves fields of absent
    // extensions as they were.
    let mut d = Vp8Packet::default();
    let data = match d.depacketize(payload) {
        Ok(data) => data,
        // rtc refuses payloads under 4 bytes, but a frame's last fragment
        // can be one or two bytes after a one-byte descriptor.
        Err(_) if payload.len() < 4 => return parse_short(payload),
        Err(e) => return Err(Rejected::Malformed(e.to_string())),
    };
    if data.is_empty() {
        return Err(Rejected::Malformed("no VP8 data after the descriptor".into()));
    }
    Ok((d.s == 1 && d.pid == 0, data))
}

/// The payload descriptor of RFC 7741 section 4.2, for payloads too short for rtc.
fn parse_short(p: &Bytes) -> Result<(bool, Bytes), Rejected> {
    let short = || Rejected::Malformed("payload too short".into());
    let b0 = *p.first().ok_or_else(short)?;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(i).ok_or_else(short)?;
        i += 1;
        if x & 0x80 != 0 {
            let pic = *p.get(i).ok_or_else(short)?;
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    if i >= p.len() {
        return Err(short());
    }
    Ok((b0 & 0x10 != 0 && b0 & 0x07 == 0, p.slice(i..)))
}
