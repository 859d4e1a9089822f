//! Microphone and speaker through cpal's ALSA host. Under PulseAudio or
//! PipeWire, ALSA's `default` and `pulse` devices lead there (with
//! libasound2-plugins); `PULSE_SOURCE` and `PULSE_SINK` pick the sound
//! server's devices. (cpal's native PulseAudio host is not used: its
//! capture path lost sample alignment after about 2 s in our tests.)
//!
//! Each stream lives on its own thread (cpal streams are not `Send` on
//! every host) and talks to the call through a lock-free single-producer,
//! single-consumer ring of 48 kHz mono samples, so the device callback
//! never waits on the network side and the network side never waits on the
//! device. Devices at other rates or channel counts are converted in the
//! callback by [`Resampler`].
//!
//! With both a microphone and a speaker live, an echo canceller sits
//! between them: the speaker callback hands it what is played, the
//! microphone callback what is heard, 10 ms at a time.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{Device, Host, SampleFormat, StreamConfig};
use ringbuf::HeapRb;
use ringbuf::traits::{Consumer, Observer, Producer, Split};

use crate::media_io::DeviceError;
use crate::model::exit;

pub const RATE: u32 = 48_000;
/// The echo canceller's block: 10 ms at 48 kHz.
const AEC_BLOCK: usize = 480;
/// The microphone ring keeps at most this much (older audio is dropped).
const MIC_MAX: usize = RATE as usize / 10;
/// The speaker waits for this much before it starts (and after running dry).
const SPEAKER_START: usize = RATE as usize * 40 / 1000;
/// More queued than this and new audio is dropped: latency stays bounded.
const SPEAKER_MAX: usize = RATE as usize / 5;

/// An echo canceller as the device callbacks use it: `render` gets what
/// the speaker plays, `capture` cleans what the microphone hears, both in
/// 10 ms blocks of 48 kHz mono.
pub trait EchoControl: Send {
    fn render(&mut self, far: &[i16]);
    fn capture(&mut self, near: &mut [i16]);
}

/// The echo canceller shared by the two device callbacks; each holds the
/// lock only for one 10 ms block.
pub type SharedAec = Arc<Mutex<dyn EchoControl>>;

impl EchoControl for one2one_media::aec::EchoCanceller {
    fn render(&mut self, far: &[i16]) {
        one2one_media::aec::EchoCanceller::render(self, far);
    }
    fn capture(&mut self, near: &mut [i16]) {
        one2one_media::aec::EchoCanceller::capture(self, near);
    }
}

/// A new echo canceller for one call.
pub fn new_aec() -> Option<SharedAec> {
    match one2one_media::aec::EchoCanceller::new(RATE) {
        Ok(aec) => Some(Arc::new(Mutex::new(aec))),
        Err(e) => {
            tracing::warn!(error = %e, "no echo cancellation");
            None
        }
    }
}

fn device_name(d: &Device) -> String {
    d.description().map(|d| d.name().to_owned()).unwrap_or_default()
}

/// The id without the host prefix, e.g. `alsa_output.pci-0000_00_1f.3.analog-stereo`.
fn device_id(d: &Device) -> String {
    d.id()
        .map(|id| id.to_string())
        .map(|s| s.split_once(':').map(|(_, n)| n.to_owned()).unwrap_or(s))
        .unwrap_or_default()
}

/// Keeps ALSA's own messages ("ALSA lib pcm.c:...: Unknown PCM ...") off
/// the terminal. alsa-lib prints them to stderr from inside cpal calls
/// (its handler is C-variadic, so it cannot be replaced from safe Rust):
/// while any `QuietAlsa` lives, fd 2 points at a private, already unlinked
/// file. When the last one goes, fd 2 is restored and what landed in the
/// file meanwhile is sorted: ALSA's lines go to the log at debug level,
/// anything else (other threads' messages) is written to stderr after all.
/// Nothing written in that window is lost, only delayed.
struct QuietAlsa;

struct QuietState {
    depth: usize,
    /// The real stderr and the file that stands in for it.
    redirected: Option<(std::os::fd::OwnedFd, std::fs::File)>,
}

