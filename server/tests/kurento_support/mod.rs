//! Helpers of the `--media kurento` tests: the server under test in this
//! process, signaling users, `/metrics`, and media servers to point it at
//! (the scripted [`fake_kms::FakeKms`], in this process or in a child
//! process that a test can kill -9).
#![allow(dead_code)]

pub mod fake_kms;

#[allow(unused_imports)]
pub use crate::common::{Proc, Ws, free_port, init_tracing, media_ip};

use std::time::{Duration, Instant};

use one2one_server::media::MediaConfig;
use one2one_server::media::kurento::KurentoConfig;
use one2one_server::{ServerConfig, Transport};
use tokio::net::TcpStream;

/// How long anything may take before a test gives up on it.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// What users must be told by, after a media server fails them.
pub const TOLD_WITHIN: Duration = Duration::from_secs(5);

/// An offer the call core takes (the Kurento backend passes it on as is).
pub const OFFER_A: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=mid:0\r\n";
pub const OFFER_B: &str = "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=mid:0\r\n";

pub fn kurento(uris: &[String]) -> KurentoConfig {
    KurentoConfig { uris: uris.to_vec(), ..Default::default() }
}

/// The server under test, `--media kurento` with `cfg`, on plain HTTP.
pub async fn start_server(cfg: KurentoConfig) -> one2one_server::Server {
    init_tracing();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ServerConfig { media: MediaConfig::Kurento(cfg), ..Default::default() };
    one2one_server::start(listener, Transport::Http, config).await.unwrap()
}

