//! The signaling core: user registry and call state machine, sans IO.
//!
//! [`Signaling::handle`] takes `now` and one typed [`Input`] and queues
//! [`Output`]s, which the driver drains with [`Signaling::poll_output`].
//! [`Signaling::poll_timeout`] gives the next deadline (ring timeout, media
//! setup timeout) and [`Signaling::handle_timeout`] acts on it. Nothing here
//! touches a socket, a task or the clock. Counts for the metrics are plain
//! numbers in [`Signaling::counters`], which the driver copies out.
//!
//! Rules (each one a fix of the original tutorial where it had a bug):
//! - a name is registered NFC-normalised and trimmed, 1 to 64 characters,
//!   without control, bidi-control or invisible (zero-width, format)
//!   characters ([`shared_proto::normalize_name`]); it is unique by
//!   [`shared_proto::name_key`] (case- and width-insensitive: `Alice` holds
//!   `ALICE` too) and shown as given; a socket registers at most once (Q8);
//! - `call` finds its callee by the same key (calling `ALICE` rings `Alice`);
//! - every message but `register` needs a registration (Q1);
//! - the caller is the sender's registered name, whatever `from` says (Q2);
//! - a callee who is ringing or in a call is busy: the new caller is
//!   rejected and the callee is never disturbed (Q7);
//! - glare: a user whose phone is ringing who calls out (their client has not
//!   seen the `incomingCall`) is answered busy, and the call ringing them
//!   goes on untouched: the first call to reach the server wins;
//! - capacity: with [`Config::max_calls`], a call beyond it (counting calls
//!   ringing, connecting and in progress: all hold or will hold media) is
//!   refused with [`text::SERVER_BUSY`] before anyone is rung;
//! - only the two parties of a call can answer, stop or trickle into it; an
//!   `incomingCallResponse` that does not answer the call ringing the sender
//!   (wrong `from`, or nothing rings them) gets an `error` and leaves the
//!   sender's call as it is; only a socket without any call gets the
//!   original's `stopCommunication "unknown from = X"`;
//! - client candidates are queued per leg until the media leg exists and
//!   are never dropped (Q4);
//! - every end of a call that reached the media backend releases it,
//!   including an end during media setup (Q3);
//! - every call that rang ends exactly once, with one [`EndReason`]: the
//!   counters satisfy `calls_started == sum(calls_ended) + active_calls`;
//! - a call is established when the backend reports media flowing both
//!   ways ([`MediaEvent::Established`]); its set-up time runs from the
//!   callee's accept to then, and a call that is not established
//!   [`Config::setup_timeout`] after the accept ends ("media setup timed
//!   out"), answered or not;
//! - every client-supplied string that reaches a log line goes through
//!   [`shared_proto::log_safe`] (escaped, quoted, cut at 64 characters).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use shared_proto::{CallAnswer, ClientMsg, IceCandidate, ServerMsg, log_safe, text};

pub use crate::media::{CallId, Leg, MediaCmd, MediaEvent};

/// One signaling connection (WebSocket).
pub type ConnId = u64;

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
    /// Media flows both ways ([`MediaEvent::Established`]); `setup` runs
    /// from the callee's accept. Once per call at most.
    Established {
        call: CallId,
        setup: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub ring_timeout: Duration,
    /// From the callee's accept until media flows both ways
    /// ([`MediaEvent::Established`]); a call not there by then ends with
    /// "media setup timed out".
    pub setup_timeout: Duration,
    /// Candidates kept per user before a call leg exists.
    pub max_pending_candidates: usize,
    /// Candidates a user may give one call in all (a browser gathers a
    /// handful); later ones are dropped, so that no client can make the
    /// media backend keep an endless list.
    pub max_call_candidates: usize,
    /// Candidates older than this are not carried into a new call: they
    /// belong to a connection attempt that is over.
    pub pending_candidate_ttl: Duration,
    /// Calls that may hold media at once (ringing, connecting or in
    /// progress); a `call` beyond it is refused with [`text::SERVER_BUSY`]
    /// before the callee is rung. `None`: no limit.
    pub max_calls: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ring_timeout: Duration::from_secs(60),
            setup_timeout: Duration::from_secs(30),
            max_pending_candidates: 64,
            max_call_candidates: 256,
            pending_candidate_ttl: Duration::from_secs(10),
            max_calls: None,
        }
    }
}

pub use shared_proto::{MAX_NAME_CHARS, name_key, normalize_name, validate_name};

