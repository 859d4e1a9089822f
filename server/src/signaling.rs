//! The signaling core: user registry and call state machine, sans IO.
//!
//! [`Signaling::handle`] takes `now` and one typed [`Input`] and queues
//! [`Output`]s, which the driver drains with [`Signaling::poll_output`].
//! [`Signaling::poll_timeout`] gives the next deadline (ring timeout, media
//! setup timeout) and [`Signaling::handle_timeout`] acts on it. Nothing here
//! touches a socket, a task or the clock.
//!
//! Rules (each one a fix of the original tutorial where it had a bug):
//! - a name is 1 to 64 characters, not only whitespace, without control
//!   characters ([`shared_proto::validate_name`]), unique, and a socket
//!   registers at most once (Q8);
//! - every message but `register` needs a registration (Q1);
//! - the caller is the sender's registered name, whatever `from` says (Q2);
//! - a callee who is ringing or in a call is busy: the new caller is
//!   rejected and the callee is never disturbed (Q7);
//! - glare: a user whose phone is ringing who calls out (their client has not
//!   seen the `incomingCall` yet) is answered busy, and the call ringing them
//!   goes on untouched: the first call to reach the server wins;
//! - only the two parties of a call can answer, stop or trickle into it;
//! - client candidates are queued per leg until the media leg exists and
//!   are never dropped (Q4);
//! - every end of a call that reached the media backend releases it,
//!   including an end during media setup (Q3).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use shared_proto::{CallAnswer, ClientMsg, IceCandidate, ServerMsg, text};

/// One signaling connection (WebSocket).
pub type ConnId = u64;

/// One call, from `call` to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "call-{}", self.0)
    }
}

/// One side of a call: each user talks WebRTC to the server on their own leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    Caller,
    Callee,
}

impl Leg {
    pub fn other(self) -> Leg {
        match self {
            Leg::Caller => Leg::Callee,
            Leg::Callee => Leg::Caller,
        }
    }
    fn index(self) -> usize {
        match self {
            Leg::Caller => 0,
            Leg::Callee => 1,
        }
    }
}

/// What the core asks of the media backend. Commands for one call arrive
/// in order: `Start`, then any `AddCandidate`s, then exactly one `Release`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCmd {
    /// Build both legs and answer both offers (both users are offerers).
    Start { call: CallId, caller_offer: String, callee_offer: String },
    /// A candidate of a user, for that user's leg.
    AddCandidate { call: CallId, leg: Leg, candidate: IceCandidate },
    /// Free everything the call holds. Sent on every end after `Start`.
    Release { call: CallId },
}

/// What the media backend reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    Answers { call: CallId, caller_answer: String, callee_answer: String },
    Candidate { call: CallId, leg: Leg, candidate: IceCandidate },
    Failed { call: CallId, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Connected(ConnId),
    Message(ConnId, ClientMsg),
    Disconnected(ConnId),
    Media(MediaEvent),
    /// The server is going down: tell everyone in a call and release it.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(ConnId, ServerMsg),
    Media(MediaCmd),
    /// Both answers were sent; `setup` runs from the callee's accept.
    Established {
        call: CallId,
        setup: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub ring_timeout: Duration,
    pub setup_timeout: Duration,
    /// Candidates kept per user before a call leg exists.
    pub max_pending_candidates: usize,
    /// Candidates older than this are not carried into a new call: they
    /// belong to a connection attempt that is over.
    pub pending_candidate_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ring_timeout: Duration::from_secs(60),
            setup_timeout: Duration::from_secs(30),
            max_pending_candidates: 64,
            pending_candidate_ttl: Duration::from_secs(10),
        }
    }
}

pub use shared_proto::{MAX_NAME_CHARS, validate_name};

#[derive(Debug, Default)]
struct Conn {
    name: Option<String>,
    call: Option<CallId>,
    /// Candidates received while this user had no leg to give them to
    /// (the browser may trickle before its `call` or its accept arrives).
    pending: VecDeque<(Instant, IceCandidate)>,
}

#[derive(Debug)]
enum Phase {
    Ringing,
    Connecting { accepted: Instant },
    Active,
}

