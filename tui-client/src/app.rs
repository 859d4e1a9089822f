//! The TUI's app model, sans IO (model, message, update): keys and engine
//! reports come in, commands for the engine and the terminal go out. The
//! view (`ui.rs`) is drawn from this state alone, so every screen can be
//! tested without a terminal.

use std::time::{Duration, Instant};

use crate::engine::{Command, Report, Stats};
use crate::model::{EndReason, Event};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Backspace,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Key(Key),
    Report(Report),
    Tick(Instant),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Engine(Command),
    Mute(bool),
    Camera(bool),
    Bell,
    Quit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    /// Connecting and registering.
    Connecting,
    Idle,
    /// Typing the name to call.
    Dialing {
        input: String,
    },
    RingingOut {
        peer: String,
        since: Instant,
    },
    RingingIn {
        from: String,
        since: Instant,
    },
    InCall {
        peer: String,
        since: Instant,
    },
    /// The session is over (registration refused, server gone).
    Offline,
}

#[derive(Debug)]
pub struct App {
    pub me: String,
    pub server: String,
    pub screen: Screen,
    pub status: String,
    pub stats: Option<Stats>,
    pub show_stats: bool,
    pub show_help: bool,
    pub muted: bool,
    pub camera_off: bool,
    pub now: Instant,
    /// Quit when the first call ends (`one2one call`).
    pub quit_after_call: bool,
}

impl App {
    pub fn new(me: &str, server: &str, now: Instant) -> App {
        App {
            me: me.into(),
            server: server.into(),
            screen: Screen::Connecting,
            status: "connecting…".into(),
            stats: None,
            show_stats: false,
            show_help: false,
            muted: false,
            camera_off: false,
            now,
            quit_after_call: false,
        }
    }

    pub fn online(&self) -> bool {
        !matches!(self.screen, Screen::Connecting | Screen::Offline)
    }

