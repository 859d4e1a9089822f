//! The client's call model, sans IO: what the softphone does for every user
//! action, server message and peer event. The driver performs the
//! [`Output`]s (send, create the peer, apply the answer, ...).
//!
//! Rules from the protocol:
//! - the client is the offerer in both roles;
//! - remote candidates go to the peer, which buffers them until the answer
//!   is applied; without a peer they are ignored;
//! - an incoming call while not idle is auto-rejected with `"bussy"`;
//! - `stop` is sent only while a peer exists for a call the server knows.

use shared_proto::{ClientMsg, IceCandidate, RegisterRefusal, Response, ServerMsg, register_refusal, text};

/// Why a call (or the session) ended; each has a tag and an exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// We hung up (or cancelled our ringing call).
    HungUp,
    /// The other side hung up (the server's message).
    RemoteHungUp(String),
    /// The callee declined our call.
    Declined,
    /// We declined an incoming call.
    YouDeclined,
    /// The callee was busy.
    Busy,
    /// Our call was not answered in time.
    NoAnswer,
    /// An incoming call we did not take: the caller cancelled, or it rang
    /// out.
    Missed,
    UnknownUser,
    /// We called our own name.
    SelfCall,
    /// Any other refusal of the call by the server.
    Rejected(String),
    /// Registration refused: the name is in use.
    NameTaken(String),
    /// Registration refused: the name is not valid (empty, too long, ...).
    NameInvalid(String),
    MediaFailed(String),
    /// The server went away or shut down.
    ServerClosed(String),
    /// The server could not be reached (refused, timed out).
    ServerUnreachable(String),
    TlsRefused(String),
    /// The `--server` URL or another connection setting is unusable.
    BadConfig(String),
}

impl EndReason {
    /// Every tag, for the README check.
    #[cfg(test)]
    pub const TAGS: &[&str] = &[
        "hung_up",
        "remote_hung_up",
        "declined",
        "you_declined",
        "busy",
        "no_answer",
        "missed",
        "unknown_user",
        "self_call",
        "rejected",
        "name_taken",
        "name_invalid",
        "media_failed",
        "server_closed",
        "server_unreachable",
        "tls_refused",
        "bad_config",
    ];

    /// The process exit code for a session that ends this way.
    pub fn exit_code(&self) -> i32 {
        match self {
            EndReason::HungUp | EndReason::RemoteHungUp(_) | EndReason::YouDeclined | EndReason::Missed => exit::OK,
            EndReason::ServerClosed(_) | EndReason::ServerUnreachable(_) => exit::SERVER_UNREACHABLE,
            EndReason::TlsRefused(_) => exit::TLS_REFUSED,
            EndReason::BadConfig(_) | EndReason::SelfCall => exit::USAGE,
            EndReason::NameTaken(_) | EndReason::NameInvalid(_) => exit::NAME_TAKEN,
            EndReason::UnknownUser => exit::UNKNOWN_USER,
            EndReason::Busy => exit::BUSY,
            EndReason::Declined | EndReason::Rejected(_) => exit::DECLINED,
            EndReason::NoAnswer => exit::NO_ANSWER,
            EndReason::MediaFailed(_) => exit::MEDIA_FAILED,
        }
    }

