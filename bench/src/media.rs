//! The media every peer sends: encoded once before the run, then looped.
//!
//! Video is about 300 frames of VGA VP8 at about 1 Mbit/s and 30 fps (the
//! test pattern plus per-pixel noise, so that frames have a camera-like
//! size), cut into RTP payloads; audio is one second of an Opus tone
//! (50 packets). Each RTP payload that goes out carries a 16-byte trailer
//! (magic, per-stream packet index, send time) that both relays forward
//! untouched, so the receiver can match every packet to its send instant.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{BufMut, Bytes, BytesMut};
use one2one_media::audio::{FRAME_SAMPLES, OpusEncoder, Tone};
use one2one_media::pattern::TestPattern;
use one2one_media::vp8;

/// Largest RTP payload before the trailer (VP8 descriptor included).
pub const MAX_PAYLOAD: usize = 1100;
pub const TRAILER: usize = 16;
const MAGIC: u32 = 0x0B2E_B0CC;

pub const VIDEO_INTERVAL: Duration = Duration::from_nanos(33_333_333);
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// RTP clock ticks per video frame (90 kHz) and per audio packet (48 kHz).
pub const VIDEO_TICKS: u32 = 3000;
pub const AUDIO_TICKS: u32 = 960;

/// One encoded frame as RTP payloads (without trailers).
#[derive(Debug, Clone)]
pub struct VideoFrame {
    pub payloads: Vec<Bytes>,
}

#[derive(Debug, Clone)]
pub struct Media {
    pub video: Vec<VideoFrame>,
    pub audio: Vec<Bytes>,
    /// Encoded video bit rate, for the report.
    pub video_kbps: f64,
}

impl Media {
    /// Encodes `frames` VGA frames and 50 Opus packets.
    pub fn encode(frames: usize) -> anyhow::Result<Media> {
        let (w, h) = (640, 480);
        let mut enc = vp8::Encoder::new(&vp8::EncoderConfig {
            width: w,
            height: h,
            bitrate_kbps: 1000,
            keyframe_interval: frames.max(1) as u32,
            ..Default::default()
        })
        .context("VP8 encoder")?;
        let mut pattern = TestPattern::new(w, h);
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut video = Vec::with_capacity(frames);
        let mut bytes = 0usize;
        let luma = (w * h) as usize;
        for i in 0..frames {
            let mut frame = pattern.frame(i as u32, i as u64 * 33).clone();
            for px in &mut frame.data[..luma] {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let n = (rng & 31) as i16 - 16;
                *px = (i16::from(*px) + n).clamp(0, 255) as u8;
            }
            for f in enc.encode(&frame, i == 0).context("VP8 encode")? {
                bytes += f.data.len();
                video.push(VideoFrame { payloads: packetize_vp8(&f.data) });
            }
        }
        anyhow::ensure!(!video.is_empty(), "the VP8 encoder produced no frames");
        let video_kbps = bytes as f64 * 8.0 / (video.len() as f64 / 30.0) / 1000.0;

        let mut opus = OpusEncoder::new(1, 32_000).context("Opus encoder")?;
        let mut tone = Tone::new(440.0, 0.4);
        let mut pcm = vec![0i16; FRAME_SAMPLES];
        let mut audio = Vec::with_capacity(50);
        for _ in 0..50 {
            tone.fill(&mut pcm);
            audio.push(Bytes::from(opus.encode(&pcm).context("Opus encode")?));
        }
        Ok(Media { video, audio, video_kbps })
    }
}

/// VP8 RTP payloads (RFC 7741) with the one-byte descriptor: S set on the
/// first packet of the frame, partition 0.
pub fn packetize_vp8(frame: &[u8]) -> Vec<Bytes> {
    let chunk = MAX_PAYLOAD - 1;
    let count = frame.len().div_ceil(chunk).max(1);
    let size = frame.len().div_ceil(count).max(1);
    frame
        .chunks(size)
        .enumerate()
        .map(|(i, c)| {
            let mut b = BytesMut::with_capacity(c.len() + 1);
            b.put_u8(if i == 0 { 0x10 } else { 0x00 });
            b.put_slice(c);
            b.freeze()
        })
        .collect()
}

/// The process-wide clock that send times are counted from.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// `payload` plus the trailer for packet `index` sent at `sent_ns`.
pub fn with_trailer(payload: &[u8], index: u32, sent_ns: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + TRAILER);
    b.put_slice(payload);
    b.put_u32(MAGIC);
    b.put_u32(index);
    b.put_u64(sent_ns);
    b.freeze()
}

/// The packet index and send time of a payload that went through a relay.
pub fn read_trailer(payload: &[u8]) -> Option<(u32, u64)> {
    let t = payload.len().checked_sub(TRAILER).map(|at| &payload[at..])?;
    let magic = u32::from_be_bytes(t[0..4].try_into().ok()?);
    if magic != MAGIC {
        return None;
    }
    let index = u32::from_be_bytes(t[4..8].try_into().ok()?);
    let sent = u64::from_be_bytes(t[8..16].try_into().ok()?);
    Some((index, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_round_trip_and_garbage() {
        let b = with_trailer(b"\x10abc", 7, 123_456_789);
        assert_eq!(read_trailer(&b), Some((7, 123_456_789)));
        assert_eq!(read_trailer(b"short"), None);
        assert_eq!(read_trailer(&[0u8; 40]), None);
    }

    #[test]
    fn vp8_packets_stay_under_the_limit_and_mark_the_start() {
        let frame = vec![7u8; 4200];
        let p = packetize_vp8(&frame);
        assert_eq!(p.len(), 4);
        assert!(p.iter().all(|x| x.len() <= MAX_PAYLOAD));
        assert_eq!(p[0][0], 0x10);
        assert!(p[1..].iter().all(|x| x[0] == 0));
        assert_eq!(p.iter().map(|x| x.len() - 1).sum::<usize>(), 4200);
        assert_eq!(packetize_vp8(&[]).len(), 0);
    }
}
