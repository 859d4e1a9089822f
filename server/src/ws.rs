//! The `/one2one` WebSocket: the only place that knows about frames.
//! Each socket gets a reader (size check, rate limit, decode) and a writer
//! (drains the connection's queue); both end when either ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use shared_proto::{ProtoError, ServerMsg, decode_client, encode};
use tokio::sync::{Notify, mpsc};

use crate::AppState;
use crate::hub::{CONN_QUEUE, ConnTx, HubEvent, Outgoing};

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Limits applied to each signaling socket.
#[derive(Debug, Clone)]
pub struct WsLimits {
    /// Larger text frames get an `error` and are dropped.
    pub max_message: usize,
    /// Sustained messages per second.
    pub rate_per_sec: f64,
    /// Messages allowed in a burst (ICE trickles come in bursts).
    pub burst: f64,
    /// A socket whose messages are refused this many times in a row for the
    /// rate limit is closed with 1008.
    pub max_violations: u32,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits { max_message: 64 * 1024, rate_per_sec: 50.0, burst: 200.0, max_violations: 200 }
    }
}

impl WsLimits {
    /// Frames above this are not even read: the socket closes with 1009.
    pub fn hard_limit(&self) -> usize {
        self.max_message.saturating_mul(4).max(4096)
    }
}

/// A token bucket.
struct RateLimit {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl RateLimit {
    fn new(rate: f64, burst: f64) -> Self {
        RateLimit { tokens: burst, last: Instant::now(), rate, burst }
    }
    fn allow(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub async fn serve_socket(socket: WebSocket, app: Arc<AppState>) {
    let conn = NEXT_CONN.fetch_add(1, Relaxed);
    app.open_sockets.send_modify(|n| *n += 1);
    let (tx, mut rx) = mpsc::channel::<Outgoing>(CONN_QUEUE);
    let kill = Arc::new(Notify::new());
    app.hub.send(HubEvent::Connected { conn, tx: ConnTx { tx: tx.clone(), kill: kill.clone() } });
    tracing::debug!(conn, "socket opened");

    let (mut sink, mut stream) = socket.split();
    let writer = async move {
        loop {
            let out = tokio::select! {
                out = rx.recv() => out,
                () = kill.notified() => None,
            };
            match out {
                Some(Outgoing::Text(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(Outgoing::Close(code, reason)) => {
                    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
                    let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Close(Some(frame)))).await;
                    break;
                }
                None => {
                    let frame = CloseFrame { code: 1008, reason: Utf8Bytes::from_static("too slow") };
                    let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Close(Some(frame)))).await;
                    break;
                }
            }
        }
    };

    let limits = app.limits.clone();
    let metrics = app.metrics.clone();
    let hub = app.hub.clone();
    let reader = async move {
        let mut rate = RateLimit::new(limits.rate_per_sec, limits.burst);
        let mut violations = 0u32;
        let reply = |msg: ServerMsg| {
            metrics.rejected_messages.fetch_add(1, Relaxed);
            // A full queue means the client does not read: the hub closes it.
            let _ = tx.try_send(Outgoing::Text(encode(&msg)));
        };
        while let Some(frame) = stream.next().await {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!(conn, error = %e, "socket read failed");
                    if is_capacity(&e) {
                        let _ = tx.try_send(Outgoing::Close(1009, "message too big"));
                        return true;
                    }
                    return false;
                }
            };
            let text = match frame {
                Message::Text(t) => t,
                Message::Binary(_) => {
                    reply(ServerMsg::error(ProtoError::Binary.to_string()));
                    continue;
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(_) => return false,
            };
            if !rate.allow(Instant::now()) {
                violations += 1;
                reply(ServerMsg::error("rate limit exceeded: message dropped"));
                if violations >= limits.max_violations {
                    let _ = tx.try_send(Outgoing::Close(1008, "rate limit exceeded"));
                    return true;
                }
                continue;
            }
            violations = 0;
            if text.len() > limits.max_message {
                let err = ProtoError::TooLarge { size: text.len(), limit: limits.max_message };
                reply(ServerMsg::error(err.to_string()));
                continue;
            }
            match decode_client(text.as_str()) {
                Ok(msg) => {
                    tracing::trace!(conn, id = msg.id(), "message");
                    hub.send(HubEvent::Message { conn, msg });
                }
                Err(e) => reply(ServerMsg::error(e.to_string())),
            }
        }
        false
    };

    // Whichever ends first ends the connection. When the reader queued a close
    // frame, the writer gets a moment to send it.
    tokio::pin!(writer);
    tokio::select! {
        () = &mut writer => {}
        linger = reader => {
            if linger {
                let _ = tokio::time::timeout(Duration::from_millis(500), &mut writer).await;
            }
        }
    }
    app.hub.send(HubEvent::Disconnected { conn });
    app.open_sockets.send_modify(|n| *n = n.saturating_sub(1));
    tracing::debug!(conn, "socket closed");
}

fn is_capacity(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("Space limit exceeded") || text.contains("too long") || text.contains("Capacity")
}
