//! The VP8 frame assembler: frames out on their last packet, in order,
//! through reordering, wrap-around, loss, duplicates and garbage.

use std::time::{Duration, Instant};

use bytes::Bytes;
use one2one_media::vp8_assembler::{AssemblerConfig, DropReason, Dropped, Output, Rejected, Vp8Assembler, Vp8Frame};
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::packetizer::Payloader;

/// One RTP packet: sequence number, timestamp, marker, payload.
#[derive(Debug, Clone)]
struct Pkt {
    seq: u16,
    ts: u32,
    marker: bool,
    payload: Bytes,
}

/// A frame whose bytes say which frame it is; `key` sets the VP8 P bit.
fn frame_bytes(n: u32, len: usize, key: bool) -> Bytes {
    let mut v: Vec<u8> = (0..len).map(|i| (i as u32 ^ n.wrapping_mul(31)) as u8).collect();
    if let Some(b) = v.first_mut() {
        *b = if key { *b & !1 } else { *b | 1 };
    }
    Bytes::from(v)
}

/// Packetizes frames with rtc's own VP8 payloader, as the sender does.
struct Sender {
    payloader: Vp8Payloader,
    seq: u16,
    ts: u32,
    mtu: usize,
}

impl Sender {
    fn new(first_seq: u16) -> Self {
        Sender { payloader: Vp8Payloader::default(), seq: first_seq, ts: 1000, mtu: 100 }
    }
    fn with_picture_id(first_seq: u16) -> Self {
        let mut s = Self::new(first_seq);
        s.payloader.enable_picture_id = true;
        s
    }
    fn frame(&mut self, data: &Bytes) -> Vec<Pkt> {
        let parts = self.payloader.payload(self.mtu, data).unwrap();
        let n = parts.len();
        let out = parts
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let p = Pkt { seq: self.seq, ts: self.ts, marker: i + 1 == n, payload };
                self.seq = self.seq.wrapping_add(1);
                p
            })
            .collect();
        self.ts = self.ts.wrapping_add(3000);
        out
    }
}

fn push(a: &mut Vp8Assembler, now: Instant, p: &Pkt) -> Result<(), Rejected> {
    a.push(now, p.seq, p.ts, p.marker, &p.payload)
}

fn outputs(a: &mut Vp8Assembler) -> Vec<Output> {
    std::iter::from_fn(|| a.poll_output()).collect()
}

fn frames(out: &[Output]) -> Vec<&Vp8Frame> {
    out.iter()
        .filter_map(|o| match o {
            Output::Frame(f) => Some(f),
            Output::Dropped(_) => None,
        })
        .collect()
}

fn drops(out: &[Output]) -> Vec<Dropped> {
    out.iter()
        .filter_map(|o| match o {
            Output::Dropped(d) => Some(*d),
            Output::Frame(_) => None,
        })
        .collect()
}

#[test]
fn in_order_frame_is_released_on_its_marker_packet() {
    let t0 = Instant::now();
    let mut s = Sender::new(100);
    let mut a = Vp8Assembler::default();
    let data = frame_bytes(1, 350, true);
    let pkts = s.frame(&data);
    assert_eq!(pkts.len(), 4);
    for (i, p) in pkts.iter().enumerate() {
        let now = t0 + Duration::from_millis(i as u64);
        push(&mut a, now, p).unwrap();
        let out = outputs(&mut a);
        if i + 1 < pkts.len() {
            assert!(out.is_empty(), "released before the marker: {out:?}");
        } else {
            // On the marker packet itself: not on the next frame's first packet.
            assert_eq!(
                out,
                vec![Output::Frame(Vp8Frame {
                    data: data.clone(),
                    rtp_timestamp: 1000,
                    arrived: now,
                    keyframe: true,
                    packets: 4
                })]
            );
        }
    }
    assert_eq!(a.buffered_packets(), 0);
    let next = s.frame(&frame_bytes(2, 20, false));
    push(&mut a, t0, &next[0]).unwrap();
    let out = outputs(&mut a);
    assert_eq!(frames(&out).len(), 1);
    assert!(!frames(&out)[0].keyframe);
    assert!(drops(&out).is_empty());
}

#[test]
fn single_packet_frames_come_out_one_per_packet() {
    let t0 = Instant::now();
    let mut s = Sender::with_picture_id(7);
    let mut a = Vp8Assembler::default();
    for n in 0..300 {
        let data = frame_bytes(n, 50, n == 0);
        let pkts = s.frame(&data);
        assert_eq!(pkts.len(), 1);
        push(&mut a, t0, &pkts[0]).unwrap();
        let out = outputs(&mut a);
        assert_eq!(frames(&out).len(), 1, "frame {n}");
        assert_eq!(frames(&out)[0].data, data);
    }
    assert_eq!(a.stats().frames, 300);
    assert_eq!(a.stats().dropped, 0);
}

