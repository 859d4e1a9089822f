//! Opus at 48 kHz, 20 ms frames, and tone generation.

use crate::MediaError;

pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 960;

pub struct OpusEncoder {
    inner: opus::Encoder,
    channels: usize,
    buf: Vec<u8>,
}

impl OpusEncoder {
    pub fn new(channels: usize, bitrate_bps: i32) -> Result<Self, MediaError> {
        let ch = if channels == 2 { opus::Channels::Stereo } else { opus::Channels::Mono };
        let mut inner = opus::Encoder::new(SAMPLE_RATE, ch, opus::Application::Voip)
            .map_err(|e| MediaError::Codec(format!("opus encoder: {e}")))?;
        inner
            .set_bitrate(opus::Bitrate::Bits(bitrate_bps))
            .map_err(|e| MediaError::Codec(format!("opus bitrate: {e}")))?;
        Ok(OpusEncoder { inner, channels: if channels == 2 { 2 } else { 1 }, buf: vec![0; 1500] })
    }

    /// Encodes one 20 ms frame of interleaved samples.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, MediaError> {
        if pcm.len() != FRAME_SAMPLES * self.channels {
            return Err(MediaError::Codec(format!("opus frame must be {} samples", FRAME_SAMPLES * self.channels)));
        }
        let n = self.inner.encode(pcm, &mut self.buf).map_err(|e| MediaError::Codec(format!("opus encode: {e}")))?;
        Ok(self.buf[..n].to_vec())
    }
}

pub struct OpusDecoder {
    inner: opus::Decoder,
    channels: usize,
    buf: Vec<i16>,
}

impl OpusDecoder {
    pub fn new(channels: usize) -> Result<Self, MediaError> {
        let ch = if channels == 2 { opus::Channels::Stereo } else { opus::Channels::Mono };
        let inner = opus::Decoder::new(SAMPLE_RATE, ch).map_err(|e| MediaError::Codec(format!("opus decoder: {e}")))?;
        let channels = if channels == 2 { 2 } else { 1 };
        Ok(OpusDecoder { inner, channels, buf: vec![0; 5760 * channels] })
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Decodes one packet (empty `data` means a lost packet: concealment).
    pub fn decode(&mut self, data: &[u8]) -> Result<&[i16], MediaError> {
        let n = self
            .inner
            .decode(data, &mut self.buf, false)
            .map_err(|e| MediaError::Codec(format!("opus decode: {e}")))?;
        Ok(&self.buf[..n * self.channels])
    }
}

/// A continuous sine tone, produced 20 ms at a time.
#[derive(Debug, Clone)]
pub struct Tone {
    pub hz: f32,
    pub amplitude: f32,
    phase: f32,
}

impl Tone {
    pub fn new(hz: f32, amplitude: f32) -> Self {
        Tone { hz, amplitude, phase: 0.0 }
    }

    /// Fills `out` (mono) with the next samples.
    pub fn fill(&mut self, out: &mut [i16]) {
        let step = std::f32::consts::TAU * self.hz / SAMPLE_RATE as f32;
        for s in out {
            *s = (self.phase.sin() * self.amplitude * f32::from(i16::MAX)) as i16;
            self.phase = (self.phase + step) % std::f32::consts::TAU;
        }
    }
}
