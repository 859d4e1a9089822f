//! Media sources and sinks of the softphone, and the per-call pipelines:
//! source → encoder → peer, and peer → jitter buffer / decoder → recorder
//! and stats.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use one2one_media::I420Frame;
use one2one_media::analysis::rms;
use one2one_media::audio::{FRAME_SAMPLES, OpusDecoder, OpusEncoder, SAMPLE_RATE, Tone};
use one2one_media::files::{WavWriter, Y4mReader, Y4mWriter, read_wav};
use one2one_media::pattern::{self, TestPattern};
use one2one_media::peer::Peer;
use one2one_media::vp8;

use crate::audio_dev::{Mic, SharedAec, Speaker};
use crate::camera::Camera;
use crate::model::exit;
use crate::taps::Taps;

/// `--video camera[:N] | test | FILE.y4m | none`
#[derive(Debug, Clone, PartialEq)]
pub enum VideoSpec {
    Camera(Option<u32>),
    Test,
    File(PathBuf),
    None,
}

impl FromStr for VideoSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "test" => VideoSpec::Test,
            "none" => VideoSpec::None,
            "camera" => VideoSpec::Camera(None),
            _ if s.starts_with("camera:") => {
                VideoSpec::Camera(Some(s[7..].parse().map_err(|_| format!("bad camera index in {s:?}"))?))
            }
            _ if s.ends_with(".y4m") => VideoSpec::File(PathBuf::from(s)),
            _ => return Err("expected camera[:N], test, FILE.y4m or none".into()),
        })
    }
}

/// `--audio mic[:NAME] | tone[:HZ] | FILE.wav | none`
#[derive(Debug, Clone, PartialEq)]
pub enum AudioSpec {
    Mic(Option<String>),
    Tone(f32),
    File(PathBuf),
    None,
}

impl FromStr for AudioSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => AudioSpec::None,
            "mic" => AudioSpec::Mic(None),
            "tone" => AudioSpec::Tone(440.0),
            _ if s.starts_with("mic:") => AudioSpec::Mic(Some(s[4..].to_owned())),
            _ if s.starts_with("tone:") => {
                let hz: f32 = s[5..].parse().map_err(|_| format!("bad frequency in {s:?}"))?;
                if !(20.0..=20_000.0).contains(&hz) {
                    return Err("tone frequency must be 20 to 20000 Hz".into());
                }
                AudioSpec::Tone(hz)
            }
            _ if s.ends_with(".wav") => AudioSpec::File(PathBuf::from(s)),
            _ => return Err("expected mic[:NAME], tone[:HZ], FILE.wav or none".into()),
        })
    }
}

/// A source or sink that cannot be opened; carries its exit code.
#[derive(Debug)]
pub struct DeviceError {
    pub message: String,
    pub code: i32,
}

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeviceError {}

