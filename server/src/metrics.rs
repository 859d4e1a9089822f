//! Prometheus text exposition, by hand: a few atomics and one histogram.
//!
//! The signaling core counts call outcomes and refusals in plain numbers
//! ([`Counters`]); the hub copies them here with [`Metrics::store_core`]
//! after each batch of outputs.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::signaling::{CallRefusal, Counters, EndReason, RegistrationRefusal};

/// Upper bounds of the call-setup histogram (accept to media flowing both
/// ways), in seconds.
pub const SETUP_BUCKETS: [f64; 12] = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0];

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
    calls_started: AtomicU64,
    calls_ended: [AtomicU64; EndReason::ALL.len()],
    calls_refused: [AtomicU64; CallRefusal::ALL.len()],
    registrations_refused: [AtomicU64; RegistrationRefusal::ALL.len()],
    /// Sockets the server closed for a limit, by [`CLOSE_REASONS`].
    pub ws_closed: [AtomicU64; CLOSE_REASONS.len()],
    /// Parts that bring their own series (the Kurento backend, the KMS
    /// endpoint), rendered after the core's.
    sources: std::sync::Mutex<Vec<std::sync::Arc<dyn MetricsSource>>>,
}

/// A part of the server with its own series and a say in `/healthz`.
pub trait MetricsSource: Send + Sync + std::fmt::Debug {
    /// Appends Prometheus text (with `# HELP` and `# TYPE`).
    fn render(&self, out: &mut String);
    /// `Some(reason)` when this part cannot serve calls now: `/healthz`
    /// then answers 503 `degraded: reason`.
    fn degraded(&self) -> Option<String> {
        None
    }
}

impl Metrics {
    pub fn add_source(&self, source: std::sync::Arc<dyn MetricsSource>) {
        self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(source);
    }

    fn sources(&self) -> Vec<std::sync::Arc<dyn MetricsSource>> {
        self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Why the server is degraded, if a part says so.
    pub fn degraded(&self) -> Option<String> {
        self.sources().iter().find_map(|s| s.degraded())
    }
}

/// Why the server closed a signaling socket (`one2one_ws_closed_total`).
pub const CLOSE_REASONS: [&str; 4] = ["rate_limit", "too_big", "idle_timeout", "too_slow"];

impl Metrics {
    /// Counts a close the server made for `reason` (one of
    /// [`CLOSE_REASONS`]; others are not counted).
    pub fn count_close(&self, reason: &str) {
        if let Some(i) = CLOSE_REASONS.iter().position(|r| *r == reason) {
            self.ws_closed[i].fetch_add(1, Relaxed);
        }
    }
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

    /// Copies the signaling core's counters (they only grow, so a plain
    /// store keeps every series monotonic).
    pub fn store_core(&self, c: &Counters) {
        self.calls_started.store(c.calls_started, Relaxed);
        for (to, from) in [
            (&self.calls_ended[..], &c.calls_ended[..]),
            (&self.calls_refused[..], &c.calls_refused[..]),
            (&self.registrations_refused[..], &c.registrations_refused[..]),
        ] {
            for (a, v) in to.iter().zip(from) {
                a.store(*v, Relaxed);
            }
        }
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
            "Calls whose media flowed both ways.",
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
        gauge(
            "one2one_calls_started_total",
            "Calls that rang a callee; each ends once, in one2one_calls_ended_total.",
            "counter",
            self.calls_started.load(Relaxed),
        );
        let mut labelled = |name: &str, help: &str, series: &mut dyn Iterator<Item = (&'static str, u64)>| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
            for (reason, v) in series {
                let _ = writeln!(s, "{name}{{reason=\"{reason}\"}} {v}");
            }
        };
        labelled(
            "one2one_ws_closed_total",
            "Signaling sockets the server closed for a limit, by reason.",
            &mut CLOSE_REASONS.iter().zip(&self.ws_closed).map(|(r, v)| (*r, v.load(Relaxed))),
        );
        labelled(
            "one2one_calls_ended_total",
            "Calls that rang, by how they ended.",
            &mut EndReason::ALL.iter().zip(&self.calls_ended).map(|(r, v)| (r.as_str(), v.load(Relaxed))),
        );
        labelled(
            "one2one_calls_refused_total",
            "Calls refused before anyone was rung, by reason.",
            &mut CallRefusal::ALL.iter().zip(&self.calls_refused).map(|(r, v)| (r.as_str(), v.load(Relaxed))),
        );
        labelled(
            "one2one_registrations_refused_total",
            "Refused registrations, by reason.",
            &mut RegistrationRefusal::ALL
                .iter()
                .zip(&self.registrations_refused)
                .map(|(r, v)| (r.as_str(), v.load(Relaxed))),
        );
        let name = "one2one_call_setup_seconds";
        let _ =
            writeln!(s, "# HELP {name} From the callee's accept to media flowing both ways.\n# TYPE {name} histogram");
        for (bound, bucket) in SETUP_BUCKETS.iter().zip(&self.setup_buckets) {
            let _ = writeln!(s, "{name}_bucket{{le=\"{bound}\"}} {}", bucket.load(Relaxed));
        }
        let count = self.setup_count.load(Relaxed);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(s, "{name}_sum {}", self.setup_sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(s, "{name}_count {count}");
        for source in self.sources() {
            source.render(&mut s);
        }
        s
    }
}