#[derive(Debug)]
struct Call {
    parties: [ConnId; 2],
    names: [String; 2],
    caller_offer: String,
    phase: Phase,
    deadline: Option<Instant>,
    /// The caller's candidates that arrive while it rings.
    caller_queue: Vec<IceCandidate>,
}

impl Call {
    fn leg_of(&self, conn: ConnId) -> Option<Leg> {
        if self.parties[0] == conn {
            Some(Leg::Caller)
        } else if self.parties[1] == conn {
            Some(Leg::Callee)
        } else {
            None
        }
    }
    fn conn(&self, leg: Leg) -> ConnId {
        self.parties[leg.index()]
    }
    fn name(&self, leg: Leg) -> &str {
        &self.names[leg.index()]
    }
    fn media_started(&self) -> bool {
        !matches!(self.phase, Phase::Ringing)
    }
}

/// How a call ended, for the log and for what each side is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Declined,
    Busy,
    Cancelled,
    NoAnswer,
    HangUp,
    Disconnected,
    MediaFailed,
    Shutdown,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Declined => "declined",
            EndReason::Busy => "busy",
            EndReason::Cancelled => "cancelled",
            EndReason::NoAnswer => "no answer",
            EndReason::HangUp => "hang-up",
            EndReason::Disconnected => "disconnected",
            EndReason::MediaFailed => "media failed",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// Registry plus calls. See the module docs for the rules.
#[derive(Debug)]
pub struct Signaling {
    config: Config,
    conns: HashMap<ConnId, Conn>,
    names: HashMap<String, ConnId>,
    calls: HashMap<CallId, Call>,
    deadlines: BTreeSet<(Instant, CallId)>,
    next_call: u64,
    out: VecDeque<Output>,
}

impl Signaling {
    pub fn new(config: Config) -> Self {
        Signaling {
            config,
            conns: HashMap::new(),
            names: HashMap::new(),
            calls: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_call: 1,
            out: VecDeque::new(),
        }
    }

    pub fn registered_users(&self) -> usize {
        self.names.len()
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The registered name of a connection, if any.
    pub fn name_of(&self, conn: ConnId) -> Option<&str> {
        self.conns.get(&conn).and_then(|c| c.name.as_deref())
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Connected(conn) => {
                self.conns.entry(conn).or_default();
            }
            Input::Message(conn, msg) => self.on_message(now, conn, msg),
            Input::Disconnected(conn) => self.on_disconnect(conn),
            Input::Media(ev) => self.on_media(now, ev),
            Input::Shutdown => {
                let ids: Vec<CallId> = self.calls.keys().copied().collect();
                for id in ids {
                    self.end_call(id, EndReason::Shutdown, None);
                }
            }
        }
    }