fn device_err(message: impl Into<String>) -> DeviceError {
    DeviceError { message: message.into(), code: exit::NO_DEVICE }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Where raw video comes from.
pub enum VideoSource {
    Test {
        pattern: TestPattern,
        counter: u32,
    },
    File {
        reader: Y4mReader<BufReader<File>>,
        path: PathBuf,
    },
    /// A camera capturing on its own thread; `last` is what was sent last
    /// (black until the first frame), repeated while no new one is there.
    Camera {
        camera: Camera,
        last: I420Frame,
    },
}

impl VideoSource {
    /// Opens the source; `None` for `--video none`. A camera is opened with
    /// the format closest to at most `size` at `fps`, its frames scaled to
    /// fit `size`.
    pub fn open(spec: &VideoSpec, size: (u32, u32), fps: u32) -> Result<Option<VideoSource>, DeviceError> {
        match spec {
            VideoSpec::None => Ok(None),
            VideoSpec::Test => Ok(Some(VideoSource::Test { pattern: TestPattern::new(size.0, size.1), counter: 0 })),
            VideoSpec::File(path) => Ok(Some(VideoSource::File { reader: open_y4m(path)?, path: path.clone() })),
            VideoSpec::Camera(index) => {
                let cameras = std::fs::read_dir("/dev")
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .filter(|e| e.file_name().to_string_lossy().starts_with("video"))
                            .count()
                    })
                    .unwrap_or(0);
                if cameras == 0 {
                    Err(device_err(
                        "no camera found (no /dev/video*); use --video test for moving colour bars, or --video FILE.y4m",
                    ))
                } else {
                    let camera = match index {
                        Some(i) => Camera::open(*i, size, fps),
                        None => Camera::open_first(size, fps),
                    }
                    .map_err(|e| {
                        device_err(format!("{e}; use --video test for moving colour bars, or --video FILE.y4m"))
                    })?;
                    tracing::info!(camera = camera.description(), "camera opened");
                    let (w, h) = camera.size();
                    Ok(Some(VideoSource::Camera { camera, last: I420Frame::solid_rgb(w, h, [0, 0, 0]) }))
                }
            }
        }
    }

    pub fn size(&self) -> (u32, u32) {
        match self {
            VideoSource::Test { pattern, .. } => (pattern.width(), pattern.height()),
            VideoSource::File { reader, .. } => (reader.width(), reader.height()),
            VideoSource::Camera { camera, .. } => camera.size(),
        }
    }

    pub fn fps(&self, default: u32) -> u32 {
        match self {
            VideoSource::Test { .. } => default,
            VideoSource::File { reader, .. } => (reader.fps().round() as u32).clamp(1, 60),
            VideoSource::Camera { camera, .. } => default.min(camera.fps()).max(1),
        }
    }

    /// Whether this is a camera that failed for good (e.g. unplugged).
    pub fn lost(&self) -> bool {
        matches!(self, VideoSource::Camera { camera, .. } if camera.is_lost())
    }

    /// The next frame (files loop at their end; a camera repeats its last
    /// frame until a new one is captured, and gives `None` once lost).
    pub fn next_frame(&mut self) -> Option<I420Frame> {
        match self {
            VideoSource::Test { pattern, counter } => {
                let f = pattern.frame(*counter, now_ms()).clone();
                *counter = counter.wrapping_add(1);
                Some(f)
            }
            VideoSource::File { reader, path } => match reader.next_frame() {
                Ok(Some(f)) => Some(f),
                _ => {
                    *reader = open_y4m(path).ok()?;
                    reader.next_frame().ok().flatten()
                }
            },
            VideoSource::Camera { camera, last } => {
                if camera.is_lost() {
                    return None;
                }
                if let Some(f) = camera.take_latest() {
                    *last = f;
                }
                Some(last.clone())
            }
        }
    }
}

fn open_y4m(path: &Path) -> Result<Y4mReader<BufReader<File>>, DeviceError> {
    let f = File::open(path).map_err(|e| device_err(format!("--video {}: {e}", path.display())))?;
    Y4mReader::open(BufReader::new(f)).map_err(|e| device_err(format!("--video {}: {e}", path.display())))
}

/// Where raw audio comes from: 20 ms mono frames at 48 kHz.
pub enum AudioSource {
    Tone(Tone),
    File { samples: Vec<i16>, pos: usize },
    Mic(Mic),
}

impl AudioSource {
    /// Opens the source; a microphone shares `aec` with the speaker.
    pub fn open(spec: &AudioSpec, aec: Option<SharedAec>) -> Result<Option<AudioSource>, DeviceError> {
        match spec {
            AudioSpec::None => Ok(None),
            AudioSpec::Tone(hz) => Ok(Some(AudioSource::Tone(Tone::new(*hz, 0.3)))),
            AudioSpec::File(path) => {
                let f = File::open(path).map_err(|e| device_err(format!("--audio {}: {e}", path.display())))?;
                let (rate, channels, pcm) =
                    read_wav(BufReader::new(f)).map_err(|e| device_err(format!("--audio {}: {e}", path.display())))?;
                if rate != SAMPLE_RATE {
                    return Err(device_err(format!(
                        "--audio {}: {rate} Hz; only 48000 Hz WAV files are supported",
                        path.display()
                    )));
                }
                let ch = usize::from(channels.max(1));
                let mono: Vec<i16> =
                    pcm.chunks(ch).map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / ch as i32) as i16).collect();
                if mono.is_empty() {
                    return Err(device_err(format!("--audio {}: no samples", path.display())));
                }
                Ok(Some(AudioSource::File { samples: mono, pos: 0 }))
            }
            AudioSpec::Mic(name) => {
                let mic = Mic::open(name.as_deref(), aec)?;
                tracing::info!(mic = mic.description, "microphone opened");
                Ok(Some(AudioSource::Mic(mic)))
            }
        }
    }

    /// Whether this is a microphone that failed for good (e.g. unplugged).
    pub fn lost(&self) -> bool {
        matches!(self, AudioSource::Mic(m) if m.is_lost())
    }

    pub fn fill(&mut self, out: &mut [i16]) {
        match self {
            AudioSource::Tone(t) => t.fill(out),
            AudioSource::File { samples, pos } => {
                for s in out {
                    *s = samples[*pos];
                    *pos = (*pos + 1) % samples.len();
                }
            }
            AudioSource::Mic(m) => m.fill(out),
        }
    }
}