#[test]
fn reordered_middle_packet_completes_the_frame_when_it_arrives() {
    let t0 = Instant::now();
    let mut s = Sender::new(500);
    let mut a = Vp8Assembler::default();
    let data = frame_bytes(3, 380, true);
    let p = s.frame(&data);
    assert_eq!(p.len(), 4);
    for i in [0, 2, 3] {
        push(&mut a, t0, &p[i]).unwrap();
    }
    assert!(outputs(&mut a).is_empty());
    let late = t0 + Duration::from_millis(7);
    push(&mut a, late, &p[1]).unwrap();
    let out = outputs(&mut a);
    assert_eq!(frames(&out).len(), 1);
    assert_eq!(frames(&out)[0].data, data);
    assert_eq!(frames(&out)[0].arrived, late);

    // Fully reversed, and the first packet last.
    let data = frame_bytes(4, 380, false);
    let p = s.frame(&data);
    for pkt in p.iter().rev() {
        push(&mut a, t0, pkt).unwrap();
    }
    let out = outputs(&mut a);
    assert_eq!(frames(&out).iter().map(|f| &f.data).collect::<Vec<_>>(), vec![&data]);
    assert!(drops(&out).is_empty());
}

#[test]
fn wrap_around_at_65535() {
    let t0 = Instant::now();
    let mut s = Sender::new(65533);
    let mut a = Vp8Assembler::default();
    let d1 = frame_bytes(1, 450, true); // 5 packets: 65533..=65535, 0, 1
    let p1 = s.frame(&d1);
    assert_eq!(p1.iter().map(|p| p.seq).collect::<Vec<_>>(), vec![65533, 65534, 65535, 0, 1]);
    // Reordered across the wrap.
    for i in [0, 3, 1, 4, 2] {
        push(&mut a, t0, &p1[i]).unwrap();
    }
    let d2 = frame_bytes(2, 150, false);
    for p in s.frame(&d2) {
        push(&mut a, t0, &p).unwrap();
    }
    let out = outputs(&mut a);
    assert_eq!(frames(&out).iter().map(|f| &f.data).collect::<Vec<_>>(), vec![&d1, &d2]);
    assert!(drops(&out).is_empty(), "{out:?}");
    // A packet from before the wrap is late now.
    assert_eq!(push(&mut a, t0, &p1[0]), Err(Rejected::Late));
}

/// A packet lost and retransmitted (NACK) while the next frame waits:
/// both frames come out, in order, as soon as the gap is filled.
#[test]
fn a_retransmission_within_the_repair_wait_saves_the_frame() {
    let t0 = Instant::now();
    let mut s = Sender::new(10);
    let mut a = Vp8Assembler::default();
    let d1 = frame_bytes(1, 300, true);
    let p1 = s.frame(&d1);
    for (i, p) in p1.iter().enumerate() {
        if i != 1 {
            push(&mut a, t0, p).unwrap();
        }
    }
    let d2 = frame_bytes(2, 150, false);
    for p in s.frame(&d2) {
        push(&mut a, t0, &p).unwrap();
    }
    assert!(outputs(&mut a).is_empty(), "the complete frame waits for the one before it");
    let t1 = t0 + Duration::from_millis(20);
    push(&mut a, t1, &p1[1]).unwrap();
    let out = outputs(&mut a);
    assert_eq!(frames(&out).iter().map(|f| &f.data).collect::<Vec<_>>(), vec![&d1, &d2], "{out:?}");
    assert!(drops(&out).is_empty(), "{out:?}");
    assert_eq!(a.buffered_packets(), 0);
}

