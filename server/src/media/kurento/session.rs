//! One media server's JSON-RPC session and the calls on it, without IO:
//! time comes in as `now`, frames come in as text, and everything to do
//! comes out as [`Output`]s (the driver in [`super::driver`] does it).
//!
//! The link: connect, `ping {"interval":N}`, `describe` the server manager
//! (that makes the session), `invoke getInfo`, then ready. Every request
//! carries the sessionId once known and has a deadline. A ready link is
//! pinged every `ping_interval`. When the socket breaks, it reconnects with
//! back-off and sends `ping` then `connect {"sessionId":S}`: when the
//! server still knows the session, the calls on it go on (requests that
//! were in flight are sent again under their ids, which KMS's request
//! cache answers once); when it does not (40007, another session, another
//! server), or no reconnection came within `reconnect_grace`, every call on
//! it fails with [`MediaError::Lost`].

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::call::{CallCore, CallOut, Step};
use super::rpc::{self, Incoming, RpcError, SERVER_MANAGER};
use crate::media::{CallId, Leg, MediaCmd, MediaError, MediaEvent};

/// How the session keeps time.
#[derive(Debug, Clone)]
pub struct Timing {
    pub request_timeout: Duration,
    pub ping_interval: Duration,
    /// How long a broken socket may take to come back before its calls
    /// are lost.
    pub reconnect_grace: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// What the driver has to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a new socket, then report [`KmsCore::connected`] or
    /// [`KmsCore::connect_failed`].
    Connect,
    Send(String),
    /// Close the socket (the core already counts it as gone).
    Close,
    Event(MediaEvent),
    /// The server can take new calls (or not any more).
    Up(bool),
    /// A request failed: an error, a malformed answer, no answer in time.
    RequestError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Ping,
    Describe,
    GetInfo,
    Resume,
    Call(CallId, Step),
    /// The release of a pipeline whose call is gone.
    Orphan,
}

impl Purpose {
    fn is_link(self) -> bool {
        matches!(self, Purpose::Ping | Purpose::Describe | Purpose::GetInfo | Purpose::Resume)
    }
}

#[derive(Debug)]
struct Pending {
    purpose: Purpose,
    sent: Instant,
    deadline: Instant,
    frame: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Down {
        retry_at: Instant,
    },
    Connecting,
    /// The socket is open; the handshake is at this request.
    Handshake(Purpose),
    Ready,
}

/// One media server.
#[derive(Debug)]
pub struct KmsCore {
    name: String,
    t: Timing,
    link: Link,
    backoff: Duration,
    session: Option<String>,
    server_id: Option<String>,
    pinged_once: bool,
    /// The socket broke while calls were on it: they wait until this
    /// plus `reconnect_grace`.
    broken_since: Option<Instant>,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    deadlines: BTreeSet<(Instant, u64)>,
    /// Requests that wait for the link to be ready.
    waiting: VecDeque<(Purpose, &'static str, Option<Value>)>,
    /// `create` MediaPipeline requests whose call gave up on them: what
    /// they create is released at once.
    late_creates: HashSet<u64>,
    next_ping: Option<Instant>,
    calls: HashMap<CallId, CallCore>,
    endpoints: HashMap<String, (CallId, Leg)>,
    out: VecDeque<Output>,
    shutting_down: bool,
}

impl KmsCore {
    /// A core that starts by connecting.
    pub fn new(name: impl Into<String>, t: Timing) -> KmsCore {
        let mut core = KmsCore {
            name: name.into(),
            backoff: t.backoff_min,
            t,
            link: Link::Connecting,
            session: None,
            server_id: None,
            pinged_once: false,
            broken_since: None,
            next_id: 0,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            waiting: VecDeque::new(),
            late_creates: HashSet::new(),
            next_ping: None,
            calls: HashMap::new(),
            endpoints: HashMap::new(),
            out: VecDeque::new(),
            shutting_down: false,
        };
        core.out.push_back(Output::Connect);
        core
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn is_ready(&self) -> bool {
        self.link == Link::Ready
    }

    /// Calls this core still holds (ended ones included until released).
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// The next moment [`KmsCore::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = match self.link {
            Link::Down { retry_at } if !self.shutting_down => Some(retry_at),
            _ => None,
        };
        let grace = self.broken_since.map(|at| at + self.t.reconnect_grace);
        [retry, grace, self.next_ping, self.deadlines.first().map(|(at, _)| *at)].into_iter().flatten().min()
    }