/// Counters shared between the pipelines and the stats line.
#[derive(Debug, Default)]
pub struct Counters {
    pub frames_decoded: AtomicU64,
    pub frames_sent: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub audio_packets: AtomicU64,
    pub width: AtomicU64,
    pub height: AtomicU64,
    /// Microseconds; 0 = none measured yet.
    pub latency_us_last: AtomicU64,
    /// RMS level of the loudest received 20 ms since the last stats, in 1/10000.
    pub audio_level: AtomicU64,
    pub remote_pattern_frames: AtomicU64,
}

/// Sends video at (fps, kbit/s): a dedicated thread paces, captures and
/// encodes; the encoded frames go to the peer from the runtime.
pub fn start_video_sender(
    mut source: VideoSource,
    (fps, bitrate_kbps): (u32, u32),
    peer: Arc<Peer>,
    keyframe: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    taps: Arc<Taps>,
) -> Result<std::thread::JoinHandle<()>, DeviceError> {
    let (w, h) = source.size();
    let black = I420Frame::solid_rgb(w, h, [0, 0, 0]);
    let fps = source.fps(fps);
    let mut enc =
        vp8::Encoder::new(&vp8::EncoderConfig { width: w, height: h, fps, bitrate_kbps, ..Default::default() })
            .map_err(|e| DeviceError { message: format!("VP8 encoder: {e}"), code: exit::MEDIA_FAILED })?;
    let rt = tokio::runtime::Handle::current();
    let frame_time = Duration::from_secs_f64(1.0 / f64::from(fps));
    std::thread::Builder::new()
        .name("video-send".into())
        .spawn(move || {
            let mut next = Instant::now();
            keyframe.store(true, Relaxed);
            while !stop.load(Relaxed) {
                let Some(frame) = source.next_frame() else {
                    if source.lost() {
                        taps.camera_lost.store(true, Relaxed);
                    }
                    break;
                };
                // Camera off: nothing is encoded or sent (the peer sees the
                // video stop); turning it on again asks for a key frame.
                let off = taps.camera_off.load(Relaxed);
                if off {
                    taps.put_local(&black);
                } else {
                    let force = keyframe.swap(false, Relaxed);
                    taps.put_local(&frame);
                    match enc.encode(&frame, force) {
                        Ok(out) => {
                            for f in out {
                                counters.bytes_out.fetch_add(f.data.len() as u64, Relaxed);
                                counters.frames_sent.fetch_add(1, Relaxed);
                                let peer = peer.clone();
                                let data = Bytes::from(f.data);
                                rt.spawn(async move { peer.send_video(data, frame_time).await });
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "encoding failed"),
                    }
                }
                next += frame_time;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now; // late: drop the schedule, not frames
                }
            }
        })
        .map_err(|e| DeviceError { message: format!("video thread: {e}"), code: exit::MEDIA_FAILED })
}

/// Sends audio: one 20 ms Opus packet per tick.
pub async fn run_audio_sender(mut source: AudioSource, peer: Arc<Peer>, counters: Arc<Counters>, taps: Arc<Taps>) {
    let Ok(mut enc) = OpusEncoder::new(1, 32_000) else {
        return;
    };
    let mut pcm = vec![0i16; FRAME_SAMPLES];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        tick.tick().await;
        if source.lost() {
            // The call goes on without audio; the engine tells the user.
            taps.mic_lost.store(true, Relaxed);
            taps.set_mic_level(0.0);
            return;
        }
        source.fill(&mut pcm);
        if taps.muted.load(Relaxed) {
            pcm.fill(0);
        }
        taps.set_mic_level(rms(&pcm));
        let Ok(pkt) = enc.encode(&pcm) else { continue };
        counters.bytes_out.fetch_add(pkt.len() as u64, Relaxed);
        if peer.send_audio(Bytes::from(pkt), Duration::from_millis(20)).await.is_err() {
            break;
        }
    }
}