    /// Acts on every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(call) = self.calls.get(&id) else {
                continue;
            };
            if call.deadline != Some(at) {
                continue;
            }
            match call.phase {
                Phase::Ringing => self.end_call(id, EndReason::NoAnswer, None),
                Phase::Connecting { .. } => {
                    self.end_call(id, EndReason::MediaFailed, Some("media setup timed out".into()))
                }
                Phase::Active => {}
            }
        }
    }

    fn send(&mut self, conn: ConnId, msg: ServerMsg) {
        self.out.push_back(Output::Send(conn, msg));
    }

    fn media(&mut self, cmd: MediaCmd) {
        self.out.push_back(Output::Media(cmd));
    }

    fn on_message(&mut self, now: Instant, conn: ConnId, msg: ClientMsg) {
        let Some(c) = self.conns.get(&conn) else {
            tracing::warn!(conn, "message from an unknown connection dropped");
            return;
        };
        let registered = c.name.is_some();
        match msg {
            ClientMsg::Register { name } => self.on_register(conn, name),
            _ if !registered => {
                self.send(conn, ServerMsg::error(format!("You must register before sending `{}`", msg.id())));
            }
            ClientMsg::Call { to, sdp_offer, .. } => self.on_call(now, conn, to, sdp_offer),
            ClientMsg::IncomingCallResponse { from, call_response, sdp_offer, message } => {
                self.on_answer(now, conn, from, call_response, sdp_offer, message)
            }
            ClientMsg::OnIceCandidate { candidate } => self.on_candidate(now, conn, candidate),
            ClientMsg::Stop => self.on_stop(conn),
        }
    }

    fn on_register(&mut self, conn: ConnId, name: String) {
        if let Some(current) = self.name_of(conn) {
            let msg = text::already_registered(current);
            self.send(conn, ServerMsg::register_rejected(msg));
            return;
        }
        if let Err(reason) = validate_name(&name) {
            self.send(conn, ServerMsg::register_rejected(reason));
            return;
        }
        if self.names.contains_key(&name) {
            self.send(conn, ServerMsg::register_rejected(text::name_taken(&name)));
            return;
        }
        tracing::info!(conn, user = %name, "registered");
        self.names.insert(name.clone(), conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.name = Some(name);
        }
        self.send(conn, ServerMsg::register_accepted());
    }

    fn on_call(&mut self, now: Instant, conn: ConnId, to: String, offer: String) {
        let caller_name = self.name_of(conn).unwrap_or_default().to_owned();
        if let Some(id) = self.conns.get(&conn).and_then(|c| c.call) {
            // Glare: the sender is being rung and called out before its
            // client saw the incomingCall. The call that reached us first
            // wins; this one meets a busy line and the ringing call is left
            // alone, so the sender can still accept it.
            let ringing_me = self
                .calls
                .get(&id)
                .is_some_and(|call| matches!(call.phase, Phase::Ringing) && call.leg_of(conn) == Some(Leg::Callee));
            if ringing_me {
                tracing::info!(%id, caller = %caller_name, callee = %to, "call rejected: the caller is being rung (glare)");
                self.send(conn, ServerMsg::call_rejected(text::BUSY));
            } else {
                self.send(conn, ServerMsg::call_rejected(text::ALREADY_IN_CALL));
            }
            return;
        }
        if to == caller_name {
            self.send(conn, ServerMsg::call_rejected(text::SELF_CALL));
            return;
        }
        let Some(&callee) = self.names.get(&to) else {
            tracing::info!(caller = %caller_name, callee = %to, "call rejected: unknown user");
            self.send(conn, ServerMsg::call_unknown(&to));
            return;
        };
        if self.conns.get(&callee).is_some_and(|c| c.call.is_some()) {
            tracing::info!(caller = %caller_name, callee = %to, "call rejected: busy");
            self.send(conn, ServerMsg::call_rejected(text::BUSY));
            return;
        }
        if offer.trim().is_empty() {
            self.send(conn, ServerMsg::call_rejected("The call carries no SDP offer"));
            return;
        }
        let id = CallId(self.next_call);
        self.next_call += 1;
        let caller_queue = self.take_pending(now, conn);
        let deadline = now + self.config.ring_timeout;
        self.calls.insert(
            id,
            Call {
                parties: [conn, callee],
                names: [caller_name.clone(), to.clone()],
                caller_offer: offer,
                phase: Phase::Ringing,
                deadline: Some(deadline),
                caller_queue,
            },
        );
        self.deadlines.insert((deadline, id));
        for party in [conn, callee] {
            if let Some(c) = self.conns.get_mut(&party) {
                c.call = Some(id);
            }
        }
        tracing::info!(%id, caller = %caller_name, callee = %to, "call ringing");
        self.send(callee, ServerMsg::IncomingCall { from: caller_name });
    }

    fn on_answer(
        &mut self,
        now: Instant,
        conn: ConnId,
        from: String,
        answer: CallAnswer,
        offer: Option<String>,
        message: Option<String>,
    ) {
        // Only the callee of a ringing call, answering that caller, counts.
        let ringing = self.conns.get(&conn).and_then(|c| c.call).and_then(|id| {
            let call = self.calls.get(&id)?;
            let ok = matches!(call.phase, Phase::Ringing) && call.leg_of(conn) == Some(Leg::Callee);
            ok.then_some(id)
        });
        let Some(id) = ringing.filter(|id| self.calls[id].name(Leg::Caller) == from) else {
            // The original's answer when the caller is gone (or never was).
            self.send(conn, ServerMsg::stop(format!("unknown from = {from}")));
            return;
        };
        match answer {
            CallAnswer::Reject => {
                let reason =
                    if message.as_deref() == Some(text::BUSSY) { EndReason::Busy } else { EndReason::Declined };
                self.end_call(id, reason, None);
            }
            CallAnswer::Accept => {
                let Some(callee_offer) = offer.filter(|o| !o.trim().is_empty()) else {
                    self.send(conn, ServerMsg::error("An accepting incomingCallResponse needs an `sdpOffer`"));
                    return;
                };
                let deadline = now + self.config.setup_timeout;
                let pending = self.take_pending(now, conn);
                let call = self.calls.get_mut(&id).expect("checked above");
                if let Some(old) = call.deadline.replace(deadline) {
                    self.deadlines.remove(&(old, id));
                }
                self.deadlines.insert((deadline, id));
                call.phase = Phase::Connecting { accepted: now };
                let caller_offer = std::mem::take(&mut call.caller_offer);
                let caller_queue = std::mem::take(&mut call.caller_queue);
                tracing::info!(%id, caller = %call.names[0], callee = %call.names[1], "call accepted");
                self.media(MediaCmd::Start { call: id, caller_offer, callee_offer });
                for candidate in caller_queue {
                    self.media(MediaCmd::AddCandidate { call: id, leg: Leg::Caller, candidate });
                }
                for candidate in pending {
                    self.media(MediaCmd::AddCandidate { call: id, leg: Leg::Callee, candidate });
                }
            }
        }
    }

    fn on_candidate(&mut self, now: Instant, conn: ConnId, candidate: IceCandidate) {
        let call_id = self.conns.get(&conn).and_then(|c| c.call);
        if let Some(id) = call_id
            && let Some(call) = self.calls.get_mut(&id)
            && let Some(leg) = call.leg_of(conn)
        {
            match (&call.phase, leg) {
                (Phase::Ringing, Leg::Caller) => {
                    if call.caller_queue.len() < self.config.max_pending_candidates {
                        call.caller_queue.push(candidate);
                    }
                }
                // A ringing callee has no offer out yet: keep it for the accept.
                (Phase::Ringing, Leg::Callee) => self.push_pending(now, conn, candidate),
                _ => self.media(MediaCmd::AddCandidate { call: id, leg, candidate }),
            }
            return;
        }
        self.push_pending(now, conn, candidate);
    }

    fn push_pending(&mut self, now: Instant, conn: ConnId, candidate: IceCandidate) {
        let max = self.config.max_pending_candidates;
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.pending.len() >= max {
                c.pending.pop_front();
            }
            c.pending.push_back((now, candidate));
        }
    }

    fn take_pending(&mut self, now: Instant, conn: ConnId) -> Vec<IceCandidate> {
        let ttl = self.config.pending_candidate_ttl;
        self.conns
            .get_mut(&conn)
            .map(|c| {
                c.pending
                    .drain(..)
                    .filter(|(at, _)| now.saturating_duration_since(*at) <= ttl)
                    .map(|(_, cand)| cand)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn on_stop(&mut self, conn: ConnId) {
        let Some(id) = self.conns.get(&conn).and_then(|c| c.call) else {
            // A stop racing a remote hang-up; the original ignores it too.
            tracing::debug!(conn, "stop without a call ignored");
            return;
        };
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let reason = match (&call.phase, call.leg_of(conn)) {
            (Phase::Ringing, Some(Leg::Caller)) => EndReason::Cancelled,
            (Phase::Ringing, _) => EndReason::Declined,
            _ => EndReason::HangUp,
        };
        self.end_call_by(id, reason, conn);
    }

    fn on_disconnect(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if let Some(id) = c.call {
            self.end_call_by(id, EndReason::Disconnected, conn);
        }
        if let Some(c) = self.conns.remove(&conn)
            && let Some(name) = c.name
        {
            tracing::info!(conn, user = %name, "unregistered");
            self.names.remove(&name);
        }
    }

    fn on_media(&mut self, now: Instant, ev: MediaEvent) {
        match ev {
            MediaEvent::Candidate { call, leg, candidate } => {
                if let Some(c) = self.calls.get(&call) {
                    let to = c.conn(leg);
                    self.send(to, ServerMsg::IceCandidate { candidate: candidate.kurento_tagged() });
                }
            }
            MediaEvent::Answers { call: id, caller_answer, callee_answer } => {
                let Some(call) = self.calls.get_mut(&id) else {
                    // The call ended during setup; its Release is already out.
                    return;
                };
                let Phase::Connecting { accepted } = call.phase else {
                    return;
                };
                call.phase = Phase::Active;
                if let Some(old) = call.deadline.take() {
                    self.deadlines.remove(&(old, id));
                }
                let (caller, callee) = (call.conn(Leg::Caller), call.conn(Leg::Callee));
                let setup = now.saturating_duration_since(accepted);
                tracing::info!(%id, caller = %call.names[0], callee = %call.names[1], setup_ms = setup.as_millis() as u64, "call established");
                // The original's order: the callee hears first.
                self.send(callee, ServerMsg::StartCommunication { sdp_answer: callee_answer });
                self.send(caller, ServerMsg::call_accepted(caller_answer));
                self.out.push_back(Output::Established { call: id, setup });
            }
            MediaEvent::Failed { call, reason } => {
                if self.calls.contains_key(&call) {
                    self.end_call(call, EndReason::MediaFailed, Some(reason));
                }
            }
        }
    }

    /// Ends a call because `by` stopped or left: only the other side is told.
    fn end_call_by(&mut self, id: CallId, reason: EndReason, by: ConnId) {
        self.finish(id, reason, None, Some(by));
    }

    fn end_call(&mut self, id: CallId, reason: EndReason, detail: Option<String>) {
        self.finish(id, reason, detail, None);
    }

    fn finish(&mut self, id: CallId, reason: EndReason, detail: Option<String>, by: Option<ConnId>) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        if let Some(at) = call.deadline {
            self.deadlines.remove(&(at, id));
        }
        for party in call.parties {
            if let Some(c) = self.conns.get_mut(&party) {
                c.call = None;
                c.pending.clear();
            }
        }
        let caller = call.conn(Leg::Caller);
        let callee = call.conn(Leg::Callee);
        let ringing = matches!(call.phase, Phase::Ringing);
        let connecting = matches!(call.phase, Phase::Connecting { .. });
        let who = by.and_then(|b| call.leg_of(b));
        tracing::info!(%id, caller = %call.names[0], callee = %call.names[1], reason = reason.as_str(), by = who.map(|l| call.name(l)), detail = detail.as_deref(), "call ended");
        // The caller waits for a callResponse until the call is established;
        // after that, and for the callee, the end is a stopCommunication.
        let caller_waits = ringing || connecting;
        let to_caller = |msg: &str| {
            if caller_waits { ServerMsg::call_rejected(msg) } else { ServerMsg::stop(msg) }
        };
        let mut notify: Vec<(ConnId, ServerMsg)> = Vec::new();
        match reason {
            EndReason::Declined => notify.push((caller, ServerMsg::call_rejected(text::DECLINED))),
            EndReason::Busy => notify.push((caller, ServerMsg::call_rejected(text::BUSY))),
            EndReason::Cancelled => notify.push((callee, ServerMsg::stop(text::CANCELLED))),
            EndReason::NoAnswer => {
                notify.push((caller, ServerMsg::call_rejected(text::NO_ANSWER)));
                notify.push((callee, ServerMsg::stop(text::NO_ANSWER)));
            }
            EndReason::HangUp | EndReason::Disconnected => {
                let msg = if ringing && who == Some(Leg::Caller) { text::CANCELLED } else { text::REMOTE_HANGUP };
                match who {
                    Some(Leg::Caller) => notify.push((callee, ServerMsg::stop(msg))),
                    Some(Leg::Callee) => {
                        let m = if ringing {
                            format!("User {} is no longer available", call.names[1])
                        } else {
                            msg.to_owned()
                        };
                        notify.push((caller, to_caller(&m)));
                    }
                    None => {}
                }
            }
            EndReason::MediaFailed => {
                let msg = detail.unwrap_or_else(|| "media failed".to_owned());
                notify.push((caller, to_caller(&msg)));
                notify.push((callee, ServerMsg::stop(msg)));
            }
            EndReason::Shutdown => {
                notify.push((caller, to_caller(text::SHUTDOWN)));
                notify.push((callee, ServerMsg::stop(text::SHUTDOWN)));
            }
        }
        for (conn, msg) in notify {
            if Some(conn) != by {
                self.send(conn, msg);
            }
        }
        if call.media_started() {
            self.media(MediaCmd::Release { call: id });
        }
    }
}