    /// How long the current call (or ringing) has lasted.
    pub fn elapsed(&self) -> Option<Duration> {
        match &self.screen {
            Screen::RingingOut { since, .. } | Screen::RingingIn { since, .. } | Screen::InCall { since, .. } => {
                Some(self.now.saturating_duration_since(*since))
            }
            _ => None,
        }
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Cmd> {
        match msg {
            Msg::Tick(now) => {
                self.now = now;
                vec![]
            }
            Msg::Key(k) => self.on_key(k),
            Msg::Report(Report::Stats(s)) => {
                self.stats = Some(s);
                vec![]
            }
            Msg::Report(Report::Event(e)) => self.on_event(e),
        }
    }

    fn on_key(&mut self, k: Key) -> Vec<Cmd> {
        if self.show_help {
            self.show_help = false;
            return vec![];
        }
        match (&mut self.screen, k) {
            (Screen::Dialing { input }, Key::Char(c)) if !c.is_control() && input.chars().count() < 64 => {
                input.push(c);
                vec![]
            }
            (Screen::Dialing { input }, Key::Backspace) => {
                input.pop();
                vec![]
            }
            (Screen::Dialing { .. }, Key::Esc) => {
                self.screen = Screen::Idle;
                vec![]
            }
            (Screen::Dialing { input }, Key::Enter) => {
                let peer = input.trim().to_owned();
                if peer.is_empty() {
                    return vec![];
                }
                self.screen = Screen::RingingOut { peer: peer.clone(), since: self.now };
                self.status = format!("calling {peer}…");
                vec![Cmd::Engine(Command::Call(peer))]
            }
            (Screen::Dialing { .. }, _) => vec![],
            (Screen::RingingIn { .. }, Key::Char('a')) => vec![Cmd::Engine(Command::Accept)],
            (Screen::RingingIn { .. }, Key::Char('r')) => vec![Cmd::Engine(Command::Reject)],
            (Screen::RingingOut { .. }, Key::Esc) => vec![Cmd::Engine(Command::Hangup)],
            (Screen::InCall { .. }, Key::Char('h') | Key::Esc) => vec![Cmd::Engine(Command::Hangup)],
            (Screen::InCall { .. }, Key::Char('s')) => {
                self.show_stats = !self.show_stats;
                vec![]
            }
            (Screen::InCall { .. }, Key::Char('m')) => {
                self.muted = !self.muted;
                vec![Cmd::Mute(self.muted)]
            }
            (Screen::InCall { .. }, Key::Char('v')) => {
                self.camera_off = !self.camera_off;
                vec![Cmd::Camera(!self.camera_off)]
            }
            (Screen::Idle, Key::Char('c')) => {
                self.screen = Screen::Dialing { input: String::new() };
                vec![]
            }
            (_, Key::Char('?')) => {
                self.show_help = true;
                vec![]
            }
            (_, Key::Char('q')) => vec![Cmd::Engine(Command::Quit), Cmd::Quit],
            _ => vec![],
        }
    }

    fn on_event(&mut self, e: Event) -> Vec<Cmd> {
        match e {
            Event::Registered { name } => {
                self.me = name;
                self.screen = Screen::Idle;
                self.status = "online".into();
                vec![]
            }
            Event::IncomingCall { from } => {
                self.status = format!("{from} is calling");
                self.screen = Screen::RingingIn { from, since: self.now };
                vec![Cmd::Bell]
            }
            Event::CallStarted { peer } => {
                self.status = format!("in a call with {peer}");
                self.screen = Screen::InCall { peer, since: self.now };
                self.stats = None;
                self.muted = false;
                self.camera_off = false;
                vec![]
            }
            Event::CallEnded { peer, reason } => {
                self.status = match &reason {
                    EndReason::HungUp => format!("call with {peer} ended"),
                    other => format!("{peer}: {}", other.describe()),
                };
                self.screen = Screen::Idle;
                self.show_stats = false;
                if self.quit_after_call { vec![Cmd::Quit] } else { vec![] }
            }
            Event::Fatal(reason) => {
                self.status = reason.describe();
                self.screen = Screen::Offline;
                vec![]
            }
            Event::Error(m) => {
                self.status = m;
                vec![]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online() -> App {
        let mut a = App::new("alice", "wss://x/one2one", Instant::now());
        a.update(Msg::Report(Report::Event(Event::Registered { name: "alice".into() })));
        a
    }

    #[test]
    fn dialing_calls_the_typed_name() {
        let mut a = online();
        assert_eq!(a.update(Msg::Key(Key::Char('c'))), []);
        for c in "bob".chars() {
            a.update(Msg::Key(Key::Char(c)));
        }
        assert_eq!(a.update(Msg::Key(Key::Enter)), [Cmd::Engine(Command::Call("bob".into()))]);
        assert!(matches!(a.screen, Screen::RingingOut { ref peer, .. } if peer == "bob"));
        assert_eq!(a.update(Msg::Key(Key::Esc)), [Cmd::Engine(Command::Hangup)]);
    }

    #[test]
    fn incoming_prompt_rings_and_keys_answer() {
        let mut a = online();
        let out = a.update(Msg::Report(Report::Event(Event::IncomingCall { from: "bob".into() })));
        assert_eq!(out, [Cmd::Bell]);
        assert_eq!(a.update(Msg::Key(Key::Char('a'))), [Cmd::Engine(Command::Accept)]);
        assert_eq!(a.update(Msg::Key(Key::Char('r'))), [Cmd::Engine(Command::Reject)]);
    }

    #[test]
    fn in_call_keys() {
        let mut a = online();
        a.update(Msg::Report(Report::Event(Event::CallStarted { peer: "bob".into() })));
        assert_eq!(a.update(Msg::Key(Key::Char('m'))), [Cmd::Mute(true)]);
        assert_eq!(a.update(Msg::Key(Key::Char('v'))), [Cmd::Camera(false)]);
        assert_eq!(a.update(Msg::Key(Key::Char('s'))), []);
        assert!(a.show_stats);
        assert_eq!(a.update(Msg::Key(Key::Char('h'))), [Cmd::Engine(Command::Hangup)]);
        a.update(Msg::Report(Report::Event(Event::CallEnded { peer: "bob".into(), reason: EndReason::Busy })));
        assert_eq!(a.screen, Screen::Idle);
        assert_eq!(a.status, "bob: the user is busy");
        assert_eq!(a.update(Msg::Key(Key::Char('q'))), [Cmd::Engine(Command::Quit), Cmd::Quit]);
    }
}
