//! The real `one2one` binary against a real server: calls between two
//! headless clients through the embedded relay, and every documented
//! outcome with its exit code.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use one2one_media::analysis::dominant_frequency;
use one2one_media::files::{Y4mReader, read_wav};
use one2one_media::pattern;

const BIN: &str = env!("CARGO_BIN_EXE_one2one");

fn media_ip() -> IpAddr {
    std::env::var("ONE2ONE_TEST_IP")
        .expect("media tests need a private network namespace: run them through `scripts/netns-run cargo nextest run` (needs root and iproute2), as `scripts/test` does")
        .parse()
        .unwrap()
}

struct TestServer {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    fn start() -> TestServer {
        Self::start_with(false)
    }

    /// With `tls`, the server speaks WSS with a fresh self-signed certificate.
    fn start_with(tls: bool) -> TestServer {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let ip = media_ip();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let mut config = one2one_server::ServerConfig {
                    signaling: Default::default(),
                    limits: Default::default(),
                    relay: Default::default(),
                    ice_servers: vec![],
                    web_root: None,
                };
                config.relay.media_ips = vec![ip];
                let transport = if tls {
                    one2one_server::Transport::Tls(one2one_server::tls::self_signed(&[]).unwrap().config)
                } else {
                    one2one_server::Transport::Http
                };
                let server = one2one_server::start(listener, transport, config).await.unwrap();
                tx.send(server.addr).unwrap();
                let _ = stop_rx.await;
                server.shutdown().await;
            });
        });
        let addr = rx.recv_timeout(Duration::from_secs(10)).expect("server start");
        TestServer {
            url: format!("{}://{addr}/one2one", if tls { "wss" } else { "ws" }),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A running client whose JSON lines arrive on a channel.
struct Client {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

fn spawn(server: &str, args: &[&str]) -> Client {
    let ip = media_ip().to_string();
    let mut cmd = Command::new(BIN);
    cmd.args(["--server", server, "--headless", "--media-ip", &ip, "--video-size", "320x240"]).args(args);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn one2one");
    let stdout: ChildStdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            } else {
                eprintln!("non-JSON line on stdout: {line}");
            }
        }
    });
    Client { child, lines: rx, seen: vec![] }
}

