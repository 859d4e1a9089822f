//! What `--headless` prints: one JSON object per line on stdout, each an
//! [`HeadlessEvent`]. This type is the whole vocabulary; the README's
//! table of events and reason tags is checked against it.

use serde::Serialize;

use crate::engine::{Report, Stats};
use crate::model::{EndReason, Event};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum HeadlessEvent {
    /// Registered under `name`: calls can be made and received.
    Registered {
        name: String,
    },
    /// A call to `peer` is being placed.
    Calling {
        peer: String,
    },
    /// The call reached the server, which rings `peer`.
    Ringing {
        peer: String,
    },
    IncomingCall {
        from: String,
    },
    /// Media flows both ways.
    CallStarted {
        peer: String,
    },
    /// A call ended (or never started); `reason` is an end-reason tag.
    CallEnded {
        peer: String,
        reason: &'static str,
        message: String,
        exit_code: i32,
    },
    /// `from` called while we were in another call and was told we are busy.
    MissedCall {
        from: String,
    },
    /// Once a second during a call.
    Stats {
        stats: Stats,
    },
    /// Something failed. `fatal` errors end the session with `exit_code`
    /// (their `reason` is an end-reason tag); others leave it running
    /// (`exit_code` is null, `reason` a problem tag).
    Error {
        reason: &'static str,
        message: String,
        fatal: bool,
        exit_code: Option<i32>,
    },
}

impl HeadlessEvent {
    /// Every event name, for the README check.
    #[cfg(test)]
    pub const NAMES: &[&str] = &[
        "registered",
        "calling",
        "ringing",
        "incoming_call",
        "call_started",
        "call_ended",
        "missed_call",
        "stats",
        "error",
    ];

    pub fn from_report(r: &Report) -> HeadlessEvent {
        match r {
            Report::Stats(s) => HeadlessEvent::Stats { stats: s.clone() },
            Report::Event(e) => match e.clone() {
                Event::Registered { name } => HeadlessEvent::Registered { name },
                Event::Calling { peer } => HeadlessEvent::Calling { peer },
                Event::Ringing { peer } => HeadlessEvent::Ringing { peer },
                Event::IncomingCall { from } => HeadlessEvent::IncomingCall { from },
                Event::CallStarted { peer } => HeadlessEvent::CallStarted { peer },
                Event::CallEnded { peer, reason } => HeadlessEvent::CallEnded {
                    message: reason.describe(&peer),
                    reason: reason.tag(),
                    exit_code: reason.exit_code(),
                    peer,
                },
                Event::MissedCall { from } => HeadlessEvent::MissedCall { from },
                Event::Fatal(reason) => fatal(&reason),
                Event::Error { problem, message } => {
                    HeadlessEvent::Error { reason: problem.tag(), message, fatal: false, exit_code: None }
                }
            },
        }
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"event":"error","message":"{e}"}}"#))
    }
}

/// The error event of a session that cannot go on.
pub fn fatal(reason: &EndReason) -> HeadlessEvent {
    HeadlessEvent::Error {
        reason: reason.tag(),
        message: reason.describe(""),
        fatal: true,
        exit_code: Some(reason.exit_code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Problem;

    /// The README documents exactly the events and reason tags there are.
    #[test]
    fn readme_lists_every_event_and_reason_tag() {
        let readme = include_str!("../../README.md");
        let section = |start: &str| -> Vec<String> {
            let from = readme.find(start).unwrap_or_else(|| panic!("README has no {start:?}"));
            readme[from..]
                .lines()
                .skip(1)
                .skip_while(|l| !l.starts_with('|'))
                .take_while(|l| l.starts_with('|'))
                .skip(2)
                .filter_map(|l| l.split('|').nth(1))
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect()
        };
        let events = section("<!-- headless-events -->");
        assert_eq!(events, HeadlessEvent::NAMES, "README headless events table");
        let reasons = section("<!-- end-reasons -->");
        assert_eq!(reasons, EndReason::TAGS, "README end-reason table");
        let problems = section("<!-- problems -->");
        assert_eq!(problems, Problem::TAGS, "README problem table");
    }

    #[test]
    fn event_names_match_the_serialised_tags() {
        let samples = [
            HeadlessEvent::Registered { name: "a".into() },
            HeadlessEvent::Calling { peer: "b".into() },
            HeadlessEvent::Ringing { peer: "b".into() },
            HeadlessEvent::IncomingCall { from: "b".into() },
            HeadlessEvent::CallStarted { peer: "b".into() },
            HeadlessEvent::from_report(&Report::Event(Event::CallEnded { peer: "b".into(), reason: EndReason::Busy })),
            HeadlessEvent::MissedCall { from: "c".into() },
            HeadlessEvent::Stats { stats: Stats::default() },
            fatal(&EndReason::ServerUnreachable("refused".into())),
        ];
        let names: Vec<String> = samples
            .iter()
            .map(|e| serde_json::from_str::<serde_json::Value>(&e.to_line()).unwrap()["event"].as_str().unwrap().into())
            .collect();
        assert_eq!(names, HeadlessEvent::NAMES);
        let err: serde_json::Value =
            serde_json::from_str(&fatal(&EndReason::TlsRefused("x".into())).to_line()).unwrap();
        assert_eq!(err["reason"], "tls_refused");
        assert_eq!(err["exit_code"], 4);
        assert_eq!(err["fatal"], true);
        let soft =
            HeadlessEvent::from_report(&Report::Event(Event::Error { problem: Problem::NotNow, message: "m".into() }));
        let soft: serde_json::Value = serde_json::from_str(&soft.to_line()).unwrap();
        assert_eq!(soft["reason"], "not_now");
        assert!(soft["exit_code"].is_null());
        assert_eq!(soft["fatal"], false);
    }
}
