//! A scripted Kurento Media Server: the JSON-RPC of KMS 7.3 for the
//! one-to-one tutorial (ping, describe, getInfo, connect with 40007 for a
//! session it does not know, create MediaPipeline/WebRtcEndpoint with KMS's
//! id shapes, subscribe, invoke, release), every frame it receives logged,
//! and faults a test asks for: an error, no answer, or a malformed frame
//! instead of the answer to a given request.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;

/// What the fake does instead of answering.
#[derive(Debug, Clone)]
pub enum Action {
    Error(i64, String),
    Never,
    /// This text as the frame.
    Garbage(String),
    /// The right answer, this much later.
    Late(Duration),
}

#[derive(Debug, Clone)]
struct Fault {
    key: String,
    action: Action,
    times: usize,
}

/// A frame the fake received, with the number of its connection (from 0).
#[derive(Debug, Clone)]
pub struct Logged {
    pub conn: usize,
    pub frame: Value,
}

impl Logged {
    pub fn method(&self) -> &str {
        self.frame["method"].as_str().unwrap_or("")
    }

    /// `invoke:processOffer`, `create:MediaPipeline`, `ping`, ...
    pub fn key(&self) -> String {
        key_of(&self.frame)
    }
}

fn key_of(frame: &Value) -> String {
    let method = frame["method"].as_str().unwrap_or("");
    match method {
        "invoke" => format!("invoke:{}", frame["params"]["operation"].as_str().unwrap_or("")),
        "create" => format!("create:{}", frame["params"]["type"].as_str().unwrap_or("")),
        m => m.to_owned(),
    }
}

#[derive(Default)]
struct State {
    sessions: HashSet<String>,
    server_id: String,
    log: Vec<Logged>,
    /// What it answered, in order.
    sent: Vec<Logged>,
    faults: Vec<Fault>,
    pipelines: HashSet<String>,
    conns: Vec<tokio::task::AbortHandle>,
    counter: u64,
}

impl State {
    fn uuid(&mut self) -> String {
        self.counter += 1;
        let n = self.counter;
        let salt = std::process::id() as u64;
        format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", salt, n & 0xffff, n % 0xfff, (n * 7) % 0xfff, n * 2654435761)
    }
}

/// A running fake.
pub struct FakeKms {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKms {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_connections();
    }
}

impl FakeKms {
    pub async fn start() -> FakeKms {
        FakeKms::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> FakeKms {
        let listener = TcpListener::bind(addr).await.expect("bind the fake KMS");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(Notify::new());
        state.lock().unwrap().server_id = format!("server-{}-{}", std::process::id(), addr.port());
        let (st, ch) = (state.clone(), changed.clone());
        let accept = tokio::spawn(async move {
            let mut n = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                let (st2, ch2) = (st.clone(), ch.clone());
                let conn = n;
                n += 1;
                let task = tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        serve(ws, conn, st2, ch2).await;
                    }
                });
                st.lock().unwrap().conns.push(task.abort_handle());
            }
        });
        FakeKms { addr, state, changed, accept }
    }

    pub fn uri(&self) -> String {
        format!("ws://{}/kurento", self.addr)
    }

    /// The next `times` requests with this key get `action`.
    pub fn fail(&self, key: &str, action: Action, times: usize) {
        self.state.lock().unwrap().faults.push(Fault { key: key.into(), action, times });
    }

    pub fn frames(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Every frame it sent that is JSON (answers and events), in order.
    pub fn sent(&self) -> Vec<Logged> {
        self.state.lock().unwrap().sent.clone()
    }

    /// Pipelines created and not released.
    pub fn live_pipelines(&self) -> usize {
        self.state.lock().unwrap().pipelines.len()
    }

    /// Waits until `f` holds of the frames received, or `within` passes.
    pub async fn wait_for(&self, within: Duration, f: impl Fn(&[Logged]) -> bool) -> Result<(), Vec<Logged>> {
        let end = tokio::time::Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            if f(&self.state.lock().unwrap().log) {
                return Ok(());
            }
            if tokio::time::timeout_at(end, notified).await.is_err() {
                return Err(self.frames());
            }
        }
    }

    /// Resets every open connection, as a dying server's kernel does.
    pub fn drop_connections(&self) {
        for c in self.state.lock().unwrap().conns.drain(..) {
            c.abort();
        }
    }
}

async fn serve(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    conn: usize,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(t) = rx.recv().await {
            if sink.send(Message::Text(t.into())).await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(m)) = stream.next().await {
        let text = match m {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            Message::Close(_) => break,
            _ => continue,
        };
        let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
        let out = {
            let mut st = state.lock().unwrap();
            st.log.push(Logged { conn, frame: frame.clone() });
            let out = answer(&mut st, &frame);
            for t in &out {
                if let Ok(v) = serde_json::from_str(t) {
                    st.sent.push(Logged { conn, frame: v });
                }
            }
            out
        };
        changed.notify_waiters();
        if let Some(ms) = out.first().and_then(|t| t.strip_prefix(LATE)).and_then(|ms| ms.parse().ok()) {
            // The answer it would have given, later (faults are used up).
            let later = answer(&mut state.lock().unwrap(), &frame);
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                for t in later {
                    let _ = tx.send(t);
                }
            });
            continue;
        }
        for t in out {
            let _ = tx.send(t);
        }
    }
    writer.abort();
}

