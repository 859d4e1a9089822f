//! What the client's video costs: VGA test pattern, VP8 encode + decode, as
//! the softphone runs them (realtime, cpu-used 8, one thread, 1 Mbit/s).
//!
//!   cargo run --release -p one2one-media --example vp8_cost [FRAMES] [noise]
//!
//! Prints CPU milliseconds per frame (this thread's user+system time, read
//! from /proc) and the share of one core at 30 fps.

use one2one_media::pattern::TestPattern;
use one2one_media::vp8;

fn thread_cpu_ms() -> f64 {
    // After the command name: state, ppid, ..., utime (12th), stime (13th), in clock ticks (100 Hz).
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) as f64 * 10.0
}

fn main() {
    let frames: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(900);
    let (w, h) = (640, 480);
    let mut pattern = TestPattern::new(w, h);
    // `noise` adds ±16 of per-pixel noise to the luma: camera-like content
    // that makes the encoder reach its target bitrate.
    let noise = std::env::args().nth(2).as_deref() == Some("noise");
    let mut seed = 0x9E37_79B9u32;
    let input: Vec<_> = (0..frames)
        .map(|i| {
            let mut f = pattern.frame(i, 1_700_000_000_000 + u64::from(i) * 33).clone();
            if noise {
                for p in &mut f.data[..(w * h) as usize] {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    *p = (i32::from(*p) + (seed % 33) as i32 - 16).clamp(0, 255) as u8;
                }
            }
            f
        })
        .collect();
    let mut enc = vp8::Encoder::new(&vp8::EncoderConfig { width: w, height: h, ..Default::default() }).unwrap();
    let mut dec = vp8::Decoder::new().unwrap();
    // Each phase runs over all frames, so the 10 ms resolution of the
    // kernel's CPU accounting does not matter.
    let t0 = thread_cpu_ms();
    let encoded: Vec<Vec<u8>> =
        input.iter().enumerate().flat_map(|(i, f)| enc.encode(f, i == 0).unwrap()).map(|e| e.data).collect();
    let t1 = thread_cpu_ms();
    let mut decoded = 0;
    for e in &encoded {
        decoded += dec.decode(e).unwrap().len();
    }
    let t2 = thread_cpu_ms();
    let n = f64::from(frames);
    let (enc_ms, dec_ms) = ((t1 - t0) / n, (t2 - t1) / n);
    let bytes: usize = encoded.iter().map(Vec::len).sum();
    let content = if noise { "test pattern + noise" } else { "test pattern (moving bars)" };
    println!("{frames} frames of {w}x{h} {content}, VP8 realtime cpu-used 8, 1000 kbit/s target");
    println!("  encode    {enc_ms:.2} ms/frame");
    println!("  decode    {dec_ms:.2} ms/frame ({decoded} frames)");
    println!("  encode+decode at 30 fps: {:.1} % of one core", (enc_ms + dec_ms) * 30.0 / 10.0);
    println!("  bitrate produced: {:.0} kbit/s", bytes as f64 * 8.0 / (n / 30.0) / 1000.0);
}
