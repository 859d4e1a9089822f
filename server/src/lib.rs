//! one2one-server: web client over HTTPS, the `/one2one` signaling
//! WebSocket, and each call's media relayed back to back.
//!
//! Layout (see ARCHITECTURE.md at the repository root):
//! - [`signaling`]: the pure registry and call state machine;
//! - [`hub`]: the one task that drives it;
//! - [`ws`]: WebSocket frames in and out;
//! - [`media`]: the media boundary and the embedded WebRTC relay;
//! - [`http`]: routes, static files, health and metrics;
//! - [`tls`]: certificates and the TLS listener;
//! - [`kms`]: the KMS JSON-RPC endpoint of `--kms-listen`.

pub mod checks;
pub mod http;
pub mod hub;
pub mod kms;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod signaling;
pub mod tls;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::hub::HubHandle;
use crate::media::relay::{RelayBackend, RelayConfig};
use crate::media::{MediaBackend, MediaConfig};
use crate::metrics::Metrics;
use crate::signaling::Signaling;
use crate::ws::WsLimits;

/// What the HTTP side shares.
pub struct AppState {
    pub hub: HubHandle,
    pub metrics: Arc<Metrics>,
    pub limits: WsLimits,
    /// `{"iceServers":[...]}` for the web client.
    pub client_config: String,
    /// How many signaling sockets are open; shutdown waits for it to reach 0.
    pub open_sockets: tokio::sync::watch::Sender<usize>,
}

/// Everything `run` needs; `main` fills it from the command line.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub signaling: signaling::Config,
    pub limits: WsLimits,
    /// Which backend carries the signaling's calls (`--media`).
    pub media: MediaConfig,
    /// The embedded relay's settings: for `--media embedded` and for the
    /// endpoints of `--kms-listen`.
    pub relay: RelayConfig,
    /// Serve the KMS JSON-RPC protocol on `ws://ADDR/kurento` (`--kms-listen`).
    pub kms_listen: Option<SocketAddr>,
    /// ICE servers handed to web clients (and used by the relay).
    pub ice_servers: Vec<IceServer>,
    /// Serve this folder instead of the built-in web client.
    pub web_root: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub hub: HubHandle,
    pub metrics: Arc<Metrics>,
    /// The `--kms-listen` endpoint's bound address.
    pub kms_addr: Option<SocketAddr>,
    kms: Option<kms::KmsEndpoint>,
    task: tokio::task::JoinHandle<()>,
    sockets: tokio::sync::watch::Receiver<usize>,
    /// The TLS configuration new connections get (`None` for plain HTTP).
    tls: Option<tokio::sync::watch::Sender<Arc<rustls::ServerConfig>>>,
}

impl Server {
    /// New connections use `config` from now on; open ones keep theirs.
    /// `false` when the server speaks plain HTTP.
    pub fn reload_tls(&self, config: Arc<rustls::ServerConfig>) -> bool {
        match &self.tls {
            Some(tx) => {
                tx.send_replace(config);
                true
            }
            None => false,
        }
    }

    /// Tells every user, releases every call, closes every socket; returns
    /// once every socket has sent its last frames (at most 3 s), so that an
    /// exiting process never resets a connection with them unsent.
    pub async fn shutdown(mut self) {
        self.hub.shutdown().await;
        if let Some(k) = self.kms.take() {
            k.shutdown().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), self.sockets.wait_for(|n| *n == 0)).await;
        self.task.abort();
    }
}

/// How the listener speaks.
pub enum Transport {
    Http,
    Tls(Arc<rustls::ServerConfig>),
}

/// Binds nothing itself: serves on `listener` until [`Server::shutdown`].
pub async fn start(listener: TcpListener, transport: Transport, config: ServerConfig) -> anyhow::Result<Server> {
    let addr = listener.local_addr().context("listener address")?;
    let metrics = Arc::new(Metrics::default());
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut relay_cfg = config.relay.clone();
    relay_cfg.ice_servers = config.ice_servers.clone();
    // One relay, one port pool: the embedded backend's legs and those of
    // `--kms-listen` never pick the same port.
    let relay = media::relay::Relay::new(relay_cfg, metrics.clone());
    let kms = match config.kms_listen {
        Some(at) => {
            let listener = TcpListener::bind(at).await.with_context(|| format!("--kms-listen {at}"))?;
            Some(kms::serve(listener, kms::KmsConfig::default(), relay.clone(), metrics.clone()).await?)
        }
        None => None,
    };
    let kms_addr = kms.as_ref().map(|k| k.addr);
    let backend: Arc<dyn MediaBackend> = match &config.media {
        MediaConfig::Embedded => Arc::new(RelayBackend::on(relay, events_tx)),
        MediaConfig::Kurento(k) => media::kurento::backend(k.clone(), events_tx, metrics.clone()),
        MediaConfig::Custom(make) => make(events_tx, metrics.clone()),
    };
    let hub = hub::spawn(Signaling::new(config.signaling.clone()), backend, metrics.clone());
    hub::spawn_media_pump(events_rx, hub.clone());
    let client_config = serde_json::json!({ "iceServers": config.ice_servers }).to_string();
    let open_sockets = tokio::sync::watch::Sender::new(0usize);
    let sockets = open_sockets.subscribe();
    let state = Arc::new(AppState {
        hub: hub.clone(),
        metrics: metrics.clone(),
        limits: config.limits.clone(),
        client_config,
        open_sockets,
    });
    // Connect info: the peer's address for the socket's log lines.
    let router = http::router(state, config.web_root.as_deref()).into_make_service_with_connect_info::<ws::PeerAddr>();
    let mut tls_tx = None;
    let task = match transport {
        Transport::Http => tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        }),
        Transport::Tls(tls) => {
            let (tx, rx) = tokio::sync::watch::channel(tls);
            tls_tx = Some(tx);
            let listener = tls::TlsListener::reloadable(listener, rx);
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "HTTPS server stopped");
                }
            })
        }
    };
    Ok(Server { addr, hub, metrics, kms_addr, kms, task, sockets, tls: tls_tx })
}
