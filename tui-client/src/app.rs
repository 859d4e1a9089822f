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

/// How long a passing message stays in the status line.
pub const STATUS_TTL: Duration = Duration::from_secs(8);
/// How many missed calls the idle screen keeps.
const MISSED_MAX: usize = 5;

#[derive(Debug)]
pub struct App {
    pub me: String,
    pub server: String,
    pub screen: Screen,
    /// A passing message and when it goes; `None` shows the screen's own
    /// line.
    message: Option<(String, Option<Instant>)>,
    pub stats: Option<Stats>,
    pub show_stats: bool,
    pub show_help: bool,
    /// `q` during a call asks first.
    pub confirm_quit: bool,
    pub muted: bool,
    pub camera_off: bool,
    /// Calls that came while we could not take them, newest last.
    pub missed: Vec<String>,
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
            message: None,
            stats: None,
            show_stats: false,
            show_help: false,
            confirm_quit: false,
            muted: false,
            camera_off: false,
            missed: vec![],
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

    /// Shows `text` in the status line for [`STATUS_TTL`].
    pub fn say(&mut self, text: impl Into<String>) {
        self.message = Some((text.into(), Some(self.now + STATUS_TTL)));
    }

    /// Shows `text` until something else is said.
    fn say_for_good(&mut self, text: impl Into<String>) {
        self.message = Some((text.into(), None));
    }

