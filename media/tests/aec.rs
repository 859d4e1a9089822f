//! The echo canceller on deterministic signals: a speech-like far end through a
//! simulated echo path (delay, attenuation, a decaying room response), with and
//! without a near-end talker (a 1 kHz tone).
#![cfg(feature = "codecs")]

use one2one_media::aec::{AecError, EchoCanceller};
use one2one_media::analysis::dominant_frequency;

const RATE: u32 = 48_000;
const SR: usize = RATE as usize;

/// Deterministic pseudo-random numbers in [-0.5, 0.5).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// Speech-like far end: noise through two low-pass stages (a speech-like
/// spectrum) plus a gliding voiced tone, under a syllable envelope (~4 Hz)
/// with pauses, peaking near -12 dBFS.
fn far_end(len: usize) -> Vec<i16> {
    let mut rng = Lcg(0x5eed);
    let (mut a, mut b) = (0.0f32, 0.0f32);
    (0..len)
        .map(|i| {
            let t = i as f32 / SR as f32;
            a += 0.35 * (rng.next() - a);
            b += 0.35 * (a - b);
            let syllable = (std::f32::consts::TAU * 3.7 * t).sin().max(0.0);
            let phrase = if (t % 2.3) < 1.9 { 1.0 } else { 0.15 };
            let pitch = 140.0 + 30.0 * (std::f32::consts::TAU * 0.5 * t).sin();
            let voiced = 0.15 * (std::f32::consts::TAU * pitch * t).sin();
            let v = (b * 3.0 + voiced) * syllable * phrase;
            (v * 32768.0 * 0.5).clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// The echo of `far` as the microphone hears it: `delay_ms` of delay, then a
/// decaying, sign-changing room response of ~8 ms, at `gain` overall.
fn echo_path(far: &[i16], delay_ms: usize, gain: f32) -> Vec<f32> {
    let delay = delay_ms * SR / 1000;
    let mut rng = Lcg(7);
    let ir: Vec<f32> = (0..384).map(|k| (-(k as f32) / 80.0).exp() * rng.next()).collect();
    let ir_norm: f32 = ir.iter().map(|h| h * h).sum::<f32>().sqrt();
    let ir: Vec<f32> = ir.iter().map(|h| h * gain / ir_norm).collect();
    (0..far.len())
        .map(|i| {
            let mut acc = 0.0;
            for (k, h) in ir.iter().enumerate() {
                if i >= delay + k {
                    acc += h * f32::from(far[i - delay - k]);
                }
            }
            acc
        })
        .collect()
}

fn tone(len: usize, start: usize, freq: f32, amp: f32) -> Vec<f32> {
    (0..len)
        .map(|i| if i < start { 0.0 } else { amp * (std::f32::consts::TAU * freq * i as f32 / SR as f32).sin() })
        .collect()
}

fn to_i16(x: &[f32]) -> Vec<i16> {
    x.iter().map(|v| v.round().clamp(-32768.0, 32767.0) as i16).collect()
}

fn energy(x: impl IntoIterator<Item = f32>) -> f64 {
    x.into_iter().map(|v| f64::from(v) * f64::from(v)).sum()
}

/// Goertzel power of `freq` in `x`.
fn goertzel(x: &[i16], freq: f32) -> f64 {
    let w = std::f64::consts::TAU * f64::from(freq) / SR as f64;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = f64::from(v) + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

/// Runs the canceller over whole signals, `frame` samples per call, render
/// before capture as a speaker callback and a microphone callback would.
fn run(aec: &mut EchoCanceller, far: &[i16], mic: &[i16], frame: usize) -> Vec<i16> {
    let mut out = mic.to_vec();
    for (f, o) in far.chunks(frame).zip(out.chunks_mut(frame)) {
        aec.render(f);
        aec.capture(o);
    }
    out
}

fn db(ratio: f64) -> f64 {
    10.0 * ratio.log10()
}

/// ERLE over the last second: echo energy in the microphone over the energy of
/// what is left of it in the output.
fn erle_last_second(echo: &[f32], out: &[i16]) -> f64 {
    let r = echo.len() - SR..echo.len();
    db(energy(echo[r.clone()].iter().copied()) / energy(out[r].iter().map(|&v| f32::from(v))).max(1.0))
}

#[test]
fn cancels_echo_without_near_end_talk() {
    let len = 5 * SR;
    let far = far_end(len);
    for (delay_ms, gain, frame) in [(30, 0.5, 480), (50, 0.3, 480), (80, 0.7, 960), (60, 0.2, 960)] {
        let echo = echo_path(&far, delay_ms, gain);
        let mic = to_i16(&echo);
        let mut aec = EchoCanceller::new(RATE).unwrap();
        let out = run(&mut aec, &far, &mic, frame);
        let erle = erle_last_second(&echo, &out);
        println!(
            "delay {delay_ms} ms, gain {gain}, frame {frame}: ERLE {erle:.1} dB, reported {:.1} dB",
            aec.erle_db()
        );
        assert!(erle >= 15.0, "ERLE {erle:.1} dB with delay {delay_ms} ms, gain {gain}, frame {frame}");
    }
}

#[test]
fn keeps_the_near_end_talker_in_double_talk() {
    let len = 6 * SR;
    let far = far_end(len);
    let echo = echo_path(&far, 50, 0.4);
    // The near end starts talking after 3 s, at about the echo's level.
    let echo_rms = (energy(echo.iter().copied()) / len as f64).sqrt() as f32;
    let near = tone(len, 3 * SR, 1000.0, echo_rms * 1.4);
    let mic: Vec<f32> = echo.iter().zip(&near).map(|(e, n)| e + n).collect();
    let mut aec = EchoCanceller::new(RATE).unwrap();
    let out = run(&mut aec, &far, &to_i16(&mic), 480);

    let last = len - SR..len;
    let near_i16 = to_i16(&near[last.clone()]);
    let kept = db(goertzel(&out[last.clone()], 1000.0) / goertzel(&near_i16, 1000.0));
    let f = dominant_frequency(&out[last.clone()], RATE).unwrap();
    // What is left of the echo: the output less the near end.
    let residual = energy(out[last.clone()].iter().zip(&near[last.clone()]).map(|(&o, n)| f32::from(o) - n));
    let erle = db(energy(echo[last].iter().copied()) / residual.max(1.0));
    println!("double talk: near end kept at {kept:.2} dB, dominant {f:.1} Hz, echo reduced {erle:.1} dB");
    assert!(kept.abs() <= 3.0, "near-end tone changed by {kept:.2} dB");
    assert!((f - 1000.0).abs() < 5.0, "dominant frequency {f}");
    assert!(erle >= 6.0, "echo reduced only {erle:.1} dB in double talk");
}

#[test]
fn near_end_alone_passes_unchanged() {
    let len = 2 * SR;
    let near = to_i16(&tone(len, 0, 1000.0, 5000.0));
    let mut aec = EchoCanceller::new(RATE).unwrap();
    // The speaker plays silence: nothing may change.
    let out = run(&mut aec, &vec![0; len], &near, 480);
    assert_eq!(out, near);
    // No render at all.
    let mut out = near.clone();
    for o in out.chunks_mut(480) {
        aec.capture(o);
    }
    assert_eq!(out, near);
}

#[test]
fn reconverges_after_delay_hint_and_handles_long_paths() {
    // 250 ms of acoustic delay is beyond the 200 ms tail; a hint brings it in.
    let len = 5 * SR;
    let far = far_end(len);
    let echo = echo_path(&far, 250, 0.4);
    let mut aec = EchoCanceller::new(RATE).unwrap();
    aec.set_delay_hint_ms(250);
    let out = run(&mut aec, &far, &to_i16(&echo), 480);
    let erle = erle_last_second(&echo, &out);
    println!("250 ms path with a hint: ERLE {erle:.1} dB");
    assert!(erle >= 15.0, "ERLE {erle:.1} dB");
}

#[test]
fn odd_lengths_and_rates_do_not_panic() {
    assert!(matches!(EchoCanceller::new(0), Err(AecError::UnsupportedSampleRate(0))));
    assert!(EchoCanceller::new(11_025).is_err());
    assert!(EchoCanceller::new(44_100).is_ok());
    assert!(EchoCanceller::new(96_000).is_err());
    for rate in [8_000, 16_000, 32_000, 48_000] {
        let mut aec = EchoCanceller::new(rate).unwrap();
        assert_eq!(aec.block_len(), rate as usize / 100);
        let far = far_end(SR);
        let mut mic = to_i16(&echo_path(&far, 40, 0.5));
        let mut pos = 0;
        for len in [0usize, 1, 479, 480, 481, 960, 1000, 7, 4800].iter().cycle() {
            if pos + len > far.len() {
                break;
            }
            aec.render(&far[pos..pos + len]);
            aec.capture(&mut mic[pos..pos + len]);
            pos += len;
        }
        aec.render(&[]);
        aec.render(&vec![i16::MAX; 10 * SR]);
        aec.capture(&mut vec![i16::MIN; 10 * SR]);
        aec.set_delay_hint_ms(u32::MAX);
        aec.set_delay_hint_ms(0);
        let mut block = vec![i16::MAX; aec.block_len()];
        aec.capture(&mut block);
        assert!(aec.erle_db().is_finite());
    }
}

#[test]
fn cpu_per_block() {
    // Prints the cost of one 10 ms block at 48 kHz; meaningful in release
    // (`cargo test --release -p one2one-media --test aec cpu_per_block -- --nocapture`).
    let len = 3 * SR;
    let far = far_end(len);
    let mut mic = to_i16(&echo_path(&far, 50, 0.5));
    let mut aec = EchoCanceller::new(RATE).unwrap();
    let start = std::time::Instant::now();
    for (f, o) in far.chunks(480).zip(mic.chunks_mut(480)) {
        aec.render(f);
        aec.capture(o);
    }
    let per_block = start.elapsed() / (len / 480) as u32;
    println!("echo canceller: {per_block:?} per 10 ms block at 48 kHz");
}
