//! Per-stream counters shared by a sender and the receiver at the other end
//! of the call (both live in this process, so one clock serves both).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// The measured window, in [`crate::media::now_ns`] units; packets sent
/// inside it count for loss and latency.
#[derive(Debug)]
pub struct Window {
    start: AtomicU64,
    end: AtomicU64,
}

impl Default for Window {
    fn default() -> Self {
        Window { start: AtomicU64::new(u64::MAX), end: AtomicU64::new(u64::MAX) }
    }
}

impl Window {
    pub fn open(&self, at_ns: u64) {
        self.start.store(at_ns, Ordering::Release);
    }
    pub fn close(&self, at_ns: u64) {
        self.end.store(at_ns, Ordering::Release);
    }
    pub fn contains(&self, t_ns: u64) -> bool {
        t_ns >= self.start.load(Ordering::Acquire) && t_ns < self.end.load(Ordering::Acquire)
    }
}

/// What a sender sent inside the window.
#[derive(Debug, Default)]
pub struct Sent {
    pub packets: AtomicU64,
}

/// What a receiver got.
#[derive(Debug, Default)]
pub struct Recv {
    pub first: Option<Instant>,
    /// Every packet, in or out of the window.
    pub total: u64,
    /// Distinct packets sent inside the window.
    pub in_window: u64,
    /// Send-to-receive time of those, in microseconds.
    pub latency_us: Vec<u32>,
    seen: Vec<u64>,
}

impl Recv {
    /// Records packet `index` sent at `sent_ns`, received now.
    pub fn record(&mut self, index: u32, sent_ns: u64, now_ns: u64, window: &Window) {
        self.total += 1;
        if self.first.is_none() {
            self.first = Some(Instant::now());
        }
        if !window.contains(sent_ns) {
            return;
        }
        let (word, bit) = (index as usize / 64, index % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            return; // a retransmission of a packet that was not lost
        }
        self.seen[word] |= 1 << bit;
        self.in_window += 1;
        let us = now_ns.saturating_sub(sent_ns) / 1000;
        self.latency_us.push(us.min(u64::from(u32::MAX)) as u32);
    }
}

/// One direction of one kind of media: the sender's count and the
/// receiver's record.
#[derive(Debug, Default)]
pub struct Stream {
    pub sent: Sent,
    pub recv: Mutex<Recv>,
}

impl Stream {
    pub fn recv(&self) -> MutexGuard<'_, Recv> {
        self.recv.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The value at quantile `q` (0..=1) of sorted values.
pub fn quantile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_packets_outside_the_window_do_not_count() {
        let w = Window::default();
        w.open(1000);
        let mut r = Recv::default();
        r.record(0, 500, 2000, &w);
        r.record(1, 1500, 2500, &w);
        r.record(1, 1500, 9000, &w);
        r.record(200, 1600, 4600, &w);
        w.close(1700);
        r.record(201, 1800, 5000, &w);
        assert_eq!(r.total, 5);
        assert_eq!(r.in_window, 2);
        assert_eq!(r.latency_us, vec![1, 3]);
    }

    #[test]
    fn quantiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(51));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
