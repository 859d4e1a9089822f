//! The IO of one media server: a WebSocket client (tokio-tungstenite), the
//! clock, and the commands of the calls placed on it, all fed to its
//! [`KmsCore`]. One task per server; its writes go through a writer task,
//! so the loop never waits on the socket and never holds a lock.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::KmsStats;
use super::session::{KmsCore, Output};
use crate::media::{EventSink, MediaCmd};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Reader = futures_util::stream::SplitStream<Ws>;
type ConnectResult = Result<Ws, String>;

/// What the backend tells a server's task.
pub enum WorkerCmd {
    Media(MediaCmd),
    /// Release everything, wait (bounded) for the answers, close.
    Shutdown(oneshot::Sender<()>),
}

/// How long shutdown waits for the releases to be answered.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

async fn connect(uri: String, within: Duration) -> ConnectResult {
    match tokio::time::timeout(within, tokio_tungstenite::connect_async(uri)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {} s", within.as_secs_f32())),
    }
}

fn spawn_writer(mut sink: futures_util::stream::SplitSink<Ws, Message>) -> mpsc::UnboundedSender<Message> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    tx
}

async fn next_frame(reader: &mut Option<Reader>) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match reader {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

async fn connecting(c: &mut Option<tokio::task::JoinHandle<ConnectResult>>) -> ConnectResult {
    match c {
        Some(h) => h.await.unwrap_or_else(|e| Err(e.to_string())),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Runs one media server's session until shutdown (or the backend is gone).
pub async fn run(
    uri: String,
    mut core: KmsCore,
    connect_timeout: Duration,
    mut cmds: mpsc::UnboundedReceiver<WorkerCmd>,
    events: EventSink,
    stats: Arc<KmsStats>,
) {
    let mut reader: Option<Reader> = None;
    let mut writer: Option<mpsc::UnboundedSender<Message>> = None;
    let mut pending_connect: Option<tokio::task::JoinHandle<ConnectResult>> = None;
    let mut done: Option<(oneshot::Sender<()>, Instant)> = None;
    loop {
        while let Some(out) = core.poll_output() {
            match out {
                Output::Connect => {
                    if done.is_none() {
                        pending_connect = Some(tokio::spawn(connect(uri.clone(), connect_timeout)));
                    }
                }
                Output::Send(text) => {
                    if let Some(w) = &writer {
                        let _ = w.send(Message::Text(text.into()));
                    }
                }
                Output::Close => {
                    reader = None;
                    writer = None;
                }
                Output::Event(e) => {
                    let _ = events.send(e);
                }
                Output::Up(up) => stats.up.store(up, Relaxed),
                Output::RequestError => {
                    stats.request_errors.fetch_add(1, Relaxed);
                }
            }
        }
        if let Some((_, by)) = &done
            && (core.idle() || Instant::now() >= *by)
        {
            break;
        }
        let wake = match &done {
            Some((_, by)) => core.poll_timeout().map_or(*by, |t| t.min(*by)),
            None => match core.poll_timeout() {
                Some(t) => t,
                None => Instant::now() + Duration::from_secs(3600),
            },
        };
        tokio::select! {
            r = connecting(&mut pending_connect) => {
                pending_connect = None;
                let now = Instant::now();
                match r {
                    Ok(ws) => {
                        let (sink, stream) = ws.split();
                        writer = Some(spawn_writer(sink));
                        reader = Some(stream);
                        core.connected(now);
                    }
                    Err(e) => core.connect_failed(now, &e),
                }
            }
            m = next_frame(&mut reader) => {
                let now = Instant::now();
                match m {
                    Some(Ok(Message::Text(t))) => core.handle_frame(now, t.as_str()),
                    Some(Ok(Message::Binary(b))) => match std::str::from_utf8(&b) {
                        Ok(t) => core.handle_frame(now, t),
                        Err(_) => core.handle_frame(now, "\u{0}binary frame that is not UTF-8"),
                    },
                    Some(Ok(Message::Close(c))) => {
                        reader = None;
                        writer = None;
                        let why = c.map(|c| format!("closed: {} {}", u16::from(c.code), c.reason)).unwrap_or_else(|| "closed".into());
                        core.disconnected(now, &why);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        reader = None;
                        writer = None;
                        core.disconnected(now, &e.to_string());
                    }
                    None => {
                        reader = None;
                        writer = None;
                        core.disconnected(now, "socket closed");
                    }
                }
            }
            c = cmds.recv(), if done.is_none() => match c {
                Some(WorkerCmd::Media(cmd)) => core.handle_cmd(Instant::now(), cmd),
                Some(WorkerCmd::Shutdown(tx)) => {
                    core.shutdown(Instant::now());
                    if let Some(h) = pending_connect.take() {
                        h.abort();
                    }
                    done = Some((tx, Instant::now() + SHUTDOWN_WAIT));
                }
                None => break,
            },
            () = sleep_until(Some(wake)) => core.handle_timeout(Instant::now()),
        }
    }
    stats.up.store(false, Relaxed);
    if let Some(h) = pending_connect.take() {
        h.abort();
    }
    drop(reader);
    drop(writer);
    if let Some((tx, _)) = done {
        let _ = tx.send(());
    }
}
