//! Pixel-format conversions from what cameras deliver (packed YUYV 4:2:2,
//! semi-planar NV12, RGB24 as decoded from MJPEG) to [`I420Frame`], and
//! scaling an I420 picture down to fit a size.
//!
//! The converters check the buffer against the size first and return a
//! [`ConvertError`] for a short buffer or a size the format cannot have;
//! they never panic. Rows are taken as tightly packed (no stride padding);
//! bytes past the picture are ignored.

use thiserror::Error;

use crate::{I420Frame, rgb_to_yuv};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConvertError {
    #[error("{format} {width}x{height}: {why}")]
    BadSize { format: &'static str, width: u32, height: u32, why: &'static str },
    #[error("{format} {width}x{height}: {got} bytes, need {need}")]
    Short { format: &'static str, width: u32, height: u32, got: usize, need: usize },
}

/// Checks the size and the buffer's length; returns (w, h) as usize.
fn check(
    format: &'static str,
    src: &[u8],
    width: u32,
    height: u32,
    even_w: bool,
    even_h: bool,
    bytes: impl Fn(usize, usize) -> Option<usize>,
) -> Result<(usize, usize), ConvertError> {
    let bad = |why| ConvertError::BadSize { format, width, height, why };
    if width == 0 || height == 0 {
        return Err(bad("empty picture"));
    }
    if even_w && width % 2 == 1 {
        return Err(bad("odd width"));
    }
    if even_h && height % 2 == 1 {
        return Err(bad("odd height"));
    }
    let (w, h) = (width as usize, height as usize);
    let need = bytes(w, h).ok_or(bad("too large"))?;
    if src.len() < need {
        return Err(ConvertError::Short { format, width, height, got: src.len(), need });
    }
    Ok((w, h))
}

/// An I420 frame of the given size, luma 0 and chroma 128, and its plane sizes.
fn blank(width: u32, height: u32) -> (I420Frame, usize, usize) {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut data = vec![128u8; w * h + 2 * cw * ch];
    data[..w * h].fill(0);
    (I420Frame { width, height, data }, w * h, cw * ch)
}

/// Packed YUYV 4:2:2 (Y0 U Y1 V per two pixels) to I420: luma as is,
/// chroma the rounded mean of each pair of rows. The width must be even.
pub fn yuyv_to_i420(src: &[u8], width: u32, height: u32) -> Result<I420Frame, ConvertError> {
    let (w, h) = check("YUYV", src, width, height, true, false, |w, h| w.checked_mul(h)?.checked_mul(2))?;
    let (mut out, luma, chroma) = blank(width, height);
    let (y, uv) = out.data.split_at_mut(luma);
    let (u, v) = uv.split_at_mut(chroma);
    let row = 2 * w;
    for (r, line) in src[..row * h].chunks_exact(row).enumerate() {
        for (i, px) in line.chunks_exact(2).enumerate() {
            y[r * w + i] = px[0];
        }
    }
    let cw = w / 2;
    for cy in 0..h.div_ceil(2) {
        let r0 = &src[2 * cy * row..][..row];
        let r1 = if 2 * cy + 1 < h { &src[(2 * cy + 1) * row..][..row] } else { r0 };
        for cx in 0..cw {
            let (a, b) = (&r0[4 * cx..4 * cx + 4], &r1[4 * cx..4 * cx + 4]);
            u[cy * cw + cx] = avg2(a[1], b[1]);
            v[cy * cw + cx] = avg2(a[3], b[3]);
        }
    }
    Ok(out)
}

/// NV12 (a Y plane, then one plane of interleaved U V at half size both
/// ways) to I420. Width and height must be even.
pub fn nv12_to_i420(src: &[u8], width: u32, height: u32) -> Result<I420Frame, ConvertError> {
    let (w, h) = check("NV12", src, width, height, true, true, |w, h| w.checked_mul(h)?.checked_mul(3).map(|n| n / 2))?;
    let (mut out, luma, chroma) = blank(width, height);
    let (y, uv) = out.data.split_at_mut(luma);
    let (u, v) = uv.split_at_mut(chroma);
    y.copy_from_slice(&src[..luma]);
    for (i, pair) in src[luma..luma + w * h / 2].chunks_exact(2).enumerate() {
        u[i] = pair[0];
        v[i] = pair[1];
    }
    Ok(out)
}

/// RGB24 (R G B per pixel) to I420 with [`rgb_to_yuv`]: luma per pixel,
/// chroma from the rounded mean colour of each 2x2 block (of the pixels
/// there are, at an odd edge).
pub fn rgb_to_i420(src: &[u8], width: u32, height: u32) -> Result<I420Frame, ConvertError> {
    let (w, h) = check("RGB24", src, width, height, false, false, |w, h| w.checked_mul(h)?.checked_mul(3))?;
    let (mut out, luma, chroma) = blank(width, height);
    let (y, uv) = out.data.split_at_mut(luma);
    let (u, v) = uv.split_at_mut(chroma);
    let px = |x: usize, yy: usize| {
        let i = 3 * (yy * w + x);
        [src[i], src[i + 1], src[i + 2]]
    };
    for yy in 0..h {
        for x in 0..w {
            y[yy * w + x] = rgb_to_yuv(px(x, yy)).0;
        }
    }
    let cw = w.div_ceil(2);
    for cy in 0..h.div_ceil(2) {
        for cx in 0..cw {
            let mut sum = [0u32; 3];
            let mut n = 0u32;
            for yy in 2 * cy..(2 * cy + 2).min(h) {
                for x in 2 * cx..(2 * cx + 2).min(w) {
                    let p = px(x, yy);
                    for c in 0..3 {
                        sum[c] += u32::from(p[c]);
                    }
                    n += 1;
                }
            }
            let mean = sum.map(|s| ((s + n / 2) / n) as u8);
            let (_, cu, cv) = rgb_to_yuv(mean);
            u[cy * cw + cx] = cu;
            v[cy * cw + cx] = cv;
        }
    }
    Ok(out)
}

fn avg2(a: u8, b: u8) -> u8 {
    (u16::from(a) + u16::from(b)).div_ceil(2) as u8
}

/// The size that `(width, height)` takes to fit within `(max_w, max_h)`:
/// the aspect ratio kept, never larger than it was, both dimensions even
/// (rounded down; 2 at least). An empty size stays empty.
pub fn fit_within(width: u32, height: u32, max_w: u32, max_h: u32) -> (u32, u32) {
    if width == 0 || height == 0 {
        return (0, 0);
    }
    let (max_w, max_h) = (max_w.max(2), max_h.max(2));
    let (w, h, mw, mh) = (u64::from(width), u64::from(height), u64::from(max_w), u64::from(max_h));
    let (nw, nh) = if width <= max_w && height <= max_h {
        (w, h)
    } else if mw * h <= mh * w {
        (mw, h * mw / w)
    } else {
        (w * mh / h, mh)
    };
    let even = |x: u64| ((x as u32) & !1).max(2);
    (even(nw), even(nh))
}

/// Scales a frame down to fit within `(max_w, max_h)` (see [`fit_within`]),
/// nearest neighbour; a frame that already fits with even dimensions is
/// returned as it is.
pub fn scale_i420(frame: &I420Frame, max_w: u32, max_h: u32) -> I420Frame {
    let (w, h) = fit_within(frame.width, frame.height, max_w, max_h);
    resize_i420(frame, w, h)
}

/// Resamples a frame to exactly `width` x `height`, nearest neighbour.
/// A frame whose data is shorter than its size says is read as if padded
/// with zeros.
pub fn resize_i420(frame: &I420Frame, width: u32, height: u32) -> I420Frame {
    let (sw, sh) = (frame.width as usize, frame.height as usize);
    let (scw, sch) = (sw.div_ceil(2), sh.div_ceil(2));
    let need = sw * sh + 2 * scw * sch;
    if (frame.width, frame.height) == (width, height) && frame.data.len() == need {
        return frame.clone();
    }
    let (mut out, luma, chroma) = blank(width, height);
    if sw == 0 || sh == 0 {
        return out;
    }
    let padded;
    let src: &[u8] = if frame.data.len() >= need {
        &frame.data
    } else {
        padded = [&frame.data[..], &vec![0; need - frame.data.len()]].concat();
        &padded
    };
    let (dw, dh) = (width as usize, height as usize);
    let (dst_y, dst_uv) = out.data.split_at_mut(luma);
    let (dst_u, dst_v) = dst_uv.split_at_mut(chroma);
    let src_y = &src[..sw * sh];
    let src_u = &src[sw * sh..sw * sh + scw * sch];
    let src_v = &src[sw * sh + scw * sch..need];
    resample(src_y, (sw, sh), dst_y, (dw, dh));
    resample(src_u, (scw, sch), dst_u, (dw.div_ceil(2), dh.div_ceil(2)));
    resample(src_v, (scw, sch), dst_v, (dw.div_ceil(2), dh.div_ceil(2)));
    out
}

/// Nearest-neighbour resampling of one plane; each output pixel takes the
/// source pixel under its centre.
fn resample(src: &[u8], (sw, sh): (usize, usize), dst: &mut [u8], (dw, dh): (usize, usize)) {
    if dw == 0 || dh == 0 {
        return;
    }
    let xs: Vec<usize> = (0..dw).map(|x| ((2 * x + 1) * sw / (2 * dw)).min(sw - 1)).collect();
    for (y, row) in dst.chunks_exact_mut(dw).enumerate().take(dh) {
        let sy = ((2 * y + 1) * sh / (2 * dh)).min(sh - 1);
        let src_row = &src[sy * sw..(sy + 1) * sw];
        for (d, &sx) in row.iter_mut().zip(&xs) {
            *d = src_row[sx];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RED: [u8; 3] = [255, 0, 0];
    const BLUE: [u8; 3] = [0, 0, 255];
    const BLACK: [u8; 3] = [0, 0, 0];

    fn rgb(pixels: &[[u8; 3]]) -> Vec<u8> {
        pixels.concat()
    }

    #[test]
    fn yuyv_2x2() {
        let src = [10, 100, 20, 200, 30, 110, 40, 211];
        let f = yuyv_to_i420(&src, 2, 2).unwrap();
        assert_eq!((f.width, f.height), (2, 2));
        assert_eq!(f.data, [10, 20, 30, 40, 105, 206]);
    }

    #[test]
    fn yuyv_4x3_odd_height_keeps_the_last_row_alone() {
        #[rustfmt::skip]
        let src = [
            1, 100, 2, 200, 3, 50, 4, 60,
            5, 102, 6, 202, 7, 51, 8, 61,
            9, 90, 10, 80, 11, 70, 12, 40,
        ];
        let f = yuyv_to_i420(&src, 4, 3).unwrap();
        assert_eq!(f.data, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 101, 51, 90, 70, 201, 61, 80, 40]);
    }

    #[test]
    fn yuyv_rejects_bad_input() {
        assert_eq!(
            yuyv_to_i420(&[0; 7], 2, 2),
            Err(ConvertError::Short { format: "YUYV", width: 2, height: 2, got: 7, need: 8 })
        );
        assert!(matches!(yuyv_to_i420(&[0; 64], 3, 2), Err(ConvertError::BadSize { .. })));
        assert!(matches!(yuyv_to_i420(&[0; 64], 0, 2), Err(ConvertError::BadSize { .. })));
        assert!(matches!(yuyv_to_i420(&[], u32::MAX - 1, u32::MAX), Err(ConvertError::BadSize { .. })));
        // Bytes past the picture are ignored.
        assert_eq!(
            yuyv_to_i420(&[10, 100, 20, 200, 30, 110, 40, 211, 9, 9], 2, 2).unwrap().data,
            [10, 20, 30, 40, 105, 206]
        );
    }

    #[test]
    fn nv12_4x2() {
        let src = [0, 1, 2, 3, 4, 5, 6, 7, 100, 200, 101, 201];
        let f = nv12_to_i420(&src, 4, 2).unwrap();
        assert_eq!(f.data, [0, 1, 2, 3, 4, 5, 6, 7, 100, 101, 200, 201]);
    }

    #[test]
    fn nv12_rejects_bad_input() {
        assert_eq!(
            nv12_to_i420(&[0; 11], 4, 2),
            Err(ConvertError::Short { format: "NV12", width: 4, height: 2, got: 11, need: 12 })
        );
        assert!(matches!(nv12_to_i420(&[0; 64], 4, 3), Err(ConvertError::BadSize { .. })));
        assert!(matches!(nv12_to_i420(&[0; 64], 3, 2), Err(ConvertError::BadSize { .. })));
        assert!(matches!(nv12_to_i420(&[0; 64], 4, 0), Err(ConvertError::BadSize { .. })));
    }

    #[test]
    fn rgb_4x2_chroma_is_the_mean_of_each_block() {
        // Left block: two red, two black (mean 128, 0, 0); right block: blue.
        let src = rgb(&[RED, BLACK, BLUE, BLUE, BLACK, RED, BLUE, BLUE]);
        let f = rgb_to_i420(&src, 4, 2).unwrap();
        assert_eq!(f.data, [82, 16, 41, 41, 16, 82, 41, 41, 109, 240, 184, 110]);
    }

    #[test]
    fn rgb_odd_size_uses_the_pixels_there_are() {
        let f = rgb_to_i420(&rgb(&[RED, RED, BLUE]), 3, 1).unwrap();
        assert_eq!(f.data, [82, 82, 41, 90, 240, 240, 110]);
    }

    #[test]
    fn rgb_solid_matches_solid_rgb() {
        let c = [10, 200, 60];
        let f = rgb_to_i420(&rgb(&[c; 6 * 4]), 6, 4).unwrap();
        assert_eq!(f, I420Frame::solid_rgb(6, 4, c));
    }

    #[test]
    fn rgb_rejects_bad_input() {
        assert_eq!(
            rgb_to_i420(&[0; 11], 2, 2),
            Err(ConvertError::Short { format: "RGB24", width: 2, height: 2, got: 11, need: 12 })
        );
        assert!(matches!(rgb_to_i420(&[0; 12], 2, 0), Err(ConvertError::BadSize { .. })));
    }

    #[test]
    fn fit_keeps_aspect_and_even_sizes() {
        assert_eq!(fit_within(640, 480, 640, 480), (640, 480));
        assert_eq!(fit_within(320, 240, 640, 480), (320, 240)); // never up
        assert_eq!(fit_within(1280, 720, 640, 480), (640, 360));
        assert_eq!(fit_within(640, 480, 320, 320), (320, 240));
        assert_eq!(fit_within(100, 75, 64, 64), (64, 48));
        assert_eq!(fit_within(641, 481, 1000, 1000), (640, 480));
        assert_eq!(fit_within(1000, 10, 100, 100), (100, 2));
        assert_eq!(fit_within(0, 10, 100, 100), (0, 0));
    }

    #[test]
    fn scale_4x4_to_2x2_takes_the_centre_pixels() {
        let mut data: Vec<u8> = (0..16).collect();
        data.extend([100, 101, 102, 103, 200, 201, 202, 203]);
        let f = I420Frame { width: 4, height: 4, data };
        let s = scale_i420(&f, 2, 2);
        assert_eq!((s.width, s.height), (2, 2));
        assert_eq!(s.data, [5, 7, 13, 15, 103, 203]);
    }

    #[test]
    fn scale_8x4_to_fit_4x4() {
        let mut data: Vec<u8> = (0..32).collect();
        data.extend([100, 101, 102, 103, 104, 105, 106, 107]);
        data.extend([200, 201, 202, 203, 204, 205, 206, 207]);
        let f = I420Frame { width: 8, height: 4, data };
        let s = scale_i420(&f, 4, 4);
        assert_eq!((s.width, s.height), (4, 2));
        assert_eq!(s.data, [9, 11, 13, 15, 25, 27, 29, 31, 105, 107, 205, 207]);
    }

    #[test]
    fn scale_leaves_a_fitting_frame_alone() {
        let f = I420Frame::solid_rgb(6, 4, [1, 2, 3]);
        assert_eq!(scale_i420(&f, 640, 480), f);
    }

    #[test]
    fn scale_survives_a_short_frame() {
        let f = I420Frame { width: 8, height: 8, data: vec![50; 10] };
        let s = scale_i420(&f, 4, 4);
        assert_eq!((s.width, s.height, s.data.len()), (4, 4, 24));
        let e = I420Frame { width: 0, height: 0, data: vec![] };
        assert_eq!(scale_i420(&e, 4, 4).data.len(), 0);
    }
}