static QUIET: Mutex<QuietState> = Mutex::new(QuietState { depth: 0, redirected: None });

impl QuietAlsa {
    fn start() -> QuietAlsa {
        use std::os::fd::AsFd as _;
        use std::sync::atomic::AtomicU64;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let mut st = QUIET.lock().unwrap_or_else(|e| e.into_inner());
        st.depth += 1;
        if st.depth == 1 {
            let path = std::env::temp_dir().join(format!(
                "one2one-stderr-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Relaxed)
            ));
            let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path);
            let _ = std::fs::remove_file(&path);
            // Without a file ALSA's lines stay visible: better than losing
            // other messages.
            if let Ok(file) = file
                && let Ok(saved) = std::io::stderr().as_fd().try_clone_to_owned()
                && rustix::stdio::dup2_stderr(&file).is_ok()
            {
                st.redirected = Some((saved, file));
            }
        }
        QuietAlsa
    }
}

impl Drop for QuietAlsa {
    fn drop(&mut self) {
        use std::io::{Read as _, Seek as _, Write as _};
        let mut st = QUIET.lock().unwrap_or_else(|e| e.into_inner());
        st.depth = st.depth.saturating_sub(1);
        if st.depth > 0 {
            return;
        }
        let Some((saved, mut file)) = st.redirected.take() else { return };
        let _ = rustix::stdio::dup2_stderr(&saved);
        drop(st);
        let mut bytes = vec![];
        if file.rewind().is_ok() {
            let _ = file.read_to_end(&mut bytes);
        }
        let mut others = String::new();
        for line in String::from_utf8_lossy(&bytes).lines() {
            if is_alsa_noise(line) {
                tracing::debug!(target: "alsa", "{line}");
            } else {
                others.push_str(line);
                others.push('\n');
            }
        }
        if !others.is_empty() {
            let _ = std::io::stderr().write_all(others.as_bytes());
        }
    }
}

/// ALSA's lines, and the blank lines some plugins add to theirs.
fn is_alsa_noise(line: &str) -> bool {
    line.starts_with("ALSA lib ") || line.trim().is_empty()
}

/// Whether a device is one a user picks: ALSA's `default`, the sound
/// servers, and per-card devices (the card's default, its front, HDMI and
/// S/PDIF outputs, each PCM with conversions). Not the bare plugins that
/// ALSA's configuration defines whether or not they lead anywhere (null,
/// the rate converters, jack, oss, upmix, vdownmix, dmix, dsnoop,
/// surround*, usbstream, a52, speex, and plain `hw`, which `plughw` covers
/// with conversions). Exact ids of all of them still work.
fn pickable(id: &str) -> bool {
    let (prefix, rest) = id.split_once(':').unwrap_or((id, ""));
    match prefix {
        "default" | "sysdefault" => rest.is_empty() || rest.contains("CARD="),
        "pulse" | "pipewire" => rest.is_empty(),
        "front" | "hdmi" | "iec958" | "plughw" => rest.contains("CARD="),
        _ => false,
    }
}

/// Devices that are only there when something serves them (no card, no
/// sound server: they fail to open); they are listed only if they open.
fn probed(id: &str) -> bool {
    matches!(id, "default" | "pulse" | "pipewire")
}

/// Whether the device opens in that direction (and tells its formats).
fn opens(d: &Device, input: bool) -> bool {
    let n = if input {
        d.supported_input_configs().map(|c| c.count())
    } else {
        d.supported_output_configs().map(|c| c.count())
    };
    n.is_ok_and(|n| n > 0)
}

/// One line of `one2one devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// What `--audio mic:NAME` / `--speaker NAME` take.
    pub id: String,
    /// The description's first line, when it says more than the id.
    pub description: Option<String>,
    /// ALSA's `default`, when it opens.
    pub default: bool,
}

impl std::fmt::Display for Listed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.default { "* " } else { "  " })?;
        match &self.description {
            Some(d) => write!(f, "{} \u{2014} {d}", self.id),
            None => f.write_str(&self.id),
        }
    }
}