/// Recording of what arrives (`--record-remote PATH`): PATH.y4m and PATH.wav.
///
/// The y4m file declares [`RECORD_FPS`]; frames are placed on that grid by
/// their RTP timestamps, repeated to fill gaps and dropped when two land
/// in one slot, so the video lasts as long as it did on the wire (and as
/// the wav) whatever rate the peer sent.
pub struct Recorder {
    base: PathBuf,
    video: Option<Y4mWriter<BufWriter<File>>>,
    video_size: (u32, u32),
    /// RTP timestamp of slot 0 (90 kHz), and the slots written so far.
    video_origin: Option<u32>,
    video_slots: u64,
    last_frame: Option<I420Frame>,
    audio: Option<WavWriter<BufWriter<File>>>,
}

pub const RECORD_FPS: u32 = 30;
/// RTP ticks (90 kHz) per recorded frame.
const TICKS_PER_SLOT: u64 = 90_000 / RECORD_FPS as u64;
/// A longer gap (a stall, a paused camera) is filled with at most this
/// many repeats, so a recording never balloons.
const MAX_FILL: u64 = RECORD_FPS as u64 * 10;

impl Recorder {
    /// Checks that both files can be written (creating them), so that a
    /// bad path fails before the call rather than silently during it.
    pub fn create(base: &Path) -> Result<Recorder, String> {
        let r = Recorder {
            base: base.to_owned(),
            video: None,
            video_size: (0, 0),
            video_origin: None,
            video_slots: 0,
            last_frame: None,
            audio: None,
        };
        for ext in [".y4m", ".wav"] {
            let p = r.path(ext);
            File::create(&p).map_err(|e| format!("--record-remote: cannot write {}: {e}", p.display()))?;
        }
        Ok(r)
    }

    fn path(&self, ext: &str) -> PathBuf {
        let mut p = self.base.clone().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    }

    /// Writes a frame sent at `rtp_timestamp`; a new size starts the file
    /// again (the last size wins).
    pub fn video(&mut self, f: &I420Frame, rtp_timestamp: u32) {
        if self.video.is_none() || self.video_size != (f.width, f.height) {
            self.video = File::create(self.path(".y4m"))
                .ok()
                .and_then(|file| Y4mWriter::new(BufWriter::new(file), f.width, f.height, RECORD_FPS).ok());
            self.video_size = (f.width, f.height);
            self.video_origin = None;
            self.video_slots = 0;
            self.last_frame = None;
        }
        let origin = *self.video_origin.get_or_insert(rtp_timestamp);
        // Timestamps wrap; a frame from before the origin is too late.
        let ticks = rtp_timestamp.wrapping_sub(origin);
        if ticks > u32::MAX / 2 {
            return;
        }
        let slot = (u64::from(ticks) + TICKS_PER_SLOT / 2) / TICKS_PER_SLOT;
        let Some(w) = self.video.as_mut() else { return };
        if slot < self.video_slots {
            return; // this slot is taken: drop
        }
        if let Some(prev) = &self.last_frame {
            let gap = slot - self.video_slots;
            for _ in 0..gap.min(MAX_FILL) {
                let _ = w.write_frame(prev);
            }
        }
        let _ = w.write_frame(f);
        self.video_slots = slot + 1;
        // Kept for repeats; the buffer is reused (sizes only change with a
        // new file, which clears it).
        match &mut self.last_frame {
            Some(prev) if prev.data.len() == f.data.len() => prev.data.copy_from_slice(&f.data),
            slot => *slot = Some(f.clone()),
        }
    }

    pub fn audio(&mut self, pcm: &[i16]) {
        if self.audio.is_none() {
            self.audio = File::create(self.path(".wav"))
                .ok()
                .and_then(|f| WavWriter::new(BufWriter::new(f), SAMPLE_RATE, 1).ok());
        }
        if let Some(w) = self.audio.as_mut() {
            let _ = w.write_samples(pcm);
        }
    }

    pub fn finish(&mut self) {
        if let Some(w) = self.video.take() {
            drop(w);
        }
        if let Some(w) = self.audio.take() {
            let _ = w.finish();
        }
    }
}

