//! A WebSocket for signaling (`ws://` or `wss://`, with `--insecure` for
//! self-signed servers) that sends and receives text frames with deadlines.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub struct Sig {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Sig {
    /// Connects, with `subprotocol` if given (Janus wants `janus-protocol`).
    pub async fn connect(url: &str, insecure: bool, subprotocol: Option<&str>) -> anyhow::Result<Sig> {
        let mut req = url.into_client_request().with_context(|| format!("bad URL {url}"))?;
        if let Some(p) = subprotocol {
            req.headers_mut().insert("Sec-WebSocket-Protocol", p.parse().context("subprotocol")?);
        }
        let connector =
            if url.starts_with("wss://") { Some(Connector::Rustls(Arc::new(tls(insecure)?))) } else { None };
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async_tls_with_config(req, None, true, connector),
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

fn tls(insecure: bool) -> anyhow::Result<rustls::ClientConfig> {
    if !insecure {
        bail!("wss:// needs --insecure here (the bench does not verify certificates; use ws:// or --insecure)");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    Ok(builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider))).with_no_client_auth())
}

/// `--insecure`: accepts any certificate, still checks signatures.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
