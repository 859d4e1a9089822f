//! Start-up checks of the operator's settings: what would start a server
//! that breaks every call or page is refused with a message naming the
//! flag; what can run but is likely a mistake is a warning.

use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// An `--ice-server` URL: `stun:`/`stuns:`/`turn:`/`turns:` and a host;
/// TURN needs `--ice-username` and `--ice-credential`.
pub fn ice_server(url: &str, has_credentials: bool) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(format!("--ice-server {url:?}: not a STUN or TURN URL (e.g. stun:stun.example.org:3478)"));
    };
    let turn = match scheme {
        "stun" | "stuns" => false,
        "turn" | "turns" => true,
        _ => {
            return Err(format!(
                "--ice-server {url:?}: the scheme must be stun:, stuns:, turn: or turns: (e.g. turn:turn.example.org:3478)"
            ));
        }
    };
    let host = rest.split(['?', ':']).next().unwrap_or_default().trim_start_matches('[');
    if host.is_empty() || rest.starts_with("//") {
        return Err(format!("--ice-server {url:?}: no host (write {scheme}:HOST[:PORT], without //)"));
    }
    if turn && !has_credentials {
        return Err(format!("--ice-server {url:?}: a TURN server needs --ice-username and --ice-credential"));
    }
    Ok(())
}

/// `--web-root`: a folder with an `index.html`.
pub fn web_root(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("--web-root {}: not a folder", dir.display()));
    }
    if !dir.join("index.html").is_file() {
        return Err(format!("--web-root {}: has no index.html", dir.display()));
    }
    Ok(())
}

/// What the start-up check found in `--tls-cert`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CertReport {
    /// Reasons to refuse the certificate.
    pub errors: Vec<String>,
    /// Reasons to warn loudly.
    pub warnings: Vec<String>,
}

/// Reads the leaf certificate of a PEM chain: an X.509 v1 certificate is
/// refused (rustls takes only v3, and would report "certificate and key do
/// not match"); an expired or not yet valid one is a warning (`now` in
/// seconds since the epoch).
pub fn certificate(path: &Path, now_unix: i64) -> CertReport {
    let mut r = CertReport::default();
    let certs: Vec<CertificateDer<'static>> = match CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())
        .and_then(|it| it.collect::<Result<_, _>>().map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            r.errors.push(format!("--tls-cert {}: {e}", path.display()));
            return r;
        }
    };
    let Some(leaf) = certs.first() else {
        r.errors.push(format!("--tls-cert {}: holds no certificate", path.display()));
        return r;
    };
    let cert = match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, c)) => c,
        Err(e) => {
            r.errors.push(format!("--tls-cert {}: not a readable X.509 certificate: {e}", path.display()));
            return r;
        }
    };
    if cert.version() != x509_parser::x509::X509Version::V3 {
        r.errors.push(format!(
            "--tls-cert {}: an X.509 v{} certificate; TLS here needs a v3 certificate (with subjectAltName)",
            path.display(),
            cert.version().0 + 1
        ));
    }
    let validity = cert.validity();
    let (from, until) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    if now_unix > until {
        r.warnings.push(format!(
            "--tls-cert {}: EXPIRED on {} (browsers will refuse it)",
            path.display(),
            validity.not_after
        ));
    } else if now_unix < from {
        r.warnings.push(format!(
            "--tls-cert {}: not valid before {} (browsers will refuse it)",
            path.display(),
            validity.not_before
        ));
    }
    r
}

/// A `--kms-uri`: `ws://` or `wss://`, a host, and a path (KMS listens on
/// `/kurento`).
pub fn kms_uri(uri: &str) -> Result<(), String> {
    let rest = uri
        .strip_prefix("ws://")
        .or_else(|| uri.strip_prefix("wss://"))
        .ok_or_else(|| format!("--kms-uri {uri}: must start with ws:// or wss://, e.g. ws://127.0.0.1:8888/kurento"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("--kms-uri {uri}: no host, e.g. ws://127.0.0.1:8888/kurento"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers() {
        assert!(ice_server("stun:stun.example.org:3478", false).is_ok());
        assert!(ice_server("turn:10.0.0.1:3478?transport=udp", true).is_ok());
        let e = ice_server("turn:turn.example.org", false).unwrap_err();
        assert!(e.contains("--ice-username and --ice-credential"), "{e}");
        let e = ice_server("notaurl", false).unwrap_err();
        assert!(e.contains("--ice-server \"notaurl\": not a STUN or TURN URL"), "{e}");
        let e = ice_server("http://x", false).unwrap_err();
        assert!(e.contains("the scheme must be"), "{e}");
        let e = ice_server("stun://x", false).unwrap_err();
        assert!(e.contains("no host"), "{e}");
        assert!(ice_server("stun:", false).is_err());
    }
}
