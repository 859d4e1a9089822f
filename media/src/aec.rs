//! Acoustic echo cancellation for the softphone, in pure Rust.
//!
//! The far-end signal (what goes to the speaker) is fed to [`EchoCanceller::render`],
//! the microphone signal to [`EchoCanceller::capture`], which removes from it the
//! echo of the far end, in place. Audio is mono i16 at 8–48 kHz, in blocks of
//! 10 ms (480 samples at 48 kHz); any multiple of 10 ms (e.g. 20 ms) is split
//! into 10 ms blocks.
//!
//! ## Algorithm
//! * A partitioned-block frequency-domain adaptive filter (PBFDAF, the "MDF" of
//!   Speex): 10 ms blocks, FFTs of 20 ms (overlap-save), 20 partitions, so an echo
//!   tail of 200 ms (acoustic delay plus room response, plus the far-end queue).
//!   Step size normalised per frequency bin by the far-end power over the whole
//!   tail; the gradient constraint is applied to partition 0 and to one other
//!   partition per block in turn.
//! * Two filters for double talk: a background filter that always adapts, and a
//!   foreground filter that makes the output. The background is copied to the
//!   foreground when its error is clearly smaller (it converged further), and the
//!   foreground back to the background when the background diverged (the near-end
//!   talker disturbs the adaptation). So near-end speech never reaches the
//!   output filter's weights. Once the filter has converged, the background's
//!   step also shrinks in blocks whose output holds more than the expected
//!   residual echo (a near-end talker); a poor output for 4 s (the echo path
//!   changed) restarts full-speed adaptation.
//! * A broadband residual echo suppressor: it learns the ratio of the residual to
//!   the echo estimate while only the far end talks, and attenuates the output
//!   (down to −20 dB) where the residual is mostly echo; where the near end talks
//!   the output is left alone. The gain moves smoothly across each block.
//!
//! ## Threads
//! `render` runs in the speaker callback and `capture` in the microphone callback.
//! The canceller is one value: wrap it in a `Mutex` and hold the lock only for the
//! call. `render` only copies samples into a preallocated queue (microseconds);
//! `capture` does the filtering (tens of microseconds per 10 ms block in release).
//! Neither allocates in the steady state.
//!
//! ## Alignment
//! The far-end samples queue up between `render` and `capture`; each captured
//! block takes the same number of far-end samples from the queue (silence when
//! it is empty). The queue is kept short (at most 80 ms beyond the delay hint):
//! older far-end audio is dropped. The filter finds the echo wherever it lies
//! within its 200 ms tail; [`EchoCanceller::set_delay_hint_ms`] moves the tail
//! later for paths with a long known delay.

use std::collections::VecDeque;
use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AecError {
    #[error("unsupported sample rate {0} Hz (8000 to 48000, a multiple of 100)")]
    UnsupportedSampleRate(u32),
}

/// Length of the echo tail the adaptive filter models, in blocks of 10 ms.
const PARTITIONS: usize = 20;
/// Step size of the background filter (normalised LMS, per bin).
const MU: f32 = 0.4;
/// The far-end queue beyond the delay hint is kept under this many blocks.
const MAX_BACKLOG_BLOCKS: usize = 8;
/// The longest delay hint honoured, in ms.
const MAX_DELAY_HINT_MS: u32 = 500;
/// Delay hints are taken this much earlier, so the filter sees the echo's start.
const DELAY_HINT_MARGIN_MS: u32 = 20;
/// Blocks of poor cancellation (4 s) after which the filter starts over with full steps.
const RESTART_BLOCKS: usize = 400;
/// Lowest gain of the residual echo suppressor (−20 dB).
const MIN_GAIN: f32 = 0.1;

/// An acoustic echo canceller for one mono stream. See the module docs.
pub struct EchoCanceller {
    rate: u32,
    /// Block length (10 ms).
    n: usize,
    /// Number of frequency bins of the 2n-point real FFT.
    k: usize,
    fwd: Arc<dyn RealToComplex<f32>>,
    inv: Arc<dyn ComplexToReal<f32>>,
    scratch: Vec<Complex32>,

    far_queue: VecDeque<f32>,
    queue_cap: usize,
    pre_delay: usize,
    far_prev: Vec<f32>,

    /// Far-end spectra, `PARTITIONS` slots of `k` bins; `head` is the newest.
    x_spec: Vec<Complex32>,
    head: usize,
    x_pow: Vec<f32>,
    w_bg: Vec<Complex32>,
    w_fg: Vec<Complex32>,
    constrain_next: usize,

