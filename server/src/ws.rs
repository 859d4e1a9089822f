//! The `/one2one` WebSocket: the only place that knows about frames.
//! Each socket gets a reader (liveness, rate limit, size check, decode) and a
//! writer (drains the connection's queue). Every close is a close handshake:
//! the writer sends what is queued and then the close frame, while the reader
//! keeps reading (and discarding) until the client's close frame comes back,
//! so the server never resets a connection with unread data.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use shared_proto::{ProtoError, ServerMsg, decode_client, encode};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::AppState;
use crate::hub::{CONN_QUEUE, ConnTx, HubEvent, Outgoing};

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// How long the writer may take to send the last frames, and the reader to
/// see the client's close frame, once a socket is closing.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

const TOO_SLOW: &str = "too slow";
const IDLE: &str = "idle timeout";
const RATE: &str = "rate limit exceeded";
const TOO_BIG: &str = "message too big";

/// Limits applied to each signaling socket.
#[derive(Debug, Clone)]
pub struct WsLimits {
    /// Larger messages get an `error` and are dropped.
    pub max_message: usize,
    /// Sustained frames per second (every frame counts: text, binary, ping, pong).
    pub rate_per_sec: f64,
    /// Frames allowed in a burst (ICE trickles come in bursts).
    pub burst: f64,
    /// A socket whose frames are refused this many times in a row for the
    /// rate limit is closed with 1008.
    pub max_violations: u32,
    /// A socket that sends nothing at all (not even a pong) for this long is
    /// closed, which frees its name and ends its call. The server pings a
    /// socket that has been quiet for half of it.
    pub idle_timeout: Duration,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            max_message: 64 * 1024,
            rate_per_sec: 50.0,
            burst: 200.0,
            max_violations: 200,
            idle_timeout: Duration::from_secs(20),
        }
    }
}

impl WsLimits {
    /// Frames above this are not even read: the client gets an `error`, and
    /// the socket closes with 1009. At least 64 KiB, so that a browser's SDP
    /// offer over a small `max_message` gets an error it can show.
    pub fn hard_limit(&self) -> usize {
        self.max_message.saturating_mul(4).max(64 * 1024)
    }
}

/// The peer address of a connection, for logs (`axum`'s connect info).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
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

/// Why the reader stopped reading.
#[derive(Debug)]
enum End {
    /// The client sent a close frame (tungstenite has queued the reply).
    ClientClosed(Option<CloseFrame>),
    /// The connection ended without a close handshake.
    Gone(Option<String>),
    /// The server closes: the close frame is queued behind the replies.
    Close { code: u16, reason: &'static str, can_read: bool },
}

/// A client-supplied string for a log field: `shared_proto::log_safe`'s
/// escaping and cut, without its quotes.
fn logsafe(s: &str) -> String {
    let quoted = shared_proto::log_safe(s).to_string();
    quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')).unwrap_or(&quoted).to_owned()
}

pub async fn serve_socket(socket: WebSocket, app: Arc<AppState>, peer: SocketAddr) {
    let conn = NEXT_CONN.fetch_add(1, Relaxed);
    app.open_sockets.send_modify(|n| *n += 1);
    let (tx, mut rx) = mpsc::channel::<Outgoing>(CONN_QUEUE);
    let kill = Arc::new(Notify::new());
    let kill_r = kill.clone();
    app.hub.send(HubEvent::Connected { conn, tx: ConnTx { tx: tx.clone(), kill: kill.clone(), peer } });
    tracing::info!(conn, %peer, "socket opened");

    let (mut sink, mut stream) = socket.split();
    // Ends after sending a close frame, or when a send fails. Returns the
    // close it sent, if it was the hub's (shutdown, too slow).
    let writer = async move {
        loop {
            // A kill (the client does not read) goes before anything queued.
            let out = tokio::select! {
                biased;
                () = kill.notified() => None,
                out = rx.recv() => out,
            };
            let (code, reason) = match out {
                Some(Outgoing::Text(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        return None;
                    }
                    continue;
                }
                Some(Outgoing::Ping) => {
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        return None;
                    }
                    continue;
                }
                Some(Outgoing::Close(code, reason)) => (code, reason),
                None => (1008, TOO_SLOW),
            };
            let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame)))).await;
            return Some((code, reason));
        }
    };

    let limits = app.limits.clone();
    let metrics = app.metrics.clone();
    tokio::pin!(writer);
    let mut writer_done = false;
    let end = tokio::select! {
        sent = &mut writer => {
            writer_done = true;
            match sent {
                Some((code, reason)) => End::Close { code, reason, can_read: true },
                None => End::Gone(Some("send failed".into())),
            }
        }
        end = read_loop(&mut stream, &limits, &metrics, &app.hub, &tx, &kill_r, conn) => end,
    };
    // The name is free and the call over at once, whatever the goodbye takes.
    app.hub.send(HubEvent::Disconnected { conn });

    match &end {
        End::Close { code, reason, can_read } => {
            app.metrics.count_close(match *reason {
                TOO_SLOW => "too_slow",
                IDLE => "idle_timeout",
                RATE => "rate_limit",
                TOO_BIG => "too_big",
                _ => "",
            });
            match *reason {
                TOO_SLOW => tracing::warn!(conn, %peer, code, reason, "closing: the client does not read its messages"),
                IDLE => {
                    tracing::info!(conn, %peer, code, reason, idle_timeout = ?limits.idle_timeout, "closing: no traffic, not even a pong")
                }
                RATE => tracing::warn!(conn, %peer, code, reason, "closing: over the rate limit"),
                TOO_BIG => {
                    tracing::warn!(conn, %peer, code, reason, hard_limit = limits.hard_limit(), "closing: frame over the hard size limit")
                }
                _ => tracing::debug!(conn, %peer, code, reason, "closing"),
            }
            // The writer sends the replies queued before the close, then the
            // close frame; meanwhile the reader drains the socket until the
            // client's close frame, so no unread data turns into a reset.
            let drain = async {
                if *can_read {
                    while stream.next().await.is_some() {}
                }
            };
            let finish_writer = async {
                if !writer_done {
                    let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
                }
            };
            let (_, drained) = tokio::join!(finish_writer, tokio::time::timeout(CLOSE_GRACE, drain));
            if !*can_read {
                // The rest of an oversized frame is unread: give the close
                // frame a moment to reach the client before the reset.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            tracing::debug!(conn, %peer, handshake_done = drained.is_ok(), "socket closed");
        }
        End::ClientClosed(frame) => {
            // Reading on sends tungstenite's queued reply, then ends.
            let _ = tokio::time::timeout(CLOSE_GRACE, async { while stream.next().await.is_some() {} }).await;
            match frame {
                Some(f) => {
                    tracing::info!(conn, %peer, code = f.code, reason = %logsafe(&f.reason), "socket closed by the client")
                }
                None => tracing::info!(conn, %peer, "socket closed by the client"),
            }
        }
        End::Gone(error) => tracing::info!(conn, %peer, error = error.as_deref(), "connection lost"),
    }
    app.open_sockets.send_modify(|n| *n = n.saturating_sub(1));
}

