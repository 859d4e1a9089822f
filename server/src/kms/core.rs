//! The KMS protocol, sans IO: sessions, pipelines and WebRtcEndpoints,
//! requests in arrival order per connection, replies and events as KMS
//! 7.3 sends them. Time comes in as `now`, frames come in as bytes, and
//! everything to do goes out as [`Output`]s: text for a connection, a close,
//! or a [`MediaOp`] for the relay legs.
//!
//! A connection's requests are handled strictly one after the other: while
//! a `processOffer` waits for its leg, later frames of that connection wait
//! in its queue (bounded), so every reply leaves in request order.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use one2one_media::sdp_check::{OfferError, summarize};
use serde_json::{Map, Value, json};
use shared_proto::IceCandidate;

use super::rpc::{self, RpcError};
use crate::media::relay::{LegError, LegSpec};

/// One WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// One endpoint's relay leg, as the driver knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpKey(pub u64);

/// The limits and timers of the endpoint.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// How long a session whose socket closed keeps its objects for a
    /// `connect {sessionId}` to claim them.
    pub grace: Duration,
    /// Larger frames get an error (the driver closes at four times this).
    pub max_frame_bytes: usize,
    /// Frames per second per connection, with bursts of `rate_burst`.
    pub rate_per_second: u32,
    pub rate_burst: u32,
    /// More refused frames than this within one second close the
    /// connection (1008).
    pub max_refused_per_second: u32,
    /// Frames waiting behind a `processOffer`; more close the connection.
    pub max_queued: usize,
    /// Bytes of the frames waiting behind a `processOffer` (a frame over
    /// the rate counts only its id); more get an error and close the
    /// connection.
    pub max_queued_bytes: usize,
    /// Sessions in the whole server, detached ones included. A new one
    /// beyond it evicts the session detached longest ago, or is refused
    /// when none is detached.
    pub max_sessions: usize,
    /// MediaPipelines in the whole server.
    pub max_pipelines: usize,
    /// Endpoints in the whole server.
    pub max_endpoints: usize,
    /// Pipelines per session.
    pub max_pipelines_per_session: usize,
    /// Endpoints per pipeline.
    pub max_endpoints_per_pipeline: usize,
    /// Candidates kept per endpoint (the client's before the offer, ours
    /// before `gatherCandidates`).
    pub max_candidates: usize,
    /// The client's candidates per endpoint over its whole life (the ICE
    /// agent keeps every distinct one).
    pub max_remote_candidates: usize,
    /// Subscriptions per object.
    pub max_subscriptions: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            grace: Duration::from_secs(30),
            max_frame_bytes: 256 * 1024,
            // One kurento-client socket carries every call of its app.
            rate_per_second: 2000,
            rate_burst: 4000,
            max_refused_per_second: 200,
            max_queued: 256,
            max_queued_bytes: 4 * 1024 * 1024,
            max_sessions: 1024,
            max_pipelines: 1000,
            max_endpoints: 2000,
            max_pipelines_per_session: 1000,
            max_endpoints_per_pipeline: 4,
            max_candidates: 64,
            max_remote_candidates: 128,
            max_subscriptions: 16,
        }
    }
}

pub enum Input {
    /// A socket was accepted.
    Opened { conn: ConnId },
    /// A text or binary frame.
    Frame { conn: ConnId, data: Vec<u8> },
    /// The socket is gone.
    Closed { conn: ConnId },
    /// A leg answered (or failed) the offer of [`MediaOp::Build`].
    Answered { ep: EpKey, result: Result<String, LegError> },
    /// A local candidate of a leg, found at `unix_millis`.
    LocalCandidate { ep: EpKey, candidate: IceCandidate, unix_millis: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send {
        conn: ConnId,
        text: String,
    },
    /// Close the socket with this code and reason (replies queued before
    /// it go first).
    Close {
        conn: ConnId,
        code: u16,
        reason: &'static str,
    },
    Media(MediaOp),
}

/// What the relay legs have to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaOp {
    /// Build the leg of `ep` answering `offer`; report [`Input::Answered`].
    Build { ep: EpKey, label: String, offer: String, spec: LegSpec },
    /// A candidate of the client, for a leg that answered.
    AddCandidate { ep: EpKey, candidate: IceCandidate },
    /// Forward `from`'s media to `to` (both answered).
    Connect { from: EpKey, to: EpKey },
    /// Stop forwarding `from`'s media.
    Disconnect { from: EpKey },
    /// Free the leg (even while it is being built).
    Release { ep: EpKey },
}

/// Gauges and counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub connections: u64,
    pub sessions: u64,
    pub pipelines: u64,
    pub endpoints: u64,
    pub errors: u64,
}

const SERVER_MANAGER: &str = "manager_ServerManager";
const PIPELINE_SUFFIX: &str = "_kurento.MediaPipeline";
const ENDPOINT_SUFFIX: &str = "_kurento.WebRtcEndpoint";

/// Events a KMS 7 WebRtcEndpoint has: subscribing works, only
/// IceCandidateFound is ever sent.
const ENDPOINT_EVENTS: &[&str] = &[
    "IceCandidateFound",
    "IceGatheringDone",
    "IceComponentStateChanged",
    "NewCandidatePairSelected",
    "DtlsConnectionStateChange",
    "DataChannelOpened",
    "DataChannelClosed",
    "MediaStateChanged",
    "ConnectionStateChanged",
    "MediaSessionStarted",
    "MediaSessionTerminated",
    "MediaFlowInStateChanged",
    "MediaFlowOutStateChanged",
    "MediaTranscodingStateChanged",
    "ElementConnected",
    "ElementDisconnected",
    "Error",
];
const PIPELINE_EVENTS: &[&str] = &["Error"];

/// Element types of KMS that one2one-server does not have.
const KMS_TYPES: &[&str] = &[
    "RecorderEndpoint",
    "PlayerEndpoint",
    "RtpEndpoint",
    "HttpPostEndpoint",
    "Composite",
    "Dispatcher",
    "DispatcherOneToMany",
    "HubPort",
    "Mixer",
    "PassThrough",
    "AlphaBlending",
    "FaceOverlayFilter",
    "GStreamerFilter",
    "ImageOverlayFilter",
    "ZBarFilter",
];

struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        let elapsed = self.at.map(|t| now.saturating_duration_since(t).as_secs_f64()).unwrap_or(0.0);
        self.at = Some(now);
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

enum Queued {
    Frame(Vec<u8>),
    /// Over the rate: answered with this error when its turn comes (only
    /// the id is kept).
    Limited(Option<Value>, RpcError),
}

impl Queued {
    /// What it counts against [`CoreConfig::max_queued_bytes`].
    fn cost(&self) -> usize {
        match self {
            Queued::Frame(d) => d.len(),
            Queued::Limited(..) => 64,
        }
    }
}

