//! The signaling WebSocket: `ws://` or `wss://`, with a custom CA or no
//! verification at all (`--insecure`) for self-signed servers.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug)]
pub enum ConnectError {
    Unreachable(String),
    Tls(String),
    Config(String),
}

impl std::error::Error for ConnectError {}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Unreachable(m) => write!(f, "server unreachable: {m}"),
            ConnectError::Tls(m) => write!(
                f,
                "TLS refused: {m} (for a self-signed server pass --ca-cert FILE, or --insecure to skip verification)"
            ),
            ConnectError::Config(m) => write!(f, "{m}"),
        }
    }
}

pub async fn connect(url: &str, ca_cert: Option<&Path>, insecure: bool) -> Result<Ws, ConnectError> {
    check_url(url)?;
    let connector = if url.starts_with("wss://") {
        Some(Connector::Rustls(Arc::new(tls_config(ca_cert, insecure)?)))
    } else {
        None
    };
    match tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector).await {
        Ok((ws, _)) => Ok(ws),
        Err(e) => Err(classify(e)),
    }
}

/// `ws://HOST[:PORT]/...` or `wss://...`, with a host.
fn check_url(url: &str) -> Result<(), ConnectError> {
    let bad =
        |why: &str| ConnectError::Config(format!("bad --server URL {url:?}: {why} (e.g. wss://HOST:8443/one2one)"));
    let rest =
        url.strip_prefix("wss://").or_else(|| url.strip_prefix("ws://")).ok_or_else(|| bad("not ws:// or wss://"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(bad("no host"));
    }
    Ok(())
}

/// A lost connection in words: no library's documentation links, no
/// internals (rustls appends a URL to "peer closed connection without
/// sending TLS close_notify").
pub fn describe_lost(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error as E;
    let text = match e {
        E::ConnectionClosed | E::AlreadyClosed => return "the server closed the connection".into(),
        E::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof || io.to_string().contains("close_notify") => {
            return "the connection to the server was cut".into();
        }
        E::Io(io) if io.kind() == std::io::ErrorKind::ConnectionReset => {
            return "the server reset the connection".into();
        }
        E::Protocol(_) => return "the connection to the server was cut".into(),
        other => other.to_string(),
    };
    plain(&text)
}

/// Cuts a library's message at its first URL.
fn plain(text: &str) -> String {
    match text.find("http") {
        Some(i) if text[i..].starts_with("https://") || text[i..].starts_with("http://") => {
            text[..i].trim_end_matches([' ', ':', ';', ',']).to_owned()
        }
        _ => text.to_owned(),
    }
}

fn classify(e: tokio_tungstenite::tungstenite::Error) -> ConnectError {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Tls(t) => ConnectError::Tls(plain(&t.to_string())),
        E::Io(io) => {
            // rustls reports handshake failures as IO errors wrapping its own.
            let text = plain(&io.to_string());
            if io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) || text.contains("certificate") {
                ConnectError::Tls(text)
            } else {
                ConnectError::Unreachable(text)
            }
        }
        E::Url(u) => ConnectError::Config(format!("bad --server URL: {u}")),
        E::Http(r) => ConnectError::Unreachable(format!("the server answered HTTP {}", r.status())),
        other => ConnectError::Unreachable(plain(&other.to_string())),
    }
}

fn tls_config(ca_cert: Option<&Path>, insecure: bool) -> Result<rustls::ClientConfig, ConnectError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Config(e.to_string()))?;
    let config = if insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider))).with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_cert {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| ConnectError::Config(format!("--ca-cert {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(ConnectError::Config(format!("--ca-cert {}: no certificate in it", path.display())));
            }
            for c in certs {
                roots.add(c).map_err(|e| ConnectError::Config(format!("--ca-cert {}: {e}", path.display())))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(config)
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