#[test]
fn lost_packet_drops_the_frame_when_the_next_one_completes() {
    let t0 = Instant::now();
    let mut s = Sender::new(10);
    let mut a = Vp8Assembler::default();
    let d1 = frame_bytes(1, 300, true);
    let p1 = s.frame(&d1);
    for (i, p) in p1.iter().enumerate() {
        if i != 1 {
            push(&mut a, t0, p).unwrap();
        }
    }
    assert!(outputs(&mut a).is_empty());
    let d2 = frame_bytes(2, 150, false);
    let p2 = s.frame(&d2);
    push(&mut a, t0, &p2[0]).unwrap();
    assert!(outputs(&mut a).is_empty(), "the older frame may still complete");
    push(&mut a, t0, &p2[1]).unwrap();
    assert!(outputs(&mut a).is_empty(), "the complete frame waits for a retransmission a while");
    let repair = AssemblerConfig::default().repair_wait;
    assert_eq!(a.poll_timeout(), Some(t0 + repair));
    let t1 = t0 + repair;
    a.handle_timeout(t1);
    let out = outputs(&mut a);
    assert_eq!(
        out,
        vec![
            Output::Dropped(Dropped {
                rtp_timestamp: Some(p1[0].ts),
                packets: p1.len() - 1,
                reason: DropReason::Superseded
            }),
            Output::Frame(Vp8Frame { data: d2, rtp_timestamp: p2[0].ts, arrived: t1, keyframe: false, packets: 2 }),
        ]
    );
    // The lost packet, retransmitted too late, is refused.
    assert_eq!(push(&mut a, t0, &p1[1]), Err(Rejected::Late));
    assert_eq!(a.buffered_packets(), 0);
    assert_eq!(a.stats().dropped, 1);
}

#[test]
fn a_whole_lost_frame_is_reported_as_a_gap() {
    let t0 = Instant::now();
    let mut s = Sender::new(40_000);
    let mut a = Vp8Assembler::default();
    for p in s.frame(&frame_bytes(1, 150, true)) {
        push(&mut a, t0, &p).unwrap();
    }
    let lost = s.frame(&frame_bytes(2, 50, false));
    let d3 = frame_bytes(3, 150, false);
    for p in s.frame(&d3) {
        push(&mut a, t0, &p).unwrap();
    }
    // Frame 3 waits for the missing ones a while, then they are given up.
    assert_eq!(frames(&outputs(&mut a)).len(), 1);
    a.handle_timeout(t0 + AssemblerConfig::default().repair_wait);
    let out = outputs(&mut a);
    assert_eq!(frames(&out).len(), 1);
    assert_eq!(drops(&out), vec![Dropped { rtp_timestamp: None, packets: lost.len(), reason: DropReason::Gap }]);
    assert!(matches!(out[0], Output::Dropped(_)), "reported before the frame after the gap: {out:?}");
}

#[test]
fn duplicates_are_ignored() {
    let t0 = Instant::now();
    let mut s = Sender::new(1);
    let mut a = Vp8Assembler::default();
    let d = frame_bytes(1, 250, true);
    let p = s.frame(&d);
    assert_eq!(p.len(), 3);
    push(&mut a, t0, &p[0]).unwrap();
    assert_eq!(push(&mut a, t0, &p[0]), Err(Rejected::Duplicate));
    push(&mut a, t0, &p[1]).unwrap();
    assert_eq!(push(&mut a, t0, &p[1]), Err(Rejected::Duplicate));
    push(&mut a, t0, &p[2]).unwrap();
    let out = outputs(&mut a);
    assert_eq!(frames(&out).iter().map(|f| &f.data).collect::<Vec<_>>(), vec![&d]);
    // After release, every copy is late and nothing comes out twice.
    for pkt in &p {
        assert_eq!(push(&mut a, t0, pkt), Err(Rejected::Late));
    }
    assert!(outputs(&mut a).is_empty());
    assert_eq!((a.stats().duplicates, a.stats().late, a.stats().frames), (2, 3, 1));
}

#[test]
fn frame_without_a_marker_ends_when_the_next_frame_begins() {
    let t0 = Instant::now();
    let mut s = Sender::new(9);
    let mut a = Vp8Assembler::default();
    let d1 = frame_bytes(1, 250, true);
    let mut p1 = s.frame(&d1);
    p1.last_mut().unwrap().marker = false;
    for p in &p1 {
        push(&mut a, t0, p).unwrap();
    }
    assert!(outputs(&mut a).is_empty());
    let d2 = frame_bytes(2, 40, false);
    push(&mut a, t0, &s.frame(&d2)[0]).unwrap();
    let out = outputs(&mut a);
    assert_eq!(frames(&out).iter().map(|f| &f.data).collect::<Vec<_>>(), vec![&d1, &d2]);
}

#[test]
fn incomplete_frame_times_out() {
    let t0 = Instant::now();
    let cfg = AssemblerConfig { max_wait: Duration::from_millis(100), ..Default::default() };
    let mut a = Vp8Assembler::new(cfg);
    let mut s = Sender::new(3);
    let p = s.frame(&frame_bytes(1, 300, true));
    push(&mut a, t0, &p[0]).unwrap();
    assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_millis(100)));
    a.handle_timeout(t0 + Duration::from_millis(99));
    assert!(outputs(&mut a).is_empty());
    a.handle_timeout(t0 + Duration::from_millis(100));
    assert_eq!(
        outputs(&mut a),
        vec![Output::Dropped(Dropped { rtp_timestamp: Some(p[0].ts), packets: 1, reason: DropReason::Timeout })]
    );
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(a.buffered_packets(), 0);
}

