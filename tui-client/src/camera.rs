//! Camera capture: V4L2 through nokhwa, on a thread of its own that turns
//! each frame into I420 at the size the call sends and leaves it in a
//! latest-frame slot; the encoder takes whatever is there and never waits.
//!
//! nokhwa and the libraries under it may panic on odd driver answers or
//! corrupt MJPEG data; every call into them runs under `catch_unwind`, so a
//! device error is an error (or a lost camera), never a crash.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nokhwa::NokhwaError;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType};
use one2one_media::I420Frame;
use one2one_media::convert::{fit_within, nv12_to_i420, resize_i420, rgb_to_i420, yuyv_to_i420};

/// What a camera is asked for when the caller gives no size or rate.
pub const DEFAULT_MAX: (u32, u32) = (640, 480);
pub const DEFAULT_FPS: u32 = 30;

/// The formats that can be turned into I420, best first: raw YUV is
/// converted directly, the rest goes through nokhwa's RGB decoding.
const USABLE: [FrameFormat; 6] = [
    FrameFormat::YUYV,
    FrameFormat::NV12,
    FrameFormat::MJPEG,
    FrameFormat::RAWRGB,
    FrameFormat::RAWBGR,
    FrameFormat::GRAY,
];

/// Frames in a row that may fail (read or decode) before the camera counts
/// as lost; read errors are retried every `RETRY`.
const MAX_FAILURES: u32 = 20;
const RETRY: Duration = Duration::from_millis(50);
/// How long dropping a [`Camera`] waits for its thread to let go of the device.
const STOP_WAIT: Duration = Duration::from_secs(1);
/// How long `open` waits for the device to be set up.
const OPEN_WAIT: Duration = Duration::from_secs(5);
/// How many of the best formats `open` tries before giving up.
const FORMAT_TRIES: usize = 4;

/// What the capture thread shares with its [`Camera`].
#[derive(Default)]
struct Shared {
    /// The newest frame not taken yet.
    latest: Mutex<Option<I420Frame>>,
    /// Set by the capture thread when the device keeps failing (e.g. it was
    /// unplugged); the thread has stopped then.
    lost: AtomicBool,
    stop: AtomicBool,
}

/// A running capture.
pub struct Camera {
    shared: Arc<Shared>,
    size: (u32, u32),
    fps: u32,
    description: String,
    thread: Option<JoinHandle<()>>,
}

