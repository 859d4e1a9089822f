//! What a front end can see of and do to a call's media while it runs:
//! the latest remote and local pictures, the microphone level, and the
//! mute and camera switches. Writers replace the latest value and never
//! wait; a slow reader just sees fewer frames.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use one2one_media::I420Frame;

use crate::video::RgbFrame;

/// The largest picture handed to the UI (it is drawn in terminal cells).
pub const REMOTE_MAX: (u32, u32) = (320, 240);
pub const LOCAL_MAX: (u32, u32) = (120, 90);

#[derive(Debug, Default)]
pub struct Taps {
    pub muted: AtomicBool,
    pub camera_off: AtomicBool,
    /// Set by the video sender when its camera failed for good (the call
    /// goes on without video); the engine reports it once and clears it.
    pub camera_lost: AtomicBool,
    /// Likewise for the microphone and the speaker.
    pub mic_lost: AtomicBool,
    pub speaker_lost: AtomicBool,
    /// Whether anyone looks at the pictures (the TUI); headless runs skip them.
    pub want_frames: AtomicBool,
    remote: Mutex<Option<RgbFrame>>,
    local: Mutex<Option<RgbFrame>>,
    /// Bumped on every new picture, so the UI knows when to redraw.
    pub generation: AtomicU64,
    mic_level: AtomicU32,
}

impl Taps {
    pub fn put_remote(&self, f: &I420Frame) {
        if self.want_frames.load(Relaxed) {
            let rgb = RgbFrame::from_i420(f, REMOTE_MAX.0, REMOTE_MAX.1);
            if let Ok(mut slot) = self.remote.lock() {
                *slot = Some(rgb);
            }
            self.generation.fetch_add(1, Relaxed);
        }
    }

    pub fn put_local(&self, f: &I420Frame) {
        if self.want_frames.load(Relaxed) {
            let rgb = RgbFrame::from_i420(f, LOCAL_MAX.0, LOCAL_MAX.1);
            if let Ok(mut slot) = self.local.lock() {
                *slot = Some(rgb);
            }
            self.generation.fetch_add(1, Relaxed);
        }
    }

    pub fn set_mic_level(&self, level: f32) {
        self.mic_level.store(level.to_bits(), Relaxed);
    }

    pub fn mic_level(&self) -> f32 {
        f32::from_bits(self.mic_level.load(Relaxed))
    }

    pub fn remote(&self) -> Option<RgbFrame> {
        self.remote.lock().ok().and_then(|s| s.clone())
    }

    pub fn local(&self) -> Option<RgbFrame> {
        self.local.lock().ok().and_then(|s| s.clone())
    }

    /// Forgets the pictures of a call that ended.
    pub fn clear(&self) {
        if let Ok(mut s) = self.remote.lock() {
            *s = None;
        }
        if let Ok(mut s) = self.local.lock() {
            *s = None;
        }
        self.set_mic_level(0.0);
        self.muted.store(false, Relaxed);
        self.camera_off.store(false, Relaxed);
        self.camera_lost.store(false, Relaxed);
        self.mic_lost.store(false, Relaxed);
        self.speaker_lost.store(false, Relaxed);
        self.generation.fetch_add(1, Relaxed);
    }
}