/// The sound system. Unlike `cpal::default_host`, an ALSA configuration
/// that does not load (a broken `~/.asoundrc`) is an error, not a panic.
fn host() -> Result<Host, String> {
    let id = cpal::available_hosts().into_iter().next().ok_or("no sound system")?;
    cpal::host_from_id(id).map_err(|e| format!("no sound system: {e}"))
}

/// The devices a user can pick: `(host, microphones, speakers)`, `default`
/// first and marked when it opens. ALSA's messages go to the log.
pub fn list() -> Result<(String, Vec<Listed>, Vec<Listed>), String> {
    let _quiet = QuietAlsa::start();
    let host = host()?;
    let mut devs: Vec<Device> = host.devices().map(|d| d.collect()).unwrap_or_default();
    if !devs.iter().any(|d| device_id(d) == "default")
        && let Some(d) = host.default_output_device()
    {
        devs.insert(0, d);
    }
    let (mut ins, mut outs) = (vec![], vec![]);
    let mut seen = std::collections::HashSet::new();
    for d in devs {
        let id = device_id(&d);
        if !pickable(&id) {
            continue;
        }
        // cpal adds `plughw:CARD=0,DEV=0` next to ALSA's own
        // `plughw:CARD=PCH,DEV=0` for the same PCM: same kind, same
        // description.
        let desc = d.description().ok().map(|x| x.extended().collect::<Vec<_>>().join("\n")).unwrap_or_default();
        let kind = id.split(':').next().unwrap_or_default().to_owned();
        if !desc.is_empty() && !seen.insert((kind, desc)) {
            continue;
        }
        let name = device_name(&d);
        let description = Some(name).filter(|n| !n.is_empty() && *n != id);
        let (input, output) =
            if probed(&id) { (opens(&d, true), opens(&d, false)) } else { (d.supports_input(), d.supports_output()) };
        let default = id == "default";
        let entry = Listed { id, description, default };
        if input {
            ins.push(entry.clone());
        }
        if output {
            outs.push(entry);
        }
    }
    // The default first.
    ins.sort_by_key(|l| !l.default);
    outs.sort_by_key(|l| !l.default);
    Ok((host.id().name().to_owned(), ins, outs))
}

/// Finds a device: `None` or `default` is ALSA's default; else an exact id
/// (any ALSA device, listed or not), else a case-insensitive part of the id
/// or description of a device `one2one devices` lists.
fn find(host: &Host, name: Option<&str>, input: bool) -> Result<Device, String> {
    let what = if input { "microphone" } else { "speaker" };
    let Some(want) = name.filter(|n| *n != "default") else {
        let d = if input { host.default_input_device() } else { host.default_output_device() };
        return d.ok_or_else(|| format!("no default {what} ({} host)", host.id().name()));
    };
    let devs: Vec<Device> = host.devices().map_err(|e| format!("cannot list audio devices: {e}"))?.collect();
    if let Some(d) = devs.iter().find(|d| device_id(d) == want) {
        return Ok(d.clone());
    }
    let lower = want.to_lowercase();
    devs.iter()
        .filter(|d| pickable(&device_id(d)) && if input { d.supports_input() } else { d.supports_output() })
        .find(|d| device_id(d).to_lowercase().contains(&lower) || device_name(d).to_lowercase().contains(&lower))
        .cloned()
        .ok_or_else(|| format!("no {what} matches {want:?}"))
}

