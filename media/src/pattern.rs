//! The softphone's test video source, built so that a receiver can both
//! verify what arrived and time it.
//!
//! The picture has two parts:
//!
//! * the top: eight vertical 75 % colour bars ([`BARS`]) that move left by
//!   4 px per frame, so that frozen or repeated frames show;
//! * the bottom: a data strip of black/white square blocks carrying a start
//!   marker, the frame counter, the capture time and a checksum, which
//!   [`decode`] reads back.
//!
//! # Data strip layout
//!
//! The strip carries [`DATA_BITS`] bits, most significant bit first:
//! the 4-bit marker `1010`, `counter` (32 bits), `capture_ms` (48 bits,
//! milliseconds since the UNIX epoch truncated to 48 bits) and a CRC-8
//! (polynomial 0x07, initial value 0xFF) of the ten bytes of counter and
//! capture time (big-endian).
//!
//! A bit is a square block: luma 16 for 0, 235 for 1, neutral chroma. The
//! blocks are 16 px, or 8 px when 16 px blocks would take more than half of
//! the picture's height (small pictures such as 160x120). They run left to
//! right from x = 0, `width / block` to a row, in as many rows as needed. The
//! rows sit at the bottom, their top aligned to a multiple of the block size
//! (so 16 px blocks match VP8's macroblocks); whatever is left below and to
//! the right of the blocks is black. The layout is a function of the
//! picture's size only, so [`decode`] works it out from the frame.

use crate::{I420Frame, colour_distance, rgb_to_yuv};

/// The bars, left to right: white, yellow, cyan, green, magenta, red, blue,
/// black (75 % bars; each survives a BT.601 limited-range round trip within
/// 1 per channel).
pub const BARS: [[u8; 3]; 8] =
    [[192, 192, 192], [192, 192, 0], [0, 192, 192], [0, 192, 0], [192, 0, 192], [192, 0, 0], [0, 0, 192], [16, 16, 16]];

/// How far the bars move left per frame, in pixels.
pub const BAR_SPEED_PX: u32 = 4;

/// The smallest picture the pattern supports.
pub const MIN_WIDTH: u32 = 128;
pub const MIN_HEIGHT: u32 = 96;

/// The start marker that precedes the data bits.
const MARKER: u8 = 0b1010;
const MARKER_BITS: usize = 4;
/// Bits in the strip: marker, counter, capture time, checksum.
pub const DATA_BITS: usize = MARKER_BITS + 32 + 48 + 8;

/// Luma of a 0 block and of a 1 block.
const LUMA_ZERO: u8 = 16;
const LUMA_ONE: u8 = 235;
const CHROMA_NEUTRAL: u8 = 128;
/// Pixels on either side of a bar edge that `bars_match` keeps away from.
const EDGE_MARGIN: u32 = 4;

/// What a pattern frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternInfo {
    /// The frame counter.
    pub counter: u32,
    /// Capture time in milliseconds since the UNIX epoch, truncated to 48
    /// bits (which only wraps in the year 10889).
    pub capture_ms: u64,
}

/// Where the data strip goes in a picture of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// Side of a block, in pixels.
    block: u32,
    /// Blocks in one row.
    per_row: u32,
    /// Rows of blocks.
    rows: u32,
    /// First pixel row of the strip; the bars fill the rows above it.
    top: u32,
}

impl Layout {
    fn for_size(width: u32, height: u32) -> Option<Layout> {
        if width < MIN_WIDTH || height < MIN_HEIGHT || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return None;
        }
        [16u32, 8].into_iter().find_map(|block| {
            let per_row = width / block;
            let rows = (DATA_BITS as u32).div_ceil(per_row);
            if rows * block > height / 2 {
                return None;
            }
            let top = (height / block - rows) * block;
            Some(Layout { block, per_row, rows, top })
        })
    }

    /// The top-left pixel of block `i`.
    fn block_origin(&self, i: usize) -> (u32, u32) {
        let i = i as u32;
        ((i % self.per_row) * self.block, self.top + (i / self.per_row) * self.block)
    }
}

