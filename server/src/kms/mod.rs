//! `--kms-listen ADDR`: the KMS JSON-RPC protocol on `ws://ADDR/kurento`,
//! so that kurento-client apps (the tutorial's Node server) use
//! one2one-server as their media server, changing nothing but `--ws_uri`.
//!
//! - [`core`]: the protocol, sans IO (sessions, MediaPipelines,
//!   WebRtcEndpoints, replies, events, limits, the reconnect grace);
//! - [`rpc`]: KMS's reply, error and event shapes;
//! - [`driver`]: the listener, one reader and one writer per socket, and
//!   the task that owns the core and the relay legs.
//!
//! Each WebRtcEndpoint is one leg of the embedded relay
//! ([`crate::media::relay::RelayLeg`]): `processOffer` builds it and
//! answers, `connect(A→B)` forwards A's media to B.

pub mod core;
pub mod driver;
pub mod rpc;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub use self::core::{CoreConfig, Stats};
pub use self::driver::{KmsEndpoint, serve};
use crate::metrics::MetricsSource;

/// The endpoint's settings.
#[derive(Debug, Clone)]
pub struct KmsConfig {
    pub core: CoreConfig,
    /// Sockets open at once; more are closed at accept.
    pub max_connections: usize,
    /// A socket that sends nothing (kurento-client pings every 60 s) for
    /// this long is closed.
    pub idle_timeout: Duration,
}

impl Default for KmsConfig {
    fn default() -> Self {
        KmsConfig { core: CoreConfig::default(), max_connections: 512, idle_timeout: Duration::from_secs(180) }
    }
}

/// The endpoint's series on `/metrics`.
#[derive(Debug, Default)]
pub struct KmsMetrics {
    connections: AtomicU64,
    sessions: AtomicU64,
    pipelines: AtomicU64,
    endpoints: AtomicU64,
    errors: AtomicU64,
    legs: AtomicU64,
}

impl KmsMetrics {
    pub fn store(&self, s: &Stats) {
        self.connections.store(s.connections, Relaxed);
        self.sessions.store(s.sessions, Relaxed);
        self.pipelines.store(s.pipelines, Relaxed);
        self.endpoints.store(s.endpoints, Relaxed);
        self.errors.store(s.errors, Relaxed);
    }

    /// Relay legs the driver holds (built, being built, or failed and not
    /// yet forgotten).
    pub fn store_legs(&self, n: usize) {
        self.legs.store(n as u64, Relaxed);
    }
}

impl MetricsSource for KmsMetrics {
    fn render(&self, out: &mut String) {
        for (name, help, kind, v) in [
            ("one2one_kms_connections", "Open --kms-listen WebSockets.", "gauge", &self.connections),
            (
                "one2one_kms_sessions",
                "KMS sessions (kurento-client connections and their reconnect grace).",
                "gauge",
                &self.sessions,
            ),
            ("one2one_kms_pipelines", "MediaPipelines of --kms-listen clients.", "gauge", &self.pipelines),
            ("one2one_kms_endpoints", "WebRtcEndpoints of --kms-listen clients.", "gauge", &self.endpoints),
            ("one2one_kms_legs", "Relay legs held for WebRtcEndpoints of --kms-listen clients.", "gauge", &self.legs),
            ("one2one_kms_errors_total", "JSON-RPC error replies of --kms-listen.", "counter", &self.errors),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", v.load(Relaxed));
        }
    }
}