impl Camera {
    /// Opens `/dev/video{index}` with the format closest to at most `max`
    /// at `fps` (0 for either: 640x480, 30 fps) and starts capturing.
    /// Frames come out scaled to fit within `max`.
    pub fn open(index: u32, max: (u32, u32), fps: u32) -> Result<Camera, String> {
        let max = if max.0 == 0 || max.1 == 0 { DEFAULT_MAX } else { max };
        let fps = if fps == 0 { DEFAULT_FPS } else { fps };
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        // nokhwa's camera is not Send: it is opened, used and closed on the
        // capture thread, which reports how the opening went.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("camera".into())
            .spawn(move || {
                let opened = guarded(|| open_device(index, max, fps)).unwrap_or_else(|()| {
                    Err(format!("camera:{index}: the driver gave answers that could not be read"))
                });
                match opened {
                    Ok((cam, format)) => {
                        let size = fit_within(format.width(), format.height(), max.0, max.1);
                        if tx.send(Ok(format)).is_ok() {
                            capture(cam, size, &sh);
                        } else {
                            let _ = guarded(move || drop(cam));
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| format!("camera:{index}: capture thread: {e}"))?;
        let format = match rx.recv_timeout(OPEN_WAIT) {
            Ok(Ok(format)) => format,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                shared.stop.store(true, Relaxed);
                return Err(format!("camera:{index}: the device did not answer within {} s", OPEN_WAIT.as_secs()));
            }
        };
        let size = fit_within(format.width(), format.height(), max.0, max.1);
        let description = format!(
            "camera:{index} {} {}x{}@{}",
            fourcc(format.format()),
            format.width(),
            format.height(),
            format.frame_rate()
        );
        Ok(Camera { shared, size, fps: format.frame_rate(), description, thread: Some(thread) })
    }

    /// Opens the first camera that opens, in the order of [`indices`].
    pub fn open_first(max: (u32, u32), fps: u32) -> Result<Camera, String> {
        let mut first_err = None;
        for index in indices() {
            match Camera::open(index, max, fps) {
                Ok(c) => return Ok(c),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| "no camera found".into()))
    }

    /// The size of the frames it gives: the camera's, scaled to fit `max`.
    pub fn size(&self) -> (u32, u32) {
        self.size
    }

    /// The camera's frame rate.
    pub fn fps(&self) -> u32 {
        self.fps
    }

    /// E.g. `camera:0 YUYV 640x480@30`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The newest frame captured since the last call, if any.
    pub fn take_latest(&self) -> Option<I420Frame> {
        self.shared.latest.lock().ok().and_then(|mut slot| slot.take())
    }

    /// Whether the device failed for good; no frames come after this.
    pub fn is_lost(&self) -> bool {
        self.shared.lost.load(Relaxed)
    }
}

impl Drop for Camera {
    /// Stops the capture and waits a little for the thread to release the
    /// device (so that it can be opened again at once); a thread stuck in
    /// the driver is left behind.
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        let Some(thread) = self.thread.take() else { return };
        let deadline = Instant::now() + STOP_WAIT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
impl Camera {
    /// A camera without a device for tests: gives `frames`, one every
    /// 10 ms, then fails (`then_fail`, so it is lost about a second later)
    /// or gives nothing more.
    pub(crate) fn fake(size: (u32, u32), fps: u32, frames: Vec<I420Frame>, then_fail: bool) -> Camera {
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            let mut frames = frames.into_iter();
            capture_loop(&sh, || {
                std::thread::sleep(Duration::from_millis(10));
                match frames.next() {
                    Some(f) => Ok(f),
                    None if then_fail => Err(Grab::Read("unplugged".into())),
                    None => {
                        while !sh.stop.load(Relaxed) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(Grab::Read("stopped".into()))
                    }
                }
            })
        });
        Camera { shared, size, fps, description: "fake".into(), thread: Some(thread) }
    }
}

/// Runs `f`, turning a panic into `Err(())`.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, ()> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| ())
}

fn open_device(index: u32, max: (u32, u32), fps: u32) -> Result<(nokhwa::Camera, CameraFormat), String> {
    let name = format!("camera:{index}");
    let any = RequestedFormat::with_formats(RequestedFormatType::None, &USABLE);
    let mut cam = nokhwa::Camera::with_backend(CameraIndex::Index(index), any, ApiBackend::Video4Linux)
        .map_err(|e| format!("{name}: {}", describe_error(&e)))?;
    let formats = cam.compatible_camera_formats().map_err(|e| format!("{name}: {}", describe_error(&e)))?;
    let mut why = "it offers no format that can be used (YUYV, NV12, MJPEG, RGB)".to_string();
    for f in rank_formats(&formats, max, fps).into_iter().take(FORMAT_TRIES) {
        let exact = RequestedFormat::with_formats(RequestedFormatType::Exact(f), &USABLE);
        match cam.set_camera_requset(exact).and_then(|_| cam.open_stream()) {
            Ok(()) => {
                let got = cam.camera_format();
                return Ok((cam, got));
            }
            Err(e) => why = format!("{} {}x{}@{}: {e}", fourcc(f.format()), f.width(), f.height(), f.frame_rate()),
        }
    }
    Err(format!("{name}: {why}"))
}

fn describe_error(e: &NokhwaError) -> String {
    match e {
        // What nokhwa says when a node has no capture format it knows,
        // e.g. the metadata node next to a UVC camera.
        NokhwaError::GetPropertyError { property, .. } if property == "CameraFormat" => {
            "no video capture format that can be used (not a camera, or a metadata node?)".into()
        }
        other => other.to_string(),
    }
}

/// Captures from `cam` until stopped or lost, then closes it.
fn capture(cam: nokhwa::Camera, size: (u32, u32), shared: &Shared) {
    let mut cam = cam;
    capture_loop(shared, || {
        guarded(|| grab(&mut cam, size)).unwrap_or_else(|()| Err(Grab::Decode("the decoder gave up".into())))
    });
    // Closing the stream may panic on an odd error (v4l); keep it here.
    let _ = guarded(move || drop(cam));
}

/// Puts each frame that `next` gives into the slot; ends on `stop`, or
/// when `next` failed `MAX_FAILURES` times in a row (the camera is lost).
fn capture_loop(shared: &Shared, mut next: impl FnMut() -> Result<I420Frame, Grab>) {
    let mut failures = 0;
    while !shared.stop.load(Relaxed) {
        match next() {
            Ok(frame) => {
                failures = 0;
                if let Ok(mut slot) = shared.latest.lock() {
                    *slot = Some(frame);
                }
            }
            Err(Grab::Read(e)) => {
                failures += 1;
                tracing::debug!(error = %e, "camera read failed");
                std::thread::sleep(RETRY);
            }
            Err(Grab::Decode(e)) => {
                failures += 1;
                tracing::debug!(error = %e, "camera frame dropped");
            }
        }
        if failures >= MAX_FAILURES {
            tracing::warn!("camera lost");
            shared.lost.store(true, Relaxed);
            break;
        }
    }
}

pub(crate) enum Grab {
    Read(String),
    Decode(String),
}

/// One frame from the camera as I420 of exactly `size`.
fn grab(cam: &mut nokhwa::Camera, size: (u32, u32)) -> Result<I420Frame, Grab> {
    let buf = cam.frame().map_err(|e| Grab::Read(e.to_string()))?;
    let (w, h) = (buf.resolution().width(), buf.resolution().height());
    let frame = match buf.source_frame_format() {
        FrameFormat::YUYV => yuyv_to_i420(buf.buffer(), w, h),
        FrameFormat::NV12 => nv12_to_i420(buf.buffer(), w, h),
        _ => {
            let rgb = buf.decode_image::<RgbFormat>().map_err(|e| Grab::Decode(e.to_string()))?;
            rgb_to_i420(rgb.as_raw(), w, h)
        }
    }
    .map_err(|e| Grab::Decode(e.to_string()))?;
    Ok(if (frame.width, frame.height) == size { frame } else { resize_i420(&frame, size.0, size.1) })
}

/// The formats worth trying, best first: those within `max` before those
/// that would need scaling down; then those reaching about `fps` (3/4 of it
/// will do); then the largest within `max` (or the smallest beyond it); then
/// raw YUV before MJPEG before the rest; then the rate closest to `fps`,
/// at or above it first.
pub fn rank_formats(formats: &[CameraFormat], max: (u32, u32), fps: u32) -> Vec<CameraFormat> {
    let mut usable: Vec<CameraFormat> = formats
        .iter()
        .filter(|f| {
            USABLE.contains(&f.format())
                && f.width() > 0
                && f.height() > 0
                && f.width() % 2 == 0
                && (1..=240).contains(&f.frame_rate())
        })
        .copied()
        .collect();
    let key = |f: &CameraFormat| {
        let fits = f.width() <= max.0 && f.height() <= max.1;
        let reaches = f.frame_rate() * 4 >= fps * 3;
        let area = i64::from(f.width()) * i64::from(f.height());
        let pref = match f.format() {
            FrameFormat::YUYV | FrameFormat::NV12 => 2,
            FrameFormat::MJPEG => 1,
            _ => 0,
        };
        let rate = f.frame_rate();
        (fits, reaches, if fits { area } else { -area }, pref, rate >= fps, -(i64::from(rate) - i64::from(fps)).abs())
    };
    usable.sort_by_key(|f| std::cmp::Reverse(key(f)));
    usable.dedup();
    usable
}

/// The V4L2 fourcc of a format.
fn fourcc(f: FrameFormat) -> &'static str {
    match f {
        FrameFormat::YUYV => "YUYV",
        FrameFormat::NV12 => "NV12",
        FrameFormat::MJPEG => "MJPG",
        FrameFormat::RAWRGB => "RGB3",
        FrameFormat::RAWBGR => "BGR3",
        FrameFormat::GRAY => "GREY",
    }
}

