//! What the client's integration tests share: a real server in-process,
//! and the real `one2one` binary in headless mode with its JSON events on
//! a channel and commands on its stdin.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write as _};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_one2one");

pub fn media_ip() -> IpAddr {
    std::env::var("ONE2ONE_TEST_IP")
        .expect("media tests need a private network namespace: run them through `scripts/netns-run cargo nextest run` (needs root and iproute2), as `scripts/test` does")
        .parse()
        .unwrap()
}

pub struct TestServer {
    pub url: String,
    /// The server's counters, as `/metrics` shows them.
    pub metrics: std::sync::Arc<one2one_server::metrics::Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(false)
    }

    /// With `tls`, the server speaks WSS with a fresh self-signed certificate.
    pub fn start_with(tls: bool) -> TestServer {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let ip = media_ip();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let mut config = one2one_server::ServerConfig::default();
                config.relay.media_ips = vec![ip];
                let transport = if tls {
                    one2one_server::Transport::Tls(one2one_server::tls::self_signed(&[]).unwrap().config)
                } else {
                    one2one_server::Transport::Http
                };
                let server = one2one_server::start(listener, transport, config).await.unwrap();
                tx.send((server.addr, server.metrics.clone())).unwrap();
                let _ = stop_rx.await;
                server.shutdown().await;
            });
        });
        let (addr, metrics) = rx.recv_timeout(Duration::from_secs(10)).expect("server start");
        TestServer {
            metrics,
            url: format!("{}://{addr}/one2one", if tls { "wss" } else { "ws" }),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl TestServer {
    /// Shuts the server down (as SIGTERM does) and waits for it.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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
pub struct Client {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<serde_json::Value>,
    pub seen: Vec<serde_json::Value>,
}

pub fn spawn(server: &str, args: &[&str]) -> Client {
    spawn_env(server, args, &[])
}

pub fn spawn_env(server: &str, args: &[&str], env: &[(&str, &str)]) -> Client {
    let ip = media_ip().to_string();
    let mut cmd = Command::new(BIN);
    cmd.envs(env.iter().copied());
    cmd.args(["--server", server, "--headless", "--media-ip", &ip, "--video-size", "320x240"]).args(args);
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn one2one");
    let stdin = child.stdin.take();
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
    Client { child, stdin, lines: rx, seen: vec![] }
}

impl Client {
    /// Waits for an event named `name`.
    pub fn wait_event(&mut self, name: &str, within: Duration) -> serde_json::Value {
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

    pub fn wait_exit(&mut self, within: Duration) -> i32 {
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

    pub fn interrupt(&mut self) {
        self.signal("INT");
    }

    /// Sends a signal by name (`INT`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status();
    }

    /// The next event, if one comes within `within`.
    pub fn next_event(&mut self, within: Duration) -> Option<serde_json::Value> {
        let v = self.lines.recv_timeout(within).ok()?;
        self.seen.push(v.clone());
        Some(v)
    }

    /// Writes one command line to the client's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to one2one's stdin");
        stdin.flush().expect("flush");
    }

    /// Waits for an event matching `test`.
    pub fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        test: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if test(&v) {
                        return v;
                    }
                }
                Err(_) => panic!("no {what} within {within:?}; saw {:?}", self.seen),
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("one2one-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A private PulseAudio daemon with two null sinks: `o2o_mic` (what is
/// played into it comes out of `o2o_mic.monitor`, the microphone) and
/// `o2o_speaker` (whose monitor shows what the client played).
pub struct Pulse {
    child: Child,
    pub server: String,
    _dir: PathBuf,
}

impl Pulse {
    pub fn start(name: &str) -> Pulse {
        let dir = tmpdir(name);
        let socket = dir.join("native");
        let child = Command::new("pulseaudio")
            .args(["-n", "--daemonize=no", "--exit-idle-time=-1", "--system=false", "--use-pid-file=no"])
            .args(["--disable-shm=yes", "--log-target=stderr", "--log-level=error"])
            .arg("-L")
            .arg(format!("module-native-protocol-unix socket={} auth-anonymous=1", socket.display()))
            .args(["-L", "module-null-sink sink_name=o2o_mic rate=48000 channels=1"])
            .args(["-L", "module-null-sink sink_name=o2o_speaker rate=48000 channels=2"])
            .env("HOME", &dir)
            .env("XDG_RUNTIME_DIR", &dir)
            .env("PULSE_RUNTIME_PATH", &dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("pulseaudio is missing: apt-get install pulseaudio pulseaudio-utils (scripts/install-deps --test does it)");
        let pulse = Pulse { child, server: format!("unix:{}", socket.display()), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ok = Command::new("pactl")
                .arg("info")
                .env("PULSE_SERVER", &pulse.server)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("pactl is missing: apt-get install pulseaudio-utils");
            if ok.success() {
                return pulse;
            }
            assert!(Instant::now() < deadline, "PulseAudio did not come up within 15 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("PULSE_SERVER", &self.server);
        c
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
