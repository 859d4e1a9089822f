//! `--media kurento`: each call on a pipeline of a Kurento Media Server.
//! (Being written: this stub refuses every call.)

use std::sync::Arc;
use std::time::Duration;

use super::{EventSink, MediaBackend, MediaCmd, MediaError, MediaEvent};
use crate::metrics::Metrics;

/// `--kms-uri` and the session settings.
#[derive(Debug, Clone)]
pub struct KurentoConfig {
    /// `ws://HOST:PORT/kurento` of each media server (at least one).
    pub uris: Vec<String>,
    /// How long any one request may take before the call it serves fails.
    pub request_timeout: Duration,
    /// How often each session is pinged.
    pub ping_interval: Duration,
}

impl Default for KurentoConfig {
    fn default() -> Self {
        KurentoConfig {
            uris: Vec::new(),
            request_timeout: Duration::from_secs(4),
            ping_interval: Duration::from_secs(2),
        }
    }
}

/// Builds the backend; it connects to every media server in the background.
pub fn backend(cfg: KurentoConfig, events: EventSink, metrics: Arc<Metrics>) -> Arc<dyn MediaBackend> {
    let _ = (cfg, metrics);
    Arc::new(Stub { events })
}

struct Stub {
    events: EventSink,
}

impl MediaBackend for Stub {
    fn submit(&self, cmd: MediaCmd) {
        if let MediaCmd::Start { call, .. } = cmd {
            let error = MediaError::Unreachable("the Kurento backend is not built yet".into());
            let _ = self.events.send(MediaEvent::Failed { call, error });
        }
    }
    fn shutdown(&self) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