    /// The status line: a message that has not expired, else what the
    /// screen is about.
    pub fn status(&self) -> String {
        if let Some((text, until)) = &self.message
            && until.is_none_or(|t| self.now < t)
        {
            return text.clone();
        }
        match &self.screen {
            Screen::Connecting => "connecting…".into(),
            Screen::Idle | Screen::Dialing { .. } => "online".into(),
            Screen::RingingOut { peer, .. } => format!("calling {peer}…"),
            Screen::RingingIn { from, .. } => format!("{from} is calling"),
            Screen::InCall { peer, .. } => format!("in a call with {peer}"),
            Screen::Offline => "offline".into(),
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

    fn quit() -> Vec<Cmd> {
        vec![Cmd::Engine(Command::Quit), Cmd::Quit]
    }

    fn on_key(&mut self, k: Key) -> Vec<Cmd> {
        // Overlays take keys first: the quit question, then help, then
        // stats (Esc closes it rather than ending the call).
        if self.confirm_quit {
            self.confirm_quit = false;
            return if k == Key::Char('y') { Self::quit() } else { vec![] };
        }
        if self.show_help {
            self.show_help = false;
            return vec![];
        }
        if self.show_stats && k == Key::Esc {
            self.show_stats = false;
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
                if peer == self.me {
                    self.screen = Screen::Idle;
                    self.say("you cannot call yourself");
                    return vec![];
                }
                self.screen = Screen::RingingOut { peer: peer.clone(), since: self.now };
                self.message = None;
                vec![Cmd::Engine(Command::Call(peer))]
            }
            (Screen::Dialing { .. }, _) => vec![],
            (Screen::RingingIn { .. }, Key::Char('a') | Key::Enter) => vec![Cmd::Engine(Command::Accept)],
            (Screen::RingingIn { .. }, Key::Char('r') | Key::Esc) => vec![Cmd::Engine(Command::Reject)],
            (Screen::RingingOut { .. }, Key::Esc | Key::Char('h')) => vec![Cmd::Engine(Command::Hangup)],
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
            (Screen::InCall { .. } | Screen::RingingOut { .. }, Key::Char('q')) => {
                self.confirm_quit = true;
                vec![]
            }
            (_, Key::Char('q')) => Self::quit(),
            _ => vec![],
        }
    }

    fn note_missed(&mut self, from: String) {
        self.missed.retain(|m| *m != from);
        self.missed.push(from);
        if self.missed.len() > MISSED_MAX {
            self.missed.remove(0);
        }
    }

    fn on_event(&mut self, e: Event) -> Vec<Cmd> {
        match e {
            Event::Registered { name } => {
                self.me = name;
                self.screen = Screen::Idle;
                vec![]
            }
            Event::Calling { peer } => {
                if !matches!(&self.screen, Screen::RingingOut { peer: p, .. } if *p == peer) {
                    self.screen = Screen::RingingOut { peer, since: self.now };
                }
                vec![]
            }
            Event::Ringing { peer } => {
                self.say(format!("ringing {peer}…"));
                vec![]
            }
            Event::IncomingCall { from } => {
                self.message = None;
                self.screen = Screen::RingingIn { from, since: self.now };
                vec![Cmd::Bell]
            }
            Event::CallStarted { peer } => {
                self.message = None;
                self.screen = Screen::InCall { peer, since: self.now };
                self.stats = None;
                self.muted = false;
                self.camera_off = false;
                vec![]
            }
            Event::CallEnded { peer, reason } => {
                self.say(reason.describe(&peer));
                if reason == EndReason::Missed {
                    self.note_missed(peer);
                }
                self.screen = Screen::Idle;
                self.show_stats = false;
                self.confirm_quit = false;
                if self.quit_after_call { vec![Cmd::Quit] } else { vec![] }
            }
            Event::MissedCall { from } => {
                self.say(format!("missed call from {from} (you were busy)"));
                self.note_missed(from);
                vec![]
            }
            Event::Fatal(reason) => {
                self.say_for_good(reason.describe(""));
                self.screen = Screen::Offline;
                vec![]
            }
            Event::Error { message, .. } => {
                self.say(message);
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
        // Esc on the prompt declines it.
        assert_eq!(a.update(Msg::Key(Key::Esc)), [Cmd::Engine(Command::Reject)]);
    }

    #[test]
    fn esc_closes_overlays_before_it_hangs_up_and_q_asks_in_a_call() {
        let mut a = online();
        a.update(Msg::Report(Report::Event(Event::CallStarted { peer: "bob".into() })));
        a.update(Msg::Key(Key::Char('s')));
        assert_eq!(a.update(Msg::Key(Key::Esc)), [], "Esc closes the stats panel");
        assert!(!a.show_stats);
        a.update(Msg::Key(Key::Char('?')));
        assert_eq!(a.update(Msg::Key(Key::Esc)), [], "Esc closes the help");
        assert_eq!(a.update(Msg::Key(Key::Char('q'))), [], "q asks first");
        assert!(a.confirm_quit);
        assert_eq!(a.update(Msg::Key(Key::Char('n'))), []);
        assert!(!a.confirm_quit);
        a.update(Msg::Key(Key::Char('q')));
        assert_eq!(a.update(Msg::Key(Key::Char('y'))), [Cmd::Engine(Command::Quit), Cmd::Quit]);
        assert_eq!(a.update(Msg::Key(Key::Esc)), [Cmd::Engine(Command::Hangup)], "no overlay: Esc hangs up");
    }

    #[test]
    fn messages_read_from_this_side_and_expire() {
        let t0 = Instant::now();
        let mut a = online();
        a.update(Msg::Tick(t0));
        a.update(Msg::Report(Report::Event(Event::CallEnded { peer: "dave".into(), reason: EndReason::YouDeclined })));
        assert_eq!(a.status(), "you declined dave's call");
        a.update(Msg::Report(Report::Event(Event::CallEnded { peer: "bob".into(), reason: EndReason::Missed })));
        assert_eq!(a.status(), "missed call from bob");
        a.update(Msg::Report(Report::Event(Event::MissedCall { from: "carol".into() })));
        assert_eq!(a.status(), "missed call from carol (you were busy)");
        assert_eq!(a.missed, ["bob", "carol"]);
        a.update(Msg::Tick(t0 + STATUS_TTL + Duration::from_millis(1)));
        assert_eq!(a.status(), "online", "passing messages expire");
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
        assert_eq!(a.status(), "bob is busy");
        assert_eq!(a.update(Msg::Key(Key::Char('q'))), [Cmd::Engine(Command::Quit), Cmd::Quit]);
    }
}