    /// Nothing this client asked of the server is still unanswered (what
    /// shutdown waits for).
    pub fn idle(&self) -> bool {
        self.pending.values().all(|p| p.purpose.is_link()) || !self.is_ready()
    }

    // --- the link -------------------------------------------------------

    pub fn connected(&mut self, now: Instant) {
        if self.link != Link::Connecting {
            return;
        }
        let params = (!self.pinged_once).then(|| json!({ "interval": self.t.ping_interval.as_millis() as u64 }));
        self.pinged_once = true;
        self.link = Link::Handshake(Purpose::Ping);
        self.send_now(now, Purpose::Ping, "ping", params);
    }

    pub fn connect_failed(&mut self, now: Instant, why: &str) {
        if self.link != Link::Connecting {
            return;
        }
        tracing::debug!(kms = %self.name, why, "media server not reachable");
        self.down(now);
    }

    /// The socket closed or broke.
    pub fn disconnected(&mut self, now: Instant, why: &str) {
        if matches!(self.link, Link::Down { .. } | Link::Connecting) {
            return;
        }
        tracing::warn!(kms = %self.name, why, calls = self.live_calls(), "connection to the media server lost");
        self.down(now);
    }

    fn down(&mut self, now: Instant) {
        if self.link == Link::Ready {
            self.out.push_back(Output::Up(false));
        }
        self.link = Link::Down { retry_at: now + self.backoff };
        self.backoff = (self.backoff * 2).min(self.t.backoff_max);
        self.next_ping = None;
        let link_ids: Vec<u64> = self.pending.iter().filter(|(_, p)| p.purpose.is_link()).map(|(id, _)| *id).collect();
        for id in link_ids {
            self.forget(id);
        }
        if self.broken_since.is_none() && (self.live_calls() > 0 || !self.pending.is_empty()) {
            self.broken_since = Some(now);
        }
    }

    /// Closes the socket for a protocol failure, and reconnects.
    fn drop_link(&mut self, now: Instant, why: &str) {
        self.out.push_back(Output::Close);
        self.disconnected(now, why);
    }

    fn ready(&mut self, now: Instant) {
        tracing::info!(kms = %self.name, session = self.session.as_deref().unwrap_or(""), "media server ready");
        self.link = Link::Ready;
        self.backoff = self.t.backoff_min;
        self.broken_since = None;
        self.next_ping = Some(now + self.t.ping_interval);
        self.out.push_back(Output::Up(true));
        // What was in flight when the socket broke goes again, under the
        // same ids, oldest first.
        let mut again: Vec<(u64, String)> = self.pending.iter().map(|(id, p)| (*id, p.frame.clone())).collect();
        again.sort_unstable_by_key(|(id, _)| *id);
        for (_, frame) in again {
            self.out.push_back(Output::Send(frame));
        }
        for (purpose, method, params) in std::mem::take(&mut self.waiting) {
            self.send_now(now, purpose, method, params);
        }
    }

    fn live_calls(&self) -> usize {
        self.calls.values().filter(|c| !c.ended()).count()
    }

