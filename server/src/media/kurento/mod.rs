//! `--media kurento`: each call on a pipeline of a Kurento Media Server,
//! built exactly as the tutorial's `CallMediaPipeline` builds it.
//!
//! - [`rpc`]: JSON-RPC frames in and out (pure);
//! - [`call`]: one call's steps, from `create` MediaPipeline to `release`
//!   (pure);
//! - [`session`]: one server's session (handshake, ids, deadlines, pings,
//!   reconnection, `connect {sessionId}`) and the calls on it (pure);
//! - [`driver`]: the task that does one server's IO;
//! - this module: the backend that places each new call on the reachable
//!   server with the fewest calls, and its `/metrics` series.
//!
//! Whatever goes wrong (no server, no answer in time, an error, a malformed
//! frame, a server that dies or restarts) ends in [`MediaEvent::Failed`]
//! for every call it touches, within the request timeout or the reconnect
//! grace, so the call core can tell the users.

pub mod call;
pub mod driver;
pub mod rpc;
pub mod session;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{CallId, EventSink, MediaBackend, MediaCmd, MediaError, MediaEvent};
use crate::metrics::{Metrics, MetricsSource};
use driver::WorkerCmd;
use session::{KmsCore, Timing};

/// What users are told when no media server can take their call.
pub const NONE_REACHABLE: &str = "no Kurento Media Server answers";