/// One received VP8 frame, as the peer assembled it.
pub struct EncodedFrame {
    pub data: Bytes,
    pub rtp_timestamp: u32,
}

/// Decodes received VP8 on its own thread; measures glass-to-glass latency
/// when the remote sends the test pattern.
pub fn start_video_receiver(
    rx: std::sync::mpsc::Receiver<EncodedFrame>,
    recorder: Option<Arc<Mutex<Recorder>>>,
    counters: Arc<Counters>,
    keyframe_needed: Arc<AtomicBool>,
    taps: Arc<Taps>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut dec) = vp8::Decoder::new() else {
            return;
        };
        while let Ok(EncodedFrame { data, rtp_timestamp, .. }) = rx.recv() {
            counters.bytes_in.fetch_add(data.len() as u64, Relaxed);
            match dec.decode(&data) {
                Ok(frames) => {
                    for f in frames {
                        counters.frames_decoded.fetch_add(1, Relaxed);
                        counters.width.store(u64::from(f.width), Relaxed);
                        counters.height.store(u64::from(f.height), Relaxed);
                        if let Some(info) = pattern::decode(&f) {
                            let now = now_ms() & ((1 << 48) - 1);
                            if now >= info.capture_ms {
                                counters.latency_us_last.store((now - info.capture_ms).max(1) * 1000, Relaxed);
                            }
                            counters.remote_pattern_frames.fetch_add(1, Relaxed);
                        }
                        taps.put_remote(&f);
                        if let Some(r) = &recorder
                            && let Ok(mut r) = r.lock()
                        {
                            r.video(&f, rtp_timestamp);
                        }
                    }
                }
                Err(_) => keyframe_needed.store(true, Relaxed),
            }
        }
    })
}

/// A small reordering buffer for Opus: packets are decoded in sequence
/// order; a gap is concealed once three later packets are waiting.
pub struct AudioReceiver {
    dec: OpusDecoder,
    next_seq: Option<u16>,
    waiting: BTreeMap<u16, Bytes>,
    recorder: Option<Arc<Mutex<Recorder>>>,
    counters: Arc<Counters>,
    speaker: Option<Speaker>,
    taps: Arc<Taps>,
}

const JITTER_PACKETS: usize = 3;

impl AudioReceiver {
    pub fn new(
        recorder: Option<Arc<Mutex<Recorder>>>,
        counters: Arc<Counters>,
        taps: Arc<Taps>,
    ) -> Option<AudioReceiver> {
        Some(AudioReceiver {
            dec: OpusDecoder::new(1).ok()?,
            next_seq: None,
            waiting: BTreeMap::new(),
            recorder,
            counters,
            speaker: None,
            taps,
        })
    }

    /// Plays what arrives from now on.
    pub fn set_speaker(&mut self, speaker: Speaker) {
        self.speaker = Some(speaker);
    }

    pub fn push(&mut self, seq: u16, data: Bytes) {
        self.counters.audio_packets.fetch_add(1, Relaxed);
        self.counters.bytes_in.fetch_add(data.len() as u64, Relaxed);
        let next = *self.next_seq.get_or_insert(seq);
        // Older than what was played: too late.
        if seq.wrapping_sub(next) > u16::MAX / 2 {
            return;
        }
        self.waiting.insert(seq.wrapping_sub(next), data);
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            let Some(next) = self.next_seq else { return };
            // Keys are offsets from `next`; re-key lazily.
            if let Some(data) = self.waiting.remove(&0) {
                self.play(&data);
            } else if self.waiting.len() >= JITTER_PACKETS {
                self.play(&[]);
            } else {
                return;
            }
            self.next_seq = Some(next.wrapping_add(1));
            self.waiting = std::mem::take(&mut self.waiting).into_iter().map(|(k, v)| (k.wrapping_sub(1), v)).collect();
        }
    }

    fn play(&mut self, data: &[u8]) {
        let Ok(pcm) = self.dec.decode(data) else {
            return;
        };
        self.counters.audio_level.store((rms(pcm) * 10_000.0) as u64, Relaxed);
        if let Some(r) = &self.recorder
            && let Ok(mut r) = r.lock()
        {
            r.audio(pcm);
        }
        if let Some(sp) = &mut self.speaker {
            if sp.is_lost() {
                self.speaker = None;
                self.taps.speaker_lost.store(true, Relaxed);
            } else {
                sp.play(pcm);
            }
        }
    }
}