struct Conn {
    session: Option<String>,
    queue: VecDeque<Queued>,
    /// What the queue's frames weigh ([`Queued::cost`]).
    queued_bytes: usize,
    /// A `processOffer` waiting for its leg: the endpoint and request id.
    waiting: Option<(EpKey, Option<Value>)>,
    bucket: Bucket,
    /// Refusals since the instant, within a one-second window.
    refused: (Option<Instant>, u32),
    closing: bool,
}

struct Session {
    conn: Option<ConnId>,
    detached_at: Option<Instant>,
    pipelines: Vec<String>,
}

struct Sub {
    id: String,
    event: String,
}

struct Pipeline {
    session: String,
    endpoints: Vec<String>,
    subs: Vec<Sub>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EpState {
    Created,
    Offering,
    Negotiated,
}

struct Endpoint {
    key: EpKey,
    pipeline: String,
    session: String,
    state: EpState,
    /// The client's candidates until the leg has answered.
    remote: Vec<IceCandidate>,
    /// Our candidates until `gatherCandidates`.
    local: Vec<(IceCandidate, u64)>,
    gathering: bool,
    /// The client's candidates so far, kept or handed to the leg.
    remote_seen: usize,
    subs: Vec<Sub>,
    /// Where this endpoint's media goes, and where its own comes from.
    sink: Option<String>,
    source: Option<String>,
}

impl Endpoint {
    /// The one endpoint this one is connected with, either way.
    fn peer(&self) -> Option<&str> {
        self.sink.as_deref().or(self.source.as_deref())
    }
}

/// What a request produced.
enum Reply {
    Now(Value),
    /// The reply comes with the leg's answer.
    Later,
}

type Params = Map<String, Value>;

pub struct Core {
    cfg: CoreConfig,
    conns: HashMap<ConnId, Conn>,
    sessions: HashMap<String, Session>,
    pipelines: HashMap<String, Pipeline>,
    endpoints: HashMap<String, Endpoint>,
    keys: HashMap<EpKey, String>,
    /// Detached sessions by the instant they were detached.
    detached: BTreeSet<(Instant, String)>,
    next_key: u64,
    server_id: String,
    errors: u64,
    random: Box<dyn FnMut() -> u128 + Send>,
    out: VecDeque<Output>,
}

impl Core {
    /// `random` gives the bits of each new id (sessions, objects,
    /// subscriptions).
    pub fn new(cfg: CoreConfig, mut random: Box<dyn FnMut() -> u128 + Send>) -> Core {
        let server_id = rpc::uuid(random());
        Core {
            cfg,
            conns: HashMap::new(),
            sessions: HashMap::new(),
            pipelines: HashMap::new(),
            endpoints: HashMap::new(),
            keys: HashMap::new(),
            detached: BTreeSet::new(),
            next_key: 1,
            server_id,
            errors: 0,
            random,
            out: VecDeque::new(),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.conns.len() as u64,
            sessions: self.sessions.len() as u64,
            pipelines: self.pipelines.len() as u64,
            endpoints: self.endpoints.len() as u64,
            errors: self.errors,
        }
    }

    /// When [`Core::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.detached.first().map(|(t, _)| *t + self.cfg.grace)
    }

