//! VP8 through libvpx: a realtime encoder and a decoder, over I420 frames.
//!
//! The only unsafe code of the workspace lives here, behind safe types that
//! own their codec contexts.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_ulong};
use std::ptr;

use vpx_sys::*;

use crate::{I420Frame, MediaError};

/// Encoder settings.
#[derive(Debug, Clone)]
pub struct EncoderConfig {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// libvpx `cpu-used` for VP8 (higher is faster); at least 6 for calls.
    pub cpu_used: i32,
    /// Frames between forced key frames (also sent on request).
    pub keyframe_interval: u32,
    pub threads: u32,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            width: 640,
            height: 480,
            fps: 30,
            bitrate_kbps: 1000,
            cpu_used: 8,
            keyframe_interval: 300,
            threads: 1,
        }
    }
}

/// One encoded VP8 frame.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
    pub pts: i64,
}

pub struct Encoder {
    ctx: Box<vpx_codec_ctx_t>,
    cfg: Box<vpx_codec_enc_cfg_t>,
    width: u32,
    height: u32,
    pts: i64,
}

// The context is only ever used through `&mut self`.
unsafe impl Send for Encoder {}

fn check(err: vpx_codec_err_t, what: &str) -> Result<(), MediaError> {
    if err == vpx_codec_err_t::VPX_CODEC_OK {
        Ok(())
    } else {
        Err(MediaError::Codec(format!("{what}: libvpx error {}", err as i32)))
    }
}