/// Reads until the connection ends or has to be closed. Queues the replies
/// (errors) and the close frame on `tx`, in order.
async fn read_loop(
    stream: &mut SplitStream<WebSocket>,
    limits: &WsLimits,
    metrics: &crate::metrics::Metrics,
    hub: &crate::hub::HubHandle,
    tx: &mpsc::Sender<Outgoing>,
    kill: &Notify,
    conn: u64,
) -> End {
    let mut rate = RateLimit::new(limits.rate_per_sec, limits.burst);
    let mut violations = 0u32;
    // A full queue means the client does not read: the hub closes it.
    let reply = |msg: ServerMsg| {
        metrics.rejected_messages.fetch_add(1, Relaxed);
        let _ = tx.try_send(Outgoing::Text(encode(&msg)));
    };
    let close = |code: u16, reason: &'static str, can_read: bool| {
        // Behind the replies; a full queue means the client does not read.
        if tx.try_send(Outgoing::Close(code, reason)).is_err() {
            kill.notify_one();
        }
        End::Close { code, reason, can_read }
    };
    let idle = limits.idle_timeout.max(Duration::from_millis(100));
    let mut last_seen = Instant::now();
    let mut pinged = false;
    loop {
        let wake = if pinged { last_seen + idle } else { last_seen + idle / 2 };
        let frame = tokio::select! {
            frame = stream.next() => frame,
            () = tokio::time::sleep_until(wake) => {
                if pinged {
                    return close(1001, IDLE, true);
                }
                pinged = true;
                let _ = tx.try_send(Outgoing::Ping);
                continue;
            }
        };
        let frame = match frame {
            None => return End::Gone(None),
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                if is_capacity(&e) {
                    let hard = limits.hard_limit();
                    reply(ServerMsg::error(format!(
                        "invalid message: over {hard} bytes, the limit is {} bytes; closing the connection",
                        limits.max_message
                    )));
                    return close(1009, TOO_BIG, false);
                }
                return End::Gone(Some(e.to_string()));
            }
        };
        let now = Instant::now();
        last_seen = now;
        pinged = false;
        if let Message::Close(frame) = frame {
            return End::ClientClosed(frame);
        }
        if !rate.allow(now) {
            violations += 1;
            if matches!(frame, Message::Text(_) | Message::Binary(_)) {
                reply(ServerMsg::error("rate limit exceeded: message dropped"));
            }
            if violations >= limits.max_violations {
                return close(1008, RATE, true);
            }
            continue;
        }
        violations = 0;
        let text = match frame {
            Message::Text(t) => t,
            Message::Binary(_) => {
                reply(ServerMsg::error(ProtoError::Binary.to_string()));
                continue;
            }
            _ => continue,
        };
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
}

fn is_capacity(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("Space limit exceeded") || text.contains("too long") || text.contains("Capacity")
}

#[cfg(test)]
mod tests {
    use super::logsafe;

    #[test]
    fn logsafe_escapes_and_truncates() {
        assert_eq!(logsafe("bye\n2099 INFO x"), "bye\\n2099 INFO x");
        assert_eq!(logsafe("\x1b[31mRED"), "\\u{1b}[31mRED");
        let long = "x".repeat(100);
        assert_eq!(logsafe(&long), format!("{}…", "x".repeat(64)));
    }
}