    time: Vec<f32>,
    spec: Vec<Complex32>,
    grad: Vec<Complex32>,
    e_bg: Vec<f32>,
    e_fg: Vec<f32>,

    s_bg: f32,
    s_fg: f32,
    s_mic: f32,
    s_mic_fast: f32,
    s_out: f32,
    leak: f32,
    leak_err: f32,
    leak_echo: f32,
    adapted: bool,
    bad_blocks: usize,
    gain: f32,
}

impl std::fmt::Debug for EchoCanceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoCanceller")
            .field("rate", &self.rate)
            .field("pre_delay", &self.pre_delay)
            .field("erle_db", &self.erle_db())
            .finish_non_exhaustive()
    }
}

impl EchoCanceller {
    /// A canceller for mono audio at `sample_rate` (48000 in the client).
    pub fn new(sample_rate: u32) -> Result<Self, AecError> {
        if !(8000..=48000).contains(&sample_rate) || !sample_rate.is_multiple_of(100) {
            return Err(AecError::UnsupportedSampleRate(sample_rate));
        }
        let n = (sample_rate / 100) as usize;
        let m = 2 * n;
        let k = n + 1;
        let mut planner = RealFftPlanner::<f32>::new();
        let fwd = planner.plan_fft_forward(m);
        let inv = planner.plan_fft_inverse(m);
        let scratch_len = fwd.get_scratch_len().max(inv.get_scratch_len());
        let max_pre = (MAX_DELAY_HINT_MS as usize) * sample_rate as usize / 1000;
        let queue_cap = max_pre + (MAX_BACKLOG_BLOCKS + 1) * n;
        let zero = Complex32::new(0.0, 0.0);
        Ok(EchoCanceller {
            rate: sample_rate,
            n,
            k,
            fwd,
            inv,
            scratch: vec![zero; scratch_len],
            far_queue: VecDeque::with_capacity(queue_cap),
            queue_cap,
            pre_delay: 0,
            far_prev: vec![0.0; n],
            x_spec: vec![zero; PARTITIONS * k],
            head: 0,
            x_pow: vec![0.0; k],
            w_bg: vec![zero; PARTITIONS * k],
            w_fg: vec![zero; PARTITIONS * k],
            constrain_next: 1,
            time: vec![0.0; m],
            spec: vec![zero; k],
            grad: vec![zero; k],
            e_bg: vec![0.0; n],
            e_fg: vec![0.0; n],
            s_bg: 0.0,
            s_fg: 0.0,
            s_mic: 0.0,
            s_mic_fast: 0.0,
            s_out: 0.0,
            leak: 0.1,
            leak_err: 0.0,
            leak_echo: 0.0,
            adapted: false,
            bad_blocks: 0,
            gain: 1.0,
        })
    }

    /// The sample rate given to [`EchoCanceller::new`].
    pub fn sample_rate(&self) -> u32 {
        self.rate
    }

    /// Samples in one 10 ms block.
    pub fn block_len(&self) -> usize {
        self.n
    }

    /// The far-end signal as it goes to the speaker, 10 ms at a time (any length
    /// is accepted).
    pub fn render(&mut self, far: &[i16]) {
        let limit = self.pre_delay + MAX_BACKLOG_BLOCKS * self.n;
        // Of a long slice, only the tail that can stay in the queue matters.
        let far = &far[far.len().saturating_sub(limit)..];
        let excess = (self.far_queue.len() + far.len()).saturating_sub(limit);
        self.far_queue.drain(..excess.min(self.far_queue.len()));
        self.far_queue.extend(far.iter().map(|&s| f32::from(s) / 32768.0));
    }

    /// The microphone signal, 10 ms at a time, processed in place: the echo of
    /// what went through [`EchoCanceller::render`] is removed. Slices of several
    /// blocks are processed block by block; a trailing part shorter than a block
    /// passes unchanged (and the far end moves on by as many samples).
    pub fn capture(&mut self, near: &mut [i16]) {
        let n = self.n;
        let mut chunks = near.chunks_exact_mut(n);
        for block in &mut chunks {
            self.process_block(block);
        }
        let rest = chunks.into_remainder().len();
        self.far_queue.drain(..rest.min(self.far_queue.len()));
    }

