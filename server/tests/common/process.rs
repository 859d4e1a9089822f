//! The real `one2one-server` binary with its stderr read line by line.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::DEADLINE;

/// A port nobody listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The server binary, its stderr lines arriving on a channel.
pub struct Proc {
    child: Child,
    lines: Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Proc {
    /// Starts the binary with `args` and `RUST_LOG=info`, and waits until
    /// it logs "listening".
    pub fn start(args: &[&str]) -> Proc {
        let mut p = Proc::spawn(args, Some("info"));
        p.wait_line("listening");
        p
    }

    /// Starts the binary; `rust_log` `None` leaves `RUST_LOG` unset.
    pub fn spawn(args: &[&str], rust_log: Option<&str>) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_one2one-server"));
        cmd.args(args).env_remove("NO_COLOR").stdout(Stdio::null()).stderr(Stdio::piped());
        match rust_log {
            Some(level) => cmd.env("RUST_LOG", level),
            None => cmd.env_remove("RUST_LOG"),
        };
        let mut child = cmd.spawn().expect("spawn one2one-server");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n') {
                let Ok(line) = line else { break };
                if tx.send(String::from_utf8_lossy(&line).into_owned()).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines, seen: vec![] }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success());
    }

    /// Reads lines until one passes `test` (returned, and kept in `seen`
    /// like the others), within [`DEADLINE`].
    pub fn wait_for(&mut self, what: &str, test: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if test(&l) {
                        return l;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("no log line {what}; log so far:\n{}", self.seen.join("\n"));
                }
            }
        }
    }

    /// The first line from now on that holds `needle`.
    pub fn wait_line(&mut self, needle: &str) -> String {
        self.wait_for(&format!("with {needle:?}"), |l| l.contains(needle))
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then the exit code; the rest of its stderr is in `seen`.
    pub fn terminate(mut self) -> (Option<i32>, Vec<String>) {
        self.signal("-TERM");
        let deadline = Instant::now() + DEADLINE;
        let code = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.code();
            }
            assert!(Instant::now() < deadline, "the server did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends with the pipe.
        self.seen.extend(self.lines.iter());
        (code, std::mem::take(&mut self.seen))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
