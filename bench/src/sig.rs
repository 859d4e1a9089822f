//! A WebSocket for signaling (`ws://` only: benchmarks run the servers
//! without TLS, `one2one-server --http`) that sends and receives text
//! frames with deadlines.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct Sig {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Sig {
    /// Connects, with `subprotocol` if given (Janus wants `janus-protocol`).
    pub async fn connect(url: &str, subprotocol: Option<&str>) -> anyhow::Result<Sig> {
        if !url.starts_with("ws://") {
            bail!("{url}: only ws:// URLs (start one2one-server with --http)");
        }
        let mut req = url.into_client_request().with_context(|| format!("bad URL {url}"))?;
        if let Some(p) = subprotocol {
            req.headers_mut().insert("Sec-WebSocket-Protocol", p.parse().context("subprotocol")?);
        }
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async_with_config(req, None, true),
        )
        .await
        .map_err(|_| anyhow!("{url}: no connection within 10 s"))?
        .with_context(|| format!("connecting to {url}"))?;
        Ok(Sig { ws })
    }

    pub async fn send(&mut self, text: String) -> anyhow::Result<()> {
        self.ws.send(Message::Text(text.into())).await.context("signaling send")
    }

    /// The next text frame; an error when the socket closes.
    pub async fn recv(&mut self) -> anyhow::Result<String> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
                Some(Ok(Message::Close(c))) => bail!("the server closed the signaling socket ({c:?})"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("signaling receive"),
                None => bail!("the signaling socket closed"),
            }
        }
    }

    /// The next text frame within `within`.
    pub async fn recv_within(&mut self, within: Duration) -> anyhow::Result<String> {
        tokio::time::timeout(within, self.recv())
            .await
            .map_err(|_| anyhow!("no signaling message within {within:?}"))?
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}