    /// The known delay from `render` to the echo's arrival in `capture`, in ms,
    /// if it is long (over ~100 ms): the filter's tail then starts that much later
    /// (less 20 ms). Values over 500 ms are taken as 500.
    pub fn set_delay_hint_ms(&mut self, ms: u32) {
        let ms = ms.min(MAX_DELAY_HINT_MS).saturating_sub(DELAY_HINT_MARGIN_MS);
        let pre = ms as usize * self.rate as usize / 1000;
        if pre > self.pre_delay {
            for _ in 0..pre - self.pre_delay {
                if self.far_queue.len() >= self.queue_cap {
                    break;
                }
                self.far_queue.push_front(0.0);
            }
        } else {
            let drop = (self.pre_delay - pre).min(self.far_queue.len());
            self.far_queue.drain(..drop);
        }
        self.pre_delay = pre;
    }

    /// Echo return loss enhancement of the linear filter, in dB, smoothed over
    /// the last ~100 ms (microphone energy over residual energy); for stats.
    pub fn erle_db(&self) -> f32 {
        10.0 * ((self.s_mic + 1e-12) / (self.s_out + 1e-12)).log10()
    }

    fn process_block(&mut self, block: &mut [i16]) {
        let (n, k) = (self.n, self.k);
        let m = 2 * n;
        let inv_m = 1.0 / m as f32;

        // The far-end block that goes with this microphone block.
        self.head = (self.head + PARTITIONS - 1) % PARTITIONS;
        self.time[..n].copy_from_slice(&self.far_prev);
        let mut far_energy = 0.0;
        for i in 0..n {
            let x = self.far_queue.pop_front().unwrap_or(0.0);
            self.time[n + i] = x;
            self.far_prev[i] = x;
            far_energy += x * x;
        }
        let slot = self.head * k..(self.head + 1) * k;
        if self.fwd.process_with_scratch(&mut self.time, &mut self.x_spec[slot], &mut self.scratch).is_err() {
            return;
        }
        // Far-end power per bin over the whole tail, for the step size.
        self.x_pow.fill(0.0);
        for p in 0..PARTITIONS {
            for (acc, x) in self.x_pow.iter_mut().zip(&self.x_spec[p * k..(p + 1) * k]) {
                *acc += x.norm_sqr();
            }
        }
        let mean_pow = self.x_pow.iter().sum::<f32>() / k as f32;
        let delta = PARTITIONS as f32 * m as f32 * 1e-8 + 1e-3 * mean_pow;

        // Echo estimates of both filters and their errors.
        let mut mic_energy = 0.0;
        let mut bg_energy = 0.0;
        let mut fg_energy = 0.0;
        let mut echo_energy = 0.0;
        for which in 0..2 {
            if !self.filter(which == 0) {
                return;
            }
            for (i, &mic) in block.iter().enumerate() {
                let d = f32::from(mic) / 32768.0;
                let y = self.time[n + i] * inv_m;
                if which == 0 {
                    self.e_bg[i] = d - y;
                    bg_energy += (d - y) * (d - y);
                    mic_energy += d * d;
                } else {
                    self.e_fg[i] = d - y;
                    fg_energy += (d - y) * (d - y);
                    echo_energy += y * y;
                }
            }
        }

        const SMOOTH: f32 = 0.7;
        self.s_bg = SMOOTH * self.s_bg + (1.0 - SMOOTH) * bg_energy;
        self.s_fg = SMOOTH * self.s_fg + (1.0 - SMOOTH) * fg_energy;
        self.s_mic = 0.9 * self.s_mic + 0.1 * mic_energy;
        self.s_mic_fast = SMOOTH * self.s_mic_fast + (1.0 - SMOOTH) * mic_energy;

        // Step control. Until the filter has converged once, full steps. After
        // that the step shrinks where the output holds more than the expected
        // residual echo: the near end talks, and must not be learned. An output
        // that stays bad for long means the echo path changed: start over.
        let far_active = far_energy > n as f32 * 1e-8;
        let mu = if self.adapted {
            let expected = self.leak * echo_energy;
            MU * (expected / (fg_energy + 1e-12)).clamp(0.05, 1.0)
        } else {
            MU
        };
        if far_active {
            if self.s_fg < 0.1 * self.s_mic_fast {
                self.adapted = true;
                self.bad_blocks = 0;
            } else if self.s_fg > 0.5 * self.s_mic_fast {
                self.bad_blocks += 1;
                if self.bad_blocks > RESTART_BLOCKS {
                    self.adapted = false;
                    self.bad_blocks = 0;
                }
            }
        }

        // Adapt the background filter: W += mu X* E / (sum |X|^2 + delta).
        self.time[..n].fill(0.0);
        self.time[n..].copy_from_slice(&self.e_bg);
        if self.fwd.process_with_scratch(&mut self.time, &mut self.spec, &mut self.scratch).is_err() {
            return;
        }
        let constrained = self.constrain_next;
        self.constrain_next = if constrained + 1 >= PARTITIONS { 1 } else { constrained + 1 };
        for p in 0..PARTITIONS {
            let xs = ((self.head + p) % PARTITIONS) * k;
            for b in 0..k {
                let step = mu / (self.x_pow[b] + delta);
                self.grad[b] = self.x_spec[xs + b].conj() * self.spec[b] * step;
            }
            if p == 0 || p == constrained {
                // Keep the partition's impulse response to its n taps.
                self.grad[0].im = 0.0;
                self.grad[k - 1].im = 0.0;
                if self.inv.process_with_scratch(&mut self.grad, &mut self.time, &mut self.scratch).is_err() {
                    continue;
                }
                for t in &mut self.time[..n] {
                    *t *= inv_m;
                }
                self.time[n..].fill(0.0);
                if self.fwd.process_with_scratch(&mut self.time, &mut self.grad, &mut self.scratch).is_err() {
                    continue;
                }
            }
            for (w, g) in self.w_bg[p * k..(p + 1) * k].iter_mut().zip(&self.grad) {
                *w += *g;
            }
        }

        // Foreground/background: keep the better filter for the output.
        if far_active {
            // The background must be clearly better, and have removed most of
            // the microphone's energy: with a near-end talker it cannot, so a
            // background that learned the talker never reaches the output.
            if self.s_bg < 0.6 * self.s_fg && self.s_bg < 0.25 * self.s_mic_fast {
                self.w_fg.copy_from_slice(&self.w_bg);
                self.s_fg = self.s_bg;
            } else if self.s_bg > 4.0 * self.s_fg + n as f32 * 1e-9 {
                self.w_bg.copy_from_slice(&self.w_fg);
                self.s_bg = self.s_fg;
            }
        }
        if !self.w_bg.iter().all(|w| w.re.is_finite() && w.im.is_finite()) {
            self.w_bg.copy_from_slice(&self.w_fg);
        }

        // Residual echo suppression.
        let echo_present = far_active && echo_energy > n as f32 * 1e-8;
        let mut target = 1.0;
        if echo_present {
            // Learn the residual-to-echo ratio where the output is plausibly
            // echo only (the filter removed 90% of the energy).
            if fg_energy < 0.1 * mic_energy {
                self.leak_err = 0.95 * self.leak_err + 0.05 * fg_energy;
                self.leak_echo = 0.95 * self.leak_echo + 0.05 * echo_energy;
                self.leak = (self.leak_err / self.leak_echo).clamp(1e-3, 1.0);
            }
            let residual = self.leak * echo_energy;
            target = (1.0 - 2.0 * residual / (fg_energy + 1e-12)).clamp(MIN_GAIN, 1.0);
        }
        // Fall fast, rise over a few blocks.
        let next = if target < self.gain { target } else { self.gain + 0.3 * (target - self.gain) };
        let mut out_energy = 0.0;
        for (i, s) in block.iter_mut().enumerate() {
            let g = self.gain + (next - self.gain) * (i + 1) as f32 / n as f32;
            let v = self.e_fg[i];
            out_energy += v * v;
            *s = (v * g * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        }
        self.s_out = 0.9 * self.s_out + 0.1 * out_energy;
        self.gain = next;
    }

    /// Y = sum_p W_p X_p, inverse transformed into `self.time` (unscaled).
    fn filter(&mut self, background: bool) -> bool {
        let k = self.k;
        self.spec.fill(Complex32::new(0.0, 0.0));
        let w = if background { &self.w_bg } else { &self.w_fg };
        for p in 0..PARTITIONS {
            let xs = ((self.head + p) % PARTITIONS) * k;
            for ((acc, wv), xv) in self.spec.iter_mut().zip(&w[p * k..(p + 1) * k]).zip(&self.x_spec[xs..xs + k]) {
                *acc += wv * xv;
            }
        }
        self.spec[0].im = 0.0;
        self.spec[k - 1].im = 0.0;
        self.inv.process_with_scratch(&mut self.spec, &mut self.time, &mut self.scratch).is_ok()
    }
}