#[derive(Debug, Default)]
struct Conn {
    /// The registered name, as shown (NFC, trimmed, case kept).
    name: Option<String>,
    /// Its [`name_key`], the key of `Signaling::names`.
    key: Option<String>,
    call: Option<CallId>,
    /// Candidates received while this user had no leg to give them to
    /// (the browser may trickle before its `call` or its accept arrives).
    pending: VecDeque<(Instant, IceCandidate)>,
}

#[derive(Debug)]
enum Phase {
    Ringing,
    /// Accepted; the backend builds the legs.
    Connecting,
    /// Both answers are out.
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
    /// When the callee accepted.
    accepted: Option<Instant>,
    /// Media has flowed both ways ([`MediaEvent::Established`]).
    established: bool,
    /// Each leg's SDP answer, held until both are there.
    answers: [Option<String>; 2],
    /// Candidates each user has given this call ([`Config::max_call_candidates`]).
    candidates: [usize; 2],
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

/// How a call ended, for the log, the metrics and what each side is told.
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
    /// Every reason, in the order of [`Counters::calls_ended`].
    pub const ALL: [EndReason; 8] = [
        EndReason::Declined,
        EndReason::Busy,
        EndReason::Cancelled,
        EndReason::NoAnswer,
        EndReason::HangUp,
        EndReason::Disconnected,
        EndReason::MediaFailed,
        EndReason::Shutdown,
    ];

    /// The `reason` of the log line and of `one2one_calls_ended_total`.
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

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a `call` was refused before anyone was rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallRefusal {
    /// The callee is ringing or in a call ([`text::BUSY`]).
    Busy,
    /// The caller is being rung and called out ([`text::BUSY`]).
    Glare,
    /// The caller has a call of their own ([`text::ALREADY_IN_CALL`]).
    AlreadyInCall,
    /// The caller called their own name ([`text::SELF_CALL`]).
    SelfCall,
    /// Nobody is registered under that name (`"rejected: "`).
    UnknownUser,
    /// The `call` had no SDP offer ([`text::NO_OFFER`]).
    NoOffer,
    /// [`Config::max_calls`] calls hold media ([`text::SERVER_BUSY`]).
    ServerBusy,
    /// The offer has media, but no codec the relay carries
    /// ([`text::NO_USABLE_CODEC`]).
    NoCodec,
}

impl CallRefusal {
    /// Every refusal, in the order of [`Counters::calls_refused`].
    pub const ALL: [CallRefusal; 8] = [
        CallRefusal::Busy,
        CallRefusal::Glare,
        CallRefusal::AlreadyInCall,
        CallRefusal::SelfCall,
        CallRefusal::UnknownUser,
        CallRefusal::NoOffer,
        CallRefusal::ServerBusy,
        CallRefusal::NoCodec,
    ];

    /// The `reason` of the log line and of `one2one_calls_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallRefusal::Busy => "busy",
            CallRefusal::Glare => "glare",
            CallRefusal::AlreadyInCall => "already_in_call",
            CallRefusal::SelfCall => "self_call",
            CallRefusal::UnknownUser => "unknown_user",
            CallRefusal::NoOffer => "no_offer",
            CallRefusal::ServerBusy => "server_busy",
            CallRefusal::NoCodec => "no_codec",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a `register` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationRefusal {
    /// Another connection holds the name, or one with the same key.
    NameTaken,
    /// [`normalize_name`] refused it.
    NameInvalid,
    /// The connection already has a name.
    AlreadyRegistered,
}

impl RegistrationRefusal {
    /// Every refusal, in the order of [`Counters::registrations_refused`].
    pub const ALL: [RegistrationRefusal; 3] =
        [RegistrationRefusal::NameTaken, RegistrationRefusal::NameInvalid, RegistrationRefusal::AlreadyRegistered];