#[test]
fn buffer_is_bounded() {
    let t0 = Instant::now();
    let cfg = AssemblerConfig { max_packets: 16, ..Default::default() };
    let mut a = Vp8Assembler::new(cfg);
    let mut s = Sender::new(60_000);
    // Every frame loses its first packet: nothing ever completes.
    for n in 0..100 {
        for p in s.frame(&frame_bytes(n, 300, false)).iter().skip(1) {
            push(&mut a, t0, p).unwrap();
            assert!(a.buffered_packets() <= 16);
        }
    }
    let out = outputs(&mut a);
    assert!(out.len() <= one2one_media::vp8_assembler::MAX_OUTPUTS);
    assert!(drops(&out).iter().all(|d| d.reason == DropReason::Overflow));
    // And it recovers (after the repair wait for what is missing before it).
    let d = frame_bytes(999, 300, true);
    for p in s.frame(&d) {
        push(&mut a, t0, &p).unwrap();
    }
    a.handle_timeout(t0 + AssemblerConfig::default().repair_wait);
    let out = outputs(&mut a);
    assert_eq!(frames(&out).last().map(|f| &f.data), Some(&d));
}

#[test]
fn bytes_are_bounded() {
    let t0 = Instant::now();
    let cfg = AssemblerConfig { max_bytes: 1000, ..Default::default() };
    let mut a = Vp8Assembler::new(cfg);
    let mut s = Sender { mtu: 1200, ..Sender::new(0) };
    let p = s.frame(&frame_bytes(1, 5000, true));
    for pkt in &p[..p.len() - 1] {
        push(&mut a, t0, pkt).unwrap();
    }
    assert!(a.buffered_packets() <= 1);
    assert!(drops(&outputs(&mut a)).iter().all(|d| d.reason == DropReason::Overflow));
}

#[test]
fn sequence_jump_starts_over() {
    let t0 = Instant::now();
    let mut a = Vp8Assembler::default();
    let mut s = Sender::new(1000);
    let p = s.frame(&frame_bytes(1, 300, true));
    push(&mut a, t0, &p[0]).unwrap();
    let mut s2 = Sender::new(30_000);
    let d = frame_bytes(2, 300, true);
    for pkt in s2.frame(&d) {
        push(&mut a, t0, &pkt).unwrap();
    }
    let out = outputs(&mut a);
    assert_eq!(drops(&out), vec![Dropped { rtp_timestamp: Some(p[0].ts), packets: 1, reason: DropReason::Reset }]);
    assert_eq!(frames(&out).iter().map(|f| &f.data).collect::<Vec<_>>(), vec![&d]);
    assert_eq!(a.stats().resets, 1);
}

#[test]
fn padding_fills_its_sequence_number() {
    let t0 = Instant::now();
    let mut a = Vp8Assembler::default();
    let mut s = Sender::new(65_534);
    for p in s.frame(&frame_bytes(1, 150, true)) {
        push(&mut a, t0, &p).unwrap();
    }
    for _ in 0..3 {
        a.push(t0, s.seq, s.ts.wrapping_sub(3000), false, &Bytes::new()).unwrap();
        s.seq = s.seq.wrapping_add(1);
    }
    for p in s.frame(&frame_bytes(2, 150, false)) {
        push(&mut a, t0, &p).unwrap();
    }
    let out = outputs(&mut a);
    assert_eq!(frames(&out).len(), 2);
    assert!(drops(&out).is_empty(), "{out:?}");
    assert_eq!(a.stats().padding, 3);
    assert_eq!(a.buffered_packets(), 0);
}

#[test]
fn one_and_two_byte_last_fragments_are_taken() {
    // rtc's depacketizer refuses payloads under 4 bytes; a frame's tail can be that short.
    let t0 = Instant::now();
    for len in [99 + 1, 99 + 2, 99 + 3, 1, 2, 3] {
        let mut a = Vp8Assembler::default();
        let mut s = Sender::new(0);
        let d = frame_bytes(len as u32, len, true);
        for p in s.frame(&d) {
            push(&mut a, t0, &p).unwrap();
        }
        let out = outputs(&mut a);
        assert_eq!(frames(&out).iter().map(|f| &f.data).collect::<Vec<_>>(), vec![&d], "len {len}");
    }
}