    /// A short machine-readable tag (one of [`EndReason::TAGS`]).
    pub fn tag(&self) -> &'static str {
        match self {
            EndReason::HungUp => "hung_up",
            EndReason::RemoteHungUp(_) => "remote_hung_up",
            EndReason::Declined => "declined",
            EndReason::YouDeclined => "you_declined",
            EndReason::Busy => "busy",
            EndReason::NoAnswer => "no_answer",
            EndReason::Missed => "missed",
            EndReason::UnknownUser => "unknown_user",
            EndReason::SelfCall => "self_call",
            EndReason::Rejected(_) => "rejected",
            EndReason::NameTaken(_) => "name_taken",
            EndReason::NameInvalid(_) => "name_invalid",
            EndReason::MediaFailed(_) => "media_failed",
            EndReason::ServerClosed(_) => "server_closed",
            EndReason::ServerUnreachable(_) => "server_unreachable",
            EndReason::TlsRefused(_) => "tls_refused",
            EndReason::BadConfig(_) => "bad_config",
        }
    }

    /// One line for the person at this end; `peer` is the other party
    /// (unused by reasons that end the session rather than a call).
    pub fn describe(&self, peer: &str) -> String {
        match self {
            EndReason::HungUp => format!("you ended the call with {peer}"),
            EndReason::RemoteHungUp(_) => format!("{peer} hung up"),
            EndReason::Declined => format!("{peer} declined your call"),
            EndReason::YouDeclined => format!("you declined {peer}'s call"),
            EndReason::Busy => format!("{peer} is busy"),
            EndReason::NoAnswer => format!("{peer} did not answer"),
            EndReason::Missed => format!("missed call from {peer}"),
            EndReason::UnknownUser => format!("{peer} is not registered"),
            EndReason::SelfCall => "you cannot call yourself".into(),
            EndReason::Rejected(m) => format!("the server refused the call: {m}"),
            EndReason::NameTaken(m) | EndReason::NameInvalid(m) => format!("registration refused: {m}"),
            EndReason::MediaFailed(m) => format!("media failed: {m}"),
            EndReason::ServerClosed(m) => format!("lost the server: {m}"),
            EndReason::ServerUnreachable(m) => format!("cannot reach the server: {m}"),
            EndReason::TlsRefused(m) => format!(
                "TLS refused: {m} (for a self-signed server pass --ca-cert FILE, or --insecure to skip verification)"
            ),
            EndReason::BadConfig(m) => m.clone(),
        }
    }
}

/// Why a command or a message could not be acted on (the session goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A command that does not fit the moment (accept while idle, ...).
    NotNow,
    /// A line on stdin that is not a command.
    UnknownCommand,
    /// The server's `error` message.
    ServerError,
    CameraLost,
    MicrophoneLost,
    SpeakerLost,
    /// A device or source that could not be opened for this call.
    Device,
}

impl Problem {
    #[cfg(test)]
    pub const TAGS: &[&str] =
        &["not_now", "unknown_command", "server_error", "camera_lost", "microphone_lost", "speaker_lost", "device"];

    pub fn tag(self) -> &'static str {
        match self {
            Problem::NotNow => "not_now",
            Problem::UnknownCommand => "unknown_command",
            Problem::ServerError => "server_error",
            Problem::CameraLost => "camera_lost",
            Problem::MicrophoneLost => "microphone_lost",
            Problem::SpeakerLost => "speaker_lost",
            Problem::Device => "device",
        }
    }
}