    /// The `reason` of the log line and of
    /// `one2one_registrations_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationRefusal::NameTaken => "name_taken",
            RegistrationRefusal::NameInvalid => "name_invalid",
            RegistrationRefusal::AlreadyRegistered => "already_registered",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the core has counted since it started: plain numbers, copied into
/// the metrics by the driver. Every call in `calls_started` is either still
/// in [`Signaling::active_calls`] or counted once in `calls_ended`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Calls that rang a callee.
    pub calls_started: u64,
    /// Ended calls, indexed like [`EndReason::ALL`].
    pub calls_ended: [u64; EndReason::ALL.len()],
    /// Calls refused before ringing, indexed like [`CallRefusal::ALL`].
    pub calls_refused: [u64; CallRefusal::ALL.len()],
    /// Refused registrations, indexed like [`RegistrationRefusal::ALL`].
    pub registrations_refused: [u64; RegistrationRefusal::ALL.len()],
}

impl Counters {
    pub fn ended(&self, reason: EndReason) -> u64 {
        self.calls_ended[reason.index()]
    }
    pub fn ended_total(&self) -> u64 {
        self.calls_ended.iter().sum()
    }
    pub fn refused(&self, reason: CallRefusal) -> u64 {
        self.calls_refused[reason.index()]
    }
    pub fn registration_refused(&self, reason: RegistrationRefusal) -> u64 {
        self.registrations_refused[reason.index()]
    }
}

/// Registry plus calls. See the module docs for the rules.
#[derive(Debug)]
pub struct Signaling {
    config: Config,
    conns: HashMap<ConnId, Conn>,
    /// [`name_key`] of each registered name → its connection.
    names: HashMap<String, ConnId>,
    calls: HashMap<CallId, Call>,
    deadlines: BTreeSet<(Instant, CallId)>,
    next_call: u64,
    out: VecDeque<Output>,
    counters: Counters,
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
            counters: Counters::default(),
        }
    }

    pub fn registered_users(&self) -> usize {
        self.names.len()
    }

    /// Calls ringing, connecting or in progress.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// What the core has counted (for the metrics).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The registered name of a connection, if any.
    pub fn name_of(&self, conn: ConnId) -> Option<&str> {
        self.conns.get(&conn).and_then(|c| c.name.as_deref())
    }

    /// The connection registered under a name with the same [`name_key`].
    pub fn conn_of(&self, name: &str) -> Option<ConnId> {
        self.names.get(&name_key(name)).copied()
    }