impl Encoder {
    pub fn new(c: &EncoderConfig) -> Result<Self, MediaError> {
        if c.width == 0 || c.height == 0 || c.width % 2 == 1 || c.height % 2 == 1 {
            return Err(MediaError::Codec(format!(
                "VP8 needs even, non-zero dimensions, not {}x{}",
                c.width, c.height
            )));
        }
        unsafe {
            let mut cfg: Box<vpx_codec_enc_cfg_t> = Box::new(MaybeUninit::zeroed().assume_init());
            check(vpx_codec_enc_config_default(vpx_codec_vp8_cx(), &mut *cfg, 0), "vpx_codec_enc_config_default")?;
            cfg.g_w = c.width;
            cfg.g_h = c.height;
            cfg.g_timebase.num = 1;
            cfg.g_timebase.den = c.fps.max(1) as c_int;
            cfg.rc_target_bitrate = c.bitrate_kbps;
            cfg.rc_end_usage = vpx_rc_mode::VPX_CBR;
            cfg.g_lag_in_frames = 0;
            cfg.g_error_resilient = VPX_ERROR_RESILIENT_DEFAULT;
            cfg.g_threads = c.threads.max(1);
            cfg.g_pass = vpx_enc_pass::VPX_RC_ONE_PASS;
            cfg.rc_dropframe_thresh = 0;
            cfg.rc_min_quantizer = 4;
            cfg.rc_max_quantizer = 56;
            cfg.rc_undershoot_pct = 95;
            cfg.rc_overshoot_pct = 15;
            cfg.rc_buf_sz = 1000;
            cfg.rc_buf_initial_sz = 500;
            cfg.rc_buf_optimal_sz = 600;
            cfg.kf_mode = vpx_kf_mode::VPX_KF_AUTO;
            cfg.kf_max_dist = c.keyframe_interval.max(1);
            let mut ctx: Box<vpx_codec_ctx_t> = Box::new(MaybeUninit::zeroed().assume_init());
            check(
                vpx_codec_enc_init_ver(&mut *ctx, vpx_codec_vp8_cx(), &*cfg, 0, VPX_ENCODER_ABI_VERSION as c_int),
                "vpx_codec_enc_init",
            )?;
            let mut enc = Encoder { ctx, cfg, width: c.width, height: c.height, pts: 0 };
            let cpu = c.cpu_used.clamp(-16, 16);
            check(
                vpx_codec_control_(&mut *enc.ctx, vp8e_enc_control_id::VP8E_SET_CPUUSED as c_int, cpu as c_int),
                "VP8E_SET_CPUUSED",
            )?;
            check(
                vpx_codec_control_(&mut *enc.ctx, vp8e_enc_control_id::VP8E_SET_NOISE_SENSITIVITY as c_int, 0 as c_int),
                "VP8E_SET_NOISE_SENSITIVITY",
            )?;
            check(
                vpx_codec_control_(&mut *enc.ctx, vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD as c_int, 1 as c_int),
                "VP8E_SET_STATIC_THRESHOLD",
            )?;
            Ok(enc)
        }
    }

    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Changes the target bitrate on the fly (e.g. from the receiver's estimate).
    pub fn set_bitrate(&mut self, kbps: u32) -> Result<(), MediaError> {
        self.cfg.rc_target_bitrate = kbps.max(30);
        unsafe { check(vpx_codec_enc_config_set(&mut *self.ctx, &*self.cfg), "vpx_codec_enc_config_set") }
    }

    /// Encodes one frame of the configured size; `force_key` asks for a key frame.
    pub fn encode(&mut self, frame: &I420Frame, force_key: bool) -> Result<Vec<EncodedFrame>, MediaError> {
        if frame.width != self.width || frame.height != self.height {
            return Err(MediaError::Codec(format!(
                "frame is {}x{}, encoder is {}x{}",
                frame.width, frame.height, self.width, self.height
            )));
        }
        let mut out = Vec::new();
        unsafe {
            let mut img: vpx_image_t = MaybeUninit::zeroed().assume_init();
            let data = frame.data.as_ptr() as *mut u8;
            if vpx_img_wrap(&mut img, vpx_img_fmt::VPX_IMG_FMT_I420, self.width, self.height, 1, data).is_null() {
                return Err(MediaError::Codec("vpx_img_wrap failed".into()));
            }
            let flags = if force_key { VPX_EFLAG_FORCE_KF as vpx_enc_frame_flags_t } else { 0 };
            check(
                vpx_codec_encode(&mut *self.ctx, &img, self.pts, 1, flags, VPX_DL_REALTIME as c_ulong),
                "vpx_codec_encode",
            )?;
            self.pts += 1;
            let mut iter: vpx_codec_iter_t = ptr::null();
            loop {
                let pkt = vpx_codec_get_cx_data(&mut *self.ctx, &mut iter);
                if pkt.is_null() {
                    break;
                }
                if (*pkt).kind == vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                    let f = (*pkt).data.frame;
                    let bytes = std::slice::from_raw_parts(f.buf as *const u8, f.sz as usize);
                    out.push(EncodedFrame {
                        data: bytes.to_vec(),
                        keyframe: f.flags & VPX_FRAME_IS_KEY != 0,
                        pts: f.pts,
                    });
                }
            }
        }
        Ok(out)
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        unsafe {
            vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

pub struct Decoder {
    ctx: Box<vpx_codec_ctx_t>,
}

unsafe impl Send for Decoder {}

impl Decoder {
    pub fn new() -> Result<Self, MediaError> {
        unsafe {
            let mut ctx: Box<vpx_codec_ctx_t> = Box::new(MaybeUninit::zeroed().assume_init());
            let cfg = vpx_codec_dec_cfg_t { threads: 1, w: 0, h: 0 };
            check(
                vpx_codec_dec_init_ver(&mut *ctx, vpx_codec_vp8_dx(), &cfg, 0, VPX_DECODER_ABI_VERSION as c_int),
                "vpx_codec_dec_init",
            )?;
            Ok(Decoder { ctx })
        }
    }

    /// Decodes one complete VP8 frame; returns the pictures it produced.
    pub fn decode(&mut self, data: &[u8]) -> Result<Vec<I420Frame>, MediaError> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        unsafe {
            check(
                vpx_codec_decode(&mut *self.ctx, data.as_ptr(), data.len() as u32, ptr::null_mut(), 0),
                "vpx_codec_decode",
            )?;
            let mut iter: vpx_codec_iter_t = ptr::null();
            loop {
                let img = vpx_codec_get_frame(&mut *self.ctx, &mut iter);
                if img.is_null() {
                    break;
                }
                let img = &*img;
                if img.fmt != vpx_img_fmt::VPX_IMG_FMT_I420 {
                    continue;
                }
                let (w, h) = (img.d_w as usize, img.d_h as usize);
                let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
                let mut buf = Vec::with_capacity(w * h + 2 * cw * ch);
                for (plane, pw, ph) in [(0usize, w, h), (1, cw, ch), (2, cw, ch)] {
                    let stride = img.stride[plane] as usize;
                    let base = img.planes[plane];
                    for row in 0..ph {
                        buf.extend_from_slice(std::slice::from_raw_parts(base.add(row * stride), pw));
                    }
                }
                out.push(I420Frame { width: w as u32, height: h as u32, data: buf });
            }
        }
        Ok(out)
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        unsafe {
            vpx_codec_destroy(&mut *self.ctx);
        }
    }
}