/// `--kms-uri` and the session settings.
#[derive(Debug, Clone)]
pub struct KurentoConfig {
    /// `ws://HOST:PORT/kurento` of each media server (at least one).
    pub uris: Vec<String>,
    /// How long any one request may take before the call it serves fails.
    pub request_timeout: Duration,
    /// How often each session is pinged.
    pub ping_interval: Duration,
    /// How long a broken connection may take to come back (and resume its
    /// session) before the calls on it are lost.
    pub reconnect_grace: Duration,
    /// The first wait before reconnecting; it doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for KurentoConfig {
    fn default() -> Self {
        KurentoConfig {
            uris: Vec::new(),
            request_timeout: Duration::from_secs(4),
            ping_interval: Duration::from_secs(2),
            reconnect_grace: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// One server's numbers, shared by its task, the backend and `/metrics`.
#[derive(Debug, Default)]
pub struct KmsStats {
    pub up: AtomicBool,
    pub active_calls: AtomicU64,
    pub request_errors: AtomicU64,
}

/// The server for a new call: the reachable one with the fewest active
/// calls (the first of equals). `None` when none is reachable.
pub fn pick(servers: &[(bool, u64)]) -> Option<usize> {
    servers.iter().enumerate().filter(|(_, (up, _))| *up).min_by_key(|(i, (_, calls))| (*calls, *i)).map(|(i, _)| i)
}

struct Kms {
    uri: String,
    stats: Arc<KmsStats>,
    tx: mpsc::UnboundedSender<WorkerCmd>,
}

struct KurentoBackend {
    servers: Vec<Kms>,
    /// Which server each live call is on.
    calls: Mutex<HashMap<CallId, usize>>,
    events: EventSink,
}

/// Builds the backend; it connects to every media server in the background.
pub fn backend(cfg: KurentoConfig, events: EventSink, metrics: Arc<Metrics>) -> Arc<dyn MediaBackend> {
    let timing = Timing {
        request_timeout: cfg.request_timeout,
        ping_interval: cfg.ping_interval,
        reconnect_grace: cfg.reconnect_grace,
        backoff_min: cfg.backoff_min,
        backoff_max: cfg.backoff_max.max(cfg.backoff_min),
    };
    let servers: Vec<Kms> = cfg
        .uris
        .iter()
        .map(|uri| {
            let stats = Arc::new(KmsStats::default());
            let (tx, rx) = mpsc::unbounded_channel();
            let core = KmsCore::new(uri.clone(), timing.clone());
            tokio::spawn(driver::run(uri.clone(), core, cfg.request_timeout, rx, events.clone(), stats.clone()));
            Kms { uri: uri.clone(), stats, tx }
        })
        .collect();
    metrics.add_source(Arc::new(KurentoMetrics {
        servers: servers.iter().map(|k| (k.uri.clone(), k.stats.clone())).collect(),
    }));
    Arc::new(KurentoBackend { servers, calls: Mutex::default(), events })
}

impl KurentoBackend {
    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<CallId, usize>> {
        self.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl MediaBackend for KurentoBackend {
    fn submit(&self, cmd: MediaCmd) {
        let target = match &cmd {
            MediaCmd::Start { call, .. } => {
                let mut calls = self.calls();
                let status: Vec<(bool, u64)> = self
                    .servers
                    .iter()
                    .map(|k| (k.stats.up.load(Relaxed), k.stats.active_calls.load(Relaxed)))
                    .collect();
                match pick(&status) {
                    Some(i) if !calls.contains_key(call) => {
                        calls.insert(*call, i);
                        self.servers[i].stats.active_calls.fetch_add(1, Relaxed);
                        tracing::info!(%call, kms = %self.servers[i].uri, "call placed on a media server");
                        Some(i)
                    }
                    _ => {
                        tracing::warn!(%call, "no media server reachable for a call");
                        let error = MediaError::Unreachable(NONE_REACHABLE.into());
                        let _ = self.events.send(MediaEvent::Failed { call: *call, error });
                        None
                    }
                }
            }
            MediaCmd::AddCandidate { call, .. } => self.calls().get(call).copied(),
            MediaCmd::Release { call } => {
                let i = self.calls().remove(call);
                if let Some(i) = i {
                    self.servers[i].stats.active_calls.fetch_sub(1, Relaxed);
                }
                i
            }
        };
        if let Some(i) = target {
            let _ = self.servers[i].tx.send(WorkerCmd::Media(cmd));
        }
    }

    fn shutdown(&self) -> futures_util::future::BoxFuture<'static, ()> {
        let waits: Vec<oneshot::Receiver<()>> = self
            .servers
            .iter()
            .filter_map(|k| {
                let (tx, rx) = oneshot::channel();
                k.tx.send(WorkerCmd::Shutdown(tx)).ok().map(|()| rx)
            })
            .collect();
        Box::pin(async move {
            let all = futures_util::future::join_all(waits);
            let _ = tokio::time::timeout(Duration::from_secs(3), all).await;
        })
    }
}

/// `one2one_kms_*{uri}` and `/healthz`'s say.
#[derive(Debug)]
struct KurentoMetrics {
    servers: Vec<(String, Arc<KmsStats>)>,
}

/// A series: name, help, type and how to read it.
type Series = (&'static str, &'static str, &'static str, fn(&KmsStats) -> u64);

fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl MetricsSource for KurentoMetrics {
    fn render(&self, out: &mut String) {
        let series: [Series; 3] = [
            ("one2one_kms_up", "Whether the Kurento Media Server's session is ready (1) or not (0).", "gauge", |s| {
                u64::from(s.up.load(Relaxed))
            }),
            ("one2one_kms_active_calls", "Calls placed on the Kurento Media Server and not released.", "gauge", |s| {
                s.active_calls.load(Relaxed)
            }),
            (
                "one2one_kms_request_errors_total",
                "Requests to the Kurento Media Server that failed: error answers, malformed frames, timeouts.",
                "counter",
                |s| s.request_errors.load(Relaxed),
            ),
        ];
        for (name, help, kind, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (uri, stats) in &self.servers {
                let _ = writeln!(out, "{name}{{uri=\"{}\"}} {}", label(uri), value(stats));
            }
        }
    }

    fn degraded(&self) -> Option<String> {
        if self.servers.iter().any(|(_, s)| s.up.load(Relaxed)) {
            None
        } else {
            Some("no Kurento Media Server reachable".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_calls_go_to_the_reachable_server_with_fewest_calls() {
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&[(false, 0), (false, 0)]), None);
        assert_eq!(pick(&[(false, 0), (true, 5)]), Some(1));
        assert_eq!(pick(&[(true, 3), (true, 2), (true, 2)]), Some(1));
        assert_eq!(pick(&[(true, 0), (true, 0)]), Some(0));
    }

    #[test]
    fn metrics_name_each_server() {
        let up = Arc::new(KmsStats::default());
        up.up.store(true, Relaxed);
        up.active_calls.store(2, Relaxed);
        let m = KurentoMetrics {
            servers: vec![("ws://a:1/kurento".into(), up.clone()), ("ws://b\"/k".into(), Arc::default())],
        };
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains("one2one_kms_up{uri=\"ws://a:1/kurento\"} 1\n"), "{s}");
        assert!(s.contains("one2one_kms_up{uri=\"ws://b\\\"/k\"} 0\n"), "{s}");
        assert!(s.contains("one2one_kms_active_calls{uri=\"ws://a:1/kurento\"} 2\n"), "{s}");
        assert!(s.contains("# TYPE one2one_kms_request_errors_total counter\n"), "{s}");
        assert_eq!(m.degraded(), None);
        up.up.store(false, Relaxed);
        assert_eq!(m.degraded().as_deref(), Some("no Kurento Media Server reachable"));
    }
}