/// A 48 kHz-or-closest config: mono or the fewest channels, a sample format
/// we convert.
fn pick_config(dev: &Device, input: bool) -> Result<(StreamConfig, SampleFormat), String> {
    let ranges: Result<Vec<_>, _> = if input {
        dev.supported_input_configs().map(|i| i.collect())
    } else {
        dev.supported_output_configs().map(|i| i.collect())
    };
    let (ranges, open_error) = match ranges {
        Ok(r) => (r, None),
        Err(e) => (vec![], Some(e)),
    };
    let usable = |f: SampleFormat| matches!(f, SampleFormat::I16 | SampleFormat::F32 | SampleFormat::I32);
    let mut best: Option<(u32, StreamConfig, SampleFormat)> = None;
    for r in ranges.iter().filter(|r| usable(r.sample_format())) {
        let rate = RATE.clamp(r.min_sample_rate(), r.max_sample_rate());
        let ch = r.channels();
        let score = rate.abs_diff(RATE) * 16 + u32::from(ch) + u32::from(r.sample_format() != SampleFormat::I16);
        // 10 ms device buffers where the device lets us choose: low
        // latency, and blocks that match the echo canceller's.
        let buffer_size = match r.buffer_size() {
            cpal::SupportedBufferSize::Range { min, max } => {
                cpal::BufferSize::Fixed((rate / 100).clamp(*min, (*max).max(*min)))
            }
            cpal::SupportedBufferSize::Unknown => cpal::BufferSize::Default,
        };
        if best.as_ref().is_none_or(|(s, ..)| score < *s) {
            best = Some((score, StreamConfig { channels: ch, sample_rate: rate, buffer_size }, r.sample_format()));
        }
    }
    if let Some((_, c, f)) = best {
        return Ok((c, f));
    }
    let def = if input { dev.default_input_config() } else { dev.default_output_config() };
    let def = def.map_err(|e| match open_error {
        Some(open) => format!(
            "{} `{}` cannot be opened ({})",
            if input { "microphone" } else { "speaker" },
            device_id(dev),
            open.to_string().trim_end_matches('.')
        ),
        None => format!("no usable audio format: {e}"),
    })?;
    if !usable(def.sample_format()) {
        return Err(format!("unsupported sample format {}", def.sample_format()));
    }
    Ok((def.config(), def.sample_format()))
}

/// Linear-interpolating streaming rate converter for mono f32. Good enough
/// for speech between common rates; identity when the rates match.
#[derive(Debug, Clone)]
pub struct Resampler {
    step: f64,
    pos: f64,
    prev: f32,
}

impl Resampler {
    pub fn new(from: u32, to: u32) -> Resampler {
        Resampler { step: f64::from(from.max(1)) / f64::from(to.max(1)), pos: 0.0, prev: 0.0 }
    }

    pub fn is_identity(&self) -> bool {
        self.step == 1.0
    }

    /// Appends the converted samples of `input` to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.is_identity() {
            out.extend_from_slice(input);
            return;
        }
        let n = input.len();
        if n == 0 {
            return;
        }
        // Index 0 is the last sample of the previous chunk.
        let at = |i: usize| if i == 0 { self.prev } else { input[i - 1] };
        while self.pos < n as f64 {
            let i = self.pos as usize;
            let frac = (self.pos - i as f64) as f32;
            let (a, b) = (at(i), at(i + 1));
            out.push(a + (b - a) * frac);
            self.pos += self.step;
        }
        self.pos -= n as f64;
        self.prev = input[n - 1];
    }
}

/// Keeps a stream's thread; dropping it stops the stream.
struct StreamThread {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for StreamThread {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Builds a stream on its own thread and waits (up to 5 s) for it to play.
fn spawn_stream(
    name: &str,
    build: impl FnOnce() -> Result<cpal::Stream, String> + Send + 'static,
) -> Result<StreamThread, String> {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let quiet = QuietAlsa::start();
            let stream = match build() {
                Ok(s) => s,
                Err(e) => {
                    drop(quiet);
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            if let Err(e) = stream.play() {
                drop((stream, quiet));
                let _ = ready_tx.send(Err(format!("cannot start: {e}")));
                return;
            }
            drop(quiet);
            let _ = ready_tx.send(Ok(()));
            // Runs until the owner drops its sender.
            let _ = stop_rx.recv();
            let _quiet = QuietAlsa::start();
            drop(stream);
        })
        .map_err(|e| format!("audio thread: {e}"))?;
    let st = StreamThread { stop: Some(stop_tx), thread: Some(thread) };
    match ready_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(())) => Ok(st),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the audio device did not start within 5 s".into()),
    }
}