/// CRC-8, polynomial 0x07, initial value 0xFF, no reflection.
fn crc8(bytes: &[u8]) -> u8 {
    let mut crc = 0xFFu8;
    for &b in bytes {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 { (crc << 1) ^ 0x07 } else { crc << 1 };
        }
    }
    crc
}

/// The ten payload bytes (big-endian counter, then the low 48 bits of the
/// capture time big-endian).
fn payload(counter: u32, capture_ms: u64) -> [u8; 10] {
    let mut p = [0u8; 10];
    p[..4].copy_from_slice(&counter.to_be_bytes());
    p[4..].copy_from_slice(&capture_ms.to_be_bytes()[2..]);
    p
}

/// The strip's bits, in order, as a 128-bit word (bit `DATA_BITS - 1 - i`
/// is bit `i` of the strip).
fn strip_bits(counter: u32, capture_ms: u64) -> u128 {
    let ms = capture_ms & ((1u64 << 48) - 1);
    let crc = crc8(&payload(counter, ms));
    (u128::from(MARKER) << 88) | (u128::from(counter) << 56) | (u128::from(ms) << 8) | u128::from(crc)
}

fn bit(word: u128, i: usize) -> bool {
    (word >> (DATA_BITS - 1 - i)) & 1 == 1
}

/// The index into [`BARS`] shown at column `x` of frame `counter`.
fn bar_index(width: u32, counter: u32, x: u32) -> usize {
    let width = u64::from(width.max(8));
    let bar_w = width / 8;
    let p = (u64::from(x) + u64::from(BAR_SPEED_PX) * u64::from(counter)) % width;
    ((p / bar_w) % 8) as usize
}

/// The colour the bars show at column `x` of frame `counter` in a picture
/// `width` pixels wide.
pub fn bar_colour_at(width: u32, counter: u32, x: u32) -> [u8; 3] {
    BARS[bar_index(width, counter, x)]
}

/// The test video source. Frames are rendered into one buffer that is
/// reused, so [`TestPattern::frame`] does not allocate.
#[derive(Debug, Clone)]
pub struct TestPattern {
    width: u32,
    height: u32,
    layout: Layout,
    /// `BARS` in Y'CbCr.
    bars_yuv: [(u8, u8, u8); 8],
    frame: I420Frame,
}