/// Documented exit codes of `one2one`.
pub mod exit {
    pub const OK: i32 = 0;
    /// Bad command line (clap's own code), or calling yourself.
    pub const USAGE: i32 = 2;
    pub const SERVER_UNREACHABLE: i32 = 3;
    pub const TLS_REFUSED: i32 = 4;
    pub const NAME_TAKEN: i32 = 5;
    pub const UNKNOWN_USER: i32 = 6;
    pub const BUSY: i32 = 7;
    pub const DECLINED: i32 = 8;
    pub const NO_ANSWER: i32 = 9;
    pub const MEDIA_FAILED: i32 = 10;
    pub const NO_DEVICE: i32 = 11;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the WebSocket.
    Offline,
    Registering,
    Idle,
    /// Our offer is being made or our `call` is out.
    RingingOut {
        peer: String,
    },
    RingingIn {
        from: String,
    },
    /// Accepted; waiting for the answer and the media.
    Connecting {
        peer: String,
    },
    InCall {
        peer: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Connected,
    Register(String),
    Call(String),
    Accept,
    Reject,
    Hangup,
    /// Leaving: end whatever call there is, without complaint if none.
    Leave,
    Server(ServerMsg),
    /// The peer's offer is ready.
    OfferReady(String),
    LocalCandidate(IceCandidate),
    MediaConnected,
    MediaFailed(String),
    Disconnected(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Registered {
        name: String,
    },
    /// We are placing a call (the offer is being made).
    Calling {
        peer: String,
    },
    /// Our call reached the server: the callee's phone rings.
    Ringing {
        peer: String,
    },
    IncomingCall {
        from: String,
    },
    CallStarted {
        peer: String,
    },
    CallEnded {
        peer: String,
        reason: EndReason,
    },
    /// A call that came while we were busy, refused on our behalf.
    MissedCall {
        from: String,
    },
    /// The session cannot go on (registration refused, server gone).
    Fatal(EndReason),
    /// Something could not be done; the session goes on.
    Error {
        problem: Problem,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(ClientMsg),
    /// Create a peer connection and make an offer (answer with `OfferReady`).
    CreatePeer,
    ApplyAnswer(String),
    RemoteCandidate(IceCandidate),
    ClosePeer,
    Event(Event),
}

/// What the offer being made is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Offer {
    None,
    Call {
        to: String,
    },
    Accept {
        from: String,
    },
    /// Sent; local candidates now go straight out.
    Sent,
}

#[derive(Debug)]
pub struct Model {
    pub name: Option<String>,
    pub phase: Phase,
    has_peer: bool,
    offer: Offer,
    early_candidates: Vec<IceCandidate>,
    /// Glare: the person we are calling called us first. Their call rings
    /// here once the server has refused ours as busy.
    crossed: Option<String>,
    out: Vec<Output>,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            name: None,
            phase: Phase::Offline,
            has_peer: false,
            offer: Offer::None,
            early_candidates: vec![],
            crossed: None,
            out: vec![],
        }
    }
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    #[cfg(test)]
    fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// Handles one input and returns what to do.
    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        match input {
            Input::Connected => {}
            Input::Register(name) => {
                if matches!(self.phase, Phase::Offline) {
                    self.phase = Phase::Registering;
                    self.name = Some(name.clone());
                    self.send(ClientMsg::Register { name });
                }
            }
            Input::Call(to) => self.call(to),
            Input::Accept => {
                if let Phase::RingingIn { from } = &self.phase {
                    let from = from.clone();
                    self.phase = Phase::Connecting { peer: from.clone() };
                    self.start_offer(Offer::Accept { from });
                } else {
                    self.not_now("accept: no call is ringing");
                }
            }
            Input::Reject => {
                if let Phase::RingingIn { from } = &self.phase {
                    let from = from.clone();
                    self.send(ClientMsg::reject(from.clone(), text::DECLINED));
                    self.end(from, EndReason::YouDeclined);
                } else {
                    self.not_now("reject: no call is ringing");
                }
            }
            Input::Hangup => {
                if self.call_peer().is_some() {
                    self.hang_up();
                } else {
                    self.not_now("hangup: not in a call");
                }
            }
            Input::Leave => self.hang_up(),
            Input::Server(msg) => self.on_server(msg),
            Input::OfferReady(sdp) => self.on_offer(sdp),
            Input::LocalCandidate(c) => {
                if !self.has_peer {
                } else if self.offer == Offer::Sent {
                    self.send(ClientMsg::OnIceCandidate { candidate: c });
                } else {
                    self.early_candidates.push(c);
                }
            }
            Input::MediaConnected => {
                if let Phase::Connecting { peer } = &self.phase {
                    let peer = peer.clone();
                    self.phase = Phase::InCall { peer: peer.clone() };
                    self.event(Event::CallStarted { peer });
                }
            }
            Input::MediaFailed(reason) => {
                if let Some(peer) = self.call_peer() {
                    if self.offer == Offer::Sent {
                        self.send(ClientMsg::Stop);
                    }
                    self.end(peer, EndReason::MediaFailed(reason));
                }
            }
            Input::Disconnected(reason) => {
                self.crossed = None;
                if let Some(peer) = self.call_peer() {
                    self.end(peer, EndReason::ServerClosed(reason.clone()));
                }
                self.phase = Phase::Offline;
                self.event(Event::Fatal(EndReason::ServerClosed(reason)));
            }
        }
        std::mem::take(&mut self.out)
    }

    fn send(&mut self, m: ClientMsg) {
        self.out.push(Output::Send(m));
    }

    fn event(&mut self, e: Event) {
        self.out.push(Output::Event(e));
    }

    fn not_now(&mut self, message: &str) {
        self.event(Event::Error { problem: Problem::NotNow, message: message.into() });
    }

    fn call(&mut self, to: String) {
        let to = to.trim().to_owned();
        if to.is_empty() {
            self.not_now("call: whom? (call NAME)");
        } else if matches!(self.phase, Phase::Offline | Phase::Registering) {
            self.not_now("call: not registered yet");
        } else if self.phase != Phase::Idle {
            self.not_now("call: not now, finish this call first");
        } else if self.name.as_deref() == Some(to.as_str()) {
            self.event(Event::CallEnded { peer: to, reason: EndReason::SelfCall });
        } else {
            self.phase = Phase::RingingOut { peer: to.clone() };
            self.event(Event::Calling { peer: to.clone() });
            self.start_offer(Offer::Call { to });
        }
    }

    fn start_offer(&mut self, purpose: Offer) {
        self.offer = purpose;
        self.has_peer = true;
        self.early_candidates.clear();
        self.out.push(Output::CreatePeer);
    }

    fn on_offer(&mut self, sdp: String) {
        let (msg, ringing) = match std::mem::replace(&mut self.offer, Offer::Sent) {
            Offer::Call { to } if matches!(self.phase, Phase::RingingOut { .. }) => {
                let from = self.name.clone().unwrap_or_default();
                (ClientMsg::Call { from, to: to.clone(), sdp_offer: sdp }, Some(to))
            }
            Offer::Accept { from } if matches!(self.phase, Phase::Connecting { .. }) => {
                (ClientMsg::accept(from, sdp), None)
            }
            other => {
                // The call ended while the offer was being made.
                self.offer = other;
                return;
            }
        };
        self.send(msg);
        for c in std::mem::take(&mut self.early_candidates) {
            self.send(ClientMsg::OnIceCandidate { candidate: c });
        }
        if let Some(peer) = ringing {
            self.event(Event::Ringing { peer });
        }
    }

    fn call_peer(&self) -> Option<String> {
        match &self.phase {
            Phase::RingingOut { peer } | Phase::Connecting { peer } | Phase::InCall { peer } => Some(peer.clone()),
            Phase::RingingIn { from } => Some(from.clone()),
            _ => None,
        }
    }

    fn hang_up(&mut self) {
        match self.phase.clone() {
            Phase::RingingIn { from } => {
                self.send(ClientMsg::reject(from.clone(), text::DECLINED));
                self.end(from, EndReason::YouDeclined);
            }
            Phase::RingingOut { peer } | Phase::Connecting { peer } | Phase::InCall { peer } => {
                // The server only knows of the call once our offer went out.
                if self.has_peer && self.offer == Offer::Sent {
                    self.send(ClientMsg::Stop);
                }
                self.end(peer, EndReason::HungUp);
            }
            _ => {}
        }
    }

    /// Back to idle after a call, telling the driver; a crossed call that
    /// still rings takes over.
    fn end(&mut self, peer: String, reason: EndReason) {
        if self.has_peer {
            self.out.push(Output::ClosePeer);
        }
        self.has_peer = false;
        self.offer = Offer::None;
        self.early_candidates.clear();
        self.phase = if self.name.is_some() { Phase::Idle } else { Phase::Offline };
        self.event(Event::CallEnded { peer, reason });
        if let Some(from) = self.crossed.take()
            && self.phase == Phase::Idle
        {
            self.phase = Phase::RingingIn { from: from.clone() };
            self.event(Event::IncomingCall { from });
        }
    }

    fn on_server(&mut self, msg: ServerMsg) {
        match msg {
            ServerMsg::RegisterResponse { response, message } => {
                if self.phase != Phase::Registering {
                    return;
                }
                if response.is_accepted() {
                    self.phase = Phase::Idle;
                    let name = self.name.clone().unwrap_or_default();
                    self.event(Event::Registered { name });
                } else {
                    self.phase = Phase::Offline;
                    self.name = None;
                    let m = message.unwrap_or_else(|| "registration refused".into());
                    let reason = match register_refusal(&m) {
                        RegisterRefusal::NameInvalid => EndReason::NameInvalid(m),
                        _ => EndReason::NameTaken(m),
                    };
                    self.event(Event::Fatal(reason));
                }
            }
            ServerMsg::IncomingCall { from } => match &self.phase {
                Phase::Idle => {
                    self.phase = Phase::RingingIn { from: from.clone() };
                    self.event(Event::IncomingCall { from });
                }
                // Glare: the server rings the first of two crossed calls
                // and refuses the second as busy; ours was second.
                Phase::RingingOut { peer } if *peer == from && self.crossed.is_none() => self.crossed = Some(from),
                _ => {
                    self.send(ClientMsg::reject(from.clone(), text::BUSSY));
                    self.event(Event::MissedCall { from });
                }
            },
            ServerMsg::CallResponse { response, sdp_answer, message } => {
                let Phase::RingingOut { peer } = self.phase.clone() else {
                    return;
                };
                if response.is_accepted() {
                    if let Some(from) = self.crossed.take() {
                        self.send(ClientMsg::reject(from.clone(), text::BUSSY));
                        self.event(Event::MissedCall { from });
                    }
                    match sdp_answer {
                        Some(sdp) => {
                            self.phase = Phase::Connecting { peer };
                            self.out.push(Output::ApplyAnswer(sdp));
                        }
                        None => self.end(peer, EndReason::MediaFailed("the server sent no answer".into())),
                    }
                } else {
                    let m = message.unwrap_or_default();
                    let reason = match (response, m.as_str()) {
                        (Response::RejectedUnknown, _) => EndReason::UnknownUser,
                        (_, text::DECLINED) => EndReason::Declined,
                        (_, text::BUSY) | (_, text::BUSSY) => EndReason::Busy,
                        (_, text::NO_ANSWER) => EndReason::NoAnswer,
                        (_, text::SELF_CALL) => EndReason::SelfCall,
                        _ => EndReason::Rejected(if m.is_empty() { "no reason given".into() } else { m }),
                    };
                    // The server holds nothing for a refused call: no stop.
                    self.end(peer, reason);
                }
            }
            ServerMsg::StartCommunication { sdp_answer } => {
                if matches!(self.phase, Phase::Connecting { .. }) {
                    self.out.push(Output::ApplyAnswer(sdp_answer));
                }
            }
            ServerMsg::StopCommunication { message } => {
                if matches!(self.phase, Phase::RingingOut { .. })
                    && let Some(from) = self.crossed.take()
                {
                    // The crossed call ended before ours was answered.
                    self.event(Event::MissedCall { from });
                    return;
                }
                if let Some(peer) = self.call_peer() {
                    let m = message.unwrap_or_else(|| text::REMOTE_HANGUP.into());
                    let ringing_in = matches!(self.phase, Phase::RingingIn { .. });
                    let reason = match m.as_str() {
                        text::SHUTDOWN => EndReason::ServerClosed("the server is shutting down".into()),
                        _ if ringing_in => EndReason::Missed,
                        text::NO_ANSWER => EndReason::NoAnswer,
                        _ => EndReason::RemoteHungUp(m),
                    };
                    self.end(peer, reason);
                }
            }
            ServerMsg::IceCandidate { candidate } => {
                if self.has_peer {
                    self.out.push(Output::RemoteCandidate(candidate));
                }
            }
            ServerMsg::Error { message } => self.event(Event::Error { problem: Problem::ServerError, message }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(name: &str) -> Model {
        let mut m = Model::new();
        m.handle(Input::Connected);
        assert_eq!(m.handle(Input::Register(name.into())), [Output::Send(ClientMsg::Register { name: name.into() })]);
        let out = m.handle(Input::Server(ServerMsg::register_accepted()));
        assert_eq!(out, [Output::Event(Event::Registered { name: name.into() })]);
        m
    }

    fn cand(s: &str) -> IceCandidate {
        IceCandidate::new(s, Some("0".into()), Some(0))
    }

    #[test]
    fn caller_happy_path_and_hang_up() {
        let mut m = registered("erin");
        assert_eq!(
            m.handle(Input::Call("dave".into())),
            [Output::Event(Event::Calling { peer: "dave".into() }), Output::CreatePeer]
        );
        // Candidates made before the offer is out wait for it.
        assert_eq!(m.handle(Input::LocalCandidate(cand("c1"))), []);
        let out = m.handle(Input::OfferReady("OFFER".into()));
        assert_eq!(
            out,
            [
                Output::Send(ClientMsg::Call { from: "erin".into(), to: "dave".into(), sdp_offer: "OFFER".into() }),
                Output::Send(ClientMsg::OnIceCandidate { candidate: cand("c1") }),
                Output::Event(Event::Ringing { peer: "dave".into() }),
            ]
        );
        assert_eq!(
            m.handle(Input::Server(ServerMsg::IceCandidate { candidate: cand("s1") })),
            [Output::RemoteCandidate(cand("s1"))]
        );
        assert_eq!(m.handle(Input::Server(ServerMsg::call_accepted("ANS"))), [Output::ApplyAnswer("ANS".into())]);
        assert_eq!(m.handle(Input::MediaConnected), [Output::Event(Event::CallStarted { peer: "dave".into() })]);
        assert_eq!(
            m.handle(Input::Hangup),
            [
                Output::Send(ClientMsg::Stop),
                Output::ClosePeer,
                Output::Event(Event::CallEnded { peer: "dave".into(), reason: EndReason::HungUp })
            ]
        );
        assert!(m.is_idle());
    }

    #[test]
    fn callee_accepts_with_its_own_offer() {
        let mut m = registered("carol");
        assert_eq!(
            m.handle(Input::Server(ServerMsg::IncomingCall { from: "bob".into() })),
            [Output::Event(Event::IncomingCall { from: "bob".into() })]
        );
        assert_eq!(m.handle(Input::Accept), [Output::CreatePeer]);
        assert_eq!(m.handle(Input::OfferReady("O".into())), [Output::Send(ClientMsg::accept("bob", "O"))]);
        assert_eq!(
            m.handle(Input::Server(ServerMsg::StartCommunication { sdp_answer: "A".into() })),
            [Output::ApplyAnswer("A".into())]
        );
        m.handle(Input::MediaConnected);
        assert_eq!(
            m.handle(Input::Server(ServerMsg::stop(text::REMOTE_HANGUP))),
            [
                Output::ClosePeer,
                Output::Event(Event::CallEnded {
                    peer: "bob".into(),
                    reason: EndReason::RemoteHungUp(text::REMOTE_HANGUP.into())
                })
            ]
        );
    }

    #[test]
    fn busy_auto_reject_uses_bussy_and_notes_a_missed_call() {
        let mut m = registered("carol");
        m.handle(Input::Server(ServerMsg::IncomingCall { from: "bob".into() }));
        assert_eq!(
            m.handle(Input::Server(ServerMsg::IncomingCall { from: "eve".into() })),
            [Output::Send(ClientMsg::reject("eve", "bussy")), Output::Event(Event::MissedCall { from: "eve".into() })]
        );
    }

    /// Glare: dave called us first; our call to dave is refused as busy by
    /// the server, and then dave's call rings here.
    #[test]
    fn crossed_calls_ring_the_first_and_refuse_the_second() {
        let mut m = registered("erin");
        m.handle(Input::Call("dave".into()));
        assert_eq!(m.handle(Input::Server(ServerMsg::IncomingCall { from: "dave".into() })), [], "held, not refused");
        m.handle(Input::OfferReady("O".into()));
        let out = m.handle(Input::Server(ServerMsg::call_rejected(text::BUSY)));
        assert_eq!(
            out,
            [
                Output::ClosePeer,
                Output::Event(Event::CallEnded { peer: "dave".into(), reason: EndReason::Busy }),
                Output::Event(Event::IncomingCall { from: "dave".into() }),
            ]
        );
        assert_eq!(m.phase, Phase::RingingIn { from: "dave".into() });
        assert_eq!(m.handle(Input::Accept), [Output::CreatePeer]);
    }

    #[test]
    fn an_incoming_call_that_ends_unanswered_is_missed() {
        for msg in [text::NO_ANSWER, text::CANCELLED] {
            let mut m = registered("carol");
            m.handle(Input::Server(ServerMsg::IncomingCall { from: "bob".into() }));
            assert_eq!(
                m.handle(Input::Server(ServerMsg::stop(msg))),
                [Output::Event(Event::CallEnded { peer: "bob".into(), reason: EndReason::Missed })]
            );
        }
        let mut m = registered("carol");
        m.handle(Input::Server(ServerMsg::IncomingCall { from: "bob".into() }));
        let out = m.handle(Input::Reject);
        assert_eq!(
            out.last(),
            Some(&Output::Event(Event::CallEnded { peer: "bob".into(), reason: EndReason::YouDeclined }))
        );
    }

    #[test]
    fn server_shutdown_in_a_call_is_the_server_going_away() {
        let mut m = registered("carol");
        m.handle(Input::Call("bob".into()));
        m.handle(Input::OfferReady("O".into()));
        m.handle(Input::Server(ServerMsg::call_accepted("A")));
        m.handle(Input::MediaConnected);
        let out = m.handle(Input::Server(ServerMsg::stop(text::SHUTDOWN)));
        let reason = EndReason::ServerClosed("the server is shutting down".into());
        assert_eq!(out.last(), Some(&Output::Event(Event::CallEnded { peer: "bob".into(), reason: reason.clone() })));
        assert_eq!(reason.exit_code(), exit::SERVER_UNREACHABLE);
    }

    #[test]
    fn calling_yourself_and_commands_out_of_place() {
        let mut m = registered("erin");
        assert_eq!(
            m.handle(Input::Call("erin".into())),
            [Output::Event(Event::CallEnded { peer: "erin".into(), reason: EndReason::SelfCall })]
        );
        assert_eq!(EndReason::SelfCall.exit_code(), exit::USAGE);
        for input in [Input::Accept, Input::Reject, Input::Hangup, Input::Call(" ".into())] {
            let out = m.handle(input.clone());
            assert!(
                matches!(out.as_slice(), [Output::Event(Event::Error { problem: Problem::NotNow, .. })]),
                "{input:?}: {out:?}"
            );
        }
        assert_eq!(m.handle(Input::Leave), [], "leaving while idle is quiet");
        // The server's own refusal of a self-call has its own reason too.
        m.handle(Input::Call("x".into()));
        m.handle(Input::OfferReady("O".into()));
        let out = m.handle(Input::Server(ServerMsg::call_rejected(text::SELF_CALL)));
        assert_eq!(
            out.last(),
            Some(&Output::Event(Event::CallEnded { peer: "x".into(), reason: EndReason::SelfCall }))
        );
    }

    #[test]
    fn refusals_map_to_reasons_and_exit_codes() {
        for (msg, reason, code) in [
            (ServerMsg::call_unknown("zed"), EndReason::UnknownUser, exit::UNKNOWN_USER),
            (ServerMsg::call_rejected(text::DECLINED), EndReason::Declined, exit::DECLINED),
            (ServerMsg::call_rejected(text::BUSY), EndReason::Busy, exit::BUSY),
            (ServerMsg::call_rejected(text::NO_ANSWER), EndReason::NoAnswer, exit::NO_ANSWER),
        ] {
            let mut m = registered("erin");
            m.handle(Input::Call("x".into()));
            m.handle(Input::OfferReady("O".into()));
            let out = m.handle(Input::Server(msg));
            assert_eq!(
                out,
                [Output::ClosePeer, Output::Event(Event::CallEnded { peer: "x".into(), reason: reason.clone() })]
            );
            assert_eq!(reason.exit_code(), code);
            assert!(!out.iter().any(|o| matches!(o, Output::Send(ClientMsg::Stop))));
        }
    }

    #[test]
    fn name_taken_is_fatal() {
        let mut m = Model::new();
        m.handle(Input::Register("alice".into()));
        let out = m.handle(Input::Server(ServerMsg::register_rejected("User alice is already registered")));
        assert_eq!(out, [Output::Event(Event::Fatal(EndReason::NameTaken("User alice is already registered".into())))]);
        assert_eq!(EndReason::NameTaken(String::new()).exit_code(), exit::NAME_TAKEN);
        let mut m = Model::new();
        m.handle(Input::Register("x".into()));
        let out = m.handle(Input::Server(ServerMsg::register_rejected(text::EMPTY_NAME)));
        assert_eq!(out, [Output::Event(Event::Fatal(EndReason::NameInvalid(text::EMPTY_NAME.into())))]);
    }

    #[test]
    fn no_stop_without_a_peer_and_stray_candidates_ignored() {
        let mut m = registered("erin");
        assert_eq!(m.handle(Input::Leave), []);
        assert_eq!(m.handle(Input::Server(ServerMsg::IceCandidate { candidate: cand("x") })), []);
        // Cancel before the offer is out: nothing to stop on the server.
        m.handle(Input::Call("dave".into()));
        let out = m.handle(Input::Hangup);
        assert!(!out.contains(&Output::Send(ClientMsg::Stop)), "{out:?}");
        // The late offer is dropped.
        assert_eq!(m.handle(Input::OfferReady("O".into())), []);
    }
}
