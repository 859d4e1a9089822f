//! The IO around [`Core`]: a TCP listener for `ws://ADDR/kurento`, one
//! reader and one writer task per socket, one task per relay leg, and the
//! one task that owns the core, the writers and the legs. Nothing here
//! decides anything about the protocol.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use shared_proto::IceCandidate;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;

use super::core::{ConnId, Core, EpKey, Input, MediaOp, Output};
use super::{KmsConfig, KmsMetrics};
use crate::media::relay::{self, LegError, LegEvent, LegLink, LegSpec, Relay};
use crate::metrics::Metrics;

/// A running `--kms-listen` endpoint.
pub struct KmsEndpoint {
    pub addr: SocketAddr,
    control: mpsc::UnboundedSender<oneshot::Sender<()>>,
    accept: tokio::task::JoinHandle<()>,
    core: tokio::task::JoinHandle<()>,
}

impl KmsEndpoint {
    /// Releases every object and leg, closes every socket with 1001, and
    /// returns once the legs are freed (at most 5 s).
    pub async fn shutdown(self) {
        self.accept.abort();
        let (tx, rx) = oneshot::channel();
        if self.control.send(tx).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(6), rx).await;
        }
        self.core.abort();
    }
}

enum ConnMsg {
    Opened { conn: ConnId, writer: mpsc::Sender<WsOut> },
    Frame { conn: ConnId, data: Vec<u8> },
    Closed { conn: ConnId },
}

enum MediaMsg {
    Built { ep: EpKey, result: Result<(Arc<LegLink>, String), LegError> },
    Candidate { ep: EpKey, candidate: IceCandidate },
}

enum WsOut {
    Text(String),
    Close(u16, &'static str),
}

struct LegSlot {
    cmds: mpsc::UnboundedSender<IceCandidate>,
    link: Option<Arc<LegLink>>,
    task: tokio::task::JoinHandle<()>,
}

/// Serves the KMS protocol on `listener` until [`KmsEndpoint::shutdown`].
pub async fn serve(
    listener: TcpListener,
    cfg: KmsConfig,
    relay: Relay,
    metrics: Arc<Metrics>,
) -> std::io::Result<KmsEndpoint> {
    let addr = listener.local_addr()?;
    let stats = Arc::new(KmsMetrics::default());
    metrics.add_source(stats.clone());
    let (conn_tx, conn_rx) = mpsc::channel(1024);
    let (media_tx, media_rx) = mpsc::unbounded_channel();
    let (control, control_rx) = mpsc::unbounded_channel();
    let core = Core::new(cfg.core.clone(), Box::new(random_u128));
    let hard_limit = (cfg.core.max_frame_bytes * 4).max(64 * 1024);
    let core = tokio::spawn(run_core(core, relay, stats, conn_rx, media_tx, media_rx, control_rx));
    let accept = tokio::spawn(accept_loop(listener, conn_tx, cfg, hard_limit));
    tracing::info!(url = %format!("ws://{addr}/kurento"), "KMS endpoint listening");
    Ok(KmsEndpoint { addr, control, accept, core })
}

fn random_u128() -> u128 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No system randomness: ids stay unique from the clock and a counter.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return (t.as_nanos() << 32) ^ u128::from(N.fetch_add(1, Ordering::Relaxed));
    }
    u128::from_le_bytes(b)
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

