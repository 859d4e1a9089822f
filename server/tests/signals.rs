//! SIGHUP never stops the server (issue 14, item 8): it reloads
//! `--tls-cert`/`--tls-key` for new connections, and with `--http` (or a
//! self-signed certificate) it logs that there is nothing to reload.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;

#[tokio::test]
async fn sighup_over_http_changes_nothing_and_calls_go_on() {
    let port = free_port();
    let mut server = Proc::start(&["--http", "--listen", &format!("127.0.0.1:{port}")]);
    let url = format!("ws://127.0.0.1:{port}/one2one");
    let mut alice = Ws::connect_url(&url, "alice").await.unwrap();
    let mut bob = Ws::connect_url(&url, "bob").await.unwrap();
    alice.send(r#"{"id":"register","name":"alice"}"#).await;
    alice.expect(r#"{"id":"registerResponse","response":"accepted"}"#).await;
    bob.send(r#"{"id":"register","name":"bob"}"#).await;
    bob.expect(r#"{"id":"registerResponse","response":"accepted"}"#).await;
    let (_pa, offer_a) = real_offer().await;
    let (_pb, offer_b) = real_offer().await;
    alice.send_msg(&shared_proto::ClientMsg::Call { from: "alice".into(), to: "bob".into(), sdp_offer: offer_a }).await;
    bob.expect(r#"{"id":"incomingCall","from":"alice"}"#).await;
    bob.send_msg(&shared_proto::ClientMsg::accept("alice", offer_b)).await;
    assert!(bob.recv_signal().await.starts_with(r#"{"id":"startCommunication""#));
    assert!(alice.recv_signal().await.starts_with(r#"{"id":"callResponse","response":"accepted""#));

    server.signal("-HUP");
    server.wait_line("SIGHUP: nothing to reload (plain HTTP)");
    bob.expect_silence(Duration::from_millis(300)).await;
    assert!(server.running(), "SIGHUP stopped the server");
    // The call and the registry are as they were.
    alice.send(r#"{"id":"stop"}"#).await;
    bob.expect(r#"{"id":"stopCommunication","message":"remote user hanged out"}"#).await;
    let mut carol = Ws::connect_url(&url, "carol").await.unwrap();
    carol.send(r#"{"id":"register","name":"alice"}"#).await;
    carol
        .expect(r#"{"id":"registerResponse","response":"rejected ","message":"User alice is already registered"}"#)
        .await;
    assert_eq!(server.terminate().0, Some(0));
}

fn write_identity(dir: &std::path::Path) -> CertificateDer<'static> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    cert.cert.der().clone()
}

/// A TLS connection that trusts only `root`; `Err` when the server's
/// certificate is another.
async fn tls_to(
    port: u16,
    root: &CertificateDer<'static>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

#[tokio::test]
async fn sighup_reloads_the_tls_certificate_for_new_connections() {
    let dir = std::env::temp_dir().join(format!("one2one-sighup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = write_identity(&dir);
    let port = free_port();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut server = Proc::start(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    // A user connected before the reload.
    let tls = tls_to(port, &first).await.expect("the first certificate");
    let (mut old, _) = tokio_tungstenite::client_async(format!("wss://localhost:{port}/one2one"), tls).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    old.send(Message::Text(r#"{"id":"register","name":"alice"}"#.into())).await.unwrap();
    assert_eq!(
        old.next().await.unwrap().unwrap().to_text().unwrap(),
        r#"{"id":"registerResponse","response":"accepted"}"#
    );

    let second = write_identity(&dir);
    server.signal("-HUP");
    server.wait_line("SIGHUP: TLS certificate reloaded");
    assert!(tls_to(port, &second).await.is_ok(), "new connections do not get the new certificate");
    assert!(tls_to(port, &first).await.is_err(), "new connections still get the old certificate");
    // The open connection keeps going.
    old.send(Message::Text(r#"{"id":"register","name":"alice"}"#.into())).await.unwrap();
    assert_eq!(
        old.next().await.unwrap().unwrap().to_text().unwrap(),
        r#"{"id":"registerResponse","response":"rejected ","message":"This connection is already registered as alice"}"#
    );

    // A pair that does not load leaves the last good one in place.
    std::fs::write(&cert, "not a certificate").unwrap();
    server.signal("-HUP");
    server.wait_line("SIGHUP: TLS certificate not reloaded");
    assert!(server.running());
    assert!(tls_to(port, &second).await.is_ok());
    assert_eq!(server.terminate().0, Some(0));
    let _ = std::fs::remove_dir_all(dir);
}
