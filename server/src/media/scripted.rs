//! A scripted media backend for tests of the call rules: no SDP is read,
//! no socket is opened. Each `Start` takes the next [`Reply`] of its
//! [`Script`] (or the script's default) and answers at once, late, never,
//! or fails; every command is recorded, so a test can check what the call
//! core asked for and that every call was released.
//!
//! Answers are `"v=0 scripted answer for the caller"` (or callee); with
//! [`Reply::Now`] and [`Reply::After`] each leg also sends one candidate,
//! [`CANDIDATE`], before its answer, and the call is then reported
//! established.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared_proto::IceCandidate;

use super::{BackendFactory, CallId, EventSink, Leg, MediaBackend, MediaCmd, MediaError, MediaEvent};

/// The candidate each leg of a scripted call trickles.
pub const CANDIDATE: &str = "candidate:1 1 udp 2122260223 192.0.2.1 40000 typ host";

/// How a scripted backend answers one call's `Start`.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Candidates, both answers and `Established` at once.
    Now,
    /// The same, after this long (nothing if the call is released first).
    After(Duration),
    /// Never answers: the call core's set-up timeout has to end the call.
    Never,
    /// Fails at once with this error.
    Fail(MediaError),
    /// Answers the caller's leg, then fails after this long (media lost
    /// mid-setup or mid-call).
    AnswerThenFail(Duration, MediaError),
}

/// The answer a scripted leg gives.
pub fn answer_for(leg: Leg) -> String {
    format!("v=0 scripted answer for the {leg}")
}

#[derive(Default)]
struct State {
    replies: VecDeque<Reply>,
    log: Vec<MediaCmd>,
    live: HashSet<CallId>,
}

/// The test's side of a scripted backend: what it will answer, and what it
/// was asked.
#[derive(Clone)]
pub struct Script {
    default: Reply,
    state: Arc<Mutex<State>>,
    changed: Arc<tokio::sync::Notify>,
}

impl Script {
    pub fn new(default: Reply) -> Script {
        Script { default, state: Arc::default(), changed: Arc::default() }
    }

    /// The reply to the next `Start` that has none yet.
    pub fn push(&self, reply: Reply) {
        self.lock().replies.push_back(reply);
    }

    /// Every command received so far, in order.
    pub fn commands(&self) -> Vec<MediaCmd> {
        self.lock().log.clone()
    }

    /// Calls started and not released.
    pub fn live_calls(&self) -> usize {
        self.lock().live.len()
    }

    /// Waits until `f` holds of the commands received, or `deadline` passes.
    pub async fn wait_for(&self, deadline: Duration, f: impl Fn(&[MediaCmd]) -> bool) -> Result<(), Vec<MediaCmd>> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.changed.notified();
            if f(&self.lock().log) {
                return Ok(());
            }
            if tokio::time::timeout_at(end, notified).await.is_err() {
                return Err(self.commands());
            }
        }
    }

    /// For [`super::MediaConfig::Custom`].
    pub fn factory(&self) -> BackendFactory {
        let script = self.clone();
        Arc::new(move |events, _metrics| Arc::new(Scripted { script: script.clone(), events }) as Arc<dyn MediaBackend>)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn live(&self, call: CallId) -> bool {
        self.lock().live.contains(&call)
    }
}

struct Scripted {
    script: Script,
    events: EventSink,
}

fn answer_all(events: &EventSink, call: CallId) {
    for leg in Leg::BOTH {
        let candidate = IceCandidate::new(CANDIDATE, Some("0".to_owned()), Some(0));
        let _ = events.send(MediaEvent::Candidate { call, leg, candidate });
    }
    for leg in Leg::BOTH {
        let _ = events.send(MediaEvent::Answer { call, leg, sdp: answer_for(leg) });
    }
    let _ = events.send(MediaEvent::Established { call });
}

impl MediaBackend for Scripted {
    fn submit(&self, cmd: MediaCmd) {
        let reply = {
            let mut st = self.script.lock();
            st.log.push(cmd.clone());
            match &cmd {
                MediaCmd::Start { call, .. } => {
                    st.live.insert(*call);
                    Some((*call, st.replies.pop_front().unwrap_or_else(|| self.script.default.clone())))
                }
                MediaCmd::Release { call } => {
                    st.live.remove(call);
                    None
                }
                MediaCmd::AddCandidate { .. } => None,
            }
        };
        self.script.changed.notify_waiters();
        let Some((call, reply)) = reply else { return };
        let events = self.events.clone();
        let script = self.script.clone();
        match reply {
            Reply::Now => answer_all(&events, call),
            Reply::After(d) => {
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    if script.live(call) {
                        answer_all(&events, call);
                    }
                });
            }
            Reply::Never => {}
            Reply::Fail(error) => {
                let _ = events.send(MediaEvent::Failed { call, error });
            }
            Reply::AnswerThenFail(d, error) => {
                let _ = events.send(MediaEvent::Answer { call, leg: Leg::Caller, sdp: answer_for(Leg::Caller) });
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    if script.live(call) {
                        let _ = events.send(MediaEvent::Failed { call, error });
                    }
                });
            }
        }
    }

    fn shutdown(&self) -> futures_util::future::BoxFuture<'static, ()> {
        self.script.lock().live.clear();
        Box::pin(async {})
    }
}
