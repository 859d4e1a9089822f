//! One call through one2one-server over the Kurento-compatible /one2one
//! protocol: both users send an offer (the server answers each leg).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use shared_proto::{ClientMsg, ServerMsg, decode_server, encode};
use tokio::sync::mpsc;

use crate::peer::{BenchPeer, Inbound, PeerEvent};
use crate::sig::Sig;
use crate::{CallState, Ctx, SETUP_DEADLINE};

async fn user(ctx: &Ctx, name: &str) -> anyhow::Result<Sig> {
    let mut ws = Sig::connect(&ctx.url, None).await?;
    ws.send(encode(&ClientMsg::Register { name: name.into() })).await?;
    loop {
        let m = ws.recv_within(SETUP_DEADLINE).await?;
        match decode_server(&m) {
            Ok(ServerMsg::RegisterResponse { response, message }) => {
                if response.is_accepted() {
                    return Ok(ws);
                }
                bail!("{name}: registration refused: {}", message.unwrap_or_default());
            }
            Ok(_) => continue,
            Err(e) => bail!("{name}: unexpected message {m}: {e}"),
        }
    }
}

pub async fn run_call(ctx: Arc<Ctx>, index: usize, call: Arc<CallState>) -> anyhow::Result<()> {
    let a = format!("{}-{index}-a", ctx.run_id);
    let b = format!("{}-{index}-b", ctx.run_id);
    let wa = user(&ctx, &a).await?;
    let wb = user(&ctx, &b).await?;
    let caller = tokio::spawn(side(ctx.clone(), wa, Role::Caller { me: a.clone(), to: b }, call.clone()));
    let callee = tokio::spawn(side(ctx, wb, Role::Callee { from: a }, call));
    let (x, y) = tokio::join!(caller, callee);
    x.map_err(|e| anyhow!("caller task: {e}"))?.context("caller")?;
    y.map_err(|e| anyhow!("callee task: {e}"))?.context("callee")?;
    Ok(())
}

enum Role {
    Caller { me: String, to: String },
    Callee { from: String },
}

async fn side(ctx: Arc<Ctx>, mut ws: Sig, role: Role, call: Arc<CallState>) -> anyhow::Result<()> {
    let (inbound, outbound): (Arc<Inbound>, Arc<Inbound>) = match role {
        Role::Caller { .. } => (call.b2a.clone(), call.a2b.clone()),
        Role::Callee { .. } => (call.a2b.clone(), call.b2a.clone()),
    };
    let (tx, mut events) = mpsc::unbounded_channel();
    let deadline = Instant::now() + SETUP_DEADLINE;
    if let Role::Callee { from } = &role {
        loop {
            let m = ws.recv_within(deadline.saturating_duration_since(Instant::now())).await?;
            match decode_server(&m) {
                Ok(ServerMsg::IncomingCall { from: f }) if &f == from => break,
                Ok(_) => continue,
                Err(e) => bail!("unexpected message {m}: {e}"),
            }
        }
    }
    let peer = Arc::new(BenchPeer::new(ctx.ip, ctx.window.clone(), inbound, tx).await?);
    let offer = peer.offer().await?;
    match &role {
        Role::Caller { me, to } => {
            ws.send(encode(&ClientMsg::Call { from: me.clone(), to: to.clone(), sdp_offer: offer })).await?;
        }
        Role::Callee { from } => {
            *call.accepted.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
            ws.send(encode(&ClientMsg::accept(from.clone(), offer))).await?;
        }
    }
    let mut stop = ctx.stop.clone();
    let mut negotiated = false;
    let result = loop {
        tokio::select! {
            () = crate::stopped(&mut stop) => break Ok(()),
            () = tokio::time::sleep_until(deadline.into()), if !negotiated => {
                break Err(anyhow!("no answer within {SETUP_DEADLINE:?}"));
            }
            ev = events.recv() => match ev {
                Some(PeerEvent::Candidate(c)) => ws.send(encode(&ClientMsg::OnIceCandidate { candidate: c })).await?,
                Some(PeerEvent::State(s)) => tracing::debug!(state = ?s, "peer state"),
                None => break Err(anyhow!("peer events ended")),
            },
            m = ws.recv() => {
                let m = m?;
                let msg = decode_server(&m).map_err(|e| anyhow!("unexpected message {m}: {e}"))?;
                let answer = match msg {
                    ServerMsg::IceCandidate { candidate } => { peer.add_remote_candidate(candidate).await; None }
                    ServerMsg::CallResponse { response, sdp_answer, message } => {
                        if !response.is_accepted() {
                            break Err(anyhow!("call rejected: {}", message.unwrap_or_default()));
                        }
                        Some(sdp_answer.ok_or_else(|| anyhow!("callResponse without an answer"))?)
                    }
                    ServerMsg::StartCommunication { sdp_answer } => Some(sdp_answer),
                    ServerMsg::StopCommunication { message } => {
                        break Err(anyhow!("the call ended early: {}", message.unwrap_or_default()));
                    }
                    ServerMsg::Error { message } => break Err(anyhow!("server error: {message}")),
                    _ => None,
                };
                if let Some(sdp) = answer {
                    peer.apply_answer(&sdp).await?;
                    negotiated = true;
                    let p = peer.clone();
                    tokio::spawn(p.send_loop(ctx.media.clone(), ctx.window.clone(), outbound.clone(), ctx.stop.clone()));
                }
            }
        }
    };
    if matches!(role, Role::Caller { .. }) {
        let _ = ws.send(encode(&ClientMsg::Stop)).await;
    }
    peer.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close()).await;
    if *ctx.stop.borrow() {
        // Ending the run tears calls down in any order; that is not an error.
        return result.or(Ok(()));
    }
    result
}
