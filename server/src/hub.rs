//! The thin driver around [`Signaling`]: one task owns the core, feeds it
//! events with the real clock, and routes its outputs to connections and to
//! the media backend. No call logic lives here.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use shared_proto::{ServerMsg, encode};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::media::MediaBackend;
use crate::metrics::Metrics;
use crate::signaling::{ConnId, Input, MediaEvent, Output, Signaling};

/// What goes down one connection's writer.
#[derive(Debug)]
pub enum Outgoing {
    Text(String),
    /// A WebSocket ping (liveness of a quiet socket).
    Ping,
    /// Close the socket with this code and reason.
    Close(u16, &'static str),
}

/// The hub's handle on one connection: its queue, and a switch that makes
/// its writer close the socket at once (for clients that stop reading).
#[derive(Debug, Clone)]
pub struct ConnTx {
    pub tx: mpsc::Sender<Outgoing>,
    pub kill: Arc<tokio::sync::Notify>,
    /// The client's address: every line the core logs for this connection
    /// carries it (a `conn` span).
    pub peer: std::net::SocketAddr,
}

/// Messages queued for one connection before it counts as stuck and is
/// dropped. Signaling is never dropped silently: a stuck client is closed.
pub const CONN_QUEUE: usize = 512;

#[derive(Debug)]
pub enum HubEvent {
    Connected {
        conn: ConnId,
        tx: ConnTx,
    },
    Message {
        conn: ConnId,
        msg: shared_proto::ClientMsg,
    },
    Disconnected {
        conn: ConnId,
    },
    Media(MediaEvent),
    /// Tell everyone, release all calls, close all sockets, then answer.
    Shutdown(oneshot::Sender<()>),
}

#[derive(Clone, Debug)]
pub struct HubHandle {
    tx: mpsc::UnboundedSender<HubEvent>,
}

impl HubHandle {
    pub fn send(&self, ev: HubEvent) {
        // The hub outlives every connection; a send after shutdown is moot.
        let _ = self.tx.send(ev);
    }

    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(HubEvent::Shutdown(tx));
        let _ = rx.await;
    }
}

/// Starts the hub task. Media events must be forwarded into it by the caller
/// (see [`spawn_media_pump`]).
pub fn spawn(sig: Signaling, backend: Arc<dyn MediaBackend>, metrics: Arc<Metrics>) -> HubHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(sig, rx, backend, metrics));
    HubHandle { tx }
}

/// Forwards a backend's events into the hub.
pub fn spawn_media_pump(mut events: mpsc::UnboundedReceiver<MediaEvent>, hub: HubHandle) {
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            hub.send(HubEvent::Media(ev));
        }
    });
}

async fn run(
    mut sig: Signaling,
    mut rx: mpsc::UnboundedReceiver<HubEvent>,
    backend: Arc<dyn MediaBackend>,
    metrics: Arc<Metrics>,
) {
    let mut conns: HashMap<ConnId, ConnTx> = HashMap::new();
    loop {
        let deadline = sig.poll_timeout();
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            () = sleep_until_opt(deadline) => {
                sig.handle_timeout(std::time::Instant::now());
                drain(&mut sig, &mut conns, &*backend, &metrics);
                continue;
            }
        };
        let Some(ev) = ev else { break };
        let now = std::time::Instant::now();
        match ev {
            HubEvent::Connected { conn, tx } => {
                let _span = tracing::info_span!("client", peer = %tx.peer).entered();
                conns.insert(conn, tx);
                sig.handle(now, Input::Connected(conn));
            }
            HubEvent::Message { conn, msg } => {
                let _span = conns.get(&conn).map(|c| tracing::info_span!("client", peer = %c.peer).entered());
                sig.handle(now, Input::Message(conn, msg));
            }
            HubEvent::Disconnected { conn } => {
                let _span = conns.remove(&conn).map(|c| tracing::info_span!("client", peer = %c.peer).entered());
                sig.handle(now, Input::Disconnected(conn));
            }
            HubEvent::Media(ev) => sig.handle(now, Input::Media(ev)),
            HubEvent::Shutdown(done) => {
                sig.handle(now, Input::Shutdown);
                drain(&mut sig, &mut conns, &*backend, &metrics);
                for c in conns.values() {
                    if c.tx.try_send(Outgoing::Close(1001, "server shutting down")).is_err() {
                        c.kill.notify_one();
                    }
                }
                conns.clear();
                backend.shutdown().await;
                let _ = done.send(());
                continue;
            }
        }
        drain(&mut sig, &mut conns, &*backend, &metrics);
    }
}

async fn sleep_until_opt(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

fn drain(sig: &mut Signaling, conns: &mut HashMap<ConnId, ConnTx>, backend: &dyn MediaBackend, metrics: &Metrics) {
    while let Some(out) = sig.poll_output() {
        match out {
            Output::Send(conn, msg) => deliver(conns, conn, &msg),
            Output::Media(cmd) => backend.submit(cmd),
            Output::Established { setup, .. } => metrics.observe_setup(setup),
        }
    }
    metrics.connections.store(sig.connections() as u64, Relaxed);
    metrics.registered_users.store(sig.registered_users() as u64, Relaxed);
    metrics.active_calls.store(sig.active_calls() as u64, Relaxed);
    metrics.store_core(sig.counters());
}

fn deliver(conns: &mut HashMap<ConnId, ConnTx>, conn: ConnId, msg: &ServerMsg) {
    let Some(c) = conns.get(&conn) else { return };
    match c.tx.try_send(Outgoing::Text(encode(msg))) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            // The writer closes the socket (and logs it, with the peer's
            // address); the reader then reports the disconnect, which ends
            // the user's call and frees the name.
            c.kill.notify_one();
            conns.remove(&conn);
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            conns.remove(&conn);
        }
    }
}