/// Converts interleaved device samples of any channel count to mono f32.
fn downmix<T: Copy>(data: &[T], channels: usize, to_f32: impl Fn(T) -> f32, out: &mut Vec<f32>) {
    let ch = channels.max(1);
    out.extend(data.chunks(ch).map(|c| c.iter().map(|&s| to_f32(s)).sum::<f32>() / ch as f32));
}

fn to_i16(s: f32) -> i16 {
    (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16
}

/// A live microphone: 48 kHz mono samples, read 20 ms at a time.
pub struct Mic {
    samples: ringbuf::HeapCons<i16>,
    lost: Arc<AtomicBool>,
    pub description: String,
    _stream: StreamThread,
}

impl Mic {
    pub fn open(name: Option<&str>, aec: Option<SharedAec>) -> Result<Mic, DeviceError> {
        let fail = |m: String| DeviceError {
            message: format!("{m}; see `one2one devices`, or use --audio tone[:HZ] or --audio FILE.wav instead"),
            code: exit::NO_DEVICE,
        };
        let quiet = QuietAlsa::start();
        let host = host().map_err(fail)?;
        let dev = find(&host, name, true).map_err(fail)?;
        let (config, format) = pick_config(&dev, true).map_err(fail)?;
        drop(quiet);
        let description = format!("{} ({} Hz, {} ch)", device_id(&dev), config.sample_rate, config.channels);
        let (mut prod, cons) = HeapRb::<i16>::new(MIC_MAX).split();
        let lost = Arc::new(AtomicBool::new(false));
        let lost_cb = lost.clone();
        let stream = spawn_stream("mic", move || {
            let channels = usize::from(config.channels);
            let mut rs = Resampler::new(config.sample_rate, RATE);
            let (mut mono, mut at48, mut block) = (Vec::new(), Vec::new(), Vec::with_capacity(AEC_BLOCK));
            // Everything after the device's own format, shared by all formats.
            let mut deliver = move |mono: &mut Vec<f32>| {
                at48.clear();
                rs.process(mono, &mut at48);
                mono.clear();
                for &s in &at48 {
                    block.push(to_i16(s));
                    if block.len() == AEC_BLOCK {
                        if let Some(aec) = &aec
                            && let Ok(mut aec) = aec.lock()
                        {
                            aec.capture(&mut block);
                        }
                        // A full ring means the reader stalled: this block
                        // is dropped rather than waiting.
                        if prod.vacant_len() >= block.len() {
                            prod.push_slice(&block);
                        }
                        block.clear();
                    }
                }
            };
            let err = move |e: cpal::Error| {
                tracing::warn!(error = %e, "microphone stream error");
                if matches!(e.kind(), cpal::ErrorKind::DeviceNotAvailable | cpal::ErrorKind::StreamInvalidated) {
                    lost_cb.store(true, Relaxed);
                }
            };
            let built = match format {
                SampleFormat::I16 => dev.build_input_stream(
                    config,
                    move |d: &[i16], _: &_| {
                        downmix(d, channels, |s| f32::from(s) / 32768.0, &mut mono);
                        deliver(&mut mono)
                    },
                    err,
                    None,
                ),
                SampleFormat::I32 => dev.build_input_stream(
                    config,
                    move |d: &[i32], _: &_| {
                        downmix(d, channels, |s| s as f32 / 2_147_483_648.0, &mut mono);
                        deliver(&mut mono)
                    },
                    err,
                    None,
                ),
                _ => dev.build_input_stream(
                    config,
                    move |d: &[f32], _: &_| {
                        downmix(d, channels, |s| s, &mut mono);
                        deliver(&mut mono)
                    },
                    err,
                    None,
                ),
            };
            built.map_err(|e| format!("cannot open the microphone: {e}"))
        })
        .map_err(fail)?;
        Ok(Mic { samples: cons, lost, description, _stream: stream })
    }

    /// Fills `out` with the oldest waiting samples, silence where there are
    /// none yet. Keeps at most 100 ms queued, dropping older audio.
    pub fn fill(&mut self, out: &mut [i16]) {
        let keep = out.len() * 5;
        let queued = self.samples.occupied_len();
        if queued > keep {
            self.samples.skip(queued - keep);
        }
        let n = self.samples.pop_slice(out);
        out[n..].fill(0);
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Relaxed)
    }
}