    /// Releases the objects of sessions whose grace has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((t, id)) = self.detached.first().cloned() {
            if now < t + self.cfg.grace {
                break;
            }
            self.detached.remove(&(t, id.clone()));
            tracing::info!(session = %id, "KMS session expired: its objects are released");
            self.drop_session(&id);
        }
    }

    /// Releases everything and closes every connection (1001).
    pub fn shutdown(&mut self) {
        let ids: Vec<String> = self.sessions.keys().cloned().collect();
        for id in ids {
            self.drop_session(&id);
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.close(conn, 1001, "server shutting down");
        }
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Opened { conn } => {
                self.conns.insert(
                    conn,
                    Conn {
                        session: None,
                        queue: VecDeque::new(),
                        queued_bytes: 0,
                        waiting: None,
                        bucket: Bucket { tokens: f64::from(self.cfg.rate_burst), at: None },
                        refused: (None, 0),
                        closing: false,
                    },
                );
            }
            Input::Frame { conn, data } => self.on_frame(now, conn, data),
            Input::Closed { conn } => self.on_closed(now, conn),
            Input::Answered { ep, result } => self.on_answered(now, ep, result),
            Input::LocalCandidate { ep, candidate, unix_millis } => self.on_local_candidate(ep, candidate, unix_millis),
        }
    }

    fn send(&mut self, conn: ConnId, text: String) {
        self.out.push_back(Output::Send { conn, text });
    }

    fn media(&mut self, op: MediaOp) {
        self.out.push_back(Output::Media(op));
    }

    fn close(&mut self, conn: ConnId, code: u16, reason: &'static str) {
        if let Some(c) = self.conns.get_mut(&conn)
            && !c.closing
        {
            c.closing = true;
            c.queue.clear();
            c.queued_bytes = 0;
            self.out.push_back(Output::Close { conn, code, reason });
        }
    }

    fn on_frame(&mut self, now: Instant, conn: ConnId, data: Vec<u8>) {
        let (rate, burst, max_refused, max_queued, max_queued_bytes) = (
            self.cfg.rate_per_second,
            self.cfg.rate_burst,
            self.cfg.max_refused_per_second,
            self.cfg.max_queued,
            self.cfg.max_queued_bytes,
        );
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        let item = if c.bucket.take(now, rate, burst) {
            Queued::Frame(data)
        } else {
            let (since, count) = &mut c.refused;
            if since.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1)) {
                *since = Some(now);
                *count = 0;
            }
            *count += 1;
            if *count > max_refused {
                tracing::info!(?conn, "KMS connection flooding: closed");
                self.close(conn, 1008, "rate limit");
                return;
            }
            let (id, e) = match parse_request(&data) {
                Ok((id, ..)) => (id, RpcError::rate_limited(rate)),
                Err(refused) => refused,
            };
            Queued::Limited(id, e)
        };
        if c.queue.len() >= max_queued {
            tracing::info!(?conn, "KMS connection queued too many requests: closed");
            self.close(conn, 1008, "too many pending requests");
            return;
        }
        if c.queued_bytes + item.cost() > max_queued_bytes {
            tracing::info!(?conn, "KMS connection queued too many bytes: closed");
            self.reply(conn, Some(&Value::Null), Err(RpcError::queue_full(max_queued_bytes)));
            self.close(conn, 1008, "too many pending requests");
            return;
        }
        c.queued_bytes += item.cost();
        c.queue.push_back(item);
        self.drain(now, conn);
    }

    /// Handles queued frames until one has to wait for a leg.
    fn drain(&mut self, now: Instant, conn: ConnId) {
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if c.waiting.is_some() || c.closing {
                return;
            }
            let Some(item) = c.queue.pop_front() else {
                return;
            };
            c.queued_bytes -= item.cost();
            self.process(now, conn, item);
        }
    }

    fn reply(&mut self, conn: ConnId, id: Option<&Value>, r: Result<Value, RpcError>) {
        if let Err(e) = &r {
            self.errors += 1;
            tracing::debug!(?conn, code = e.code, message = %e.message, "KMS request refused");
        }
        // A notification (no id) gets no reply.
        let Some(id) = id else {
            return;
        };
        let text = match r {
            Ok(v) => rpc::result(id, v),
            Err(e) => rpc::error(id, &e),
        };
        self.send(conn, text);
    }

    fn process(&mut self, now: Instant, conn: ConnId, item: Queued) {
        let data = match item {
            Queued::Frame(d) => d,
            Queued::Limited(id, e) => return self.reply(conn, id.as_ref(), Err(e)),
        };
        let (id, method, mut req) = match parse_request(&data) {
            Ok(r) => r,
            Err((id, e)) => return self.reply(conn, id.as_ref(), Err(e)),
        };
        if data.len() > self.cfg.max_frame_bytes {
            let e = RpcError::too_large(data.len(), self.cfg.max_frame_bytes);
            return self.reply(conn, id.as_ref(), Err(e));
        }
        let params = match req.remove("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return self.reply(conn, id.as_ref(), Err(RpcError::params_required())),
        };
        match self.dispatch(now, conn, &method, &params, id.as_ref()) {
            Ok(Reply::Now(v)) => self.reply(conn, id.as_ref(), Ok(v)),
            Ok(Reply::Later) => {}
            Err(e) => self.reply(conn, id.as_ref(), Err(e)),
        }
    }

    fn new_id(&mut self) -> String {
        rpc::uuid((self.random)())
    }

    fn dispatch(
        &mut self,
        now: Instant,
        conn: ConnId,
        method: &str,
        params: &Params,
        id: Option<&Value>,
    ) -> Result<Reply, RpcError> {
        match method {
            "ping" => {
                let mut pong = Map::new();
                pong.insert("value".into(), "pong".into());
                if let Some(Value::String(s)) = params.get("sessionId")
                    && self.conns.get(&conn).and_then(|c| c.session.as_ref()) == Some(s)
                {
                    pong.insert("sessionId".into(), Value::String(s.clone()));
                }
                Ok(Reply::Now(Value::Object(pong)))
            }
            "connect" => self.connect_session(now, conn, params),
            "transaction" => Err(RpcError::not_implemented(
                "one2one-server does not support transactions: send each request on its own",
            )),
            "describe" | "create" | "invoke" | "subscribe" | "unsubscribe" | "release" | "ref" | "unref"
            | "keepAlive" | "closeSession" => {
                let session = self.session_for(now, conn, params)?;
                match method {
                    "describe" => self.describe(&session, params),
                    "create" => self.create(&session, params),
                    "invoke" => self.invoke(conn, &session, params, id),
                    "subscribe" => self.subscribe(&session, params),
                    "unsubscribe" => self.unsubscribe(&session, params),
                    "release" => self.release(&session, params),
                    "closeSession" => {
                        let pipelines = self.sessions.get(&session).map(|s| s.pipelines.clone()).unwrap_or_default();
                        for p in pipelines {
                            self.release_pipeline(&p);
                        }
                        Ok(Reply::Now(rpc::with_session(&session, None)))
                    }
                    // ref, unref, keepAlive: nothing is reference counted here.
                    _ => Ok(Reply::Now(rpc::with_session(&session, None))),
                }
            }
            _ => Err(RpcError::method_not_found()),
        }
    }

    /// The session a request runs in: its `sessionId` when that is this
    /// connection's or a detached one (taken over), this connection's
    /// otherwise (made on first use). An unknown `sessionId` (a session
    /// that expired) gets this connection's session, whose id the reply
    /// carries, so that the client adopts it; one bound to another live
    /// connection is refused.
    fn session_for(&mut self, now: Instant, conn: ConnId, params: &Params) -> Result<String, RpcError> {
        let mine = self.conns.get(&conn).and_then(|c| c.session.clone());
        match params.get("sessionId") {
            None => {}
            Some(Value::String(s)) => {
                if mine.as_ref() == Some(s) {
                    return Ok(s.clone());
                }
                match self.sessions.get(s) {
                    Some(sess) if sess.conn.is_some() => {
                        return Err(RpcError::invalid_session(format!(
                            "Session '{}' belongs to another connection",
                            rpc::clip(s)
                        )));
                    }
                    Some(_) => {
                        self.bind(now, conn, s);
                        return Ok(s.clone());
                    }
                    None => {}
                }
            }
            Some(_) => return Err(RpcError::should_be_string("sessionId")),
        }
        if let Some(s) = mine {
            return Ok(s);
        }
        if self.sessions.len() >= self.cfg.max_sessions {
            // The session detached longest ago makes room, or none is made.
            let Some((t, oldest)) = self.detached.first().cloned() else {
                return Err(RpcError::no_resources(format!(
                    "Too many sessions on this server (at most {})",
                    self.cfg.max_sessions
                )));
            };
            tracing::info!(session = %oldest, "KMS sessions full: the one detached longest ago is released");
            self.detached.remove(&(t, oldest.clone()));
            self.drop_session(&oldest);
        }
        let s = self.new_id();
        self.sessions.insert(s.clone(), Session { conn: None, detached_at: None, pipelines: vec![] });
        self.bind(now, conn, &s);
        Ok(s)
    }

    /// Binds `session` to `conn`; the session `conn` had is detached, and
    /// the connection `session` had loses it.
    fn bind(&mut self, now: Instant, conn: ConnId, session: &str) {
        let old = self.conns.get_mut(&conn).and_then(|c| c.session.replace(session.to_owned()));
        if let Some(old) = old.filter(|o| o != session) {
            self.detach(now, &old);
        }
        if let Some(s) = self.sessions.get_mut(session) {
            if let Some(prev) = s.conn.filter(|c| *c != conn)
                && let Some(pc) = self.conns.get_mut(&prev)
            {
                pc.session = None;
            }
            s.conn = Some(conn);
            if let Some(t) = s.detached_at.take() {
                self.detached.remove(&(t, session.to_owned()));
            }
        }
    }

    /// The session has no connection: its objects wait for the grace
    /// period; one without objects goes at once.
    fn detach(&mut self, now: Instant, session: &str) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        s.conn = None;
        if let Some(t) = s.detached_at.take() {
            self.detached.remove(&(t, session.to_owned()));
        }
        if s.pipelines.is_empty() {
            self.sessions.remove(session);
        } else {
            s.detached_at = Some(now);
            self.detached.insert((now, session.to_owned()));
        }
    }

    fn connect_session(&mut self, now: Instant, conn: ConnId, params: &Params) -> Result<Reply, RpcError> {
        let session = match params.get("sessionId") {
            Some(Value::String(s)) => {
                if !self.sessions.contains_key(s) {
                    return Err(RpcError::invalid_session(format!("Invalid session '{}'", rpc::clip(s))));
                }
                // A reconnect claims the session, even from a socket the
                // server has not yet seen close.
                self.bind(now, conn, s);
                tracing::info!(session = %s, ?conn, "KMS session resumed");
                s.clone()
            }
            Some(_) => return Err(RpcError::should_be_string("sessionId")),
            None => self.session_for(now, conn, &Map::new())?,
        };
        Ok(Reply::Now(json!({ "serverId": self.server_id, "sessionId": session })))
    }

    fn on_closed(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(s) = c.session
            && self.sessions.get(&s).is_some_and(|s| s.conn == Some(conn))
        {
            self.detach(now, &s);
        }
    }

    fn drop_session(&mut self, id: &str) {
        let Some(s) = self.sessions.remove(id) else {
            return;
        };
        if let Some(t) = s.detached_at {
            self.detached.remove(&(t, id.to_owned()));
        }
        for p in s.pipelines {
            self.release_pipeline(&p);
        }
        if let Some(c) = s.conn.and_then(|c| self.conns.get_mut(&c)) {
            c.session = None;
        }
    }

    fn describe(&mut self, session: &str, params: &Params) -> Result<Reply, RpcError> {
        let object = str_param(params, "object")?;
        let kind = if object == SERVER_MANAGER {
            "ServerManager"
        } else if self.pipeline(session, object).is_some() {
            "MediaPipeline"
        } else if self.endpoint(session, object).is_some() {
            "WebRtcEndpoint"
        } else {
            return Err(RpcError::object_not_found(object));
        };
        Ok(Reply::Now(rpc::describe(kind, session)))
    }

    fn pipeline(&self, session: &str, id: &str) -> Option<&Pipeline> {
        self.pipelines.get(id).filter(|p| p.session == session)
    }

    fn endpoint(&self, session: &str, id: &str) -> Option<&Endpoint> {
        self.endpoints.get(id).filter(|e| e.session == session)
    }

    fn create(&mut self, session: &str, params: &Params) -> Result<Reply, RpcError> {
        let kind = str_param(params, "type")?;
        match kind {
            "MediaPipeline" => {
                let count = self.sessions.get(session).map(|s| s.pipelines.len()).unwrap_or(0);
                if count >= self.cfg.max_pipelines_per_session {
                    return Err(RpcError::no_resources(format!(
                        "Too many MediaPipelines in this session (at most {})",
                        self.cfg.max_pipelines_per_session
                    )));
                }
                if self.pipelines.len() >= self.cfg.max_pipelines {
                    return Err(RpcError::no_resources(format!(
                        "Too many MediaPipelines on this server (at most {})",
                        self.cfg.max_pipelines
                    )));
                }
                let id = format!("{}{PIPELINE_SUFFIX}", self.new_id());
                self.pipelines
                    .insert(id.clone(), Pipeline { session: session.to_owned(), endpoints: vec![], subs: vec![] });
                if let Some(s) = self.sessions.get_mut(session) {
                    s.pipelines.push(id.clone());
                }
                tracing::debug!(pipeline = %id, "KMS pipeline created");
                Ok(Reply::Now(rpc::with_session(session, Some(Value::String(id)))))
            }
            "WebRtcEndpoint" => {
                let pipeline = match params.get("constructorParams").and_then(|c| c.get("mediaPipeline")) {
                    Some(Value::String(p)) => p.clone(),
                    Some(_) => return Err(RpcError::marshall("'mediaPipeline' parameter should be a string")),
                    None => return Err(RpcError::marshall("'mediaPipeline' parameter is required")),
                };
                let Some(p) = self.pipeline(session, &pipeline) else {
                    return Err(RpcError::object_not_found(&pipeline));
                };
                if p.endpoints.len() >= self.cfg.max_endpoints_per_pipeline {
                    return Err(RpcError::no_resources(format!(
                        "Too many WebRtcEndpoints in this MediaPipeline (at most {}): one2one-server carries \
                         one-to-one calls",
                        self.cfg.max_endpoints_per_pipeline
                    )));
                }
                if self.endpoints.len() >= self.cfg.max_endpoints {
                    return Err(RpcError::no_resources("Too many WebRtcEndpoints on this server"));
                }
                let id = format!("{pipeline}/{}{ENDPOINT_SUFFIX}", self.new_id());
                let key = EpKey(self.next_key);
                self.next_key += 1;
                self.endpoints.insert(
                    id.clone(),
                    Endpoint {
                        key,
                        pipeline: pipeline.clone(),
                        session: session.to_owned(),
                        state: EpState::Created,
                        remote: vec![],
                        local: vec![],
                        gathering: false,
                        remote_seen: 0,
                        subs: vec![],
                        sink: None,
                        source: None,
                    },
                );
                self.keys.insert(key, id.clone());
                if let Some(p) = self.pipelines.get_mut(&pipeline) {
                    p.endpoints.push(id.clone());
                }
                tracing::debug!(endpoint = %id, "KMS endpoint created");
                Ok(Reply::Now(rpc::with_session(session, Some(Value::String(id)))))
            }
            other => {
                let what = if KMS_TYPES.contains(&other) || other.ends_with("Filter") || other.ends_with("Endpoint") {
                    format!(
                        "one2one-server does not support {}: it carries one-to-one calls with MediaPipeline and \
                         WebRtcEndpoint only",
                        rpc::clip(other)
                    )
                } else {
                    format!("Unknown type '{}'", rpc::clip(other))
                };
                Err(RpcError::type_not_found(what))
            }
        }
    }

    fn invoke(&mut self, conn: ConnId, session: &str, params: &Params, id: Option<&Value>) -> Result<Reply, RpcError> {
        let object = str_param(params, "object")?;
        let operation = str_param(params, "operation")?;
        let op_params = match params.get("operationParams") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(RpcError::marshall("'operationParams' should be an object")),
        };
        if object == SERVER_MANAGER {
            return match operation {
                "getInfo" => Ok(Reply::Now(rpc::with_session(session, Some(rpc::server_info())))),
                "getPipelines" => {
                    let list: Vec<Value> = self
                        .sessions
                        .get(session)
                        .map(|s| s.pipelines.iter().map(|p| Value::String(p.clone())).collect())
                        .unwrap_or_default();
                    Ok(Reply::Now(rpc::with_session(session, Some(Value::Array(list)))))
                }
                other => Err(not_found_op(other, "ServerManager")),
            };
        }
        if self.pipeline(session, object).is_some() {
            return Err(not_found_op(operation, "MediaPipeline"));
        }
        if self.endpoint(session, object).is_none() {
            return Err(RpcError::object_not_found(object));
        }
        let object = object.to_owned();
        let done = |s: &str| Ok(Reply::Now(rpc::with_session(s, None)));
        match operation {
            "addIceCandidate" => {
                let candidate = candidate_param(&op_params)?;
                self.add_candidate(&object, candidate)?;
                done(session)
            }
            "connect" => {
                if op_params.contains_key("mediaType")
                    || op_params.contains_key("sourceMediaDescription")
                    || op_params.contains_key("sinkMediaDescription")
                {
                    return Err(RpcError::not_implemented(
                        "one2one-server connects all media of an endpoint: mediaType and media descriptions are \
                         not supported",
                    ));
                }
                let sink = match op_params.get("sink") {
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => return Err(RpcError::marshall("'sink' parameter should be a string")),
                    None => return Err(RpcError::marshall("'sink' parameter is required")),
                };
                self.connect_endpoints(session, &object, &sink)?;
                done(session)
            }
            "disconnect" => {
                let sink = match op_params.get("sink") {
                    Some(Value::String(s)) => s.clone(),
                    _ => return Err(RpcError::marshall("'sink' parameter is required")),
                };
                if self.endpoint(session, &sink).is_none() {
                    return Err(RpcError::object_not_found(&sink));
                }
                if self.endpoints.get(&object).and_then(|e| e.sink.as_deref()) == Some(sink.as_str()) {
                    self.unlink(&object, &sink);
                }
                done(session)
            }
            "processOffer" => {
                let offer = match op_params.get("offer") {
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => return Err(RpcError::marshall("'offer' parameter should be a string")),
                    None => return Err(RpcError::marshall("'offer' parameter is required")),
                };
                self.process_offer(conn, &object, offer, id)?;
                Ok(Reply::Later)
            }
            "gatherCandidates" => {
                self.gather(&object);
                done(session)
            }
            "generateOffer" | "processAnswer" => Err(RpcError::not_implemented(format!(
                "one2one-server does not support {operation}: its WebRtcEndpoints only answer offers"
            ))),
            other => Err(not_found_op(other, "WebRtcEndpoint")),
        }
    }

    fn add_candidate(&mut self, ep: &str, candidate: IceCandidate) -> Result<(), RpcError> {
        let (max, max_ever) = (self.cfg.max_candidates, self.cfg.max_remote_candidates);
        let Some(e) = self.endpoints.get_mut(ep) else {
            return Err(RpcError::object_not_found(ep));
        };
        if e.remote_seen >= max_ever {
            return Err(RpcError::add_candidate(format!(
                "Error adding candidate: at most {max_ever} candidates per endpoint"
            )));
        }
        if e.state == EpState::Negotiated {
            e.remote_seen += 1;
            let key = e.key;
            self.media(MediaOp::AddCandidate { ep: key, candidate });
            return Ok(());
        }
        if e.remote.len() >= max {
            return Err(RpcError::add_candidate(format!(
                "Error adding candidate: at most {max} candidates are kept before the offer"
            )));
        }
        e.remote_seen += 1;
        e.remote.push(candidate);
        Ok(())
    }

    /// Records `from → to`; forwards once both legs have answered.
    fn connect_endpoints(&mut self, session: &str, from: &str, to: &str) -> Result<(), RpcError> {
        if self.pipeline(session, to).is_some() {
            return Err(RpcError::connect_error("one2one-server connects WebRtcEndpoints only, not a MediaPipeline"));
        }
        let (Some(a), Some(b)) = (self.endpoint(session, from), self.endpoint(session, to)) else {
            return Err(RpcError::object_not_found(to));
        };
        if from == to {
            return Err(RpcError::connect_error(
                "one2one-server does not support connecting an endpoint to itself (loopback)",
            ));
        }
        if a.pipeline != b.pipeline {
            return Err(RpcError::connect_error("The endpoints belong to different MediaPipelines"));
        }
        if a.sink.as_deref() == Some(to) {
            return Ok(());
        }
        for (e, other, name) in [(a, to, from), (b, from, to)] {
            if let Some(peer) = e.peer().filter(|p| *p != other) {
                return Err(RpcError::connect_error(format!(
                    "one2one-server carries one-to-one calls only: {} is already connected to {}",
                    rpc::clip(name),
                    rpc::clip(peer)
                )));
            }
        }
        let both = a.state == EpState::Negotiated && b.state == EpState::Negotiated;
        let (ka, kb) = (a.key, b.key);
        if let Some(a) = self.endpoints.get_mut(from) {
            a.sink = Some(to.to_owned());
        }
        if let Some(b) = self.endpoints.get_mut(to) {
            b.source = Some(from.to_owned());
        }
        if both {
            self.media(MediaOp::Connect { from: ka, to: kb });
        }
        Ok(())
    }

    /// Undoes `from → to`.
    fn unlink(&mut self, from: &str, to: &str) {
        let mut key = None;
        if let Some(a) = self.endpoints.get_mut(from)
            && a.sink.as_deref() == Some(to)
        {
            a.sink = None;
            key = (a.state == EpState::Negotiated).then_some(a.key);
        }
        if let Some(b) = self.endpoints.get_mut(to)
            && b.source.as_deref() == Some(from)
        {
            b.source = None;
        }
        if let Some(k) = key {
            self.media(MediaOp::Disconnect { from: k });
        }
    }

    fn process_offer(&mut self, conn: ConnId, ep: &str, offer: String, id: Option<&Value>) -> Result<(), RpcError> {
        let building = self.endpoints.values().filter(|e| e.state != EpState::Created).count();
        let Some(e) = self.endpoints.get(ep) else {
            return Err(RpcError::object_not_found(ep));
        };
        if e.state != EpState::Created {
            return Err(RpcError::already_negotiated());
        }
        if offer.trim().is_empty() {
            return Err(RpcError::sdp_parse("Empty offer not valid"));
        }
        let spec = match summarize(&offer) {
            Err(OfferError::NotSdp) => return Err(RpcError::sdp_parse("Error parsing SDP")),
            Err(e) => return Err(RpcError::process_offer(format!("Error processing offer: {e}"))),
            Ok(s) => {
                LegSpec::for_offer(&s).map_err(|e| RpcError::process_offer(format!("Error processing offer: {e}")))?
            }
        };
        if building >= self.cfg.max_endpoints {
            return Err(RpcError::no_resources("No media resources left on this server"));
        }
        let key = e.key;
        if let Some(e) = self.endpoints.get_mut(ep) {
            e.state = EpState::Offering;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.waiting = Some((key, id.cloned()));
        }
        self.media(MediaOp::Build { ep: key, label: format!("kms-{}", key.0), offer, spec });
        Ok(())
    }

    fn on_answered(&mut self, now: Instant, key: EpKey, result: Result<String, LegError>) {
        let waiting =
            self.conns.iter().find(|(_, c)| c.waiting.as_ref().is_some_and(|(k, _)| *k == key)).map(|(c, _)| *c);
        let ep = self.keys.get(&key).cloned();
        let reply = match (ep, result) {
            (None, _) => Err(RpcError::object_not_found("released while processing the offer")),
            (Some(ep), Ok(sdp)) => {
                let mut ops = Vec::new();
                let mut session = String::new();
                if let Some(e) = self.endpoints.get_mut(&ep) {
                    e.state = EpState::Negotiated;
                    session = e.session.clone();
                    for candidate in e.remote.drain(..) {
                        ops.push(MediaOp::AddCandidate { ep: key, candidate });
                    }
                }
                let (sink, source) =
                    self.endpoints.get(&ep).map(|e| (e.sink.clone(), e.source.clone())).unwrap_or_default();
                let negotiated = |id: &Option<String>| {
                    id.as_ref()
                        .and_then(|i| self.endpoints.get(i))
                        .filter(|e| e.state == EpState::Negotiated)
                        .map(|e| e.key)
                };
                if let Some(to) = negotiated(&sink) {
                    ops.push(MediaOp::Connect { from: key, to });
                }
                if let Some(from) = negotiated(&source) {
                    ops.push(MediaOp::Connect { from, to: key });
                }
                for op in ops {
                    self.media(op);
                }
                Ok(rpc::with_session(&session, Some(Value::String(sdp))))
            }
            (Some(ep), Err(error)) => {
                tracing::info!(endpoint = %ep, %error, "KMS offer not answered");
                if let Some(e) = self.endpoints.get_mut(&ep) {
                    e.state = EpState::Created;
                }
                Err(match error {
                    LegError::NoCapacity(m) => RpcError::no_resources(m),
                    e => RpcError::process_offer(format!("Error processing offer: {e}")),
                })
            }
        };
        if let Some(conn) = waiting {
            let id = self.conns.get_mut(&conn).and_then(|c| c.waiting.take()).and_then(|(_, id)| id);
            self.reply(conn, id.as_ref(), reply);
            self.drain(now, conn);
        }
    }

    fn gather(&mut self, ep: &str) {
        let Some(e) = self.endpoints.get_mut(ep) else {
            return;
        };
        e.gathering = true;
        let local = std::mem::take(&mut e.local);
        for (c, at) in local {
            self.emit_candidate(ep, &c, at);
        }
    }

    fn on_local_candidate(&mut self, key: EpKey, candidate: IceCandidate, unix_millis: u64) {
        let max = self.cfg.max_candidates;
        let Some(ep) = self.keys.get(&key).cloned() else {
            return;
        };
        let Some(e) = self.endpoints.get_mut(&ep) else {
            return;
        };
        if e.gathering {
            self.emit_candidate(&ep, &candidate, unix_millis);
        } else if e.local.len() < max {
            e.local.push((candidate, unix_millis));
        }
    }

    /// One `onEvent` per IceCandidateFound subscription, to the session's
    /// connection (none while it is detached, like KMS).
    fn emit_candidate(&mut self, ep: &str, candidate: &IceCandidate, unix_millis: u64) {
        let Some(e) = self.endpoints.get(ep) else {
            return;
        };
        let Some(conn) = self.sessions.get(&e.session).and_then(|s| s.conn) else {
            return;
        };
        let n = e.subs.iter().filter(|s| s.event == "IceCandidateFound").count();
        for _ in 0..n {
            let text = rpc::ice_candidate_found(ep, candidate, unix_millis);
            self.send(conn, text);
        }
    }

    fn subscribe(&mut self, session: &str, params: &Params) -> Result<Reply, RpcError> {
        let object = str_param(params, "object")?.to_owned();
        let event = str_param(params, "type")?.to_owned();
        let max = self.cfg.max_subscriptions;
        let sub_id = self.new_id();
        let subs = if let Some(p) = self.pipelines.get_mut(&object).filter(|p| p.session == session) {
            if !PIPELINE_EVENTS.contains(&event.as_str()) {
                return Err(RpcError::event_not_supported(&event));
            }
            &mut p.subs
        } else if let Some(e) = self.endpoints.get_mut(&object).filter(|e| e.session == session) {
            if !ENDPOINT_EVENTS.contains(&event.as_str()) {
                return Err(RpcError::event_not_supported(&event));
            }
            &mut e.subs
        } else {
            return Err(RpcError::object_not_found(&object));
        };
        if subs.len() >= max {
            return Err(RpcError::no_resources(format!("Too many subscriptions on this object (at most {max})")));
        }
        subs.push(Sub { id: sub_id.clone(), event });
        Ok(Reply::Now(rpc::with_session(session, Some(Value::String(sub_id)))))
    }

    fn unsubscribe(&mut self, session: &str, params: &Params) -> Result<Reply, RpcError> {
        let object = str_param(params, "object")?.to_owned();
        let sub = str_param(params, "subscription")?.to_owned();
        let subs = if let Some(p) = self.pipelines.get_mut(&object).filter(|p| p.session == session) {
            &mut p.subs
        } else if let Some(e) = self.endpoints.get_mut(&object).filter(|e| e.session == session) {
            &mut e.subs
        } else {
            return Err(RpcError::object_not_found(&object));
        };
        let before = subs.len();
        subs.retain(|s| s.id != sub);
        if subs.len() == before {
            return Err(RpcError::object_not_found(&sub));
        }
        Ok(Reply::Now(rpc::with_session(session, None)))
    }

    fn release(&mut self, session: &str, params: &Params) -> Result<Reply, RpcError> {
        let object = str_param(params, "object")?.to_owned();
        if self.pipeline(session, &object).is_some() {
            self.release_pipeline(&object);
        } else if self.endpoint(session, &object).is_some() {
            self.release_endpoint(&object);
        } else {
            return Err(RpcError::object_not_found(&object));
        }
        Ok(Reply::Now(rpc::with_session(session, None)))
    }

    fn release_pipeline(&mut self, id: &str) {
        let Some(p) = self.pipelines.remove(id) else {
            return;
        };
        for ep in p.endpoints {
            self.release_endpoint(&ep);
        }
        if let Some(s) = self.sessions.get_mut(&p.session) {
            s.pipelines.retain(|x| x != id);
        }
        tracing::debug!(pipeline = %id, "KMS pipeline released");
    }

    fn release_endpoint(&mut self, id: &str) {
        let Some(e) = self.endpoints.get(id) else {
            return;
        };
        let (sink, source) = (e.sink.clone(), e.source.clone());
        if let Some(to) = sink {
            self.unlink(id, &to);
        }
        if let Some(from) = source {
            self.unlink(&from, id);
        }
        let Some(e) = self.endpoints.remove(id) else {
            return;
        };
        self.keys.remove(&e.key);
        if e.state != EpState::Created {
            self.media(MediaOp::Release { ep: e.key });
        }
        if let Some(p) = self.pipelines.get_mut(&e.pipeline) {
            p.endpoints.retain(|x| x != id);
        }
    }
}

