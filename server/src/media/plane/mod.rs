//! A prototype of the relay's next data plane (issue 9): sans-IO legs
//! (str0m, ICE-lite, RTP mode) on a worker thread that owns one UDP socket
//! for all its legs. Not wired into the call core yet.
//!
//! - [`Plane::start`] spawns one worker: one socket, a hash demultiplexer
//!   ([`demux`]), a timer heap, and a control channel from async code.
//! - [`Plane::create_leg`] answers an offer; [`Plane::connect`] forwards
//!   one leg's RTP to another (the payload shared, only SSRC, payload type
//!   and header extensions rewritten); keyframe requests from the receiving
//!   leg become a PLI on the sending one (at most one per 200 ms).
//! - [`PlaneEvent`]s come back on a tokio channel.
//! - A panic inside one leg's state machine releases that leg only and
//!   reports [`PlaneEventKind::Failed`].

pub mod demux;
mod worker;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// A leg on one worker.
pub type LegId = u64;

/// What a worker reports about a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaneEvent {
    pub leg: LegId,
    pub kind: PlaneEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaneEventKind {
    /// A local candidate (`candidate:…`): the worker's socket as a host candidate.
    Candidate(String),
    /// ICE and DTLS are up.
    Connected,
    /// ICE or DTLS failed, the peer went away, or the leg's state machine
    /// panicked. The leg is released.
    Failed,
    /// The first RTP packet from this leg's user was forwarded.
    Flowing,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaneError {
    #[error("bad offer: {0}")]
    BadOffer(String),
    #[error("no such leg")]
    NoSuchLeg,
    #[error("the worker has stopped")]
    Stopped,
    #[error("{0}")]
    Internal(String),
}

/// Counters a worker keeps (read without asking it).
#[derive(Debug, Default)]
pub struct PlaneStats {
    /// Legs alive.
    pub legs: AtomicUsize,
    /// Remote addresses in the demultiplexer.
    pub addrs: AtomicUsize,
    /// Datagrams received, and those dropped by the demultiplexer.
    pub received: AtomicU64,
    pub dropped: AtomicU64,
    /// RTP packets forwarded from one leg to another.
    pub relayed: AtomicU64,
    /// Legs ended by a panic in their state machine.
    pub panics: AtomicU64,
}

pub(crate) enum Cmd {
    Create {
        offer: String,
        reply: oneshot::Sender<Result<(LegId, String), PlaneError>>,
    },
    Candidate {
        leg: LegId,
        candidate: String,
    },
    Connect {
        from: LegId,
        to: LegId,
    },
    Release {
        leg: LegId,
    },
    /// Test hook: the next input on this leg panics inside its containment.
    #[doc(hidden)]
    InjectPanic {
        leg: LegId,
    },
    CpuTime {
        reply: oneshot::Sender<Option<Duration>>,
    },
    Shutdown,
}

/// One worker: its socket's address, its control channel and its counters.
/// Dropping the last handle stops the worker.
pub struct Plane {
    local: SocketAddr,
    cmds: std::sync::mpsc::Sender<Cmd>,
    waker: Mutex<UdpSocket>,
    wake_to: SocketAddr,
    stats: Arc<PlaneStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Plane {
    /// Binds `bind` (an IP and a port, 0 for any) and starts the worker.
    pub fn start(bind: SocketAddr) -> std::io::Result<(Plane, mpsc::UnboundedReceiver<PlaneEvent>)> {
        let socket = UdpSocket::bind(bind)?;
        let local = socket.local_addr()?;
        let wake_ip = if local.ip().is_unspecified() {
            match local {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            }
        } else {
            local.ip()
        };
        let wake_to = SocketAddr::new(wake_ip, local.port());
        let waker = UdpSocket::bind(SocketAddr::new(wake_ip, 0))?;
        let waker_addr = waker.local_addr()?;
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(PlaneStats::default());
        let w = worker::Worker::new(socket, local, waker_addr, cmd_rx, ev_tx, stats.clone())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let thread = std::thread::Builder::new().name("plane-worker".into()).spawn(move || w.run())?;
        let plane = Plane { local, cmds: cmd_tx, waker: Mutex::new(waker), wake_to, stats, thread: Some(thread) };
        Ok((plane, ev_rx))
    }

    /// The worker's socket: every leg's host candidate.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn stats(&self) -> &PlaneStats {
        &self.stats
    }

    /// Legs alive on this worker.
    pub fn leg_count(&self) -> usize {
        self.stats.legs.load(Ordering::SeqCst)
    }

    fn send(&self, cmd: Cmd) -> Result<(), PlaneError> {
        self.cmds.send(cmd).map_err(|_| PlaneError::Stopped)?;
        // A zero-length datagram from the waker wakes the blocked receive.
        let waker = self.waker.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        waker.send_to(&[], self.wake_to).map_err(|e| PlaneError::Internal(format!("wake: {e}")))?;
        Ok(())
    }

    /// A new leg answering `offer`: its id and the answer SDP.
    pub async fn create_leg(&self, offer: &str) -> Result<(LegId, String), PlaneError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Create { offer: offer.to_owned(), reply })?;
        rx.await.map_err(|_| PlaneError::Stopped)?
    }

    /// A remote candidate (`candidate:…`, with or without `a=`).
    pub fn add_remote_candidate(&self, leg: LegId, candidate: &str) -> Result<(), PlaneError> {
        self.send(Cmd::Candidate { leg, candidate: candidate.to_owned() })
    }

    /// Forwards `from`'s incoming RTP to `to`'s user.
    pub fn connect(&self, from: LegId, to: LegId) -> Result<(), PlaneError> {
        self.send(Cmd::Connect { from, to })
    }

    /// Ends a leg; its state and routes are freed.
    pub fn release(&self, leg: LegId) -> Result<(), PlaneError> {
        self.send(Cmd::Release { leg })
    }

    #[doc(hidden)]
    pub fn inject_panic(&self, leg: LegId) -> Result<(), PlaneError> {
        self.send(Cmd::InjectPanic { leg })
    }

    /// CPU time the worker thread has used so far (Linux).
    pub async fn cpu_time(&self) -> Option<Duration> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::CpuTime { reply }).ok()?;
        rx.await.ok().flatten()
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = self.send(Cmd::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