/// A live speaker fed with 48 kHz mono samples.
pub struct Speaker {
    samples: ringbuf::HeapProd<i16>,
    lost: Arc<AtomicBool>,
    pub description: String,
    _stream: StreamThread,
}

impl Speaker {
    pub fn open(name: Option<&str>, aec: Option<SharedAec>) -> Result<Speaker, String> {
        let quiet = QuietAlsa::start();
        let host = host()?;
        let dev = find(&host, name, false)?;
        let (config, format) = pick_config(&dev, false)?;
        drop(quiet);
        let description = format!("{} ({} Hz, {} ch)", device_id(&dev), config.sample_rate, config.channels);
        let (prod, mut cons) = HeapRb::<i16>::new(SPEAKER_MAX).split();
        let lost = Arc::new(AtomicBool::new(false));
        let lost_cb = lost.clone();
        let stream = spawn_stream("speaker", move || {
            let channels = usize::from(config.channels.max(1));
            let rate = config.sample_rate;
            let mut rs = Resampler::new(RATE, rate);
            let (mut pulled, mut block, mut conv) = (Vec::new(), Vec::with_capacity(AEC_BLOCK), Vec::new());
            let mut as_f32 = Vec::with_capacity(AEC_BLOCK);
            let mut playing = false;
            let mut pending: std::collections::VecDeque<f32> = std::collections::VecDeque::new();
            // Produces `frames` mono samples at the device rate into `pending`.
            let mut produce = move |frames: usize, pending: &mut std::collections::VecDeque<f32>| {
                while pending.len() < frames {
                    if !playing && cons.occupied_len() >= SPEAKER_START {
                        playing = true;
                    }
                    // 10 ms of 48 kHz audio (silence while not playing).
                    pulled.clear();
                    pulled.resize(AEC_BLOCK, 0i16);
                    if playing {
                        let n = cons.pop_slice(&mut pulled);
                        if n < AEC_BLOCK {
                            playing = false; // ran dry: wait for a cushion again
                            pulled[n..].fill(0);
                        }
                    }
                    block.clear();
                    block.extend_from_slice(&pulled);
                    if let Some(aec) = &aec
                        && let Ok(mut aec) = aec.lock()
                    {
                        aec.render(&block);
                    }
                    as_f32.clear();
                    as_f32.extend(block.iter().map(|&s| f32::from(s) / 32768.0));
                    conv.clear();
                    rs.process(&as_f32, &mut conv);
                    pending.extend(conv.iter().copied());
                }
            };
            let err = move |e: cpal::Error| {
                tracing::warn!(error = %e, "speaker stream error");
                if matches!(e.kind(), cpal::ErrorKind::DeviceNotAvailable | cpal::ErrorKind::StreamInvalidated) {
                    lost_cb.store(true, Relaxed);
                }
            };
            let built = match format {
                SampleFormat::I16 => dev.build_output_stream(
                    config,
                    move |d: &mut [i16], _: &_| {
                        produce(d.len() / channels, &mut pending);
                        for frame in d.chunks_mut(channels) {
                            frame.fill(to_i16(pending.pop_front().unwrap_or(0.0)));
                        }
                    },
                    err,
                    None,
                ),
                SampleFormat::I32 => dev.build_output_stream(
                    config,
                    move |d: &mut [i32], _: &_| {
                        produce(d.len() / channels, &mut pending);
                        for frame in d.chunks_mut(channels) {
                            let v = pending.pop_front().unwrap_or(0.0).clamp(-1.0, 1.0);
                            frame.fill((f64::from(v) * 2_147_483_647.0) as i32);
                        }
                    },
                    err,
                    None,
                ),
                _ => dev.build_output_stream(
                    config,
                    move |d: &mut [f32], _: &_| {
                        produce(d.len() / channels, &mut pending);
                        for frame in d.chunks_mut(channels) {
                            frame.fill(pending.pop_front().unwrap_or(0.0));
                        }
                    },
                    err,
                    None,
                ),
            };
            built.map_err(|e| format!("cannot open the speaker: {e}"))
        })?;
        Ok(Speaker { samples: prod, lost, description, _stream: stream })
    }