async fn accept_loop(listener: TcpListener, tx: mpsc::Sender<ConnMsg>, cfg: KmsConfig, hard_limit: usize) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut next = 1u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of fds, mostly: wait a little instead of spinning.
                tracing::warn!(error = %e, "KMS endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= cfg.max_connections {
            tracing::warn!(%peer, max = cfg.max_connections, "KMS endpoint: too many connections, refused");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let conn = ConnId(next);
        next += 1;
        let (tx, open, idle) = (tx.clone(), open.clone(), cfg.idle_timeout);
        open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            connection(stream, peer, conn, tx, hard_limit, idle).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Only `/kurento` (query ignored) is upgraded; anything else is a 404.
#[allow(clippy::result_large_err)]
fn check_path(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() == "/kurento" {
        Ok(resp)
    } else {
        let mut r = ErrorResponse::new(Some("Not Found: the KMS endpoint is /kurento".into()));
        *r.status_mut() = StatusCode::NOT_FOUND;
        Err(r)
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    conn: ConnId,
    tx: mpsc::Sender<ConnMsg>,
    hard_limit: usize,
    idle: Duration,
) {
    let config = WebSocketConfig::default().max_message_size(Some(hard_limit)).max_frame_size(Some(hard_limit));
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(config));
    let ws = match tokio::time::timeout(Duration::from_secs(10), handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "KMS endpoint: handshake refused");
            return;
        }
        Err(_) => return,
    };
    tracing::info!(%peer, ?conn, "KMS client connected");
    let (mut sink, mut frames) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<WsOut>(1024);
    if tx.send(ConnMsg::Opened { conn, writer: out_tx }).await.is_err() {
        return;
    }
    let (closed_tx, mut closed_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            match m {
                WsOut::Text(t) => {
                    if sink.send(Message::Text(t.into())).await.is_err() {
                        break;
                    }
                }
                WsOut::Close(code, reason) => {
                    let frame = CloseFrame { code: code.into(), reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
            }
        }
        let _ = sink.close().await;
        let _ = closed_tx.send(());
    });
    let mut closing_deadline: Option<tokio::time::Instant> = None;
    loop {
        let wait = closing_deadline.unwrap_or_else(|| tokio::time::Instant::now() + idle);
        tokio::select! {
            frame = frames.next() => match frame {
                Some(Ok(Message::Text(t))) => {
                    if tx.send(ConnMsg::Frame { conn, data: t.as_bytes().to_vec() }).await.is_err() { break }
                }
                Some(Ok(Message::Binary(b))) => {
                    if tx.send(ConnMsg::Frame { conn, data: b.to_vec() }).await.is_err() { break }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(%peer, ?conn, error = %e, "KMS socket error");
                    break;
                }
            },
            // The writer sent its close frame: give the client 3 s to answer.
            _ = &mut closed_rx, if closing_deadline.is_none() => {
                closing_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3));
            }
            () = tokio::time::sleep_until(wait) => {
                if closing_deadline.is_none() {
                    tracing::info!(%peer, ?conn, "KMS client idle: closed");
                }
                break;
            }
        }
    }
    let _ = tx.send(ConnMsg::Closed { conn }).await;
    // The core drops the writer's queue on Closed; a writer stuck on a dead
    // socket is not waited for.
    if tokio::time::timeout(Duration::from_secs(2), writer).await.is_err() {
        tracing::debug!(?conn, "KMS writer did not finish");
    }
    tracing::info!(%peer, ?conn, "KMS client disconnected");
}