/// `GET path` on the server: status and body.
pub async fn http_get(server: &one2one_server::Server, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf)).await.expect("HTTP answer in time").unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The value of one series in `/metrics` (e.g. `one2one_kms_up{uri="..."}`).
pub fn series(metrics: &str, name: &str) -> Option<u64> {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until `f` holds of `/metrics`.
pub async fn metrics_when(server: &one2one_server::Server, what: &str, f: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        let (_, m) = http_get(server, "/metrics").await;
        if f(&m) {
            return m;
        }
        assert!(Instant::now() < end, "metrics never showed {what}:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the server's session with `uri` is ready.
pub async fn kms_up(server: &one2one_server::Server, uri: &str) {
    let name = format!("one2one_kms_up{{uri=\"{uri}\"}}");
    metrics_when(server, &format!("{uri} up"), |m| series(m, &name) == Some(1)).await;
}

/// Two registered users: `caller` calls `callee` with [`OFFER_A`].
pub async fn ring(server: &one2one_server::Server, caller: &str, callee: &str) -> (Ws, Ws) {
    let mut a = Ws::user(server, caller).await;
    let mut b = Ws::user(server, callee).await;
    a.send_json(serde_json::json!({"id":"call","from":caller,"to":callee,"sdpOffer":OFFER_A})).await;
    b.expect(&format!(r#"{{"id":"incomingCall","from":"{caller}"}}"#)).await;
    (a, b)
}

/// The callee accepts with [`OFFER_B`]; returns when it was sent.
pub async fn accept(b: &mut Ws, caller: &str) -> Instant {
    b.send_json(
        serde_json::json!({"id":"incomingCallResponse","from":caller,"callResponse":"accept","sdpOffer":OFFER_B}),
    )
    .await;
    Instant::now()
}

/// Rings and accepts, and waits until both users have their answers.
pub async fn established_call(server: &one2one_server::Server, caller: &str, callee: &str) -> (Ws, Ws) {
    let (mut a, mut b) = ring(server, caller, callee).await;
    accept(&mut b, caller).await;
    let got = b.recv_signal().await;
    assert!(got.starts_with(r#"{"id":"startCommunication","sdpAnswer":"v=0"#), "{callee}: {got}");
    let got = a.recv_signal().await;
    assert!(got.starts_with(r#"{"id":"callResponse","response":"accepted","sdpAnswer":"v=0"#), "{caller}: {got}");
    (a, b)
}

/// `callResponse` rejected with `reason`, as the caller gets it.
pub fn rejected(reason: &str) -> String {
    format!(r#"{{"id":"callResponse","response":"rejected","message":{}}}"#, serde_json::json!(reason))
}

/// `stopCommunication` with `reason`.
pub fn stopped(reason: &str) -> String {
    format!(r#"{{"id":"stopCommunication","message":{}}}"#, serde_json::json!(reason))
}

/// A fake media server in a child process (this test binary run again),
/// so that a test can kill -9 it.
pub struct KmsProcess {
    child: std::process::Child,
    pub addr: std::net::SocketAddr,
}

/// The env variable that makes the test binary a fake media server.
pub const FAKE_KMS_ENV: &str = "ONE2ONE_FAKE_KMS_ADDR";

impl KmsProcess {
    /// Runs `test_name` (a test that calls [`serve_if_asked`]) of the
    /// current test binary as a fake media server on `addr`, and waits
    /// until it listens.
    pub fn start(test_name: &str, addr: std::net::SocketAddr) -> KmsProcess {
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(FAKE_KMS_ENV, addr.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn the fake KMS process");
        let end = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < end, "the fake KMS process never listened on {addr}");
            std::thread::sleep(Duration::from_millis(10));
        }
        KmsProcess { child, addr }
    }

    pub fn uri(&self) -> String {
        format!("ws://{}/kurento", self.addr)
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KmsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In the child of [`KmsProcess::start`]: serves a fake media server until
/// killed. Elsewhere: returns at once.
pub async fn serve_if_asked() {
    let Ok(addr) = std::env::var(FAKE_KMS_ENV) else { return };
    let _kms = fake_kms::FakeKms::start_on(addr.parse().expect("address")).await;
    std::future::pending::<()>().await;
}

/// Another `one2one-server` as the media server: `--kms-listen` on
/// `kms_port` (its HTTP on `http_port`), its relay on `media_ip`.
pub fn kms_listen_process(http_port: u16, kms_port: u16, media_ip: std::net::IpAddr) -> Proc {
    let listen = format!("127.0.0.1:{http_port}");
    let kms = format!("127.0.0.1:{kms_port}");
    let ip = media_ip.to_string();
    let mut p = Proc::spawn(&["--http", "--listen", &listen, "--kms-listen", &kms, "--media-ip", &ip], Some("info"));
    p.wait_line("KMS endpoint listening");
    p
}

/// A real offer (Opus + VP8) from a real WebRTC peer on `ip`; keep the
/// peer for as long as the call should live.
pub async fn real_offer(ip: std::net::IpAddr) -> (one2one_media::peer::Peer, String) {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = one2one_media::peer::PeerOptions { bind_ips: vec![ip], ..Default::default() };
    let peer = one2one_media::peer::Peer::new(&opts, tx).await.expect("peer");
    let sdp = peer.create_offer().await.expect("offer");
    (peer, sdp)
}

/// [`established_call`] with real offers: each answer comes from the media
/// server's WebRtcEndpoint.
pub async fn established_real_call(
    server: &one2one_server::Server,
    caller: &str,
    callee: &str,
    offers: (&str, &str),
) -> (Ws, Ws) {
    let mut a = Ws::user(server, caller).await;
    let mut b = Ws::user(server, callee).await;
    a.send_json(serde_json::json!({"id":"call","from":caller,"to":callee,"sdpOffer":offers.0})).await;
    b.expect(&format!(r#"{{"id":"incomingCall","from":"{caller}"}}"#)).await;
    b.send_json(
        serde_json::json!({"id":"incomingCallResponse","from":caller,"callResponse":"accept","sdpOffer":offers.1}),
    )
    .await;
    let got = b.recv_signal().await;
    assert!(got.starts_with(r#"{"id":"startCommunication","sdpAnswer":"v=0"#), "{callee}: {got}");
    let got = a.recv_signal().await;
    assert!(got.starts_with(r#"{"id":"callResponse","response":"accepted","sdpAnswer":"v=0"#), "{caller}: {got}");
    (a, b)
}
