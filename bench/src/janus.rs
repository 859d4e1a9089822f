//! One call through Janus 1.1 and its VideoCall plugin, over the Janus
//! WebSocket API (subprotocol `janus-protocol`): each user has a session
//! and a handle; the caller offers, the callee answers the offer Janus
//! forwards. Replies are matched by `transaction` (they may come before the
//! `ack`); other messages wait in a backlog.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use shared_proto::IceCandidate;
use tokio::sync::mpsc;

use crate::peer::{BenchPeer, Inbound, PeerEvent};
use crate::sig::Sig;
use crate::{CallState, Ctx, SETUP_DEADLINE};

const KEEPALIVE: Duration = Duration::from_secs(20);

struct JanusUser {
    ws: Sig,
    session: u64,
    handle: u64,
    backlog: VecDeque<Value>,
    next_tx: u64,
    name: String,
}

fn plugin_data(v: &Value) -> &Value {
    &v["plugindata"]["data"]
}

impl JanusUser {
    async fn connect(ctx: &Ctx, name: &str) -> anyhow::Result<JanusUser> {
        let ws = Sig::connect(&ctx.url, Some("janus-protocol")).await?;
        let mut u = JanusUser { ws, session: 0, handle: 0, backlog: VecDeque::new(), next_tx: 0, name: name.into() };
        let r = u.request(json!({"janus": "create"})).await?;
        u.session = r["data"]["id"].as_u64().ok_or_else(|| anyhow!("create: no session id in {r}"))?;
        let r = u.request(json!({"janus": "attach", "plugin": "janus.plugin.videocall"})).await?;
        u.handle = r["data"]["id"].as_u64().ok_or_else(|| anyhow!("attach: no handle id in {r}"))?;
        let r = u.message(json!({"request": "register", "username": name}), None).await?;
        if plugin_data(&r)["result"]["event"] != "registered" {
            bail!("{name}: register: {r}");
        }
        Ok(u)
    }

    fn tx(&mut self) -> String {
        self.next_tx += 1;
        format!("{}-{}", self.name, self.next_tx)
    }

    fn envelope(&mut self, mut msg: Value) -> (String, Value) {
        let t = self.tx();
        msg["transaction"] = json!(t);
        if self.session != 0 {
            msg["session_id"] = json!(self.session);
        }
        if self.handle != 0 {
            msg["handle_id"] = json!(self.handle);
        }
        (t, msg)
    }

    /// Sends a request and returns its reply (`success`, or the plugin's
    /// `event`); other messages go to the backlog.
    async fn request(&mut self, msg: Value) -> anyhow::Result<Value> {
        let (t, msg) = self.envelope(msg);
        self.ws.send(msg.to_string()).await?;
        let deadline = Instant::now() + SETUP_DEADLINE;
        loop {
            let text = self.ws.recv_within(deadline.saturating_duration_since(Instant::now())).await?;
            let v: Value = serde_json::from_str(&text).with_context(|| format!("Janus sent non-JSON: {text}"))?;
            if v["transaction"] != json!(t) {
                self.backlog.push_back(v);
                continue;
            }
            match v["janus"].as_str() {
                Some("ack") => continue,
                Some("success") | Some("event") => {
                    if let Some(e) = plugin_data(&v).get("error") {
                        bail!("{}: Janus plugin error {}: {e}", self.name, plugin_data(&v)["error_code"]);
                    }
                    return Ok(v);
                }
                Some("error") => bail!("{}: Janus error: {}", self.name, v["error"]),
                _ => self.backlog.push_back(v),
            }
        }
    }

    async fn message(&mut self, body: Value, jsep: Option<Value>) -> anyhow::Result<Value> {
        let mut m = json!({"janus": "message", "body": body});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        self.request(m).await
    }

    /// Sends without waiting for the reply.
    async fn post(&mut self, msg: Value) -> anyhow::Result<()> {
        let (_, msg) = self.envelope(msg);
        self.ws.send(msg.to_string()).await
    }

    async fn next(&mut self) -> anyhow::Result<Value> {
        if let Some(v) = self.backlog.pop_front() {
            return Ok(v);
        }
        let text = self.ws.recv().await?;
        serde_json::from_str(&text).with_context(|| format!("Janus sent non-JSON: {text}"))
    }

    async fn trickle(&mut self, c: IceCandidate) -> anyhow::Result<()> {
        let candidate = serde_json::to_value(&c).context("candidate")?;
        self.post(json!({"janus": "trickle", "candidate": candidate})).await
    }

    async fn close(mut self) {
        let _ = self.post(json!({"janus": "destroy"})).await;
        self.ws.close().await;
    }
}

