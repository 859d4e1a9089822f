//! The pure signaling core, driven with a virtual clock: every rule of the
//! registry and the call state machine, with the exact messages each side
//! gets and the exact media commands.

use std::time::{Duration, Instant};

use one2one_server::media::MediaError;
use one2one_server::signaling::*;
use proptest::prelude::*;
use shared_proto::{ClientMsg, IceCandidate, ServerMsg, encode};

struct H {
    sig: Signaling,
    now: Instant,
    sent: Vec<(ConnId, String)>,
    media: Vec<MediaCmd>,
    established: Vec<(CallId, Duration)>,
}

impl H {
    fn new() -> Self {
        H::with(Config::default())
    }
    fn with(config: Config) -> Self {
        H { sig: Signaling::new(config), now: Instant::now(), sent: vec![], media: vec![], established: vec![] }
    }
    fn input(&mut self, i: Input) {
        self.sig.handle(self.now, i);
        self.drain();
    }
    fn drain(&mut self) {
        while let Some(o) = self.sig.poll_output() {
            match o {
                Output::Send(c, m) => self.sent.push((c, encode(&m))),
                Output::Media(m) => self.media.push(m),
                Output::Established { call, setup } => self.established.push((call, setup)),
            }
        }
    }
    fn connect(&mut self, c: ConnId) {
        self.input(Input::Connected(c));
    }
    fn msg(&mut self, c: ConnId, json: &str) {
        let m = shared_proto::decode_client(json).unwrap();
        self.input(Input::Message(c, m));
    }
    fn user(&mut self, c: ConnId, name: &str) {
        self.connect(c);
        self.msg(c, &format!(r#"{{"id":"register","name":"{name}"}}"#));
        assert_eq!(self.take(c), [r#"{"id":"registerResponse","response":"accepted"}"#]);
    }
    fn take(&mut self, c: ConnId) -> Vec<String> {
        let (mine, rest): (Vec<_>, Vec<_>) = self.sent.drain(..).partition(|(to, _)| *to == c);
        self.sent = rest;
        mine.into_iter().map(|(_, m)| m).collect()
    }
    fn take_media(&mut self) -> Vec<MediaCmd> {
        std::mem::take(&mut self.media)
    }
    fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.sig.poll_timeout().is_some_and(|t| t <= self.now) {
            self.sig.handle_timeout(self.now);
            self.drain();
        }
    }
    fn nothing_sent(&self) {
        assert!(self.sent.is_empty(), "unexpected: {:?}", self.sent);
    }
    /// alice (1) calls bob (2); bob accepts; media answers, then flows.
    fn in_call(&mut self) -> CallId {
        self.user(1, "alice");
        self.user(2, "bob");
        self.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
        assert_eq!(self.take(2), [r#"{"id":"incomingCall","from":"alice"}"#]);
        self.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
        let cmds = self.take_media();
        let MediaCmd::Start { call, caller_offer, callee_offer } = &cmds[0] else { panic!("{cmds:?}") };
        assert_eq!((caller_offer.as_str(), callee_offer.as_str()), ("OA", "OB"));
        let call = *call;
        self.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Caller, sdp: "AA".into() }));
        self.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Callee, sdp: "AB".into() }));
        assert_eq!(self.take(2), [r#"{"id":"startCommunication","sdpAnswer":"AB"}"#]);
        assert_eq!(self.take(1), [r#"{"id":"callResponse","response":"accepted","sdpAnswer":"AA"}"#]);
        self.input(Input::Media(MediaEvent::Established { call }));
        call
    }
}

fn cand(s: &str) -> IceCandidate {
    IceCandidate::new(s, Some("0".into()), Some(0))
}

#[test]
fn register_rules() {
    let mut h = H::new();
    h.user(1, "alice");
    h.connect(2);
    h.msg(2, r#"{"id":"register","name":"alice"}"#);
    assert_eq!(
        h.take(2),
        [r#"{"id":"registerResponse","response":"rejected ","message":"User alice is already registered"}"#]
    );
    h.msg(2, r#"{"id":"register","name":""}"#);
    assert_eq!(h.take(2), [r#"{"id":"registerResponse","response":"rejected ","message":"empty user name"}"#]);
    h.msg(2, &format!(r#"{{"id":"register","name":"{}"}}"#, "x".repeat(65)));
    assert_eq!(
        h.take(2),
        [r#"{"id":"registerResponse","response":"rejected ","message":"user name is longer than 64 characters"}"#]
    );
    h.msg(2, r#"{"id":"register","name":"a\u0007b"}"#);
    assert_eq!(
        h.take(2),
        [r#"{"id":"registerResponse","response":"rejected ","message":"user name contains control characters"}"#]
    );
    h.msg(2, &format!(r#"{{"id":"register","name":"{}"}}"#, "é".repeat(64)));
    assert_eq!(h.take(2), [r#"{"id":"registerResponse","response":"accepted"}"#]);
    // A second register on the same socket (Q8).
    h.msg(1, r#"{"id":"register","name":"carol"}"#);
    assert_eq!(
        h.take(1),
        [
            r#"{"id":"registerResponse","response":"rejected ","message":"This connection is already registered as alice"}"#
        ]
    );
    assert_eq!(h.sig.registered_users(), 2);
    // Closing frees the name.
    h.input(Input::Disconnected(1));
    h.connect(3);
    h.msg(3, r#"{"id":"register","name":"alice"}"#);
    assert_eq!(h.take(3), [r#"{"id":"registerResponse","response":"accepted"}"#]);
}

#[test]
fn whitespace_only_names_are_empty() {
    let mut h = H::new();
    h.connect(1);
    for name in ["   ", " ", "\\u3000", "\\u00a0 \\u2003"] {
        h.msg(1, &format!(r#"{{"id":"register","name":"{name}"}}"#));
        assert_eq!(
            h.take(1),
            [r#"{"id":"registerResponse","response":"rejected ","message":"empty user name"}"#],
            "name {name:?}"
        );
    }
    assert_eq!(h.sig.registered_users(), 0);
    assert_eq!(h.sig.name_of(1), None);
    // The socket can still register a real name, spaces inside included.
    h.msg(1, r#"{"id":"register","name":"alice smith"}"#);
    assert_eq!(h.take(1), [r#"{"id":"registerResponse","response":"accepted"}"#]);
}

#[test]
fn everything_but_register_needs_registration() {
    let mut h = H::new();
    h.user(1, "alice");
    h.connect(9);
    for (json, id) in [
        (r#"{"id":"call","from":"x","to":"alice","sdpOffer":"O"}"#, "call"),
        (
            r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"O"}"#,
            "incomingCallResponse",
        ),
        (r#"{"id":"onIceCandidate","candidate":{"candidate":"c","sdpMid":"0","sdpMLineIndex":0}}"#, "onIceCandidate"),
        (r#"{"id":"stop"}"#, "stop"),
    ] {
        h.msg(9, json);
        assert_eq!(h.take(9), [format!(r#"{{"id":"error","message":"You must register before sending `{id}`"}}"#)]);
    }
    h.nothing_sent();
    assert!(h.take_media().is_empty());
}

#[test]
fn unknown_callee_and_self_call() {
    let mut h = H::new();
    h.user(1, "alice");
    h.msg(1, r#"{"id":"call","from":"alice","to":"zed","sdpOffer":"O"}"#);
    assert_eq!(h.take(1), [r#"{"id":"callResponse","response":"rejected: ","message":"User zed is not registered"}"#]);
    h.msg(1, r#"{"id":"call","from":"alice","to":"alice","sdpOffer":"O"}"#);
    assert_eq!(h.take(1), [r#"{"id":"callResponse","response":"rejected","message":"You cannot call yourself"}"#]);
    assert_eq!(h.sig.active_calls(), 0);
}

#[test]
fn caller_is_the_registered_name_whatever_from_says() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.msg(1, r#"{"id":"call","from":"mallory","to":"bob","sdpOffer":"O"}"#);
    assert_eq!(h.take(2), [r#"{"id":"incomingCall","from":"alice"}"#]);
}

#[test]
fn success_then_hang_up_by_caller() {
    let mut h = H::new();
    let call = h.in_call();
    h.msg(1, r#"{"id":"stop"}"#);
    assert_eq!(h.take(2), [r#"{"id":"stopCommunication","message":"remote user hanged out"}"#]);
    h.nothing_sent();
    assert_eq!(h.take_media(), [MediaCmd::Release { call }]);
    // Both are idle again and can call.
    h.msg(2, r#"{"id":"call","from":"bob","to":"alice","sdpOffer":"O"}"#);
    assert_eq!(h.take(1), [r#"{"id":"incomingCall","from":"bob"}"#]);
}

#[test]
fn hang_up_by_callee_and_late_stop_is_ignored() {
    let mut h = H::new();
    let call = h.in_call();
    h.msg(2, r#"{"id":"stop"}"#);
    assert_eq!(h.take(1), [r#"{"id":"stopCommunication","message":"remote user hanged out"}"#]);
    assert_eq!(h.take_media(), [MediaCmd::Release { call }]);
    h.msg(1, r#"{"id":"stop"}"#);
    h.nothing_sent();
    assert!(h.take_media().is_empty());
}

#[test]
fn reject_and_bussy() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"O"}"#);
    h.take(2);
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"reject","message":"user declined"}"#);
    assert_eq!(h.take(1), [r#"{"id":"callResponse","response":"rejected","message":"user declined"}"#]);
    h.nothing_sent();
    assert!(h.take_media().is_empty(), "a call that never reached media releases nothing");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"O"}"#);
    h.take(2);
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"reject","message":"bussy"}"#);
    assert_eq!(h.take(1), [r#"{"id":"callResponse","response":"rejected","message":"user busy"}"#]);
}

#[test]
fn busy_callee_is_never_disturbed() {
    let mut h = H::new();
    let call = h.in_call();
    h.user(3, "carol");
    h.msg(3, r#"{"id":"call","from":"carol","to":"bob","sdpOffer":"O"}"#);
    assert_eq!(h.take(3), [r#"{"id":"callResponse","response":"rejected","message":"user busy"}"#]);
    h.nothing_sent();
    // Bob hangs up: alice is told, carol is not (Q7).
    h.msg(2, r#"{"id":"stop"}"#);
    assert_eq!(h.take(1), [r#"{"id":"stopCommunication","message":"remote user hanged out"}"#]);
    assert!(h.take(3).is_empty());
    assert_eq!(h.take_media(), [MediaCmd::Release { call }]);
}

#[test]
fn ringing_callee_is_busy_too() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.user(3, "carol");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"O"}"#);
    h.take(2);
    h.msg(3, r#"{"id":"call","from":"carol","to":"bob","sdpOffer":"O"}"#);
    assert_eq!(h.take(3), [r#"{"id":"callResponse","response":"rejected","message":"user busy"}"#]);
    // A ringing caller is busy as well.
    h.msg(3, r#"{"id":"call","from":"carol","to":"alice","sdpOffer":"O"}"#);
    assert_eq!(h.take(3), [r#"{"id":"callResponse","response":"rejected","message":"user busy"}"#]);
    h.nothing_sent();
}

/// A user rung while placing a call to someone else is busy with their
/// own call: the ring ends as busy for its caller, the user's call rings,
/// and the user's client refusing the old ring later changes nothing.
#[test]
fn a_rung_user_calling_someone_else_is_busy_with_that_call() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.user(3, "carol");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
    assert_eq!(h.take(2), [r#"{"id":"incomingCall","from":"alice"}"#]);
    h.msg(2, r#"{"id":"call","from":"bob","to":"carol","sdpOffer":"OB"}"#);
    assert_eq!(h.take(1), [r#"{"id":"callResponse","response":"rejected","message":"user busy"}"#]);
    assert_eq!(h.take(3), [r#"{"id":"incomingCall","from":"bob"}"#]);
    assert!(h.take(2).is_empty(), "bob's call is ringing carol");
    // bob's client saw alice's ring while calling and refuses it: quietly.
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"reject","message":"bussy"}"#);
    h.nothing_sent();
    assert_eq!(h.sig.active_calls(), 1);
    // carol accepts bob's call.
    h.msg(3, r#"{"id":"incomingCallResponse","from":"bob","callResponse":"accept","sdpOffer":"OC"}"#);
    assert!(matches!(h.take_media()[..], [MediaCmd::Start { .. }]));
    let c = h.sig.counters();
    assert_eq!(c.calls_started, 2);
}

#[test]
fn glare_the_first_call_rings_and_the_second_caller_hears_busy() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.user(3, "carol");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
    assert_eq!(h.take(2), [r#"{"id":"incomingCall","from":"alice"}"#]);
    let ring_deadline = h.sig.poll_timeout();
    // bob's client has not seen the incomingCall and calls alice.
    h.msg(2, r#"{"id":"call","from":"bob","to":"alice","sdpOffer":"OB-call"}"#);
    assert_eq!(h.take(2), [r#"{"id":"callResponse","response":"rejected","message":"user busy"}"#]);
    // Nothing else changes: alice hears nothing, her call still rings with
    // its deadline, no media was asked for.
    h.nothing_sent();
    assert!(h.take_media().is_empty());
    assert_eq!(h.sig.active_calls(), 1);
    assert_eq!(h.sig.poll_timeout(), ring_deadline);
    // A ringing caller calling again has a call of its own.
    h.msg(1, r#"{"id":"call","from":"alice","to":"carol","sdpOffer":"OA"}"#);
    assert_eq!(h.take(1), [r#"{"id":"callResponse","response":"rejected","message":"You are already in a call"}"#]);
    h.nothing_sent();
    // bob can still accept alice's call, with alice's own offer.
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    let cmds = h.take_media();
    let [MediaCmd::Start { call, caller_offer, callee_offer }] = &cmds[..] else { panic!("{cmds:?}") };
    assert_eq!((caller_offer.as_str(), callee_offer.as_str()), ("OA", "OB"));
    let call = *call;
    h.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Caller, sdp: "AA".into() }));
    h.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Callee, sdp: "AB".into() }));
    assert_eq!(h.take(2), [r#"{"id":"startCommunication","sdpAnswer":"AB"}"#]);
    assert_eq!(h.take(1), [r#"{"id":"callResponse","response":"accepted","sdpAnswer":"AA"}"#]);
    // In the call, a call out is refused as before.
    h.msg(2, r#"{"id":"call","from":"bob","to":"carol","sdpOffer":"O"}"#);
    assert_eq!(h.take(2), [r#"{"id":"callResponse","response":"rejected","message":"You are already in a call"}"#]);
    h.nothing_sent();
}

#[test]
fn third_party_cannot_touch_a_call() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.user(3, "mallory");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"O"}"#);
    h.take(2);
    h.msg(3, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"X"}"#);
    assert_eq!(h.take(3), [r#"{"id":"stopCommunication","message":"unknown from = alice"}"#]);
    h.msg(3, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"reject","message":"user declined"}"#);
    assert_eq!(h.take(3), [r#"{"id":"stopCommunication","message":"unknown from = alice"}"#]);
    h.msg(3, r#"{"id":"stop"}"#);
    h.msg(3, r#"{"id":"onIceCandidate","candidate":{"candidate":"evil","sdpMid":"0","sdpMLineIndex":0}}"#);
    h.nothing_sent();
    assert!(h.take_media().is_empty());
    // The caller cannot answer its own call either; its call goes on, so it
    // is not told to stop.
    h.msg(1, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"X"}"#);
    assert_eq!(
        h.take(1),
        [
            r#"{"id":"error","message":"incomingCallResponse from = alice: no incoming call rings here; your current call goes on"}"#
        ]
    );
    // The real callee still can, and mallory's candidate is nowhere.
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    let cmds = h.take_media();
    assert!(matches!(&cmds[..], [MediaCmd::Start { .. }]), "{cmds:?}");
}

#[test]
fn ring_timeout() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"O"}"#);
    h.take(2);
    h.advance(Duration::from_secs(59));
    h.nothing_sent();
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take(1), [r#"{"id":"callResponse","response":"rejected","message":"no answer"}"#]);
    assert_eq!(h.take(2), [r#"{"id":"stopCommunication","message":"no answer"}"#]);
    assert_eq!(h.sig.active_calls(), 0);
    assert!(h.take_media().is_empty());
    // A late answer gets the original's reply.
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    assert_eq!(h.take(2), [r#"{"id":"stopCommunication","message":"unknown from = alice"}"#]);
}

#[test]
fn caller_cancels_while_ringing() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"O"}"#);
    h.take(2);
    h.msg(1, r#"{"id":"stop"}"#);
    assert_eq!(h.take(2), [r#"{"id":"stopCommunication","message":"caller cancelled"}"#]);
    h.nothing_sent();
    assert!(h.sig.poll_timeout().is_none(), "the ring timer is gone");
}

#[test]
fn caller_closes_while_ringing() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"O"}"#);
    h.take(2);
    h.input(Input::Disconnected(1));
    assert_eq!(h.take(2), [r#"{"id":"stopCommunication","message":"caller cancelled"}"#]);
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    assert_eq!(h.take(2), [r#"{"id":"stopCommunication","message":"unknown from = alice"}"#]);
    assert!(h.take_media().is_empty());
}

#[test]
fn callee_closes_while_ringing() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"O"}"#);
    h.take(2);
    h.input(Input::Disconnected(2));
    assert_eq!(
        h.take(1),
        [r#"{"id":"callResponse","response":"rejected","message":"User bob is no longer available"}"#]
    );
}

#[test]
fn close_during_setup_releases_media_and_ignores_late_answers() {
    for leaver in [1, 2] {
        let mut h = H::new();
        h.user(1, "alice");
        h.user(2, "bob");
        h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
        h.take(2);
        h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
        let MediaCmd::Start { call, .. } = h.take_media()[0].clone() else { panic!() };
        h.input(Input::Disconnected(leaver));
        let other = 3 - leaver;
        let want = if other == 1 {
            r#"{"id":"callResponse","response":"rejected","message":"remote user hanged out"}"#
        } else {
            r#"{"id":"stopCommunication","message":"remote user hanged out"}"#
        };
        assert_eq!(h.take(other), [want]);
        assert_eq!(h.take_media(), [MediaCmd::Release { call }]);
        // The backend finishes its setup anyway: nothing goes out (Q3).
        h.input(Input::Media(MediaEvent::Candidate { call, leg: Leg::Caller, candidate: cand("late") }));
        h.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Caller, sdp: "A".into() }));
        h.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Callee, sdp: "B".into() }));
        h.nothing_sent();
        assert!(h.take_media().is_empty());
    }
}

#[test]
fn close_mid_call() {
    let mut h = H::new();
    let call = h.in_call();
    h.input(Input::Disconnected(2));
    assert_eq!(h.take(1), [r#"{"id":"stopCommunication","message":"remote user hanged out"}"#]);
    assert_eq!(h.take_media(), [MediaCmd::Release { call }]);
    assert_eq!(h.sig.registered_users(), 1);
}

#[test]
fn candidates_are_queued_per_leg_and_never_lost() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    // The caller trickles before and after its `call` (Q4a).
    h.msg(1, r#"{"id":"onIceCandidate","candidate":{"candidate":"a1","sdpMid":"0","sdpMLineIndex":0}}"#);
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
    h.take(2);
    h.msg(1, r#"{"id":"onIceCandidate","candidate":{"candidate":"a2","sdpMid":"0","sdpMLineIndex":0}}"#);
    // The callee trickles before its accept arrives.
    h.msg(2, r#"{"id":"onIceCandidate","candidate":{"candidate":"b1","sdpMid":"0","sdpMLineIndex":0}}"#);
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    h.msg(2, r#"{"id":"onIceCandidate","candidate":{"candidate":"b2","sdpMid":"0","sdpMLineIndex":0}}"#);
    let cmds = h.take_media();
    let call = match &cmds[0] {
        MediaCmd::Start { call, .. } => *call,
        other => panic!("{other:?}"),
    };
    let adds: Vec<(Leg, String)> = cmds[1..]
        .iter()
        .map(|c| match c {
            MediaCmd::AddCandidate { call: id, leg, candidate } if *id == call => (*leg, candidate.candidate.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        adds,
        [
            (Leg::Caller, "a1".into()),
            (Leg::Caller, "a2".into()),
            (Leg::Callee, "b1".into()),
            (Leg::Callee, "b2".into())
        ]
    );
    // The server's candidates go to the right user, tagged like Kurento's.
    h.input(Input::Media(MediaEvent::Candidate { call, leg: Leg::Callee, candidate: cand("s1") }));
    assert_eq!(
        h.take(2),
        [
            r#"{"id":"iceCandidate","candidate":{"candidate":"s1","sdpMid":"0","sdpMLineIndex":0,"__module__":"kurento","__type__":"IceCandidate"}}"#
        ]
    );
}

#[test]
fn stale_candidates_do_not_leak_into_the_next_call() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.msg(1, r#"{"id":"onIceCandidate","candidate":{"candidate":"old","sdpMid":"0","sdpMLineIndex":0}}"#);
    h.advance(Duration::from_secs(30));
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    let cmds = h.take_media();
    assert_eq!(cmds.len(), 1, "{cmds:?}");
}

#[test]
fn media_failure_and_setup_timeout() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    h.take(2);
    let MediaCmd::Start { call, .. } = h.take_media()[0].clone() else { panic!() };
    h.input(Input::Media(MediaEvent::Failed { call, error: MediaError::Unreachable("connection refused".into()) }));
    assert_eq!(
        h.take(1),
        [r#"{"id":"callResponse","response":"rejected","message":"media server unreachable: connection refused"}"#]
    );
    assert_eq!(h.take(2), [r#"{"id":"stopCommunication","message":"media server unreachable: connection refused"}"#]);
    assert_eq!(h.take_media(), [MediaCmd::Release { call }]);

    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    h.take(2);
    let MediaCmd::Start { call, .. } = h.take_media()[0].clone() else { panic!() };
    h.advance(Duration::from_secs(30));
    assert_eq!(h.take(1), [r#"{"id":"callResponse","response":"rejected","message":"media setup timed out"}"#]);
    assert_eq!(h.take_media(), [MediaCmd::Release { call }]);
}

#[test]
fn accept_without_offer_is_an_error_and_the_call_keeps_ringing() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
    h.take(2);
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept"}"#);
    assert_eq!(h.take(2), [r#"{"id":"error","message":"An accepting incomingCallResponse needs an `sdpOffer`"}"#]);
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    assert!(matches!(h.take_media()[0], MediaCmd::Start { .. }));
}

#[test]
fn shutdown_tells_everyone_and_releases() {
    let mut h = H::new();
    let call = h.in_call();
    h.input(Input::Shutdown);
    assert_eq!(h.take(1), [r#"{"id":"stopCommunication","message":"server shutting down"}"#]);
    assert_eq!(h.take(2), [r#"{"id":"stopCommunication","message":"server shutting down"}"#]);
    assert_eq!(h.take_media(), [MediaCmd::Release { call }]);
}

// Any sequence of inputs keeps the invariants: no panic, every Start is
// released at most once and at most one call per user.
fn arb_input() -> impl Strategy<Value = (u8, u8, u8)> {
    (0u8..11, 1u8..5, 0u8..5)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, .. ProptestConfig::default() })]
    #[test]
    fn state_machine_never_breaks(script in proptest::collection::vec(arb_input(), 1..60)) {
        let mut h = H::with(Config { max_calls: Some(2), ..Config::default() });
        let names = ["", "alice", "bob", "carol", "dave"];
        let mut started = std::collections::HashSet::new();
        let mut released = std::collections::HashSet::new();
        for (op, a, b) in script {
            let (a, b) = (a as ConnId, b as usize);
            let msg = match op {
                0 => Some(Input::Connected(a)),
                1 => Some(Input::Message(a, ClientMsg::Register { name: names[b].into() })),
                2 => {
                    // Every other call spells the callee in capitals: the same user.
                    let to = if a % 2 == 0 { names[b].to_uppercase() } else { names[b].to_owned() };
                    Some(Input::Message(a, ClientMsg::Call { from: String::new(), to, sdp_offer: "O".into() }))
                }
                3 => Some(Input::Message(a, ClientMsg::accept(names[b], "O"))),
                4 => Some(Input::Message(a, ClientMsg::reject(names[b], "bussy"))),
                5 => Some(Input::Message(a, ClientMsg::OnIceCandidate { candidate: cand("c") })),
                6 => Some(Input::Message(a, ClientMsg::Stop)),
                7 => Some(Input::Disconnected(a)),
                8 => { h.advance(Duration::from_secs(20 * b as u64)); None }
                10 => started.iter().next().copied().map(|call| Input::Media(MediaEvent::Established { call })),
                _ => started.iter().next().copied().map(|call| {
                    Input::Media(if b % 2 == 0 {
                        let leg = if b % 4 == 0 { Leg::Caller } else { Leg::Callee };
                        MediaEvent::Answer { call, leg, sdp: "A".into() }
                    } else {
                        MediaEvent::Failed { call, error: MediaError::Internal("x".into()) }
                    })
                }),
            };
            if let Some(i) = msg { h.input(i); }
            for cmd in h.take_media() {
                match cmd {
                    MediaCmd::Start { call, .. } => prop_assert!(started.insert(call)),
                    MediaCmd::Release { call } => {
                        prop_assert!(started.contains(&call));
                        prop_assert!(released.insert(call), "released twice");
                    }
                    MediaCmd::AddCandidate { call, .. } => prop_assert!(started.contains(&call) && !released.contains(&call)),
                }
            }
            h.sent.clear();
            // Every call that rang has ended exactly once or is still on.
            let c = h.sig.counters();
            prop_assert_eq!(c.calls_started, c.ended_total() + h.sig.active_calls() as u64);
            prop_assert!(h.sig.active_calls() <= 2, "max_calls exceeded");
        }
        prop_assert!(h.sig.active_calls() <= h.sig.connections());
        let mut seen = std::collections::HashSet::new();
        for (call, _) in &h.established {
            prop_assert!(started.contains(call));
            prop_assert!(seen.insert(*call), "established twice");
        }
    }
}

#[test]
fn server_messages_are_valid_json() {
    // What the core sends always decodes as a server message.
    let mut h = H::new();
    h.in_call();
    h.msg(1, r#"{"id":"stop"}"#);
    for (_, m) in h.sent.drain(..) {
        let _: ServerMsg = shared_proto::decode_server(&m).unwrap();
    }
}

// Item 2: a callee answering with a `from` that is not its caller is told
// which call rings, and that call goes on untouched.
#[test]
fn wrong_from_gets_an_error_and_the_ringing_call_goes_on() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.user(3, "carol");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
    assert_eq!(h.take(2), [r#"{"id":"incomingCall","from":"alice"}"#]);
    let ring_deadline = h.sig.poll_timeout();
    for answer in ["accept\",\"sdpOffer\":\"OB", "reject\",\"message\":\"user declined"] {
        h.msg(2, &format!(r#"{{"id":"incomingCallResponse","from":"carol","callResponse":"{answer}"}}"#));
        assert_eq!(
            h.take(2),
            [r#"{"id":"error","message":"incomingCallResponse from = carol: the call ringing here is from alice"}"#]
        );
        h.nothing_sent();
        assert!(h.take_media().is_empty());
    }
    // State: one call, still ringing bob from alice, same deadline.
    assert_eq!(h.sig.active_calls(), 1);
    assert_eq!(h.sig.ringing_from(2), Some("alice"));
    assert_eq!(h.sig.poll_timeout(), ring_deadline);
    // Others still meet a busy line.
    h.msg(3, r#"{"id":"call","from":"carol","to":"bob","sdpOffer":"OC"}"#);
    assert_eq!(h.take(3), [r#"{"id":"callResponse","response":"rejected","message":"user busy"}"#]);
    // bob can still accept alice, and the call is set up as usual.
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    let cmds = h.take_media();
    let [MediaCmd::Start { call, caller_offer, callee_offer }] = &cmds[..] else { panic!("{cmds:?}") };
    assert_eq!((caller_offer.as_str(), callee_offer.as_str()), ("OA", "OB"));
    let call = *call;
    h.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Caller, sdp: "AA".into() }));
    h.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Callee, sdp: "AB".into() }));
    assert_eq!(h.take(2), [r#"{"id":"startCommunication","sdpAnswer":"AB"}"#]);
    assert_eq!(h.take(1), [r#"{"id":"callResponse","response":"accepted","sdpAnswer":"AA"}"#]);
    // In the call, another answer is an error too: the call goes on.
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    assert_eq!(
        h.take(2),
        [
            r#"{"id":"error","message":"incomingCallResponse from = alice: no incoming call rings here; your current call goes on"}"#
        ]
    );
    h.nothing_sent();
    assert!(h.take_media().is_empty());
    assert_eq!(h.sig.active_calls(), 1);
    // The `from` is matched by name key, like `to`.
    let mut h = H::new();
    h.user(1, "Alice");
    h.user(2, "bob");
    h.msg(1, r#"{"id":"call","from":"Alice","to":"bob","sdpOffer":"OA"}"#);
    h.take(2);
    h.msg(2, r#"{"id":"incomingCallResponse","from":"ALICE","callResponse":"reject","message":"user declined"}"#);
    assert_eq!(h.take(1), [r#"{"id":"callResponse","response":"rejected","message":"user declined"}"#]);
    assert_eq!(h.sig.active_calls(), 0);
}

// Item 2, wire compatibility: a socket without any call keeps the
// original's stopCommunication.
#[test]
fn answer_without_any_call_keeps_the_original_stop() {
    let mut h = H::new();
    h.user(2, "bob");
    h.msg(2, r#"{"id":"incomingCallResponse","from":"carol","callResponse":"accept","sdpOffer":"OB"}"#);
    assert_eq!(h.take(2), [r#"{"id":"stopCommunication","message":"unknown from = carol"}"#]);
    assert_eq!(h.sig.active_calls(), 0);
}

// Item 3: with max_calls, a call beyond it is refused before ringing.
#[test]
fn capacity_is_checked_before_ringing() {
    let mut h = H::with(Config { max_calls: Some(2), ..Config::default() });
    for (c, name) in [(1, "a1"), (2, "b1"), (3, "a2"), (4, "b2"), (5, "a3"), (6, "b3")] {
        h.user(c, name);
    }
    // Call 1 in progress, call 2 ringing: both count.
    h.msg(1, r#"{"id":"call","from":"a1","to":"b1","sdpOffer":"O1"}"#);
    h.msg(2, r#"{"id":"incomingCallResponse","from":"a1","callResponse":"accept","sdpOffer":"P1"}"#);
    let MediaCmd::Start { call: first, .. } = h.take_media()[0].clone() else { panic!() };
    h.input(Input::Media(MediaEvent::Answer { call: first, leg: Leg::Caller, sdp: "A".into() }));
    h.input(Input::Media(MediaEvent::Answer { call: first, leg: Leg::Callee, sdp: "B".into() }));
    h.msg(3, r#"{"id":"call","from":"a2","to":"b2","sdpOffer":"O2"}"#);
    h.sent.clear();
    h.msg(5, r#"{"id":"call","from":"a3","to":"b3","sdpOffer":"O3"}"#);
    assert_eq!(
        h.take(5),
        [
            r#"{"id":"callResponse","response":"rejected","message":"server busy: no capacity for another call, try again later"}"#
        ]
    );
    // b3 never heard of it, no media was asked for, nothing else changed.
    h.nothing_sent();
    assert!(h.take_media().is_empty());
    assert_eq!(h.sig.active_calls(), 2);
    assert_eq!(h.sig.counters().refused(CallRefusal::ServerBusy), 1);
    assert_eq!(h.sig.counters().calls_started, 2);
    // Refusals of the user's own making still say so first.
    h.msg(5, r#"{"id":"call","from":"a3","to":"b1","sdpOffer":"O3"}"#);
    assert_eq!(h.take(5), [r#"{"id":"callResponse","response":"rejected","message":"user busy"}"#]);
    // A call that ends frees its place: the next call rings.
    h.msg(3, r#"{"id":"stop"}"#);
    assert_eq!(h.take(4), [r#"{"id":"stopCommunication","message":"caller cancelled"}"#]);
    h.msg(5, r#"{"id":"call","from":"a3","to":"b3","sdpOffer":"O3"}"#);
    assert_eq!(h.take(6), [r#"{"id":"incomingCall","from":"a3"}"#]);
    assert!(h.take(5).is_empty());
    // No limit by default.
    assert_eq!(Config::default().max_calls, None);
}

// Issue 14 item 4: an offer whose media has no codec the relay carries
// fails before ringing; an audio-only offer rings.
#[test]
fn an_offer_without_a_usable_codec_fails_before_ringing() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    let pcmu = "v=0\\r\\ns=-\\r\\nm=audio 9 RTP/AVP 0\\r\\na=rtpmap:0 PCMU/8000\\r\\n";
    h.msg(1, &format!(r#"{{"id":"call","from":"alice","to":"bob","sdpOffer":"{pcmu}"}}"#));
    assert_eq!(
        h.take(1),
        [
            r#"{"id":"callResponse","response":"rejected","message":"The call offers no codec this server carries (Opus audio, VP8 or H.264 video)"}"#
        ]
    );
    h.nothing_sent();
    assert_eq!(h.sig.counters().refused(CallRefusal::NoCodec), 1);
    assert_eq!(h.sig.active_calls(), 0);
    let opus = "v=0\\r\\ns=-\\r\\nm=audio 9 UDP/TLS/RTP/SAVPF 111\\r\\na=rtpmap:111 opus/48000/2\\r\\n";
    h.msg(1, &format!(r#"{{"id":"call","from":"alice","to":"bob","sdpOffer":"{opus}"}}"#));
    assert_eq!(h.take(2), [r#"{"id":"incomingCall","from":"alice"}"#]);
}

// Item 11: every call that rang ends once, with one reason; refusals are
// counted apart; the counts add up.
#[test]
fn ended_by_reason_adds_up_to_started() {
    let mut h = H::new();
    let call = h.in_call(); // alice (1) with bob (2)
    h.user(3, "carol");
    h.user(4, "dave");
    h.user(5, "erin");
    // Refused before ringing: not started.
    h.msg(3, r#"{"id":"call","from":"carol","to":"bob","sdpOffer":"O"}"#); // busy
    h.msg(3, r#"{"id":"call","from":"carol","to":"zed","sdpOffer":"O"}"#); // unknown
    h.msg(3, r#"{"id":"call","from":"carol","to":"CAROL","sdpOffer":"O"}"#); // self
    h.msg(3, r#"{"id":"call","from":"carol","to":"dave","sdpOffer":" "}"#); // no offer
    // declined, busy ("bussy"), cancelled, no answer, disconnected, media failed.
    h.msg(3, r#"{"id":"call","from":"carol","to":"dave","sdpOffer":"O"}"#);
    h.msg(4, r#"{"id":"incomingCallResponse","from":"carol","callResponse":"reject","message":"user declined"}"#);
    h.msg(3, r#"{"id":"call","from":"carol","to":"dave","sdpOffer":"O"}"#);
    h.msg(4, r#"{"id":"incomingCallResponse","from":"carol","callResponse":"reject","message":"bussy"}"#);
    h.msg(3, r#"{"id":"call","from":"carol","to":"dave","sdpOffer":"O"}"#);
    h.msg(3, r#"{"id":"stop"}"#);
    h.msg(3, r#"{"id":"call","from":"carol","to":"dave","sdpOffer":"O"}"#);
    h.advance(Duration::from_secs(60));
    h.msg(3, r#"{"id":"call","from":"carol","to":"dave","sdpOffer":"O"}"#);
    h.msg(4, r#"{"id":"incomingCallResponse","from":"carol","callResponse":"accept","sdpOffer":"P"}"#);
    let MediaCmd::Start { call: failing, .. } = h.take_media()[0].clone() else { panic!() };
    h.input(Input::Media(MediaEvent::Failed { call: failing, error: MediaError::NoCommonCodec }));
    h.msg(3, r#"{"id":"call","from":"carol","to":"erin","sdpOffer":"O"}"#);
    h.input(Input::Disconnected(5));
    // hang-up of the first call; a last one ended by shutdown.
    h.msg(1, r#"{"id":"stop"}"#);
    h.msg(3, r#"{"id":"call","from":"carol","to":"dave","sdpOffer":"O"}"#);
    h.input(Input::Shutdown);
    let c = h.sig.counters().clone();
    assert_eq!(h.sig.active_calls(), 0);
    assert_eq!(c.calls_started, 8);
    for reason in EndReason::ALL {
        assert_eq!(c.ended(reason), 1, "{}", reason.as_str());
    }
    assert_eq!(c.ended_total(), c.calls_started);
    for (why, n) in [
        (CallRefusal::Busy, 1),
        (CallRefusal::UnknownUser, 1),
        (CallRefusal::SelfCall, 1),
        (CallRefusal::NoOffer, 1),
        (CallRefusal::Glare, 0),
        (CallRefusal::ServerBusy, 0),
    ] {
        assert_eq!(c.refused(why), n, "{}", why.as_str());
    }
    let _ = call;
}

// Item 11 and 6: set-up runs from accept to media flowing both ways, once.
#[test]
fn setup_time_runs_from_accept_to_media_established() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
    h.advance(Duration::from_secs(5)); // ringing does not count
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    let MediaCmd::Start { call, .. } = h.take_media()[0].clone() else { panic!() };
    h.advance(Duration::from_millis(40));
    h.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Caller, sdp: "AA".into() }));
    h.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Callee, sdp: "AB".into() }));
    assert!(h.established.is_empty(), "answers are not media");
    h.advance(Duration::from_millis(700));
    h.input(Input::Media(MediaEvent::Established { call }));
    h.input(Input::Media(MediaEvent::Established { call }));
    assert_eq!(h.established, [(call, Duration::from_millis(740))]);
    h.msg(1, r#"{"id":"stop"}"#);
    h.input(Input::Media(MediaEvent::Established { call }));
    assert_eq!(h.established.len(), 1);
}

/// What bob (2) gets for registering `name` after "Alice" (1) registered.
fn register_verdict(name: &str) -> String {
    let mut h = H::new();
    h.user(1, "Alice");
    h.connect(2);
    h.input(Input::Message(2, ClientMsg::Register { name: name.into() }));
    let mut got = h.take(2);
    assert_eq!(got.len(), 1, "{got:?}");
    got.pop().unwrap()
}

// Item 12: the name rules, as a table of cases.
#[test]
fn name_rules_table() {
    const OK: &str = r#"{"id":"registerResponse","response":"accepted"}"#;
    let no = |m: &str| format!(r#"{{"id":"registerResponse","response":"rejected ","message":"{m}"}}"#);
    let taken = no("User Alice is already registered");
    let invisible = no("user name contains invisible characters (zero-width, format or filler)");
    let bidi = no("user name contains bidirectional text controls");
    let empty = no("empty user name");
    let control = no("user name contains control characters");
    let too_long = no("user name is longer than 64 characters");
    let emoji40 = "😀".repeat(40);
    let x64 = "x".repeat(64);
    let x65 = "x".repeat(65);
    let e64 = "e\u{301}".repeat(64); // 128 chars decomposed, 64 composed
    let cases: Vec<(&str, &str, String)> = vec![
        ("case variant", "ALICE", taken.clone()),
        ("case variant", "alice", taken.clone()),
        ("leading space", " alice", taken.clone()),
        ("trailing space", "alice ", taken.clone()),
        ("width variant", "ａｌｉｃｅ", taken.clone()),
        ("zero-width space", "alice\u{200b}", invisible.clone()),
        ("zero-width non-joiner", "al\u{200c}ice", invisible.clone()),
        ("zero-width joiner", "al\u{200d}ice", invisible.clone()),
        ("word joiner", "\u{2060}alice", invisible.clone()),
        ("BOM", "\u{feff}alice", invisible.clone()),
        ("soft hyphen", "ali\u{ad}ce", invisible.clone()),
        ("Hangul filler", "\u{3164}", invisible.clone()),
        ("blank Braille", "\u{2800}\u{2800}", invisible.clone()),
        ("line separator", "a\u{2028}b", invisible.clone()),
        ("RLO", "\u{202e}ecila", bidi.clone()),
        ("LRE", "\u{202a}bob", bidi.clone()),
        ("RLI", "bob\u{2067}", bidi.clone()),
        ("LRM", "bob\u{200e}", bidi.clone()),
        ("RLM", "\u{200f}bob", bidi.clone()),
        ("ALM", "bob\u{61c}", bidi.clone()),
        ("spaces", "   ", empty.clone()),
        ("ideographic space", "\u{3000}", empty.clone()),
        ("empty", "", empty.clone()),
        ("bell", "a\u{7}b", control.clone()),
        ("newline", "a\nb", control.clone()),
        ("DEL", "a\u{7f}", control.clone()),
        ("65 chars", &x65, too_long.clone()),
        ("64 chars", &x64, OK.into()),
        ("40 emoji", &emoji40, OK.into()),
        ("64 decomposed é", &e64, OK.into()),
        ("another name", "bob", OK.into()),
        ("inner space", "alice smith", OK.into()),
        ("emoji with VS16", "\u{2764}\u{fe0f}", OK.into()),
        ("accents", "Zoë Ångström", OK.into()),
    ];
    for (what, name, want) in &cases {
        assert_eq!(&register_verdict(name), want, "{what}: {name:?}");
    }
}

// Item 12: the registered name is the normalised one; é composed and
// decomposed are one user; calls find users by key; display keeps case.
#[test]
fn names_are_normalised_and_matched_by_key() {
    let mut h = H::new();
    h.connect(1);
    h.input(Input::Message(1, ClientMsg::Register { name: "  Rene\u{301}  ".into() }));
    assert_eq!(h.take(1), [r#"{"id":"registerResponse","response":"accepted"}"#]);
    assert_eq!(h.sig.name_of(1), Some("Ren\u{e9}"));
    h.connect(2);
    h.input(Input::Message(2, ClientMsg::Register { name: "REN\u{c9}".into() }));
    assert_eq!(
        h.take(2),
        [r#"{"id":"registerResponse","response":"rejected ","message":"User René is already registered"}"#]
    );
    h.input(Input::Message(2, ClientMsg::Register { name: "bob".into() }));
    h.take(2);
    // bob calls "rené" decomposed, in lower case: René rings, and sees bob.
    h.input(Input::Message(
        2,
        ClientMsg::Call { from: String::new(), to: " rene\u{301}".into(), sdp_offer: "O".into() },
    ));
    assert_eq!(h.take(1), [r#"{"id":"incomingCall","from":"bob"}"#]);
    h.input(Input::Message(1, ClientMsg::reject("bob", "user declined")));
    assert_eq!(h.take(2), [r#"{"id":"callResponse","response":"rejected","message":"user declined"}"#]);
    // René calls "BOB": bob is rung by René's registered spelling.
    h.input(Input::Message(1, ClientMsg::Call { from: String::new(), to: "BOB".into(), sdp_offer: "O".into() }));
    assert_eq!(h.take(2), [r#"{"id":"incomingCall","from":"René"}"#]);
    // When René leaves, every variant of the name is free.
    h.input(Input::Disconnected(1));
    h.connect(3);
    h.input(Input::Message(3, ClientMsg::Register { name: "rené".into() }));
    assert_eq!(h.take(3), [r#"{"id":"registerResponse","response":"accepted"}"#]);
    assert_eq!(h.sig.registered_users(), 2);
    let c = h.sig.counters();
    assert_eq!(c.registration_refused(RegistrationRefusal::NameTaken), 1);
}

// A call answered whose media never flows both ways ends at the setup
// timeout (counted from the accept), both sides told; one that flows stays.
#[test]
fn answered_call_without_media_ends_at_the_setup_timeout() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    let MediaCmd::Start { call, .. } = h.take_media()[0].clone() else { panic!() };
    h.advance(Duration::from_secs(1));
    h.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Caller, sdp: "AA".into() }));
    h.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Callee, sdp: "AB".into() }));
    h.sent.clear();
    h.advance(Duration::from_secs(28));
    h.nothing_sent();
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take(1), [r#"{"id":"stopCommunication","message":"media setup timed out"}"#]);
    assert_eq!(h.take(2), [r#"{"id":"stopCommunication","message":"media setup timed out"}"#]);
    assert_eq!(h.take_media(), [MediaCmd::Release { call }]);
    assert_eq!(h.sig.counters().ended(EndReason::MediaFailed), 1);
    assert!(h.established.is_empty());
    // Established in time: no deadline is left, the call stays.
    let call = h.in_call_again();
    assert_eq!(h.sig.poll_timeout(), None);
    h.advance(Duration::from_secs(3600));
    h.nothing_sent();
    assert_eq!(h.sig.active_calls(), 1);
    assert_eq!(h.established.len(), 1);
    assert_eq!(h.established[0].0, call);
}

impl H {
    /// alice (1) calls bob (2) again, both registered already.
    fn in_call_again(&mut self) -> CallId {
        self.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
        self.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
        let MediaCmd::Start { call, .. } = self.take_media()[0].clone() else { panic!() };
        self.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Caller, sdp: "AA".into() }));
        self.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Callee, sdp: "AB".into() }));
        self.input(Input::Media(MediaEvent::Established { call }));
        self.sent.clear();
        call
    }
}

#[test]
fn answers_come_per_leg_in_any_order_and_go_out_together() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    h.take(2);
    let MediaCmd::Start { call, .. } = h.take_media()[0].clone() else { panic!() };
    // Kurento answers one endpoint at a time; the callee's may come first.
    h.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Callee, sdp: "AB".into() }));
    assert!(h.take(1).is_empty() && h.take(2).is_empty());
    h.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Caller, sdp: "AA".into() }));
    assert_eq!(h.take(2), [r#"{"id":"startCommunication","sdpAnswer":"AB"}"#]);
    assert_eq!(h.take(1), [r#"{"id":"callResponse","response":"accepted","sdpAnswer":"AA"}"#]);
    // A repeated answer changes nothing.
    h.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Caller, sdp: "AA".into() }));
    assert!(h.take(1).is_empty() && h.take(2).is_empty());
}

#[test]
fn one_answer_then_a_failure_tells_both_and_releases() {
    let mut h = H::new();
    h.user(1, "alice");
    h.user(2, "bob");
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    h.take(2);
    let MediaCmd::Start { call, .. } = h.take_media()[0].clone() else { panic!() };
    h.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Caller, sdp: "AA".into() }));
    let error = MediaError::Timeout { what: "processOffer".into(), after: Duration::from_secs(4) };
    h.input(Input::Media(MediaEvent::Failed { call, error }));
    let msg = "media server did not answer processOffer within 4 s";
    assert_eq!(h.take(1), [format!(r#"{{"id":"callResponse","response":"rejected","message":"{msg}"}}"#)]);
    assert_eq!(h.take(2), [format!(r#"{{"id":"stopCommunication","message":"{msg}"}}"#)]);
    assert_eq!(h.take_media(), [MediaCmd::Release { call }]);
    // The half answer is gone with the call: a late one is ignored.
    h.input(Input::Media(MediaEvent::Answer { call, leg: Leg::Callee, sdp: "AB".into() }));
    assert!(h.take(1).is_empty() && h.take(2).is_empty());
}

#[test]
fn a_user_gives_a_call_at_most_max_call_candidates() {
    let mut h = H::with(Config { max_call_candidates: 3, ..Config::default() });
    h.user(1, "alice");
    h.user(2, "bob");
    let cand = r#"{"id":"onIceCandidate","candidate":{"candidate":"c","sdpMid":"0","sdpMLineIndex":0}}"#;
    h.msg(1, r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"OA"}"#);
    h.msg(1, cand); // queued while ringing: counts
    h.msg(2, r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"OB"}"#);
    for _ in 0..10 {
        h.msg(1, cand);
        h.msg(2, cand);
    }
    let per_leg = |cmds: &[MediaCmd], leg: Leg| {
        cmds.iter().filter(|c| matches!(c, MediaCmd::AddCandidate { leg: l, .. } if *l == leg)).count()
    };
    let cmds = h.take_media();
    assert_eq!((per_leg(&cmds, Leg::Caller), per_leg(&cmds, Leg::Callee)), (3, 3), "{cmds:?}");
}
