//! Media for one2one: WebRTC set-up shared by server and client, the
//! client's peer connection, VP8 (libvpx) and Opus codecs over plain frames
//! (feature `codecs`), and the signal analysis that tests and stats use to
//! judge what arrived (the colour of a frame, the frequency of a tone).

#[cfg(feature = "codecs")]
pub mod aec;
pub mod analysis;
#[cfg(feature = "codecs")]
pub mod audio;
pub mod convert;
pub mod files;
pub mod pattern;
pub mod peer;
pub mod rtc_setup;
pub mod sdp_check;
#[cfg(feature = "codecs")]
pub mod vp8;
pub mod vp8_assembler;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MediaError {
    #[error("codec: {0}")]
    Codec(String),
}

/// A planar 4:2:0 picture: Y plane, then U, then V, no padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct I420Frame {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl I420Frame {
    fn chroma_dims(width: u32, height: u32) -> (usize, usize) {
        ((width as usize).div_ceil(2), (height as usize).div_ceil(2))
    }

    /// A frame of one colour, given in RGB.
    pub fn solid_rgb(width: u32, height: u32, rgb: [u8; 3]) -> Self {
        let (y, u, v) = rgb_to_yuv(rgb);
        let (cw, ch) = Self::chroma_dims(width, height);
        let luma = width as usize * height as usize;
        let mut data = vec![y; luma + 2 * cw * ch];
        data[luma..luma + cw * ch].fill(u);
        data[luma + cw * ch..].fill(v);
        I420Frame { width, height, data }
    }

    pub fn y(&self) -> &[u8] {
        &self.data[..self.width as usize * self.height as usize]
    }
    pub fn u(&self) -> &[u8] {
        let (cw, ch) = Self::chroma_dims(self.width, self.height);
        let luma = self.width as usize * self.height as usize;
        &self.data[luma..luma + cw * ch]
    }
    pub fn v(&self) -> &[u8] {
        let (cw, ch) = Self::chroma_dims(self.width, self.height);
        let luma = self.width as usize * self.height as usize;
        &self.data[luma + cw * ch..luma + 2 * cw * ch]
    }

    /// The RGB colour of the pixel at (x, y).
    pub fn rgb_at(&self, x: u32, y: u32) -> [u8; 3] {
        let (cw, _) = Self::chroma_dims(self.width, self.height);
        let yy = self.y()[(y * self.width + x) as usize];
        let ci = (y as usize / 2) * cw + x as usize / 2;
        yuv_to_rgb(yy, self.u()[ci], self.v()[ci])
    }

    /// The mean RGB colour of a rectangle.
    pub fn mean_rgb(&self, x0: u32, y0: u32, w: u32, h: u32) -> [u8; 3] {
        let mut sum = [0u64; 3];
        let mut n = 0u64;
        for y in y0..(y0 + h).min(self.height) {
            for x in x0..(x0 + w).min(self.width) {
                let p = self.rgb_at(x, y);
                for i in 0..3 {
                    sum[i] += u64::from(p[i]);
                }
                n += 1;
            }
        }
        let n = n.max(1);
        [(sum[0] / n) as u8, (sum[1] / n) as u8, (sum[2] / n) as u8]
    }
}

/// BT.601 limited range, as libvpx and browsers use for VP8.
pub fn rgb_to_yuv([r, g, b]: [u8; 3]) -> (u8, u8, u8) {
    let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
    let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
    let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
    let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
    (y.round().clamp(0.0, 255.0) as u8, u.round().clamp(0.0, 255.0) as u8, v.round().clamp(0.0, 255.0) as u8)
}

pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = f32::from(y) - 16.0;
    let d = f32::from(u) - 128.0;
    let e = f32::from(v) - 128.0;
    let r = 1.164 * c + 1.596 * e;
    let g = 1.164 * c - 0.392 * d - 0.813 * e;
    let b = 1.164 * c + 2.017 * d;
    [r.round().clamp(0.0, 255.0) as u8, g.round().clamp(0.0, 255.0) as u8, b.round().clamp(0.0, 255.0) as u8]
}

/// The largest per-channel difference between two colours.
pub fn colour_distance(a: [u8; 3], b: [u8; 3]) -> u8 {
    (0..3).map(|i| a[i].abs_diff(b[i])).max().unwrap_or(0)
}