impl Client {
    /// Waits for an event named `name`.
    fn wait_event(&mut self, name: &str, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if v["event"] == name {
                        return v;
                    }
                }
                Err(_) => panic!("no {name:?} event within {within:?}; saw {:?}", self.seen),
            }
        }
    }

    fn wait_exit(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Collect the remaining lines.
                while let Ok(v) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(v);
                }
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "one2one did not exit within {within:?}; saw {:?}", self.seen);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn interrupt(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("one2one-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The last frames of a recording show the test pattern with the right bars.
fn check_video(path: &Path, who: &str) -> usize {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{who}: {}: {e}", path.display()));
    let mut r = Y4mReader::open(BufReader::new(f)).unwrap();
    let (mut frames, mut good) = (0, 0);
    while let Some(frame) = r.next_frame().unwrap() {
        frames += 1;
        if let Some(info) = pattern::decode(&frame)
            && pattern::bars_match(&frame, &info, 48) > 0.8
        {
            good += 1;
        }
    }
    assert!(frames >= 30, "{who}: only {frames} frames recorded");
    assert!(good * 10 >= frames * 8, "{who}: only {good} of {frames} frames show the test pattern");
    frames
}

fn check_tone(path: &Path, hz: f32, who: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{who}: {}: {e}", path.display()));
    let (rate, _, pcm) = read_wav(BufReader::new(f)).unwrap();
    let got = dominant_frequency(&pcm[pcm.len().saturating_sub(rate as usize)..], rate).expect("audio");
    assert!((got - hz).abs() / hz < 0.02, "{who} recorded {got:.1} Hz, expected {hz} Hz");
}

#[test]
fn cli_to_cli_through_the_relay() {
    let server = TestServer::start();
    let dir = tmpdir("cli2cli");
    let carol_rec = dir.join("carol");
    let erin_rec = dir.join("erin");
    let mut carol = spawn(
        &server.url,
        &[
            "register",
            "carol",
            "--auto-answer",
            "accept",
            "--audio",
            "tone:440",
            "--record-remote",
            carol_rec.to_str().unwrap(),
        ],
    );
    carol.wait_event("registered", Duration::from_secs(10));
    let mut erin = spawn(
        &server.url,
        &[
            "call",
            "carol",
            "--as",
            "erin",
            "--hangup-after",
            "5",
            "--audio",
            "tone:660",
            "--record-remote",
            erin_rec.to_str().unwrap(),
        ],
    );
    erin.wait_event("call_started", Duration::from_secs(15));
    carol.wait_event("call_started", Duration::from_secs(15));
    let ended = erin.wait_event("call_ended", Duration::from_secs(20));
    assert_eq!(ended["reason"], "hung_up");
    assert_eq!(erin.wait_exit(Duration::from_secs(10)), 0);
    let ended = carol.wait_event("call_ended", Duration::from_secs(10));
    assert_eq!(ended["reason"], "remote_hung_up");
    carol.interrupt();
    assert_eq!(carol.wait_exit(Duration::from_secs(10)), 0);

    let erin_frames = check_video(&erin_rec.with_extension("y4m"), "erin");
    let carol_frames = check_video(&carol_rec.with_extension("y4m"), "carol");
    check_tone(&erin_rec.with_extension("wav"), 440.0, "erin");
    check_tone(&carol_rec.with_extension("wav"), 660.0, "carol");
    let latency: Vec<f64> = erin.seen.iter().filter_map(|v| v["stats"]["glass_to_glass_ms"].as_f64()).collect();
    assert!(!latency.is_empty(), "erin reported no glass-to-glass latency: {:?}", erin.seen);
    println!("erin recorded {erin_frames} frames, carol {carol_frames}; glass-to-glass {latency:?} ms");
}

#[test]
fn outcomes_have_their_exit_codes() {
    let server = TestServer::start();
    let mut dave = spawn(&server.url, &["register", "dave", "--auto-answer", "reject"]);
    dave.wait_event("registered", Duration::from_secs(10));

    // Unknown user.
    let mut c = spawn(&server.url, &["call", "nobody", "--as", "u1"]);
    assert_eq!(c.wait_exit(Duration::from_secs(15)), 6);
    assert!(c.seen.iter().any(|v| v["event"] == "call_ended" && v["reason"] == "unknown_user"), "{:?}", c.seen);

    // Declined.
    let mut c = spawn(&server.url, &["call", "dave", "--as", "u2"]);
    assert_eq!(c.wait_exit(Duration::from_secs(15)), 8);

    // Name taken.
    let mut c = spawn(&server.url, &["register", "dave"]);
    assert_eq!(c.wait_exit(Duration::from_secs(15)), 5);
    assert!(c.seen.iter().any(|v| v["reason"] == "name_taken"), "{:?}", c.seen);

    // Busy: frank is in a call with grace, then henry calls frank.
    let mut frank = spawn(&server.url, &["register", "frank", "--auto-answer", "accept"]);
    frank.wait_event("registered", Duration::from_secs(10));
    let mut grace = spawn(&server.url, &["call", "frank", "--as", "grace"]);
    grace.wait_event("call_started", Duration::from_secs(15));
    let mut henry = spawn(&server.url, &["call", "frank", "--as", "henry"]);
    assert_eq!(henry.wait_exit(Duration::from_secs(15)), 7);
    grace.interrupt();
    assert_eq!(grace.wait_exit(Duration::from_secs(10)), 0);

    // Server down.
    drop(dave);
    drop(frank);
    drop(server);
    let mut c = spawn("ws://127.0.0.1:1/one2one", &["call", "x", "--as", "y"]);
    assert_eq!(c.wait_exit(Duration::from_secs(15)), 3);

    // No camera.
    let out = Command::new(BIN).args(["--video", "camera", "call", "x", "--as", "y"]).output().unwrap();
    assert_eq!(out.status.code(), Some(11));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--video test"), "{err}");
}

#[test]
fn tls_refused_unless_trusted() {
    let server = TestServer::start_with(true);
    let mut c = spawn(&server.url, &["register", "tina"]);
    assert_eq!(c.wait_exit(Duration::from_secs(15)), 4);
    let err = c.seen.iter().find(|v| v["event"] == "error").expect("an error event");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.starts_with("TLS refused") && msg.contains("--insecure"), "{msg}");
    let mut c = spawn(&server.url, &["--insecure", "register", "tina"]);
    c.wait_event("registered", Duration::from_secs(10));
}
