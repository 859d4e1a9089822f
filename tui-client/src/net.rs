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

fn classify(e: tokio_tungstenite::tungstenite::Error) -> ConnectError {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Tls(t) => ConnectError::Tls(t.to_string()),
        E::Io(io) => {
            // rustls reports handshake failures as IO errors wrapping its own.
            let text = io.to_string();
            if io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) || text.contains("certificate") {
                ConnectError::Tls(text)
            } else {
                ConnectError::Unreachable(text)
            }
        }
        E::Url(u) => ConnectError::Config(format!("bad --server URL: {u}")),
        E::Http(r) => ConnectError::Unreachable(format!("the server answered HTTP {}", r.status())),
        other => ConnectError::Unreachable(other.to_string()),
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
