//! The TUI in a real terminal (tmux), against a real server and headless
//! peers: what it shows, which keys do what, and what it leaves on the
//! terminal when it ends, with its exit status.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{BIN, TestServer, media_ip, spawn, tmpdir};

/// One tmux server of our own (its own socket), one session, one pane
/// running `one2one ARGS; echo $? > status`.
struct Tmux {
    socket: String,
    status: PathBuf,
}

impl Tmux {
    fn start(name: &str, size: (u16, u16), args: &[&str]) -> Tmux {
        Command::new("tmux").arg("-V").output().expect("tmux is missing: apt-get install tmux");
        let dir = tmpdir(&format!("tmux-{name}"));
        let status = dir.join("status");
        let state = dir.join("state");
        let socket = format!("one2one-{name}-{}", std::process::id());
        let ip = media_ip().to_string();
        let mut cmd = vec![BIN.to_owned(), "--media-ip".into(), ip, "--speaker".into(), "none".into()];
        cmd.extend(args.iter().map(|a| shell_quote(a)));
        // stderr of the TUI goes to a log while it runs (XDG_STATE_HOME);
        // what it prints after restoring the screen lands in the pane.
        let line =
            format!("XDG_STATE_HOME={} {}; echo $? > {}; sleep 600", state.display(), cmd.join(" "), status.display());
        let t = Tmux { socket, status };
        t.tmux(&["new-session", "-d", "-s", "t", "-x", &size.0.to_string(), "-y", &size.1.to_string(), &line]);
        t.tmux(&["set-option", "-t", "t", "remain-on-exit", "on"]);
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(["-L", &self.socket]).args(args).output().expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pane(&self) -> Vec<String> {
        self.tmux(&["capture-pane", "-p", "-t", "t"]).lines().map(str::to_owned).collect()
    }

    fn pane_with_escapes(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-e", "-t", "t"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend(keys);
        self.tmux(&args);
    }

    /// Waits until the pane passes `test`.
    fn wait(&self, what: &str, within: Duration, test: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let p = self.pane();
            if test(&p) {
                return p;
            }
            assert!(Instant::now() < deadline, "the pane never showed {what}:\n{}", p.join("\n"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_text(&self, text: &str, within: Duration) -> Vec<String> {
        self.wait(text, within, |p| p.iter().any(|l| l.contains(text)))
    }

    /// The exit status of `one2one`, once it has exited.
    fn wait_status(&self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(s) = std::fs::read_to_string(&self.status)
                && let Ok(code) = s.trim().parse()
            {
                return code;
            }
            assert!(Instant::now() < deadline, "one2one did not exit within {within:?}:\n{}", self.pane().join("\n"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last line of the status bar (the bottom row of the TUI).
    fn status_line(p: &[String]) -> String {
        p.iter().rev().find(|l| !l.trim().is_empty()).cloned().unwrap_or_default().trim().to_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

const T: Duration = Duration::from_secs(20);

/// Item 2: `q` while the connection hangs ends the process, not just the
/// screen.
#[test]
fn q_while_connecting_ends_the_process() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("wss://{}/one2one", l.local_addr().unwrap());
    let t = Tmux::start(
        "connecting",
        (80, 24),
        &["--server", &url, "--insecure", "--connect-timeout", "600", "register", "q1"],
    );
    t.wait_text("Connecting to the server…", T);
    t.keys(&["q"]);
    assert_eq!(t.wait_status(Duration::from_secs(5)), 0);
    drop(l);
}

/// Item 3: every way the session ends leaves its reason on the terminal
/// after the screen is restored, with the documented exit code.
#[test]
fn the_tui_says_why_it_left() {
    // No server.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("ws://{}/one2one", l.local_addr().unwrap())
    };
    let t = Tmux::start("absent", (100, 24), &["--server", &closed, "register", "w1"]);
    assert_eq!(t.wait_status(T), 3);
    let p = t.wait_text("one2one: cannot reach the server:", T);
    assert!(!p.iter().any(|l| l.contains("Connecting to the server")), "the screen was restored: {p:#?}");

    // A silent server: the connect times out.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("wss://{}/one2one", l.local_addr().unwrap());
    let t =
        Tmux::start("silent", (100, 24), &["--server", &url, "--insecure", "--connect-timeout", "1", "register", "w2"]);
    assert_eq!(t.wait_status(T), 3);
    t.wait_text("one2one: cannot reach the server: no answer within 1 s (--connect-timeout)", T);
    drop(l);

    let mut server = TestServer::start();
    // A bad URL.
    let t = Tmux::start("badurl", (100, 24), &["--server", "wss://:1/x", "register", "w3"]);
    assert_eq!(t.wait_status(T), 2);
    t.wait_text("one2one: bad --server URL", T);

    // The name is taken.
    let mut taken = spawn(&server.url, &["register", "alice"]);
    taken.wait_event("registered", T);
    let t = Tmux::start("taken", (100, 24), &["--server", &server.url, "register", "alice"]);
    assert_eq!(t.wait_status(T), 5);
    t.wait_text("one2one: registration refused: User alice is already registered", T);

    // The callee is unknown.
    let t = Tmux::start("unknown", (100, 24), &["--server", &server.url, "call", "zed", "--as", "w4"]);
    assert_eq!(t.wait_status(T), 6);
    t.wait_text("one2one: zed is not registered", T);

    // TLS refused: a self-signed server, not trusted.
    let tls = TestServer::start_with(true);
    let t = Tmux::start("tls", (120, 24), &["--server", &tls.url, "register", "w6"]);
    assert_eq!(t.wait_status(T), 4);
    t.wait_text("one2one: TLS refused:", T);
    drop(tls);

    // The server shuts down during a call.
    let mut other = TestServer::start();
    let mut bob = spawn(&other.url, &["register", "bob", "--auto-answer", "accept", "--speaker", "none"]);
    bob.wait_event("registered", T);
    let t = Tmux::start("incall", (100, 24), &["--server", &other.url, "call", "bob", "--as", "w7"]);
    bob.wait_event("call_started", T);
    other.stop();
    assert_eq!(t.wait_status(T), 3);
    t.wait_text("one2one: lost the server: the server is shutting down", T);
    drop(bob);

    // The server goes away while we are idle.
    let t = Tmux::start("gone", (100, 24), &["--server", &server.url, "register", "w5"]);
    t.wait_text("You are w5.", T);
    drop(taken);
    server.stop();
    assert_eq!(t.wait_status(T), 3);
    t.wait_text("one2one: lost the server:", T);
}

/// Items 13 and 11: Esc closes the stats panel without hanging up, `q`
/// in a call asks first, Esc then hangs up; the callee's status says what
/// happened from the callee's side.
#[test]
fn keys_in_a_call_and_on_the_prompt() {
    let server = TestServer::start();
    let mut bob = spawn(&server.url, &["register", "bob", "--speaker", "none"]);
    bob.wait_event("registered", T);
    let t = Tmux::start("keys", (100, 30), &["--server", &server.url, "register", "alice"]);
    t.wait_text("You are alice.", T);

    // The prompt: Esc declines, and alice's status says she declined.
    bob.send("call alice");
    t.wait_text("bob is calling: [a]ccept / [r]eject", T);
    t.keys(&["Escape"]);
    let ended = bob.wait_event("call_ended", T);
    assert_eq!(ended["reason"], "declined", "{ended}");
    let p = t.wait_text("You are alice.", T);
    assert_eq!(Tmux::status_line(&p), "you declined bob's call");

    // A call: s opens stats, Esc closes them and the call goes on.
    bob.send("call alice");
    t.wait_text("bob is calling: [a]ccept / [r]eject", T);
    t.keys(&["a"]);
    t.wait("the call", T, |p| {
        p.iter().any(|l| l.starts_with(" bob  00:0") && l.contains("[h] hang up [m] mute [v] camera off [s] stats"))
    });
    bob.wait_event("call_started", T);
    t.keys(&["s"]);
    t.wait_text("resolution", T);
    t.keys(&["Escape"]);
    let p = t.wait("the stats closed", T, |p| !p.iter().any(|l| l.contains("resolution")));
    assert!(p.iter().any(|l| l.starts_with(" bob  00:")), "still in the call: {p:#?}");
    // m and v: the key bar says what the keys do now.
    t.keys(&["m"]);
    t.keys(&["v"]);
    t.wait_text("[m] unmute [v] camera on", T);
    // q asks; n keeps the call.
    t.keys(&["q"]);
    t.wait_text("Hang up and quit? [y] yes  [n] no", T);
    t.keys(&["n"]);
    t.wait("the question gone", T, |p| !p.iter().any(|l| l.contains("Hang up and quit?")));
    // Esc with no overlay hangs up.
    t.keys(&["Escape"]);
    let ended = bob.wait_event("call_ended", T);
    assert_eq!(ended["reason"], "remote_hung_up", "{ended}");
    let p = t.wait_text("You are alice.", T);
    assert_eq!(Tmux::status_line(&p), "you ended the call with bob");

    // A missed call: bob calls and gives up.
    bob.send("call alice");
    t.wait_text("bob is calling", T);
    bob.send("hangup");
    let p = t.wait_text("Missed calls: bob", T);
    assert_eq!(Tmux::status_line(&p), "missed call from bob");
    t.keys(&["q"]);
    assert_eq!(t.wait_status(T), 0);
}

/// Item 15: a long caller name keeps the keys on screen at 80 columns,
/// and the help fits 40x12 with its last row.
#[test]
fn small_terminals_and_long_names() {
    let server = TestServer::start();
    let long = "x".repeat(64);
    let mut caller = spawn(&server.url, &["register", &long, "--speaker", "none"]);
    caller.wait_event("registered", T);
    let t = Tmux::start("long", (80, 24), &["--server", &server.url, "register", "alice"]);
    t.wait_text("You are alice.", T);
    caller.send("call alice");
    let p = t.wait_text("[a]ccept / [r]eject", T);
    assert!(p.iter().any(|l| l.contains(&long)), "{p:#?}");
    assert!(p.iter().any(|l| l.trim_matches([' ', '│']) == "is calling"), "{p:#?}");
    t.keys(&["r"]);
    caller.wait_event("call_ended", T);

    let t = Tmux::start("small", (40, 12), &["--server", &server.url, "register", "bob"]);
    t.wait_text("You are bob.", T);
    t.keys(&["?"]);
    let p = t.wait_text("Keys", T);
    for row in ["c  call someone", "h / Esc  hang up, close a panel", "q  quit"] {
        assert!(p.iter().any(|l| l.contains(row)), "{row:?} missing:\n{}", p.join("\n"));
    }
}

/// Item 5: an explicit graphics protocol inside tmux falls back to
/// half-blocks with a note, and drawing never holds up the call: a
/// `--hangup-after 4` call ends on time.
#[test]
fn kitty_in_tmux_falls_back_to_half_blocks_without_stalling() {
    let server = TestServer::start();
    let mut bob = spawn(&server.url, &["register", "bob", "--auto-answer", "accept", "--speaker", "none"]);
    bob.wait_event("registered", T);
    let t = Tmux::start(
        "kitty",
        (100, 30),
        &[
            "--server",
            &server.url,
            "--video-render",
            "kitty",
            "--auto-answer",
            "accept",
            "--hangup-after",
            "4",
            "register",
            "k1",
        ],
    );
    t.wait_text("You are k1.", T);
    t.wait_text("kitty graphics do not pass through tmux: video drawn with half-blocks", T);
    bob.send("call k1");
    bob.wait_event("call_started", T);
    let at = Instant::now();
    t.wait("half-block video", T, |_| t.pane_with_escapes().contains('▀'));
    let ended = bob.wait_event("call_ended", T);
    let lasted = at.elapsed();
    assert_eq!(ended["reason"], "remote_hung_up");
    println!("--hangup-after 4 ended the call after {lasted:?}");
    assert!(lasted < Duration::from_secs(9), "the call lasted {lasted:?}");
    // Back to idle (q in a call would ask first), then quit.
    t.wait_text("You are k1.", T);
    t.keys(&["q"]);
    assert_eq!(t.wait_status(T), 0);
}