pub async fn run_call(ctx: Arc<Ctx>, index: usize, call: Arc<CallState>) -> anyhow::Result<()> {
    let a = format!("{}-{index}-a", ctx.run_id);
    let b = format!("{}-{index}-b", ctx.run_id);
    let ua = JanusUser::connect(&ctx, &a).await?;
    let ub = JanusUser::connect(&ctx, &b).await?;
    let caller = tokio::spawn(side(ctx.clone(), ua, Some(b), call.clone()));
    let callee = tokio::spawn(side(ctx, ub, None, call));
    let (x, y) = tokio::join!(caller, callee);
    x.map_err(|e| anyhow!("caller task: {e}"))?.context("caller")?;
    y.map_err(|e| anyhow!("callee task: {e}"))?.context("callee")?;
    Ok(())
}

/// The caller when `to` is set, else the callee.
async fn side(ctx: Arc<Ctx>, mut u: JanusUser, to: Option<String>, call: Arc<CallState>) -> anyhow::Result<()> {
    let caller = to.is_some();
    let (inbound, outbound): (Arc<Inbound>, Arc<Inbound>) =
        if caller { (call.b2a.clone(), call.a2b.clone()) } else { (call.a2b.clone(), call.b2a.clone()) };
    let (tx, mut events) = mpsc::unbounded_channel();
    let peer = Arc::new(BenchPeer::new(ctx.ip, ctx.window.clone(), inbound, tx).await?);
    let deadline = Instant::now() + SETUP_DEADLINE;
    let mut negotiated = false;
    if let Some(to) = &to {
        let offer = peer.offer().await?;
        let r =
            u.message(json!({"request": "call", "username": to}), Some(json!({"type": "offer", "sdp": offer}))).await?;
        let ev = &plugin_data(&r)["result"]["event"];
        if ev != "calling" {
            bail!("call: {r}");
        }
    }
    let mut stop = ctx.stop.clone();
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let result: anyhow::Result<()> = loop {
        tokio::select! {
            () = crate::stopped(&mut stop) => break Ok(()),
            () = tokio::time::sleep_until(deadline.into()), if !negotiated => {
                break Err(anyhow!("no answer within {SETUP_DEADLINE:?}"));
            }
            _ = keepalive.tick() => u.post(json!({"janus": "keepalive"})).await?,
            ev = events.recv() => match ev {
                Some(PeerEvent::Candidate(c)) => u.trickle(c).await?,
                Some(PeerEvent::State(s)) => tracing::debug!(state = ?s, "peer state"),
                None => break Err(anyhow!("peer events ended")),
            },
            v = u.next() => {
                let v = v?;
                match v["janus"].as_str() {
                    Some("trickle") => {
                        if let Ok(c) = serde_json::from_value::<IceCandidate>(v["candidate"].clone()) {
                            peer.add_remote_candidate(c).await;
                        }
                    }
                    Some("event") => {
                        let data = plugin_data(&v);
                        if let Some(e) = data.get("error") {
                            break Err(anyhow!("Janus plugin error: {e}"));
                        }
                        let event = data["result"]["event"].as_str().unwrap_or("");
                        let sdp = v["jsep"]["sdp"].as_str();
                        match (event, sdp) {
                            ("incomingcall", Some(offer)) if !caller => {
                                let answer = peer.answer(offer).await?;
                                *call.accepted.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                                    Some(Instant::now());
                                let body = json!({"janus": "message", "body": {"request": "accept"},
                                                  "jsep": {"type": "answer", "sdp": answer}});
                                u.post(body).await?;
                                negotiated = true;
                                let p = peer.clone();
                                tokio::spawn(p.send_loop(ctx.media.clone(), ctx.window.clone(), outbound.clone(), ctx.stop.clone()));
                            }
                            ("accepted", Some(answer)) if caller => {
                                peer.apply_answer(answer).await?;
                                negotiated = true;
                                let p = peer.clone();
                                tokio::spawn(p.send_loop(ctx.media.clone(), ctx.window.clone(), outbound.clone(), ctx.stop.clone()));
                            }
                            ("hangup", _) => break Err(anyhow!("Janus hung up: {}", data["result"]["reason"])),
                            _ => {}
                        }
                    }
                    Some("hangup") => break Err(anyhow!("Janus: PeerConnection closed ({})", v["reason"])),
                    _ => {}
                }
            }
        }
    };
    if caller {
        let _ = u.post(json!({"janus": "message", "body": {"request": "hangup"}})).await;
    }
    peer.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), u.close()).await;
    if *ctx.stop.borrow() {
        // Ending the run tears calls down in any order; that is not an error.
        return result.or(Ok(()));
    }
    result
}