async fn run_core(
    mut core: Core,
    relay: Relay,
    stats: Arc<KmsMetrics>,
    mut conn_rx: mpsc::Receiver<ConnMsg>,
    media_tx: mpsc::UnboundedSender<MediaMsg>,
    mut media_rx: mpsc::UnboundedReceiver<MediaMsg>,
    mut control: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let mut io = Io { writers: HashMap::new(), legs: HashMap::new(), relay, media_tx };
    loop {
        let timeout = core.poll_timeout();
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            m = conn_rx.recv() => {
                let Some(m) = m else { break };
                let now = Instant::now();
                match m {
                    ConnMsg::Opened { conn, writer } => {
                        io.writers.insert(conn, writer);
                        core.handle(now, Input::Opened { conn });
                    }
                    ConnMsg::Frame { conn, data } => core.handle(now, Input::Frame { conn, data }),
                    ConnMsg::Closed { conn } => {
                        io.writers.remove(&conn);
                        core.handle(now, Input::Closed { conn });
                    }
                }
            }
            m = media_rx.recv() => {
                let Some(m) = m else { break };
                let now = Instant::now();
                match m {
                    MediaMsg::Built { ep, result } => {
                        let result = match result {
                            Ok((link, sdp)) => {
                                if let Some(slot) = io.legs.get_mut(&ep) {
                                    slot.link = Some(link);
                                }
                                Ok(sdp)
                            }
                            Err(e) => Err(e),
                        };
                        core.handle(now, Input::Answered { ep, result });
                    }
                    MediaMsg::Candidate { ep, candidate } => {
                        core.handle(now, Input::LocalCandidate { ep, candidate, unix_millis: unix_millis() });
                    }
                }
            }
            () = sleep => core.handle_timeout(Instant::now()),
            done = control.recv() => {
                core.shutdown();
                io.flush(&mut core);
                stats.store(&core.stats());
                let tasks: Vec<_> = io.legs.drain().map(|(_, s)| s.task).collect();
                let _ = tokio::time::timeout(Duration::from_secs(5), futures_util::future::join_all(tasks)).await;
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
        io.flush(&mut core);
        stats.store(&core.stats());
    }
}

struct Io {
    writers: HashMap<ConnId, mpsc::Sender<WsOut>>,
    legs: HashMap<EpKey, LegSlot>,
    relay: Relay,
    media_tx: mpsc::UnboundedSender<MediaMsg>,
}

impl Io {
    fn flush(&mut self, core: &mut Core) {
        while let Some(out) = core.poll_output() {
            match out {
                Output::Send { conn, text } => {
                    let Some(w) = self.writers.get(&conn) else {
                        continue;
                    };
                    if w.try_send(WsOut::Text(text)).is_err() {
                        // A client that does not read its replies is cut off.
                        tracing::info!(?conn, "KMS client too slow: disconnected");
                        self.writers.remove(&conn);
                        core.handle(Instant::now(), Input::Closed { conn });
                    }
                }
                Output::Close { conn, code, reason } => {
                    if let Some(w) = self.writers.remove(&conn) {
                        let _ = w.try_send(WsOut::Close(code, reason));
                    }
                }
                Output::Media(op) => self.media(op),
            }
        }
    }

    fn link(&self, ep: EpKey) -> Option<&Arc<LegLink>> {
        self.legs.get(&ep).and_then(|s| s.link.as_ref())
    }

    fn media(&mut self, op: MediaOp) {
        match op {
            MediaOp::Build { ep, label, offer, spec } => {
                let (cmds, rx) = mpsc::unbounded_channel();
                let task = tokio::spawn(run_leg(self.relay.clone(), ep, label, offer, spec, rx, self.media_tx.clone()));
                self.legs.insert(ep, LegSlot { cmds, link: None, task });
            }
            MediaOp::AddCandidate { ep, candidate } => {
                if let Some(s) = self.legs.get(&ep) {
                    let _ = s.cmds.send(candidate);
                }
            }
            MediaOp::Connect { from, to } => {
                if let (Some(a), Some(b)) = (self.link(from), self.link(to)) {
                    relay::connect(a, b);
                }
            }
            MediaOp::Disconnect { from } => {
                if let Some(a) = self.link(from) {
                    relay::disconnect(a);
                }
            }
            // Dropping the command queue makes the leg's task close it,
            // once it is built if it is being built.
            MediaOp::Release { ep } => drop(self.legs.remove(&ep)),
        }
    }
}

/// One leg: answers the offer, adds the client's candidates in order, and
/// closes the leg when its queue is dropped.
async fn run_leg(
    relay: Relay,
    ep: EpKey,
    label: String,
    offer: String,
    spec: LegSpec,
    mut cmds: mpsc::UnboundedReceiver<IceCandidate>,
    media_tx: mpsc::UnboundedSender<MediaMsg>,
) {
    let events = {
        let media_tx = media_tx.clone();
        let label = label.clone();
        Arc::new(move |ev: LegEvent| match ev {
            LegEvent::Candidate(candidate) => {
                let _ = media_tx.send(MediaMsg::Candidate { ep, candidate });
            }
            other => tracing::debug!(leg = label, event = ?other, "KMS leg"),
        })
    };
    match relay.answer(&label, &offer, spec, events).await {
        Ok((leg, sdp)) => {
            let _ = media_tx.send(MediaMsg::Built { ep, result: Ok((leg.link().clone(), sdp)) });
            while let Some(c) = cmds.recv().await {
                leg.add_candidate(c).await;
            }
            leg.close().await;
            tracing::debug!(leg = label, "KMS leg released");
        }
        Err(e) => {
            let _ = media_tx.send(MediaMsg::Built { ep, result: Err(e) });
        }
    }
}