    /// Every call fails with `error`; with `forgotten`, the server forgot
    /// them (nothing left to release), else their pipelines are released
    /// once a link to the same session is back.
    fn lose_calls(&mut self, error: &MediaError, forgotten: bool) {
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            let Some(call) = self.calls.get_mut(&id) else { continue };
            let outs = call.fail(error.clone());
            if let Some(p) = call.forget_pipeline()
                && !forgotten
            {
                self.waiting.push_back((Purpose::Orphan, "release", Some(json!({ "object": p }))));
            }
            self.apply(id, outs, None);
        }
        let call_ids: Vec<u64> =
            self.pending.iter().filter(|(_, p)| matches!(p.purpose, Purpose::Call(..))).map(|(id, _)| *id).collect();
        for id in call_ids {
            self.forget(id);
        }
        self.waiting.retain(|(p, ..)| !matches!(p, Purpose::Call(..)) && !forgotten);
        if forgotten {
            self.pending.retain(|_, p| p.purpose.is_link());
            self.deadlines.retain(|(_, id)| self.pending.contains_key(id));
            self.late_creates.clear();
        }
        self.endpoints.clear();
        self.calls.retain(|_, c| !c.finished());
    }

    // --- requests -------------------------------------------------------

    fn forget(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        self.deadlines.remove(&(p.deadline, id));
        Some(p)
    }

    fn send_now(&mut self, now: Instant, purpose: Purpose, method: &str, params: Option<Value>) {
        let id = self.next_id;
        self.next_id += 1;
        let session = match purpose {
            // kurento-client: pings go bare, `connect` names the session
            // itself, and `describe` is what makes one.
            Purpose::Ping | Purpose::Resume => None,
            _ => self.session.as_deref(),
        };
        let frame = rpc::request(id, method, rpc::with_session(params, session));
        // A keep-alive ping is answered at once by a live server: one that
        // does not answer within the ping interval is taken for dead.
        let timeout = match purpose {
            Purpose::Ping => self.t.request_timeout.min(self.t.ping_interval),
            _ => self.t.request_timeout,
        };
        let deadline = now + timeout;
        self.pending.insert(id, Pending { purpose, sent: now, deadline, frame: frame.clone() });
        self.deadlines.insert((deadline, id));
        self.out.push_back(Output::Send(frame));
    }

    fn request(&mut self, now: Instant, purpose: Purpose, method: &'static str, params: Option<Value>) {
        if self.is_ready() {
            self.send_now(now, purpose, method, params);
        } else {
            self.waiting.push_back((purpose, method, params));
        }
    }

    fn apply(&mut self, id: CallId, outs: Vec<CallOut>, now: Option<Instant>) {
        for o in outs {
            match o {
                CallOut::Req(r) => match now {
                    Some(now) => self.request(now, Purpose::Call(id, r.step), r.method, r.params),
                    None => self.waiting.push_back((Purpose::Call(id, r.step), r.method, r.params)),
                },
                CallOut::Event(e) => self.out.push_back(Output::Event(e)),
                CallOut::Endpoint(leg, ep) => {
                    self.endpoints.insert(ep, (id, leg));
                }
            }
        }
        if self.calls.get(&id).is_some_and(CallCore::finished) {
            self.calls.remove(&id);
            self.endpoints.retain(|_, (c, _)| *c != id);
        }
    }

    fn create_in_flight(&self, id: CallId) -> bool {
        self.pending.values().any(|p| p.purpose == Purpose::Call(id, Step::CreatePipeline))
            || self.waiting.iter().any(|(p, ..)| *p == Purpose::Call(id, Step::CreatePipeline))
    }

    // --- inputs -----------------------------------------------------------

    pub fn handle_cmd(&mut self, now: Instant, cmd: MediaCmd) {
        match cmd {
            MediaCmd::Start { call, caller_offer, callee_offer } => {
                if !self.is_ready() || self.shutting_down || self.calls.contains_key(&call) {
                    let error = MediaError::Unreachable(super::NONE_REACHABLE.into());
                    self.out.push_back(Output::Event(MediaEvent::Failed { call, error }));
                    return;
                }
                let (core, outs) = CallCore::start(call, caller_offer, callee_offer);
                self.calls.insert(call, core);
                self.apply(call, outs, Some(now));
            }
            MediaCmd::AddCandidate { call, leg, candidate } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    let outs = c.add_candidate(leg, candidate);
                    self.apply(call, outs, Some(now));
                }
            }
            MediaCmd::Release { call } => {
                let in_flight = self.create_in_flight(call);
                if let Some(c) = self.calls.get_mut(&call) {
                    let outs = c.release(in_flight);
                    self.apply(call, outs, Some(now));
                }
            }
        }
    }

    /// Releases every call (the backend is shutting down).
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            self.handle_cmd(now, MediaCmd::Release { call: id });
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Link::Down { retry_at } = self.link
            && retry_at <= now
            && !self.shutting_down
        {
            self.link = Link::Connecting;
            self.out.push_back(Output::Connect);
        }
        if let Some(at) = self.broken_since
            && at + self.t.reconnect_grace <= now
        {
            self.broken_since = None;
            let grace = self.t.reconnect_grace.as_secs_f32();
            tracing::warn!(kms = %self.name, calls = self.live_calls(), "media server did not come back within {grace} s: its calls are lost");
            let error = MediaError::Lost(format!("the connection to it broke and did not come back within {grace} s"));
            self.lose_calls(&error, false);
        }
        if self.link == Link::Ready
            && let Some(at) = self.next_ping
            && at <= now
        {
            self.next_ping = None;
            self.send_now(now, Purpose::Ping, "ping", None);
        }
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            let Some(p) = self.forget(id) else { continue };
            self.out.push_back(Output::RequestError);
            match p.purpose {
                Purpose::Call(call, step) => {
                    tracing::warn!(kms = %self.name, %call, request = %step.what(), "media server did not answer in time");
                    if step == Step::CreatePipeline {
                        self.late_creates.insert(id);
                    }
                    if let Some(c) = self.calls.get_mut(&call) {
                        let outs = c.on_timeout(step, self.t.request_timeout);
                        self.apply(call, outs, Some(now));
                    }
                }
                Purpose::Orphan => {}
                _ => {
                    self.drop_link(now, "no answer to the session's request in time");
                    // A silent server died when it stopped answering: its
                    // calls' grace runs from then.
                    if let Some(at) = &mut self.broken_since {
                        *at = (*at).min(p.sent);
                    }
                }
            }
        }
    }

    /// A text (or UTF-8 binary) frame from the server.
    pub fn handle_frame(&mut self, now: Instant, text: &str) {
        match rpc::decode(text) {
            Incoming::Reply { id, outcome } => self.on_reply(now, id, outcome),
            Incoming::BadReply { id, why } => {
                self.out.push_back(Output::RequestError);
                let Some(p) = self.forget(id) else { return };
                tracing::warn!(kms = %self.name, id, why, "malformed answer from the media server");
                match p.purpose {
                    Purpose::Call(call, step) => {
                        if step == Step::CreatePipeline {
                            self.late_creates.insert(id);
                        }
                        let error = MediaError::Internal(format!(
                            "the media server sent a malformed answer to {}",
                            step.what()
                        ));
                        if let Some(c) = self.calls.get_mut(&call) {
                            let outs = c.fail(error);
                            self.apply(call, outs, Some(now));
                        }
                    }
                    Purpose::Orphan => {}
                    _ => self.drop_link(now, "malformed answer during the handshake"),
                }
            }
            Incoming::Event { object, kind, data } => {
                if kind != "IceCandidateFound" {
                    return;
                }
                if let Some(&(call, leg)) = self.endpoints.get(&object)
                    && let Some(c) = self.calls.get(&call)
                    && let Some(ev) = c.on_candidate_found(leg, &data)
                {
                    self.out.push_back(Output::Event(ev));
                }
            }
            Incoming::Ignored(what) => tracing::debug!(kms = %self.name, what, "ignored a frame"),
            Incoming::Malformed(why) => {
                self.out.push_back(Output::RequestError);
                tracing::warn!(kms = %self.name, why = %log_cut(&why), "malformed frame from the media server");
                // Any request in flight may have been the one it answered:
                // their calls cannot trust the session's answers any more.
                let affected: BTreeSet<CallId> = self
                    .pending
                    .values()
                    .filter_map(|p| match p.purpose {
                        Purpose::Call(c, _) => Some(c),
                        _ => None,
                    })
                    .collect();
                for call in affected {
                    if let Some(c) = self.calls.get_mut(&call) {
                        let outs = c.fail(MediaError::Internal("the media server sent a malformed frame".into()));
                        self.apply(call, outs, Some(now));
                    }
                }
                if matches!(self.link, Link::Handshake(_)) {
                    self.drop_link(now, "malformed frame during the handshake");
                }
            }
        }
    }

    fn on_reply(&mut self, now: Instant, id: u64, outcome: Result<Value, RpcError>) {
        let Some(p) = self.forget(id) else {
            if self.late_creates.remove(&id)
                && let Ok(r) = &outcome
                && let Some(pipeline) = rpc::value_str(r)
            {
                tracing::info!(kms = %self.name, pipeline, "late pipeline released");
                let params = Some(json!({ "object": pipeline }));
                self.request(now, Purpose::Orphan, "release", params);
            }
            return;
        };
        if let Err(e) = &outcome {
            self.out.push_back(Output::RequestError);
            tracing::warn!(kms = %self.name, id, code = e.code, message = %log_cut(&e.message), purpose = ?p.purpose, "media server refused a request");
        }
        match p.purpose {
            Purpose::Ping => {
                if self.link == Link::Handshake(Purpose::Ping) {
                    if let Some(s) = self.session.clone() {
                        self.link = Link::Handshake(Purpose::Resume);
                        self.send_now(now, Purpose::Resume, "connect", Some(json!({ "sessionId": s })));
                    } else {
                        self.describe(now);
                    }
                } else if self.link == Link::Ready {
                    self.next_ping = Some(now + self.t.ping_interval);
                }
            }
            Purpose::Describe => match outcome.as_ref().ok().and_then(rpc::session_of) {
                Some(s) if self.link == Link::Handshake(Purpose::Describe) => {
                    self.session = Some(s.to_owned());
                    self.link = Link::Handshake(Purpose::GetInfo);
                    let params = json!({ "object": SERVER_MANAGER, "operation": "getInfo" });
                    self.send_now(now, Purpose::GetInfo, "invoke", Some(params));
                }
                _ => self.drop_link(now, "describe gave no session"),
            },
            Purpose::GetInfo => match outcome {
                Ok(_) if self.link == Link::Handshake(Purpose::GetInfo) => self.ready(now),
                _ => self.drop_link(now, "getInfo failed"),
            },
            Purpose::Resume => {
                if self.link != Link::Handshake(Purpose::Resume) {
                    return;
                }
                let ours = self.session.as_deref();
                let resumed = match &outcome {
                    Ok(r) => {
                        let same_session = rpc::session_of(r).is_none_or(|s| Some(s) == ours);
                        let server = r.get("serverId").and_then(Value::as_str);
                        let same_server = match (&self.server_id, server) {
                            (Some(a), Some(b)) => a == b,
                            _ => true,
                        };
                        if same_session && let Some(s) = server {
                            self.server_id = Some(s.to_owned());
                        }
                        same_session && same_server
                    }
                    Err(_) => false,
                };
                if resumed {
                    tracing::info!(kms = %self.name, "session resumed");
                    self.ready(now);
                } else {
                    tracing::warn!(kms = %self.name, calls = self.live_calls(), outcome = ?outcome.as_ref().err(), "the media server no longer knows the session (it restarted): its calls are lost");
                    self.broken_since = None;
                    self.session = None;
                    self.server_id = None;
                    let error = MediaError::Lost("it restarted and no longer knows this call".into());
                    self.lose_calls(&error, true);
                    self.describe(now);
                }
            }
            Purpose::Call(call, step) => {
                if let Some(c) = self.calls.get_mut(&call) {
                    let outs = c.on_reply(step, outcome);
                    self.apply(call, outs, Some(now));
                } else if step == Step::CreatePipeline
                    && let Ok(r) = &outcome
                    && let Some(pipeline) = rpc::value_str(r)
                {
                    let params = Some(json!({ "object": pipeline }));
                    self.request(now, Purpose::Orphan, "release", params);
                }
            }
            Purpose::Orphan => {}
        }
    }

    fn describe(&mut self, now: Instant) {
        self.link = Link::Handshake(Purpose::Describe);
        self.send_now(now, Purpose::Describe, "describe", Some(json!({ "object": SERVER_MANAGER })));
    }
}