/// A frame's id, method and members, or the error to answer and the id to
/// answer it to (none for a notification).
type Request = (Option<Value>, String, Map<String, Value>);
fn parse_request(data: &[u8]) -> Result<Request, (Option<Value>, RpcError)> {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return Err((Some(Value::Null), RpcError::parse()));
    };
    let Value::Object(mut req) = v else {
        return Err((Some(Value::Null), RpcError::invalid_request()));
    };
    let id = match req.remove("id") {
        None => None,
        Some(Value::Array(_) | Value::Object(_)) => return Err((Some(Value::Null), RpcError::invalid_request())),
        Some(v) => Some(v),
    };
    match (req.get("jsonrpc"), req.get("method")) {
        (Some(Value::String(j)), Some(Value::String(m))) if j == "2.0" => {
            let m = m.clone();
            Ok((id, m, req))
        }
        _ => Err((id, RpcError::invalid_request())),
    }
}

fn not_found_op(operation: &str, on: &str) -> RpcError {
    RpcError::operation_not_found(format!("Operation '{}' not found on {on}", rpc::clip(operation)))
}

fn str_param<'a>(params: &'a Params, name: &str) -> Result<&'a str, RpcError> {
    match params.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(RpcError::should_be_string(name)),
        None => Err(RpcError::required(name)),
    }
}

