//! What tests and stats use to judge received media.

/// The dominant frequency of a mono signal, in Hz: the peak of a Goertzel
/// scan from 50 Hz to 8 kHz in 1 Hz steps, refined by a parabola.
pub fn dominant_frequency(samples: &[i16], sample_rate: u32) -> Option<f32> {
    if samples.len() < 256 {
        return None;
    }
    // Work on at most one second; it keeps the scan cheap and precise enough.
    let n = samples.len().min(sample_rate as usize);
    let x: Vec<f32> = samples[samples.len() - n..].iter().map(|&s| f32::from(s)).collect();
    let power = |f: f32| -> f32 {
        let w = std::f32::consts::TAU * f / sample_rate as f32;
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f32, 0.0f32);
        for &v in &x {
            let s0 = v + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        s1 * s1 + s2 * s2 - coeff * s1 * s2
    };
    // Coarse scan in 10 Hz steps, then 1 Hz around the peak.
    let coarse = (5..800).map(|k| k as f32 * 10.0).max_by(|a, b| power(*a).total_cmp(&power(*b)))?;
    let fine = ((coarse - 10.0) as i32..=(coarse + 10.0) as i32)
        .map(|f| f as f32)
        .max_by(|a, b| power(*a).total_cmp(&power(*b)))?;
    let (pl, pc, pr) = (power(fine - 1.0), power(fine), power(fine + 1.0));
    let denom = pl - 2.0 * pc + pr;
    let offset = if denom.abs() > f32::EPSILON { 0.5 * (pl - pr) / denom } else { 0.0 };
    Some(fine + offset.clamp(-0.5, 0.5))
}

/// Root mean square level of a signal, 0.0 to 1.0.
pub fn rms(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    ((sum / samples.len() as f64).sqrt() / f64::from(i16::MAX)) as f32
}

#[cfg(all(test, feature = "codecs"))]
mod tests {
    use super::*;
    use crate::audio::Tone;

    #[test]
    fn finds_a_tone() {
        let mut t = Tone::new(440.0, 0.5);
        let mut buf = vec![0i16; 48_000];
        t.fill(&mut buf);
        let f = dominant_frequency(&buf, 48_000).unwrap();
        assert!((f - 440.0).abs() < 2.0, "{f}");
    }
}