/// Marks an answer [`Action::Late`] holds back: the next answer goes
/// this many milliseconds later.
const LATE: &str = "\u{0}late:";

fn reply(id: &Value, result: Value) -> String {
    json!({ "id": id, "jsonrpc": "2.0", "result": result }).to_string()
}

fn error(id: &Value, code: i64, message: &str) -> String {
    json!({ "id": id, "jsonrpc": "2.0", "error": { "code": code, "message": message, "data": { "type": "FAKE" } } })
        .to_string()
}

/// What the fake sends for one request.
fn answer(st: &mut State, frame: &Value) -> Vec<String> {
    let id = &frame["id"];
    let p = &frame["params"];
    let key = key_of(frame);
    if let Some(f) = st.faults.iter_mut().find(|f| f.key == key && f.times > 0) {
        f.times -= 1;
        return match f.action.clone() {
            Action::Error(code, message) => vec![error(id, code, &message)],
            Action::Never => vec![],
            Action::Garbage(text) => vec![text],
            Action::Late(after) => vec![format!("{LATE}{}", after.as_millis())],
        };
    }
    let session = p["sessionId"].as_str().map(str::to_owned);
    let with_session = |mut v: Value, s: &Option<String>| {
        if let Some(s) = s {
            v["sessionId"] = json!(s);
        }
        v
    };
    match key.as_str() {
        "ping" => vec![reply(id, with_session(json!({ "value": "pong" }), &session))],
        "describe" => {
            let s = session.unwrap_or_else(|| st.uuid());
            st.sessions.insert(s.clone());
            vec![reply(
                id,
                json!({"hierarchy":["kurento.MediaObject"],"qualifiedType":"kurento.ServerManager","sessionId":s,"type":"ServerManager"}),
            )]
        }
        "connect" => match session {
            Some(s) if st.sessions.contains(&s) => {
                vec![reply(id, json!({ "sessionId": s, "serverId": st.server_id }))]
            }
            Some(_) => vec![error(id, 40007, "Invalid session")],
            None => {
                let s = st.uuid();
                st.sessions.insert(s.clone());
                vec![reply(id, json!({ "sessionId": s, "serverId": st.server_id }))]
            }
        },
        "invoke:getInfo" => vec![reply(
            id,
            with_session(
                json!({"value":{"version":"7.3.0","modules":[{"name":"core"},{"name":"elements"},{"name":"filters"}],"type":"KMS","capabilities":["transactions"]}}),
                &session,
            ),
        )],
        "create:MediaPipeline" => {
            let pipe = format!("{}_kurento.MediaPipeline", st.uuid());
            st.pipelines.insert(pipe.clone());
            vec![reply(id, with_session(json!({ "value": pipe }), &session))]
        }
        "create:WebRtcEndpoint" => {
            let pipe = p["constructorParams"]["mediaPipeline"].as_str().unwrap_or("");
            if !st.pipelines.contains(pipe) {
                return vec![error(id, 40101, &format!("Object '{pipe}' not found"))];
            }
            let ep = format!("{pipe}/{}_kurento.WebRtcEndpoint", st.uuid());
            vec![reply(id, with_session(json!({ "value": ep }), &session))]
        }
        "subscribe" => {
            let sub = st.uuid();
            vec![reply(id, with_session(json!({ "value": sub }), &session))]
        }
        "invoke:processOffer" => vec![reply(
            id,
            with_session(json!({ "value": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=Kurento Media Server\r\n" }), &session),
        )],
        "invoke:gatherCandidates" => {
            let ep = p["object"].as_str().unwrap_or("").to_owned();
            let event = json!({"jsonrpc":"2.0","method":"onEvent","params":{"value":{
                "data":{"candidate":{"__module__":"kurento","__type__":"IceCandidate",
                    "candidate":"candidate:1 1 UDP 2015363327 192.0.2.10 41234 typ host","sdpMLineIndex":0,"sdpMid":"0"},
                    "source":ep,"tags":[],"timestampMillis":"1700000000123","type":"IceCandidateFound"},
                "object":ep,"type":"IceCandidateFound"}}});
            vec![reply(id, with_session(json!({}), &session)), event.to_string()]
        }
        "release" => {
            let obj = p["object"].as_str().unwrap_or("");
            if st.pipelines.remove(obj) {
                vec![reply(id, with_session(json!({}), &session))]
            } else {
                vec![error(id, 40101, &format!("Object '{obj}' not found"))]
            }
        }
        _ => vec![reply(id, with_session(json!({}), &session))],
    }
}