    /// The caller's registered name of the call ringing `conn`, if one does.
    pub fn ringing_from(&self, conn: ConnId) -> Option<&str> {
        let id = self.conns.get(&conn)?.call?;
        let call = self.calls.get(&id)?;
        (matches!(call.phase, Phase::Ringing) && call.leg_of(conn) == Some(Leg::Callee)).then(|| call.name(Leg::Caller))
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
                // Not answered, or answered but media has not flowed both
                // ways in time.
                Phase::Connecting => self.end_call(id, EndReason::MediaFailed, Some("media setup timed out".into())),
                Phase::Active if !call.established => {
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

    fn on_register(&mut self, conn: ConnId, raw: String) {
        if let Some(current) = self.name_of(conn) {
            let msg = text::already_registered(current);
            self.refuse_registration(conn, RegistrationRefusal::AlreadyRegistered, &raw, msg);
            return;
        }
        let name = match normalize_name(&raw) {
            Ok(name) => name,
            Err(msg) => {
                self.refuse_registration(conn, RegistrationRefusal::NameInvalid, &raw, msg);
                return;
            }
        };
        let key = name_key(&name);
        if let Some(&holder) = self.names.get(&key) {
            // The holder's spelling: that is the name in use.
            let msg = text::name_taken(self.name_of(holder).unwrap_or(&name));
            self.refuse_registration(conn, RegistrationRefusal::NameTaken, &raw, msg);
            return;
        }
        tracing::info!(conn, user = %log_safe(&name), "registered");
        self.names.insert(key.clone(), conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.name = Some(name);
            c.key = Some(key);
        }
        self.send(conn, ServerMsg::register_accepted());
    }

    fn refuse_registration(&mut self, conn: ConnId, why: RegistrationRefusal, raw: &str, msg: String) {
        self.counters.registrations_refused[why.index()] += 1;
        tracing::info!(conn, name = %log_safe(raw), reason = why.as_str(), detail = %log_safe(&msg), "registration refused");
        self.send(conn, ServerMsg::register_rejected(msg));
    }

    /// Refuses a `call` before anyone is rung: counted, logged, and the
    /// caller gets `msg` (a ready `callResponse`).
    fn refuse_call(&mut self, conn: ConnId, why: CallRefusal, to: &str, msg: ServerMsg) {
        self.counters.calls_refused[why.index()] += 1;
        let caller = self.name_of(conn).unwrap_or_default();
        tracing::info!(conn, caller = %log_safe(caller), callee = %log_safe(to), reason = why.as_str(), "call refused");
        self.send(conn, msg);
    }

    fn on_call(&mut self, now: Instant, conn: ConnId, to: String, offer: String) {
        let (caller_name, caller_key) = match self.conns.get(&conn) {
            Some(Conn { name: Some(name), key: Some(key), .. }) => (name.clone(), key.clone()),
            _ => return,
        };
        if let Some(id) = self.conns.get(&conn).and_then(|c| c.call) {
            // Glare: the sender is being rung and called out before its
            // client saw the incomingCall. The call that reached us first
            // wins; this one meets a busy line and the ringing call is left
            // alone, so the sender can still accept it.
            let ringing_me = self
                .calls
                .get(&id)
                .filter(|call| matches!(call.phase, Phase::Ringing) && call.leg_of(conn) == Some(Leg::Callee))
                .map(|call| name_key(call.name(Leg::Caller)));
            if ringing_me.as_ref().is_some_and(|caller| *caller == name_key(&to)) {
                self.refuse_call(conn, CallRefusal::Glare, &to, ServerMsg::call_rejected(text::BUSY));
                return;
            } else if ringing_me.is_some() {
                // Rung while placing a call to someone else: the user is
                // busy with their own call (their client refuses the ring
                // as "bussy" when it sees it). The ring ends as busy and
                // this call goes ahead.
                tracing::info!(%id, conn, "a rung user called out: the ring ends as busy");
                self.end_call(id, EndReason::Busy, None);
            } else {
                self.refuse_call(
                    conn,
                    CallRefusal::AlreadyInCall,
                    &to,
                    ServerMsg::call_rejected(text::ALREADY_IN_CALL),
                );
                return;
            }
        }
        let key = name_key(&to);
        if key == caller_key {
            self.refuse_call(conn, CallRefusal::SelfCall, &to, ServerMsg::call_rejected(text::SELF_CALL));
            return;
        }
        let Some(callee) = self.names.get(&key).copied() else {
            self.refuse_call(conn, CallRefusal::UnknownUser, &to, ServerMsg::call_unknown(&to));
            return;
        };
        if self.conns.get(&callee).is_some_and(|c| c.call.is_some()) {
            self.refuse_call(conn, CallRefusal::Busy, &to, ServerMsg::call_rejected(text::BUSY));
            return;
        }
        if offer.trim().is_empty() {
            self.refuse_call(conn, CallRefusal::NoOffer, &to, ServerMsg::call_rejected(text::NO_OFFER));
            return;
        }
        // A call that cannot carry anything fails before anyone is rung.
        // (Only a refusal of every codec counts: the offer's other faults
        // are the relay's to report, with the call's parties told.)
        if let Err(one2one_media::sdp_check::OfferError::NoUsableCodec) = one2one_media::sdp_check::check_offer(&offer)
        {
            self.refuse_call(conn, CallRefusal::NoCodec, &to, ServerMsg::call_rejected(text::NO_USABLE_CODEC));
            return;
        }
        if let Some(max) = self.config.max_calls
            && self.calls.len() >= max
        {
            self.refuse_call(conn, CallRefusal::ServerBusy, &to, ServerMsg::call_rejected(text::SERVER_BUSY));
            return;
        }
        let callee_name = self.name_of(callee).unwrap_or_default().to_owned();
        let id = CallId(self.next_call);
        self.next_call += 1;
        let caller_queue = self.take_pending(now, conn);
        let deadline = now + self.config.ring_timeout;
        tracing::info!(%id, conn, caller = %log_safe(&caller_name), callee = %log_safe(&callee_name), "call ringing");
        self.calls.insert(
            id,
            Call {
                parties: [conn, callee],
                names: [caller_name.clone(), callee_name],
                caller_offer: offer,
                phase: Phase::Ringing,
                deadline: Some(deadline),
                caller_queue,
                accepted: None,
                established: false,
                answers: [None, None],
                candidates: [0, 0],
            },
        );
        self.counters.calls_started += 1;
        self.deadlines.insert((deadline, id));
        for party in [conn, callee] {
            if let Some(c) = self.conns.get_mut(&party) {
                c.call = Some(id);
            }
        }
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
        let Some((id, call)) =
            self.conns.get(&conn).and_then(|c| c.call).and_then(|id| Some((id, self.calls.get(&id)?)))
        else {
            // No call at all: the original's answer when the caller is gone
            // (or never was). The client has nothing to keep in step.
            tracing::debug!(conn, from = %log_safe(&from), "incomingCallResponse without a call");
            self.send(conn, ServerMsg::stop(text::unknown_from(&from)));
            return;
        };
        if !matches!(call.phase, Phase::Ringing) || call.leg_of(conn) != Some(Leg::Callee) {
            if answer == CallAnswer::Reject {
                // A client busy with its own call refusing a ring that the
                // server already ended for it (see `on_call`): in step.
                tracing::debug!(%id, conn, from = %log_safe(&from), "late rejection of an ended ring ignored");
                return;
            }
            // The sender's own call goes on: a stopCommunication here would
            // make its client drop a call the server keeps.
            tracing::info!(%id, conn, from = %log_safe(&from), "incomingCallResponse refused: nothing rings this user");
            self.send(conn, ServerMsg::error(text::answer_without_ringing(&from)));
            return;
        }
        if name_key(&from) != name_key(call.name(Leg::Caller)) {
            let caller = call.name(Leg::Caller).to_owned();
            tracing::info!(%id, conn, from = %log_safe(&from), caller = %log_safe(&caller), "incomingCallResponse refused: wrong from; the call still rings");
            self.send(conn, ServerMsg::error(text::answer_wrong_from(&from, &caller)));
            return;
        }
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
                call.phase = Phase::Connecting;
                call.accepted = Some(now);
                let caller_offer = std::mem::take(&mut call.caller_offer);
                let caller_queue = std::mem::take(&mut call.caller_queue);
                call.candidates = [caller_queue.len(), pending.len()];
                tracing::info!(%id, caller = %log_safe(&call.names[0]), callee = %log_safe(&call.names[1]), "call accepted");
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
                _ => {
                    // Counted with those queued before the accept.
                    let sent = &mut call.candidates[leg.index()];
                    if *sent >= self.config.max_call_candidates {
                        tracing::debug!(%id, ?leg, "candidate dropped: this user gave the call too many");
                        return;
                    }
                    *sent += 1;
                    self.media(MediaCmd::AddCandidate { call: id, leg, candidate });
                }
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
            tracing::info!(conn, user = %log_safe(&name), "unregistered");
            if let Some(key) = c.key {
                self.names.remove(&key);
            }
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
            MediaEvent::Answer { call: id, leg, sdp } => {
                let Some(call) = self.calls.get_mut(&id) else {
                    // The call ended during setup; its Release is already out.
                    return;
                };
                let Phase::Connecting = call.phase else {
                    return;
                };
                call.answers[leg.index()] = Some(sdp);
                let [Some(_), Some(_)] = &call.answers else {
                    return;
                };
                let [Some(caller_answer), Some(callee_answer)] = std::mem::take(&mut call.answers) else {
                    return;
                };
                call.phase = Phase::Active;
                // The setup deadline runs on until media flows both ways.
                if call.established
                    && let Some(old) = call.deadline.take()
                {
                    self.deadlines.remove(&(old, id));
                }
                let (caller, callee) = (call.conn(Leg::Caller), call.conn(Leg::Callee));
                tracing::info!(%id, caller = %log_safe(&call.names[0]), callee = %log_safe(&call.names[1]), "call answered: both SDP answers sent");
                // The original's order: the callee hears first.
                self.send(callee, ServerMsg::StartCommunication { sdp_answer: callee_answer });
                self.send(caller, ServerMsg::call_accepted(caller_answer));
            }
            MediaEvent::Established { call: id } => {
                let Some(call) = self.calls.get_mut(&id) else {
                    return;
                };
                let Some(accepted) = call.accepted.filter(|_| !call.established) else {
                    return;
                };
                call.established = true;
                if matches!(call.phase, Phase::Active)
                    && let Some(old) = call.deadline.take()
                {
                    self.deadlines.remove(&(old, id));
                }
                let setup = now.saturating_duration_since(accepted);
                tracing::info!(%id, caller = %log_safe(&call.names[0]), callee = %log_safe(&call.names[1]), setup_ms = setup.as_millis() as u64, "call established: media flows both ways");
                self.out.push_back(Output::Established { call: id, setup });
            }
            MediaEvent::Failed { call, error } => {
                if self.calls.contains_key(&call) {
                    self.end_call(call, EndReason::MediaFailed, Some(error.to_string()));
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
        self.counters.calls_ended[reason.index()] += 1;
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
        let connecting = matches!(call.phase, Phase::Connecting);
        let who = by.and_then(|b| call.leg_of(b));
        tracing::info!(
            %id,
            caller = %log_safe(&call.names[0]),
            callee = %log_safe(&call.names[1]),
            reason = reason.as_str(),
            by = who.map(|l| log_safe(call.name(l))).map(tracing::field::display),
            detail = detail.as_deref().map(log_safe).map(tracing::field::display),
            "call ended"
        );
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