impl TestPattern {
    /// A source of `width` x `height` frames.
    ///
    /// # Panics
    ///
    /// If the size is odd or smaller than [`MIN_WIDTH`] x [`MIN_HEIGHT`].
    pub fn new(width: u32, height: u32) -> Self {
        let layout = Layout::for_size(width, height).unwrap_or_else(|| {
            panic!("test pattern needs even dimensions of at least {MIN_WIDTH}x{MIN_HEIGHT}, not {width}x{height}")
        });
        TestPattern {
            width,
            height,
            layout,
            bars_yuv: BARS.map(rgb_to_yuv),
            frame: I420Frame::solid_rgb(width, height, [0, 0, 0]),
        }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Renders frame `counter`, captured at `capture_ms` (milliseconds since
    /// the UNIX epoch; only the low 48 bits are kept).
    pub fn frame(&mut self, counter: u32, capture_ms: u64) -> &I420Frame {
        let w = self.width as usize;
        let h = self.height as usize;
        let (cw, ch) = (w / 2, h / 2);
        let luma = w * h;
        let top = self.layout.top as usize;
        let bars_yuv = self.bars_yuv;
        let (y_plane, chroma) = self.frame.data.split_at_mut(luma);
        let (u_plane, v_plane) = chroma.split_at_mut(cw * ch);

        // Bars: render the first row of each plane, copy it down.
        for (x, px) in y_plane[..w].iter_mut().enumerate() {
            *px = bars_yuv[bar_index(self.width, counter, x as u32)].0;
        }
        for cx in 0..cw {
            let (_, u, v) = bars_yuv[bar_index(self.width, counter, 2 * cx as u32)];
            u_plane[cx] = u;
            v_plane[cx] = v;
        }
        for row in 1..top {
            y_plane.copy_within(..w, row * w);
        }
        for row in 1..top / 2 {
            u_plane.copy_within(..cw, row * cw);
            v_plane.copy_within(..cw, row * cw);
        }

        // Data strip: black, then the 1 blocks.
        y_plane[top * w..].fill(LUMA_ZERO);
        u_plane[top / 2 * cw..].fill(CHROMA_NEUTRAL);
        v_plane[top / 2 * cw..].fill(CHROMA_NEUTRAL);
        let bits = strip_bits(counter, capture_ms);
        let block = self.layout.block as usize;
        for i in (0..DATA_BITS).filter(|&i| bit(bits, i)) {
            let (bx, by) = self.layout.block_origin(i);
            let (bx, by) = (bx as usize, by as usize);
            for row in by..by + block {
                y_plane[row * w + bx..row * w + bx + block].fill(LUMA_ONE);
            }
        }
        &self.frame
    }
}

/// Reads the data strip of a pattern frame; `None` if the frame is not one
/// (wrong size, no start marker, bad checksum).
pub fn decode(frame: &I420Frame) -> Option<PatternInfo> {
    let layout = Layout::for_size(frame.width, frame.height)?;
    let w = frame.width as usize;
    if frame.data.len() < w * frame.height as usize {
        return None;
    }
    let y_plane = frame.y();
    // Sample the central half of each block (8x8 of a 16 px block).
    let inset = layout.block / 4;
    let side = layout.block / 2;
    let mut word = 0u128;
    for i in 0..DATA_BITS {
        let (bx, by) = layout.block_origin(i);
        let mut sum = 0u32;
        for row in by + inset..by + inset + side {
            let start = row as usize * w + (bx + inset) as usize;
            sum += y_plane[start..start + side as usize].iter().map(|&p| u32::from(p)).sum::<u32>();
        }
        let mean = sum / (side * side);
        word = (word << 1) | u128::from(mean >= 128);
    }
    if (word >> 88) as u8 != MARKER {
        return None;
    }
    let counter = (word >> 56) as u32;
    let capture_ms = ((word >> 8) as u64) & ((1u64 << 48) - 1);
    let crc = word as u8;
    if crc8(&payload(counter, capture_ms)) != crc {
        return None;
    }
    Some(PatternInfo { counter, capture_ms })
}

/// The fraction (0..=1) of sample points in the bar area whose colour is
/// within `tolerance` (see [`colour_distance`]) of what the bars of frame
/// `info.counter` should show there. The points form a grid of 16 columns by
/// 4 rows, each moved if needed so that it is at least 4 px from any bar
/// edge and from the top and bottom of the bar area. 0 if the frame's size
/// is not one the pattern supports.
pub fn bars_match(frame: &I420Frame, info: &PatternInfo, tolerance: u8) -> f32 {
    const COLUMNS: u32 = 16;
    const ROWS: u32 = 4;
    let Some(layout) = Layout::for_size(frame.width, frame.height) else {
        return 0.0;
    };
    let (width, counter) = (frame.width, info.counter);
    let bar_w = width / 8;
    // A column whose neighbourhood shows one colour only.
    let clear = |x: u32| {
        x >= EDGE_MARGIN
            && x + EDGE_MARGIN < width
            && (x - EDGE_MARGIN..=x + EDGE_MARGIN)
                .all(|xx| bar_index(width, counter, xx) == bar_index(width, counter, x))
    };
    let inner_h = layout.top.saturating_sub(2 * EDGE_MARGIN);
    let (mut sampled, mut matched) = (0u32, 0u32);
    for c in 0..COLUMNS {
        let x0 = (2 * c + 1) * width / (2 * COLUMNS);
        let x = (0..=bar_w / 2).flat_map(|d| [x0.checked_add(d), x0.checked_sub(d)]).flatten().find(|&x| clear(x));
        let Some(x) = x else { continue };
        let expected = bar_colour_at(width, counter, x);
        for r in 0..ROWS {
            let y = EDGE_MARGIN + (2 * r + 1) * inner_h / (2 * ROWS);
            if y >= layout.top {
                continue;
            }
            sampled += 1;
            if colour_distance(frame.rgb_at(x, y), expected) <= tolerance {
                matched += 1;
            }
        }
    }
    if sampled == 0 { 0.0 } else { matched as f32 / sampled as f32 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yuv_to_rgb;

    const SIZES: [(u32, u32); 5] = [(128, 96), (160, 120), (320, 240), (640, 480), (1280, 720)];
    const VALUES: [(u32, u64); 6] = [
        (0, 0),
        (1, 1_700_000_000_000),
        (u32::MAX, (1 << 48) - 1),
        (0x1234_5678, 0xABCD_EF01_2345),
        (u32::MAX, 0),
        (0, (1 << 48) - 1),
    ];

    #[test]
    fn bars_survive_a_yuv_round_trip() {
        for c in BARS {
            let (y, u, v) = rgb_to_yuv(c);
            assert!(colour_distance(yuv_to_rgb(y, u, v), c) <= 1, "{c:?}");
        }
    }

    #[test]
    fn layouts_fit() {
        for (w, h) in SIZES {
            let l = Layout::for_size(w, h).unwrap();
            assert!(l.per_row * l.rows >= DATA_BITS as u32);
            assert!(l.top >= h / 2 && l.top + l.rows * l.block <= h);
            assert_eq!(l.top % l.block, 0);
        }
        assert_eq!(Layout::for_size(320, 240).unwrap().block, 16);
        assert_eq!(Layout::for_size(160, 120).unwrap().block, 8);
        assert!(Layout::for_size(126, 96).is_none());
        assert!(Layout::for_size(128, 94).is_none());
        assert!(Layout::for_size(321, 240).is_none());
    }

    #[test]
    fn round_trip() {
        for (w, h) in SIZES {
            let mut p = TestPattern::new(w, h);
            for (counter, ms) in VALUES {
                let f = p.frame(counter, ms);
                assert_eq!((f.width, f.height), (w, h));
                assert_eq!(decode(f), Some(PatternInfo { counter, capture_ms: ms }), "{w}x{h} {counter} {ms}");
            }
        }
    }

    #[test]
    fn capture_time_is_truncated_to_48_bits() {
        let mut p = TestPattern::new(320, 240);
        let info = decode(p.frame(7, (5 << 48) | 42)).unwrap();
        assert_eq!(info.capture_ms, 42);
    }

    #[test]
    fn frame_reuses_its_buffer() {
        let mut p = TestPattern::new(320, 240);
        let ptr = p.frame(0, 0).data.as_ptr();
        assert_eq!(p.frame(1, 1).data.as_ptr(), ptr);
    }

    #[test]
    fn other_pictures_are_not_pattern_frames() {
        for (w, h) in SIZES {
            for c in [[0, 0, 0], [255, 255, 255], [128, 128, 128]] {
                assert_eq!(decode(&I420Frame::solid_rgb(w, h, c)), None);
            }
        }
        // Unsupported sizes are rejected, not read.
        assert_eq!(decode(&I420Frame::solid_rgb(64, 48, [0, 0, 0])), None);
        assert_eq!(decode(&I420Frame::solid_rgb(321, 241, [0, 0, 0])), None);
    }

    #[test]
    fn bars_move_left() {
        let w = 320;
        for x in 0..w - BAR_SPEED_PX {
            assert_eq!(bar_colour_at(w, 1, x), bar_colour_at(w, 0, x + BAR_SPEED_PX));
        }
        assert_eq!(bar_colour_at(w, 0, 0), BARS[0]);
        assert_eq!(bar_colour_at(w, 0, w / 8), BARS[1]);
        assert_eq!(bar_colour_at(w, 0, w - 1), BARS[7]);
        // Wraps around: after width/4 frames the bars are back.
        for x in 0..w {
            assert_eq!(bar_colour_at(w, w / BAR_SPEED_PX, x), bar_colour_at(w, 0, x));
        }
        // Even u32::MAX does not overflow.
        let _ = bar_colour_at(w, u32::MAX, w - 1);
    }

    #[test]
    fn bars_match_the_exact_frame() {
        for (w, h) in SIZES.into_iter().chain([(130, 96), (642, 482)]) {
            let mut p = TestPattern::new(w, h);
            for (counter, ms) in VALUES {
                let info = PatternInfo { counter, capture_ms: ms };
                let f = p.frame(counter, ms);
                assert_eq!(decode(f), Some(info));
                assert_eq!(bars_match(f, &info, 2), 1.0, "{w}x{h} {counter}");
                // Against another frame's bars, most points are wrong.
                let other = PatternInfo {
                    counter: counter
                        .checked_add(w / 8 / BAR_SPEED_PX)
                        .unwrap_or_else(|| counter - w / 8 / BAR_SPEED_PX),
                    ..info
                };
                let m = bars_match(f, &other, 2);
                assert!(m < 0.5, "{w}x{h} {counter}: {m}");
            }
        }
        let grey = I420Frame::solid_rgb(320, 240, [128, 128, 128]);
        let info = PatternInfo { counter: 0, capture_ms: 0 };
        assert_eq!(bars_match(&grey, &info, 10), 0.0);
    }

    #[test]
    fn a_flipped_block_fails_the_checksum() {
        let (w, h) = (320, 240);
        let mut p = TestPattern::new(w, h);
        let f = p.frame(123_456, 1_700_000_000_123).clone();
        let layout = Layout::for_size(w, h).unwrap();
        // Flip each data or checksum block in turn (not the marker's).
        for i in MARKER_BITS..DATA_BITS {
            let mut g = f.clone();
            let (bx, by) = layout.block_origin(i);
            for row in by..by + layout.block {
                for x in bx..bx + layout.block {
                    let px = &mut g.data[(row * w + x) as usize];
                    *px = if *px >= 128 { LUMA_ZERO } else { LUMA_ONE };
                }
            }
            assert_eq!(decode(&g), None, "block {i}");
        }
    }

    #[test]
    fn crc8_check_value() {
        // CRC-8 with poly 0x07, init 0xFF ("CRC-8/ROHC" without reflection
        // is not standard; check against a value computed by hand instead).
        assert_eq!(crc8(&[]), 0xFF);
        assert_ne!(crc8(&[0; 10]), 0);
        assert_ne!(crc8(&[1, 0]), crc8(&[0, 1]));
    }

    #[cfg(feature = "codecs")]
    #[test]
    fn survives_vp8() {
        use crate::vp8::{Decoder, Encoder, EncoderConfig};
        let (w, h) = (320, 240);
        let mut enc =
            Encoder::new(&EncoderConfig { width: w, height: h, bitrate_kbps: 300, ..Default::default() }).unwrap();
        let mut dec = Decoder::new().unwrap();
        let mut p = TestPattern::new(w, h);
        let t0 = 1_700_000_000_000u64;
        let mut seen = 0;
        for i in 0..10u32 {
            let counter = 1000 + i;
            let ms = t0 + u64::from(i) * 33;
            let packets = enc.encode(p.frame(counter, ms), i == 0).unwrap();
            for pkt in packets {
                for f in dec.decode(&pkt.data).unwrap() {
                    let info = decode(&f).unwrap_or_else(|| panic!("frame {i} not decoded"));
                    assert_eq!(info, PatternInfo { counter, capture_ms: ms });
                    let m = bars_match(&f, &info, 40);
                    assert!(m > 0.9, "frame {i}: bars match {m}");
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 10);
    }
}