/// The indices N of the `/dev/videoN` nodes, in order.
pub fn indices() -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir("/dev")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("video")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    found.sort_unstable();
    found
}

/// Each camera with its formats, for `one2one devices`: a line
/// `camera:N  NAME (/dev/videoN)`, then a line per fourcc with its sizes
/// and rates (or why it cannot be used).
pub fn list() -> Vec<String> {
    indices().into_iter().map(describe).collect()
}

fn describe(index: u32) -> String {
    let name = std::fs::read_to_string(format!("/sys/class/video4linux/video{index}/name"))
        .map(|n| n.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let mut out = format!("camera:{index}  {name} (/dev/video{index})");
    let formats = guarded(|| {
        let any = RequestedFormat::with_formats(RequestedFormatType::None, &USABLE);
        let mut cam = nokhwa::Camera::with_backend(CameraIndex::Index(index), any, ApiBackend::Video4Linux)?;
        cam.compatible_camera_formats()
    });
    let lines = match formats {
        Ok(Ok(f)) if !f.is_empty() => summarize(&f),
        Ok(Ok(_)) => vec!["no video capture formats".into()],
        Ok(Err(e)) => vec![format!("unavailable: {}", describe_error(&e))],
        Err(()) => vec!["unavailable: the driver gave answers that could not be read".into()],
    };
    for l in lines {
        out.push_str("\n    ");
        out.push_str(&l);
    }
    out
}

/// One line per fourcc: `YUYV 640x480@30/15, 1280x720@10`, the largest
/// size first; long lists are cut short.
fn summarize(formats: &[CameraFormat]) -> Vec<String> {
    const MAX_SIZES: usize = 8;
    let mut by_fourcc: BTreeMap<&str, BTreeMap<(u32, u32), Vec<u32>>> = BTreeMap::new();
    for f in formats {
        by_fourcc
            .entry(fourcc(f.format()))
            .or_default()
            .entry((f.width(), f.height()))
            .or_default()
            .push(f.frame_rate());
    }
    by_fourcc
        .into_iter()
        .map(|(cc, sizes)| {
            let n = sizes.len();
            let mut sizes: Vec<_> = sizes.into_iter().collect();
            sizes.sort_by_key(|((w, h), _)| std::cmp::Reverse(u64::from(*w) * u64::from(*h)));
            let mut parts: Vec<String> = sizes
                .into_iter()
                .take(MAX_SIZES)
                .map(|((w, h), mut rates)| {
                    rates.sort_unstable_by(|a, b| b.cmp(a));
                    rates.dedup();
                    let rates: Vec<String> = rates.iter().map(u32::to_string).collect();
                    format!("{w}x{h}@{}", rates.join("/"))
                })
                .collect();
            if n > MAX_SIZES {
                parts.push(format!("… ({n} sizes)"));
            }
            format!("{cc} {}", parts.join(", "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use FrameFormat::{GRAY, MJPEG, NV12, YUYV};

    fn f(format: FrameFormat, w: u32, h: u32, fps: u32) -> CameraFormat {
        CameraFormat::new_from(w, h, format, fps)
    }

    fn best(formats: &[CameraFormat], max: (u32, u32), fps: u32) -> Option<CameraFormat> {
        rank_formats(formats, max, fps).first().copied()
    }

    #[test]
    fn picks_the_largest_size_within_max() {
        let all = [f(YUYV, 320, 240, 30), f(YUYV, 640, 480, 30), f(YUYV, 1280, 720, 30)];
        assert_eq!(best(&all, (640, 480), 30), Some(f(YUYV, 640, 480, 30)));
        assert_eq!(best(&all, (1920, 1080), 30), Some(f(YUYV, 1280, 720, 30)));
        assert_eq!(best(&all, (400, 300), 30), Some(f(YUYV, 320, 240, 30)));
    }

    #[test]
    fn prefers_raw_yuv_to_mjpeg_at_the_same_size_and_rate() {
        let all = [f(MJPEG, 640, 480, 30), f(NV12, 640, 480, 30), f(GRAY, 640, 480, 30)];
        assert_eq!(best(&all, (640, 480), 30), Some(f(NV12, 640, 480, 30)));
    }

    #[test]
    fn takes_mjpeg_when_raw_yuv_is_too_slow() {
        let all = [f(YUYV, 1280, 720, 10), f(MJPEG, 1280, 720, 30), f(YUYV, 640, 480, 30)];
        assert_eq!(best(&all, (1280, 720), 30), Some(f(MJPEG, 1280, 720, 30)));
        // A smaller size at full rate beats a larger one that is too slow.
        let all = [f(YUYV, 1280, 720, 10), f(YUYV, 640, 480, 30)];
        assert_eq!(best(&all, (1280, 720), 30), Some(f(YUYV, 640, 480, 30)));
        // 25 fps is close enough to 30.
        let all = [f(YUYV, 640, 480, 25), f(YUYV, 320, 240, 30)];
        assert_eq!(best(&all, (640, 480), 30), Some(f(YUYV, 640, 480, 25)));
    }

    #[test]
    fn picks_the_rate_at_or_just_above_fps() {
        let all = [f(YUYV, 640, 480, 60), f(YUYV, 640, 480, 30), f(YUYV, 640, 480, 15)];
        assert_eq!(best(&all, (640, 480), 30), Some(f(YUYV, 640, 480, 30)));
        assert_eq!(best(&all, (640, 480), 20), Some(f(YUYV, 640, 480, 30)));
        assert_eq!(best(&all, (640, 480), 60), Some(f(YUYV, 640, 480, 60)));
    }

    #[test]
    fn falls_back_to_the_smallest_size_beyond_max() {
        let all = [f(MJPEG, 1920, 1080, 30), f(MJPEG, 1280, 720, 30)];
        assert_eq!(best(&all, (640, 480), 30), Some(f(MJPEG, 1280, 720, 30)));
    }

    #[test]
    fn skips_what_cannot_be_used() {
        let all = [f(YUYV, 641, 480, 30), f(YUYV, 640, 480, 0), f(YUYV, 640, 480, 30000)];
        assert_eq!(best(&all, (640, 480), 30), None);
        assert_eq!(best(&[], (640, 480), 30), None);
    }

    #[test]
    fn summary_lists_sizes_and_rates_per_fourcc() {
        let all = [f(YUYV, 640, 480, 15), f(YUYV, 640, 480, 30), f(YUYV, 1280, 720, 10), f(MJPEG, 1280, 720, 30)];
        assert_eq!(summarize(&all), ["MJPG 1280x720@30", "YUYV 1280x720@10, 640x480@30/15"]);
    }

    #[test]
    fn summary_cuts_long_lists() {
        let all: Vec<_> = (1..=20).map(|i| f(YUYV, 16 * i, 16 * i, 30)).collect();
        let s = summarize(&all);
        assert_eq!(s.len(), 1);
        assert!(s[0].starts_with("YUYV 320x320@30, 304x304@30"), "{}", s[0]);
        assert!(s[0].ends_with("… (20 sizes)"), "{}", s[0]);
    }

    fn wait_until(what: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn the_slot_keeps_the_newest_frame_and_a_failing_device_is_lost() {
        let frames: Vec<_> = (0..3).map(|i| I420Frame::solid_rgb(4, 4, [i * 50, 0, 0])).collect();
        let cam = Camera::fake((4, 4), 30, frames.clone(), true);
        assert!(wait_until(|| cam.is_lost()), "not lost");
        // Nobody took the frames: only the last is there, once.
        assert_eq!(cam.take_latest(), Some(frames[2].clone()));
        assert_eq!(cam.take_latest(), None);
    }

    #[test]
    fn a_quiet_camera_is_not_lost_and_stops_when_dropped() {
        let cam = Camera::fake((4, 4), 30, vec![I420Frame::solid_rgb(4, 4, [9, 9, 9])], false);
        assert!(wait_until(|| cam.shared.latest.lock().unwrap().is_some()));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!cam.is_lost());
        let shared = cam.shared.clone();
        let t = Instant::now();
        drop(cam);
        assert!(t.elapsed() < STOP_WAIT, "the capture thread did not stop");
        assert!(shared.stop.load(Relaxed));
        assert_eq!(Arc::strong_count(&shared), 1, "the capture thread still runs");
    }

    #[test]
    fn a_camera_source_repeats_its_last_frame_and_ends_when_lost() {
        use crate::media_io::VideoSource;
        let red = I420Frame::solid_rgb(4, 4, [200, 0, 0]);
        let cam = Camera::fake((4, 4), 15, vec![red.clone()], true);
        let mut src = VideoSource::Camera { camera: cam, last: I420Frame::solid_rgb(4, 4, [0, 0, 0]) };
        assert_eq!((src.size(), src.fps(30), src.fps(10)), ((4, 4), 15, 10));
        assert!(wait_until(|| {
            let VideoSource::Camera { camera, .. } = &src else { unreachable!() };
            camera.shared.latest.lock().unwrap().is_some()
        }));
        assert_eq!(src.next_frame(), Some(red.clone()));
        assert_eq!(src.next_frame(), Some(red.clone()), "repeats");
        assert!(!src.lost());
        assert!(wait_until(|| src.lost()), "not lost");
        assert_eq!(src.next_frame(), None);
    }

    #[test]
    fn a_camera_source_is_black_until_the_first_frame() {
        use crate::media_io::VideoSource;
        let black = I420Frame::solid_rgb(4, 4, [0, 0, 0]);
        let cam = Camera::fake((4, 4), 30, vec![], false);
        let mut src = VideoSource::Camera { camera: cam, last: black.clone() };
        assert_eq!(src.next_frame(), Some(black.clone()));
        assert_eq!(src.next_frame(), Some(black));
    }

    #[test]
    fn opening_a_missing_camera_is_an_error() {
        // No /dev/video4242 here (nor on any sane machine).
        let e = Camera::open(4242, (640, 480), 30).err().unwrap_or_default();
        assert!(e.starts_with("camera:4242"), "{e}");
    }
}