    /// Queues decoded audio; drops it when more than 200 ms are waiting.
    pub fn play(&mut self, pcm: &[i16]) {
        if self.samples.vacant_len() >= pcm.len() {
            self.samples.push_slice(pcm);
        }
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use one2one_media::analysis::dominant_frequency;

    fn tone(hz: f32, rate: u32, n: usize) -> Vec<f32> {
        (0..n).map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 0.5).collect()
    }

    #[test]
    fn resampling_keeps_the_pitch_and_the_length() {
        for (from, to) in [(44_100, 48_000), (48_000, 44_100), (16_000, 48_000), (48_000, 48_000)] {
            let input = tone(440.0, from, from as usize); // one second
            let mut rs = Resampler::new(from, to);
            let mut out = Vec::new();
            // In odd-sized chunks, as device callbacks deliver them.
            for chunk in input.chunks(333) {
                rs.process(chunk, &mut out);
            }
            assert!((out.len() as i64 - i64::from(to)).abs() <= 2, "{from}->{to}: {} samples", out.len());
            let pcm: Vec<i16> = out.iter().map(|&s| to_i16(s)).collect();
            let f = dominant_frequency(&pcm, to).expect("a tone");
            assert!((f - 440.0).abs() < 440.0 * 0.02, "{from}->{to}: {f} Hz");
        }
    }

    #[test]
    fn only_devices_a_user_picks_are_listed() {
        for id in [
            "default",
            "pulse",
            "pipewire",
            "sysdefault:CARD=PCH",
            "default:CARD=Headset",
            "front:CARD=PCH,DEV=0",
            "hdmi:CARD=HDMI,DEV=3",
            "iec958:CARD=PCH,DEV=0",
            "plughw:CARD=PCH,DEV=0",
            "plughw:CARD=0,DEV=0",
        ] {
            assert!(pickable(id), "{id} should be listed");
        }
        for id in [
            "",
            "null",
            "lavrate",
            "samplerate",
            "speexrate",
            "jack",
            "oss",
            "upmix",
            "vdownmix",
            "dmix",
            "dsnoop",
            "a52",
            "speex",
            "surround51",
            "surround40:CARD=PCH,DEV=0",
            "dmix:CARD=PCH,DEV=0",
            "dsnoop:CARD=PCH,DEV=0",
            "usbstream:CARD=PCH",
            "hw:CARD=PCH,DEV=0",
            "front",
            "plughw",
            "pulse:foo",
            ":",
            "\u{e9}:CARD=\u{e9}",
        ] {
            assert!(!pickable(id), "{id} should not be listed");
        }
    }

    #[test]
    fn listed_lines_mark_the_default() {
        let d = Listed { id: "default".into(), description: Some("Default ALSA Output".into()), default: true };
        assert_eq!(d.to_string(), "* default \u{2014} Default ALSA Output");
        let p = Listed { id: "pulse".into(), description: None, default: false };
        assert_eq!(p.to_string(), "  pulse");
    }

    #[test]
    fn alsa_lines_are_told_apart() {
        assert!(is_alsa_noise("ALSA lib pcm.c:2722:(snd_pcm_open_noupdate) Unknown PCM default"));
        assert!(!is_alsa_noise("one2one: warning: --insecure"));
        assert!(is_alsa_noise(""));
    }

    #[test]
    fn downmix_averages_channels() {
        let mut out = vec![];
        downmix(&[1000i16, 3000, -2000, 0], 2, f32::from, &mut out);
        assert_eq!(out, [2000.0, -1000.0]);
        out.clear();
        downmix(&[1i16, 2, 3], 0, f32::from, &mut out);
        assert_eq!(out, [1.0, 2.0, 3.0]);
    }
}
