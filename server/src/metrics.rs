//! Prometheus text exposition, by hand: a few atomics and one histogram.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the call-setup histogram, in seconds.
const SETUP_BUCKETS: [f64; 10] = [0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0];

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: AtomicU64,
    pub registered_users: AtomicU64,
    pub active_calls: AtomicU64,
    pub calls_established: AtomicU64,
    pub relayed_packets: AtomicU64,
    pub relayed_bytes: AtomicU64,
    pub rejected_messages: AtomicU64,
    setup_buckets: [AtomicU64; SETUP_BUCKETS.len()],
    setup_count: AtomicU64,
    setup_sum_micros: AtomicU64,
}

impl Metrics {
    pub fn observe_setup(&self, setup: Duration) {
        let secs = setup.as_secs_f64();
        for (bound, bucket) in SETUP_BUCKETS.iter().zip(&self.setup_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.setup_count.fetch_add(1, Relaxed);
        self.setup_sum_micros.fetch_add(setup.as_micros() as u64, Relaxed);
        self.calls_established.fetch_add(1, Relaxed);
    }

    /// Counts one relayed RTP packet of `bytes` payload+header bytes.
    #[inline]
    pub fn relayed(&self, bytes: usize) {
        self.relayed_packets.fetch_add(1, Relaxed);
        self.relayed_bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut s = String::with_capacity(2048);
        let mut gauge = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        gauge("one2one_connections", "Open signaling WebSockets.", "gauge", self.connections.load(Relaxed));
        gauge("one2one_registered_users", "Registered users.", "gauge", self.registered_users.load(Relaxed));
        gauge(
            "one2one_active_calls",
            "Calls ringing, connecting or in progress.",
            "gauge",
            self.active_calls.load(Relaxed),
        );
        gauge(
            "one2one_calls_established_total",
            "Calls whose media was set up.",
            "counter",
            self.calls_established.load(Relaxed),
        );
        gauge(
            "one2one_relayed_packets_total",
            "RTP packets forwarded between call legs.",
            "counter",
            self.relayed_packets.load(Relaxed),
        );
        gauge(
            "one2one_relayed_bytes_total",
            "RTP bytes forwarded between call legs.",
            "counter",
            self.relayed_bytes.load(Relaxed),
        );
        gauge(
            "one2one_rejected_messages_total",
            "Client messages refused as malformed, oversized or over the rate limit.",
            "counter",
            self.rejected_messages.load(Relaxed),
        );
        let name = "one2one_call_setup_seconds";
        let _ =
            writeln!(s, "# HELP {name} From the callee's accept to both SDP answers sent.\n# TYPE {name} histogram");
        for (bound, bucket) in SETUP_BUCKETS.iter().zip(&self.setup_buckets) {
            let _ = writeln!(s, "{name}_bucket{{le=\"{bound}\"}} {}", bucket.load(Relaxed));
        }
        let count = self.setup_count.load(Relaxed);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(s, "{name}_sum {}", self.setup_sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(s, "{name}_count {count}");
        s
    }
}