#[test]
fn malformed_payloads_are_refused() {
    let t0 = Instant::now();
    let mut a = Vp8Assembler::default();
    // A descriptor and nothing after it; an extension that runs off the end.
    for bad in [&[0x10][..], &[0x90, 0x80], &[0x90, 0x80, 0x81], &[0x90, 0xf0, 0x81, 0x01, 0x02]] {
        assert!(matches!(a.push(t0, 1, 1, true, &Bytes::copy_from_slice(bad)), Err(Rejected::Malformed(_))), "{bad:?}");
    }
    assert_eq!(a.stats().malformed, 4);
    assert!(outputs(&mut a).is_empty());
}

/// xorshift64*: the tests below are random but repeatable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[test]
fn garbage_never_panics_and_stays_bounded() {
    let t0 = Instant::now();
    for seed in 1..200u64 {
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let cfg = AssemblerConfig {
            max_packets: 1 + r.below(64) as usize,
            max_bytes: 1 + r.below(4000) as usize,
            max_wait: Duration::from_millis(r.below(50)),
            repair_wait: Duration::from_millis(r.below(50)),
        };
        let mut a = Vp8Assembler::new(cfg);
        let mut now = t0;
        for _ in 0..2000 {
            let len = r.below(40) as usize;
            let payload: Bytes = (0..len).map(|_| r.next() as u8).collect::<Vec<u8>>().into();
            // Mostly nearby sequence numbers and few timestamps, so frames do form.
            let seq = if r.below(10) == 0 { r.next() as u16 } else { r.below(40) as u16 };
            let ts = r.below(4) as u32 * 3000;
            now += Duration::from_millis(r.below(5));
            let _ = a.push(now, seq, ts, r.below(3) == 0, &payload);
            if r.below(7) == 0 {
                a.handle_timeout(now);
            }
            assert!(a.buffered_packets() <= cfg.max_packets);
            if r.below(3) == 0 {
                while a.poll_output().is_some() {}
            }
        }
    }
}

#[test]
fn lossy_reordered_duplicated_stream_never_yields_a_wrong_frame() {
    let t0 = Instant::now();
    for seed in 1..100u64 {
        let mut r = Rng(seed.wrapping_mul(0xd134_2543_de82_ef95) | 1);
        let mut s = if seed % 2 == 0 { Sender::new(r.next() as u16) } else { Sender::with_picture_id(r.next() as u16) };
        let mut sent = Vec::new();
        let mut wire = Vec::new();
        for n in 0..200u32 {
            let d = frame_bytes(n, 1 + r.below(600) as usize, n % 50 == 0);
            for p in s.frame(&d) {
                wire.push(p);
            }
            sent.push((wire.last().unwrap().ts, d));
        }
        // Loss, duplication, and reordering within a few packets.
        let lossy = seed % 3 != 0;
        let mut arriving: Vec<Pkt> = Vec::new();
        for p in &wire {
            if lossy && r.below(30) == 0 {
                continue;
            }
            arriving.push(p.clone());
            if r.below(20) == 0 {
                arriving.push(p.clone());
            }
        }
        for i in 0..arriving.len() {
            let j = (i + r.below(4) as usize).min(arriving.len() - 1);
            arriving.swap(i, j);
        }
        let mut a = Vp8Assembler::default();
        let mut got = Vec::new();
        // A packet every 10 ms: losses are given up after the repair wait.
        for (i, p) in arriving.iter().enumerate() {
            let _ = push(&mut a, t0 + Duration::from_millis(10 * i as u64), p);
            while let Some(o) = a.poll_output() {
                if let Output::Frame(f) = o {
                    got.push(f);
                }
            }
        }
        let mut last_ts = None;
        for f in &got {
            let (_, d) = sent.iter().find(|(ts, _)| *ts == f.rtp_timestamp).expect("a frame that was sent");
            assert_eq!(&f.data, d, "seed {seed}: frame at {} is not what was sent", f.rtp_timestamp);
            assert!(
                last_ts.is_none_or(|t: u32| f.rtp_timestamp.wrapping_sub(t) as i32 > 0),
                "seed {seed}: out of order"
            );
            last_ts = Some(f.rtp_timestamp);
        }
        let st = a.stats();
        assert_eq!(st.frames as usize, got.len(), "seed {seed}: {st:?}");
        if !lossy {
            // Reordering alone loses a frame only when its successor completes first.
            assert!(got.len() + st.dropped as usize >= sent.len() - 1, "seed {seed}: {st:?}");
        }
        assert!(got.len() > sent.len() / 2, "seed {seed}: only {} of {} frames", got.len(), sent.len());
    }
}