/// Server text in logs: escaped and cut.
fn log_cut(s: &str) -> String {
    shared_proto::log_safe(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::CallId;

    fn timing() -> Timing {
        Timing {
            request_timeout: Duration::from_secs(4),
            ping_interval: Duration::from_secs(2),
            reconnect_grace: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }

    /// Drains the outputs: frames sent (parsed) and the rest.
    fn drain(core: &mut KmsCore) -> (Vec<Value>, Vec<Output>) {
        let (mut sent, mut other) = (vec![], vec![]);
        while let Some(o) = core.poll_output() {
            match o {
                Output::Send(t) => sent.push(serde_json::from_str(&t).unwrap()),
                o => other.push(o),
            }
        }
        (sent, other)
    }

    fn answer(core: &mut KmsCore, now: Instant, req: &Value, result: Value) {
        core.handle_frame(now, &json!({"jsonrpc":"2.0","id":req["id"],"result":result}).to_string());
    }

    fn one(sent: Vec<Value>, method: &str) -> Value {
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["method"], method, "{sent:?}");
        sent.into_iter().next().unwrap()
    }

    /// A core through its handshake, with session "S".
    fn ready_core(now: Instant) -> KmsCore {
        let mut core = KmsCore::new("ws://kms/kurento", timing());
        assert_eq!(drain(&mut core).1, [Output::Connect]);
        core.connected(now);
        let ping = one(drain(&mut core).0, "ping");
        assert_eq!(ping["params"], json!({"interval": 2000}));
        answer(&mut core, now, &ping, json!({"value":"pong"}));
        let describe = one(drain(&mut core).0, "describe");
        assert_eq!(describe["params"], json!({"object": SERVER_MANAGER}));
        answer(&mut core, now, &describe, json!({"sessionId":"S","type":"ServerManager"}));
        let info = one(drain(&mut core).0, "invoke");
        assert_eq!(info["params"], json!({"object": SERVER_MANAGER, "operation": "getInfo", "sessionId": "S"}));
        answer(&mut core, now, &info, json!({"value":{},"sessionId":"S"}));
        assert_eq!(drain(&mut core).1, [Output::Up(true)]);
        core
    }

    fn start(core: &mut KmsCore, now: Instant, call: u64) -> Value {
        let cmd = MediaCmd::Start { call: CallId(call), caller_offer: "a".into(), callee_offer: "b".into() };
        core.handle_cmd(now, cmd);
        one(drain(core).0, "create")
    }

    fn failed(outs: &[Output]) -> Vec<String> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Event(MediaEvent::Failed { error, .. }) => Some(error.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn keep_alive_pings_are_bare_and_a_silent_server_is_dropped() {
        let t0 = Instant::now();
        let mut core = ready_core(t0);
        assert_eq!(core.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        core.handle_timeout(t0 + Duration::from_secs(2));
        let ping = one(drain(&mut core).0, "ping");
        assert_eq!(ping.get("params"), None);
        core.handle_timeout(t0 + Duration::from_secs(6));
        let (_, outs) = drain(&mut core);
        assert_eq!(outs, [Output::RequestError, Output::Close, Output::Up(false)]);
        assert!(!core.is_ready());
    }

    #[test]
    fn a_resumed_session_keeps_its_calls_and_resends_what_was_in_flight() {
        let t0 = Instant::now();
        let mut core = ready_core(t0);
        let create = start(&mut core, t0, 1);
        core.disconnected(t0, "reset");
        assert_eq!(drain(&mut core).1, [Output::Up(false)]);
        core.handle_timeout(t0 + Duration::from_millis(100));
        assert_eq!(drain(&mut core).1, [Output::Connect]);
        core.connected(t0 + Duration::from_millis(150));
        let ping = one(drain(&mut core).0, "ping");
        assert_eq!(ping.get("params"), None, "only the first ping names an interval");
        answer(&mut core, t0, &ping, json!({"value":"pong"}));
        let connect = one(drain(&mut core).0, "connect");
        assert_eq!(connect["params"], json!({"sessionId":"S"}));
        answer(&mut core, t0, &connect, json!({"sessionId":"S","serverId":"K"}));
        let (sent, outs) = drain(&mut core);
        assert_eq!(outs, [Output::Up(true)]);
        assert_eq!(sent, std::slice::from_ref(&create), "the create again, under its id");
        answer(&mut core, t0, &create, json!({"value":"P_kurento.MediaPipeline","sessionId":"S"}));
        let ep = one(drain(&mut core).0, "create");
        assert_eq!(ep["params"]["constructorParams"]["mediaPipeline"], "P_kurento.MediaPipeline");
        // The grace passes without a loss.
        core.handle_timeout(t0 + Duration::from_secs(3));
        assert!(failed(&drain(&mut core).1).is_empty());
    }

    #[test]
    fn a_restarted_server_loses_the_calls_and_gives_a_new_session() {
        let t0 = Instant::now();
        let mut core = ready_core(t0);
        let create = start(&mut core, t0, 1);
        answer(&mut core, t0, &create, json!({"value":"P_kurento.MediaPipeline","sessionId":"S"}));
        drain(&mut core);
        core.disconnected(t0, "reset");
        core.handle_timeout(t0 + Duration::from_millis(100));
        core.connected(t0 + Duration::from_millis(150));
        let ping = one(drain(&mut core).0, "ping");
        answer(&mut core, t0, &ping, json!({"value":"pong"}));
        let connect = one(drain(&mut core).0, "connect");
        core.handle_frame(
            t0,
            &json!({"jsonrpc":"2.0","id":connect["id"],"error":{"code":40007,"message":"Invalid session"}}).to_string(),
        );
        let (sent, outs) = drain(&mut core);
        assert_eq!(failed(&outs), ["media server lost: it restarted and no longer knows this call"]);
        let describe = one(sent, "describe");
        assert_eq!(describe["params"], json!({"object": SERVER_MANAGER}), "a new session: no sessionId");
        // The call core's release: nothing left to release on the server.
        core.handle_cmd(t0, MediaCmd::Release { call: CallId(1) });
        assert!(drain(&mut core).0.is_empty());
        assert_eq!(core.calls(), 0);
    }

    #[test]
    fn no_reconnection_within_the_grace_loses_the_calls_and_releases_later() {
        let t0 = Instant::now();
        let mut core = ready_core(t0);
        let create = start(&mut core, t0, 1);
        answer(&mut core, t0, &create, json!({"value":"P_kurento.MediaPipeline","sessionId":"S"}));
        drain(&mut core);
        core.disconnected(t0, "reset");
        let mut now = t0;
        // Every attempt fails; the back-off doubles; at the grace, the
        // call is lost.
        let mut waits = vec![];
        let mut lost = vec![];
        while lost.is_empty() {
            let at = core.poll_timeout().unwrap();
            waits.push(at - now);
            now = at;
            core.handle_timeout(now);
            let (_, outs) = drain(&mut core);
            lost = failed(&outs);
            if outs.contains(&Output::Connect) {
                core.connect_failed(now, "refused");
            }
        }
        assert_eq!(now, t0 + Duration::from_secs(2));
        assert_eq!(waits[..3], [Duration::from_millis(100), Duration::from_millis(200), Duration::from_millis(400)]);
        assert_eq!(lost, ["media server lost: the connection to it broke and did not come back within 2 s"]);
        core.handle_cmd(now, MediaCmd::Release { call: CallId(1) });
        // Back with the same session: the lost call's pipeline is released.
        core.handle_timeout(core.poll_timeout().unwrap());
        drain(&mut core);
        core.connected(now);
        let ping = one(drain(&mut core).0, "ping");
        answer(&mut core, now, &ping, json!({"value":"pong"}));
        let connect = one(drain(&mut core).0, "connect");
        answer(&mut core, now, &connect, json!({"sessionId":"S","serverId":"K"}));
        let release = one(drain(&mut core).0, "release");
        assert_eq!(release["params"], json!({"object":"P_kurento.MediaPipeline","sessionId":"S"}));
    }

    #[test]
    fn a_late_pipeline_is_released_and_garbage_fails_whoever_waits() {
        let t0 = Instant::now();
        let mut core = ready_core(t0);
        let create = start(&mut core, t0, 1);
        core.handle_timeout(t0 + Duration::from_secs(4));
        let (_, outs) = drain(&mut core);
        assert_eq!(failed(&outs), ["media server did not answer create MediaPipeline within 4 s"]);
        core.handle_cmd(t0, MediaCmd::Release { call: CallId(1) });
        answer(&mut core, t0, &create, json!({"value":"LATE_kurento.MediaPipeline","sessionId":"S"}));
        let release = one(drain(&mut core).0, "release");
        assert_eq!(release["params"]["object"], "LATE_kurento.MediaPipeline");
        // Call 2 waits for an answer; call 3 is not asked anything yet.
        start(&mut core, t0, 2);
        core.handle_frame(t0, "\u{1}garbage");
        let (_, outs) = drain(&mut core);
        assert_eq!(failed(&outs), ["media error: the media server sent a malformed frame"]);
        assert!(core.is_ready(), "the link stays");
        // Unknown ids, other notifications, odd events: nothing happens.
        for f in [
            r#"{"jsonrpc":"2.0","id":999,"result":{}}"#,
            r#"{"jsonrpc":"2.0","method":"onEvent","params":{"value":{"object":"X","type":"IceCandidateFound","data":{}}}}"#,
            r#"{"jsonrpc":"2.0","method":"other"}"#,
        ] {
            core.handle_frame(t0, f);
            assert!(failed(&drain(&mut core).1).is_empty(), "{f}");
        }
    }

    #[test]
    fn a_hung_server_loses_its_calls_within_two_ping_intervals() {
        let t0 = Instant::now();
        let mut core = ready_core(t0);
        let create = start(&mut core, t0, 1);
        answer(&mut core, t0, &create, json!({"value":"P_kurento.MediaPipeline","sessionId":"S"}));
        let ep = one(drain(&mut core).0, "create");
        // Its last answer, at 1 s (the next request would time out at 5 s).
        answer(&mut core, t0 + Duration::from_secs(1), &ep, json!({"value":"P/EA","sessionId":"S"}));
        drain(&mut core);
        let mut now = t0;
        let mut lost = vec![];
        while lost.is_empty() {
            now = core.poll_timeout().unwrap();
            core.handle_timeout(now);
            let (_, outs) = drain(&mut core);
            lost = failed(&outs);
            // Connections hang until the driver's connect timeout: never
            // reported here.
        }
        assert_eq!(now, t0 + Duration::from_secs(4), "ping at 2 s, no answer by 4 s, the grace counted from 2 s");
        assert_eq!(lost, ["media server lost: the connection to it broke and did not come back within 2 s"]);
    }

    #[test]
    fn calls_need_a_ready_server() {
        let t0 = Instant::now();
        let mut core = KmsCore::new("ws://kms/kurento", timing());
        drain(&mut core);
        core.handle_cmd(t0, MediaCmd::Start { call: CallId(1), caller_offer: "a".into(), callee_offer: "b".into() });
        assert_eq!(failed(&drain(&mut core).1), ["media server unreachable: no Kurento Media Server answers"]);
    }
}