/// `{"candidate":{"candidate":"…","sdpMid":"0","sdpMLineIndex":0}}`, with
/// KMS's types: a string line, a string mid, an integer index.
fn candidate_param(op: &Params) -> Result<IceCandidate, RpcError> {
    let Some(Value::Object(c)) = op.get("candidate") else {
        return Err(RpcError::marshall("'candidate' parameter is required (an IceCandidate)"));
    };
    let Some(Value::String(line)) = c.get("candidate") else {
        return Err(RpcError::marshall("'candidate.candidate' should be a string"));
    };
    let mid = match c.get("sdpMid") {
        Some(Value::String(m)) => Some(m.clone()),
        _ => return Err(RpcError::marshall("'candidate.sdpMid' should be a string")),
    };
    let index = match c.get("sdpMLineIndex").and_then(Value::as_u64) {
        Some(i) if i <= u64::from(u16::MAX) => Some(i as u16),
        _ => return Err(RpcError::marshall("'candidate.sdpMLineIndex' should be an integer")),
    };
    Ok(IceCandidate::new(line.clone(), mid, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n";

    fn core() -> Core {
        let mut n = 0u128;
        Core::new(
            CoreConfig::default(),
            Box::new(move || {
                n += 1;
                n
            }),
        )
    }

    fn frame(core: &mut Core, now: Instant, conn: ConnId, v: Value) {
        core.handle(now, Input::Frame { conn, data: v.to_string().into_bytes() });
    }

    fn outputs(core: &mut Core) -> Vec<Output> {
        std::iter::from_fn(|| core.poll_output()).collect()
    }

    fn sent(outs: &[Output]) -> Vec<Value> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Send { text, .. } => Some(serde_json::from_str(text).unwrap()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_around_a_pending_offer() {
        let mut core = core();
        let now = Instant::now();
        let c = ConnId(1);
        core.handle(now, Input::Opened { conn: c });
        frame(
            &mut core,
            now,
            c,
            json!({"jsonrpc":"2.0","id":0,"method":"describe","params":{"object":SERVER_MANAGER}}),
        );
        let s = sent(&outputs(&mut core))[0]["result"]["sessionId"].as_str().unwrap().to_owned();
        frame(
            &mut core,
            now,
            c,
            json!({"jsonrpc":"2.0","id":1,"method":"create","params":{"type":"MediaPipeline","sessionId":s}}),
        );
        let p = sent(&outputs(&mut core))[0]["result"]["value"].as_str().unwrap().to_owned();
        let ep_params = json!({"type":"WebRtcEndpoint","constructorParams":{"mediaPipeline":p},"sessionId":s});
        frame(&mut core, now, c, json!({"jsonrpc":"2.0","id":2,"method":"create","params":ep_params}));
        let ep = sent(&outputs(&mut core))[0]["result"]["value"].as_str().unwrap().to_owned();
        assert!(ep.starts_with(&format!("{p}/")) && ep.ends_with(ENDPOINT_SUFFIX), "{ep}");
        let cand =
            json!({"candidate":{"candidate":"candidate:1 1 udp 1 10.0.0.9 9 typ host","sdpMid":"0","sdpMLineIndex":0}});
        frame(
            &mut core,
            now,
            c,
            json!({"jsonrpc":"2.0","id":3,"method":"invoke","params":{"object":ep,"operation":"addIceCandidate","operationParams":cand,"sessionId":s}}),
        );
        frame(
            &mut core,
            now,
            c,
            json!({"jsonrpc":"2.0","id":4,"method":"subscribe","params":{"object":ep,"type":"IceCandidateFound","sessionId":s}}),
        );
        frame(
            &mut core,
            now,
            c,
            json!({"jsonrpc":"2.0","id":5,"method":"invoke","params":{"object":ep,"operation":"processOffer","operationParams":{"offer":OFFER},"sessionId":s}}),
        );
        frame(
            &mut core,
            now,
            c,
            json!({"jsonrpc":"2.0","id":6,"method":"invoke","params":{"object":ep,"operation":"gatherCandidates","sessionId":s}}),
        );
        frame(&mut core, now, c, json!({"jsonrpc":"2.0","id":7,"method":"ping"}));
        let outs = outputs(&mut core);
        let replies = sent(&outs);
        assert_eq!(replies.iter().map(|r| r["id"].as_u64().unwrap()).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(replies[0]["result"], json!({"sessionId": s}));
        let Some(Output::Media(MediaOp::Build { ep: key, spec, .. })) = outs.last().cloned() else {
            panic!("{outs:?}")
        };
        assert!(spec.audio && spec.video.is_none());
        // A candidate found before gatherCandidates waits for it.
        let found = IceCandidate::new("candidate:2 1 udp 2 10.0.0.1 5000 typ host", Some("0".into()), Some(0));
        core.handle(now, Input::LocalCandidate { ep: key, candidate: found, unix_millis: 1700000000123 });
        assert!(outputs(&mut core).is_empty());
        core.handle(now, Input::Answered { ep: key, result: Ok("v=0\r\nanswer".into()) });
        let outs = outputs(&mut core);
        // The kept client candidate reaches the leg, then the replies leave
        // in order, the event after gatherCandidates.
        assert!(matches!(&outs[0], Output::Media(MediaOp::AddCandidate { ep, .. }) if *ep == key), "{outs:?}");
        let replies = sent(&outs);
        assert_eq!(replies[0]["id"], 5);
        assert_eq!(replies[0]["result"], json!({"sessionId": s, "value": "v=0\r\nanswer"}));
        // gatherCandidates flushes the kept candidate as it is handled.
        assert_eq!(replies[1]["method"], "onEvent");
        assert_eq!(replies[1]["params"]["value"]["data"]["timestampMillis"], "1700000000123");
        assert_eq!(replies[2]["id"], 6);
        assert_eq!(replies[3], json!({"id":7,"jsonrpc":"2.0","result":{"value":"pong"}}));
        // The socket closes: the objects live through the grace, then go.
        core.handle(now, Input::Closed { conn: c });
        assert!(outputs(&mut core).is_empty());
        assert_eq!(core.stats().endpoints, 1);
        let at = core.poll_timeout().unwrap();
        assert_eq!(at, now + CoreConfig::default().grace);
        core.handle_timeout(at);
        assert_eq!(outputs(&mut core), [Output::Media(MediaOp::Release { ep: key })]);
        assert_eq!(core.stats(), Stats { errors: 0, ..Default::default() });
    }
    fn req(id: u64, method: &str, params: Value) -> Value {
        json!({"jsonrpc":"2.0","id":id,"method":method,"params":params})
    }

    /// A session, a pipeline and an endpoint on `c` (opened here).
    fn objects(core: &mut Core, now: Instant, c: ConnId) -> (String, String, String) {
        core.handle(now, Input::Opened { conn: c });
        frame(core, now, c, req(0, "describe", json!({"object":SERVER_MANAGER})));
        let s = sent(&outputs(core))[0]["result"]["sessionId"].as_str().unwrap().to_owned();
        frame(core, now, c, req(1, "create", json!({"type":"MediaPipeline","sessionId":s})));
        let p = sent(&outputs(core))[0]["result"]["value"].as_str().unwrap().to_owned();
        let ep = json!({"type":"WebRtcEndpoint","constructorParams":{"mediaPipeline":p},"sessionId":s});
        frame(core, now, c, req(2, "create", ep));
        let ep = sent(&outputs(core))[0]["result"]["value"].as_str().unwrap().to_owned();
        (s, p, ep)
    }

    fn offer(core: &mut Core, now: Instant, c: ConnId, s: &str, ep: &str) -> EpKey {
        let op = json!({"object":ep,"operation":"processOffer","operationParams":{"offer":OFFER},"sessionId":s});
        frame(core, now, c, req(3, "invoke", op));
        let outs = outputs(core);
        let Some(Output::Media(MediaOp::Build { ep: key, .. })) = outs.last().cloned() else { panic!("{outs:?}") };
        key
    }

    #[test]
    fn candidates_are_capped_over_an_endpoints_whole_life() {
        let mut core = core();
        let (now, c) = (Instant::now(), ConnId(1));
        let (s, _, ep) = objects(&mut core, now, c);
        let cand = |i: u32| {
            let line = format!("candidate:{i} 1 udp 1 10.0.0.9 {} typ host", 1000 + i);
            json!({"object":ep,"operation":"addIceCandidate","operationParams":{"candidate":{"candidate":line,"sdpMid":"0","sdpMLineIndex":0}},"sessionId":s})
        };
        for i in 0..60 {
            frame(&mut core, now, c, req(10, "invoke", cand(i)));
        }
        let key = offer(&mut core, now, c, &s, &ep);
        core.handle(now, Input::Answered { ep: key, result: Ok("v=0\r\nanswer".into()) });
        outputs(&mut core);
        // After the answer they go to the leg, but count all the same.
        let mut errors = vec![];
        for i in 60..200 {
            frame(&mut core, now, c, req(u64::from(i), "invoke", cand(i)));
            errors.extend(sent(&outputs(&mut core)).into_iter().filter(|r| r.get("error").is_some()));
        }
        assert_eq!(errors.len(), 200 - 128);
        assert_eq!(errors[0]["id"], 128);
        assert_eq!(errors[0]["error"]["message"], "Error adding candidate: at most 128 candidates per endpoint");
    }

    #[test]
    fn sessions_and_pipelines_are_capped_server_wide() {
        let cfg = CoreConfig { max_sessions: 2, max_pipelines: 3, ..CoreConfig::default() };
        let mut n = 0u128;
        let mut core = Core::new(
            cfg,
            Box::new(move || {
                n += 1;
                n
            }),
        );
        let t0 = Instant::now();
        let (s1, _, _) = objects(&mut core, t0, ConnId(1));
        let t1 = t0 + Duration::from_secs(1);
        let (s2, _, _) = objects(&mut core, t1, ConnId(2));
        // Both sessions live: a third is refused.
        core.handle(t1, Input::Opened { conn: ConnId(3) });
        frame(&mut core, t1, ConnId(3), req(0, "describe", json!({"object":SERVER_MANAGER})));
        let r = &sent(&outputs(&mut core))[0];
        assert_eq!(r["error"]["message"], "Too many sessions on this server (at most 2)", "{r}");
        // Two pipelines exist: one more, then the server's cap.
        frame(&mut core, t1, ConnId(2), req(5, "create", json!({"type":"MediaPipeline","sessionId":s2})));
        frame(&mut core, t1, ConnId(2), req(6, "create", json!({"type":"MediaPipeline","sessionId":s2})));
        let r = sent(&outputs(&mut core));
        assert!(r[0].get("result").is_some(), "{r:?}");
        assert_eq!(r[1]["error"]["message"], "Too many MediaPipelines on this server (at most 3)");
        // Both detach, the first one first: the deadlines are in order.
        core.handle(t1, Input::Closed { conn: ConnId(1) });
        core.handle(t1 + Duration::from_secs(1), Input::Closed { conn: ConnId(2) });
        assert_eq!(core.poll_timeout(), Some(t1 + CoreConfig::default().grace));
        // A new session evicts the one detached longest ago.
        frame(&mut core, t1, ConnId(3), req(1, "describe", json!({"object":SERVER_MANAGER})));
        let outs = outputs(&mut core);
        let s3 = sent(&outs)[0]["result"]["sessionId"].as_str().unwrap().to_owned();
        assert!(s3 != s1 && s3 != s2);
        assert_eq!(core.stats().sessions, 2);
        assert_eq!(core.stats().pipelines, 2);
        assert_eq!(core.poll_timeout(), Some(t1 + Duration::from_secs(1) + CoreConfig::default().grace));
        // s1 is gone; s2 can still be resumed.
        core.handle(t1, Input::Opened { conn: ConnId(4) });
        frame(&mut core, t1, ConnId(4), req(0, "connect", json!({"sessionId":s1})));
        frame(&mut core, t1, ConnId(4), req(1, "connect", json!({"sessionId":s2})));
        let r = sent(&outputs(&mut core));
        assert_eq!(r[0]["error"]["code"], 40007, "{r:?}");
        assert_eq!(r[1]["result"]["sessionId"], json!(s2), "{r:?}");
        assert_eq!(core.poll_timeout(), None);
    }

    #[test]
    fn bytes_queued_behind_an_offer_are_capped() {
        let cfg = CoreConfig { max_queued_bytes: 10_000, ..CoreConfig::default() };
        let mut n = 0u128;
        let mut core = Core::new(
            cfg,
            Box::new(move || {
                n += 1;
                n
            }),
        );
        let (now, c) = (Instant::now(), ConnId(1));
        let (s, _, ep) = objects(&mut core, now, c);
        offer(&mut core, now, c, &s, &ep);
        let pad = "x".repeat(3000);
        for i in 0..3 {
            frame(&mut core, now, c, req(10 + i, "ping", json!({"pad":pad})));
        }
        assert!(outputs(&mut core).is_empty());
        frame(&mut core, now, c, req(13, "ping", json!({"pad":pad})));
        let outs = outputs(&mut core);
        assert_eq!(
            sent(&outs)[0]["error"]["message"],
            "Too many pending requests: at most 10000 bytes wait behind an offer"
        );
        assert_eq!(outs.last(), Some(&Output::Close { conn: c, code: 1008, reason: "too many pending requests" }));
    }
}
