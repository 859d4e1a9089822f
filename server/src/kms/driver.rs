//! The IO around [`Core`]: a TCP listener for `ws://ADDR/kurento`, one
//! reader and one writer task per socket, one task per relay leg, and the
//! one task that owns the core, the writers and the legs. Nothing here
//! decides anything about the protocol.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use shared_proto::IceCandidate;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
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
    /// returns once every leg, released earlier or now, has closed and
    /// freed its port (at most 5 s, then the rest are aborted).
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
    Opened { conn: ConnId, writer: mpsc::Sender<WsOut>, cancel: oneshot::Sender<()> },
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

/// How long one frame may take to leave (a client that does not read).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closed connection's writer gets to send what is queued.
const WRITER_GRACE: Duration = Duration::from_secs(2);
/// How long building a leg (answering an offer) may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client gets to answer our close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(3);

/// The core's side of one connection: dropping it closes the writer's
/// queue and stops the reader.
struct ConnOut {
    queue: mpsc::Sender<WsOut>,
    _cancel: oneshot::Sender<()>,
}

/// A leg's handle; its task is in [`Io::tasks`].
struct LegSlot {
    cmds: mpsc::UnboundedSender<IceCandidate>,
    link: Option<Arc<LegLink>>,
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
    // The core drops `cancel`'s sender when it is done with the connection
    // (a close of its own, a client too slow to read, the socket closed):
    // the reader stops at once, whatever the client keeps sending.
    let (cancel_tx, mut cancel) = oneshot::channel::<()>();
    if tx.send(ConnMsg::Opened { conn, writer: out_tx, cancel: cancel_tx }).await.is_err() {
        return;
    }
    let mut writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let (msg, last) = match m {
                WsOut::Text(t) => (Message::Text(t.into()), false),
                WsOut::Close(code, reason) => {
                    (Message::Close(Some(CloseFrame { code: code.into(), reason: reason.into() })), true)
                }
            };
            // A client that stops reading fills the TCP window: its sends
            // time out instead of blocking the writer forever.
            match tokio::time::timeout(SEND_TIMEOUT, sink.send(msg)).await {
                Ok(Ok(())) if !last => {}
                _ => break,
            }
        }
        let _ = tokio::time::timeout(SEND_TIMEOUT, sink.close()).await;
    });
    // Once closing (the core is done with the connection, or the writer
    // ended), frames are read and dropped: the writer gets WRITER_GRACE to
    // send what is queued, then the client CLOSE_LINGER to answer the
    // close frame; nothing unread is left to turn the close into a reset
    // that would lose the last replies.
    let (mut closing, mut writer_done) = (false, false);
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        if !closing {
            deadline = tokio::time::Instant::now() + idle;
        }
        tokio::select! {
            biased;
            _ = &mut cancel, if !closing => {
                closing = true;
                deadline = tokio::time::Instant::now() + WRITER_GRACE;
            }
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                closing = true;
                deadline = tokio::time::Instant::now() + CLOSE_LINGER;
            }
            frame = frames.next() => {
                let data = match frame {
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        tracing::debug!(%peer, ?conn, error = %e, "KMS socket error");
                        break;
                    }
                };
                if !closing && tx.send(ConnMsg::Frame { conn, data }).await.is_err() {
                    break;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                if !closing {
                    tracing::info!(%peer, ?conn, "KMS client idle: closed");
                }
                break;
            }
        }
    }
    drop(frames);
    let _ = tx.send(ConnMsg::Closed { conn }).await;
    // The core drops the writer's queue on Closed: the writer sends what is
    // queued (a close frame last) and ends. One stuck on a socket whose
    // client does not read is aborted, so that the socket is freed now.
    if !writer_done {
        let finished = !closing && tokio::time::timeout(WRITER_GRACE, &mut writer).await.is_ok();
        if !finished {
            tracing::debug!(?conn, "KMS writer did not finish: aborted");
            writer.abort();
            let _ = writer.await;
        }
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
    let mut io = Io { writers: HashMap::new(), legs: HashMap::new(), tasks: JoinSet::new(), relay, media_tx };
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
                    ConnMsg::Opened { conn, writer, cancel } => {
                        io.writers.insert(conn, ConnOut { queue: writer, _cancel: cancel });
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
                            // The endpoint is back to Created, whose release
                            // frees no leg: the slot goes now.
                            Err(e) => {
                                io.legs.remove(&ep);
                                Err(e)
                            }
                        };
                        core.handle(now, Input::Answered { ep, result });
                    }
                    MediaMsg::Candidate { ep, candidate } => {
                        core.handle(now, Input::LocalCandidate { ep, candidate, unix_millis: unix_millis() });
                    }
                }
            }
            () = sleep => core.handle_timeout(Instant::now()),
            // Legs that closed (released, or failed to build).
            Some(_) = io.tasks.join_next(), if !io.tasks.is_empty() => {}
            done = control.recv() => {
                core.shutdown();
                io.flush(&mut core);
                stats.store(&core.stats());
        stats.store_legs(io.legs.len());
                // Every leg's queue is dropped: each closes (once built,
                // if it is being built); those released earlier may still
                // be closing. All of them get 5 s.
                io.legs.clear();
                let all = async { while io.tasks.join_next().await.is_some() {} };
                if tokio::time::timeout(Duration::from_secs(5), all).await.is_err() {
                    tracing::warn!(legs = io.tasks.len(), "KMS legs still closing after 5 s: aborted");
                    io.tasks.shutdown().await;
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
        io.flush(&mut core);
        stats.store(&core.stats());
        stats.store_legs(io.legs.len());
    }
}

struct Io {
    writers: HashMap<ConnId, ConnOut>,
    legs: HashMap<EpKey, LegSlot>,
    /// Every leg's task, released ones until they have closed.
    tasks: JoinSet<()>,
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
                    if w.queue.try_send(WsOut::Text(text)).is_err() {
                        // A client that does not read its replies is cut off.
                        tracing::info!(?conn, "KMS client too slow: disconnected");
                        self.writers.remove(&conn);
                        core.handle(Instant::now(), Input::Closed { conn });
                    }
                }
                Output::Close { conn, code, reason } => {
                    if let Some(w) = self.writers.remove(&conn) {
                        let _ = w.queue.try_send(WsOut::Close(code, reason));
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
                self.tasks.spawn(run_leg(self.relay.clone(), ep, label, offer, spec, rx, self.media_tx.clone()));
                self.legs.insert(ep, LegSlot { cmds, link: None });
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
    // A build that hangs or panics is an error like any other (its port
    // lease frees itself when the future is dropped).
    let build = std::panic::AssertUnwindSafe(relay.answer(&label, &offer, spec, events)).catch_unwind();
    let built = match tokio::time::timeout(BUILD_TIMEOUT, build).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(LegError::Internal("building the leg panicked".into())),
        Err(_) => Err(LegError::Internal(format!("building the leg took over {} s", BUILD_TIMEOUT.as_secs()))),
    };
    match built {
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
