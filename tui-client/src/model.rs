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

use shared_proto::{ClientMsg, IceCandidate, Response, ServerMsg, text};

/// Why a call (or the session) ended; each has an exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// We hung up.
    HungUp,
    /// The other side hung up (the server's message).
    RemoteHungUp(String),
    Declined,
    Busy,
    NoAnswer,
    UnknownUser(String),
    /// Any other refusal of the call by the server.
    Rejected(String),
    NameTaken(String),
    MediaFailed(String),
    ServerClosed(String),
}

impl EndReason {
    /// The process exit code for a session that ends this way.
    pub fn exit_code(&self) -> i32 {
        match self {
            EndReason::HungUp | EndReason::RemoteHungUp(_) => 0,
            EndReason::ServerClosed(_) => exit::SERVER_UNREACHABLE,
            EndReason::NameTaken(_) => exit::NAME_TAKEN,
            EndReason::UnknownUser(_) => exit::UNKNOWN_USER,
            EndReason::Busy => exit::BUSY,
            EndReason::Declined | EndReason::Rejected(_) => exit::DECLINED,
            EndReason::NoAnswer => exit::NO_ANSWER,
            EndReason::MediaFailed(_) => exit::MEDIA_FAILED,
        }
    }

    /// A short machine-readable tag.
    pub fn tag(&self) -> &'static str {
        match self {
            EndReason::HungUp => "hung_up",
            EndReason::RemoteHungUp(_) => "remote_hung_up",
            EndReason::Declined => "declined",
            EndReason::Busy => "busy",
            EndReason::NoAnswer => "no_answer",
            EndReason::UnknownUser(_) => "unknown_user",
            EndReason::Rejected(_) => "rejected",
            EndReason::NameTaken(_) => "name_taken",
            EndReason::MediaFailed(_) => "media_failed",
            EndReason::ServerClosed(_) => "server_closed",
        }
    }

    /// One line for a person.
    pub fn describe(&self) -> String {
        match self {
            EndReason::HungUp => "call ended".into(),
            EndReason::RemoteHungUp(m) => format!("the other side hung up ({m})"),
            EndReason::Declined => "the call was declined".into(),
            EndReason::Busy => "the user is busy".into(),
            EndReason::NoAnswer => "no answer".into(),
            EndReason::UnknownUser(m) | EndReason::Rejected(m) => m.clone(),
            EndReason::NameTaken(m) => format!("registration refused: {m}"),
            EndReason::MediaFailed(m) => format!("media failed: {m}"),
            EndReason::ServerClosed(m) => format!("lost the server: {m}"),
        }
    }
}

/// Documented exit codes of `one2one`.
pub mod exit {
    pub const OK: i32 = 0;
    /// Bad command line (clap's own code).
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
    /// The session cannot go on (registration refused, server gone).
    Fatal(EndReason),
    Error(String),
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
            Input::Call(to) => {
                if self.phase == Phase::Idle {
                    self.phase = Phase::RingingOut { peer: to.clone() };
                    self.start_offer(Offer::Call { to });
                } else {
                    self.event(Event::Error("cannot call now: not idle".into()));
                }
            }
            Input::Accept => {
                if let Phase::RingingIn { from } = &self.phase {
                    let from = from.clone();
                    self.phase = Phase::Connecting { peer: from.clone() };
                    self.start_offer(Offer::Accept { from });
                }
            }
            Input::Reject => {
                if let Phase::RingingIn { from } = &self.phase {
                    let from = from.clone();
                    self.send(ClientMsg::reject(from.clone(), text::DECLINED));
                    self.end(from, EndReason::Declined);
                }
            }
            Input::Hangup => self.hang_up(),
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

    fn start_offer(&mut self, purpose: Offer) {
        self.offer = purpose;
        self.has_peer = true;
        self.early_candidates.clear();
        self.out.push(Output::CreatePeer);
    }

    fn on_offer(&mut self, sdp: String) {
        let msg = match std::mem::replace(&mut self.offer, Offer::Sent) {
            Offer::Call { to } if matches!(self.phase, Phase::RingingOut { .. }) => {
                ClientMsg::Call { from: self.name.clone().unwrap_or_default(), to, sdp_offer: sdp }
            }
            Offer::Accept { from } if matches!(self.phase, Phase::Connecting { .. }) => ClientMsg::accept(from, sdp),
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
                self.end(from, EndReason::HungUp);
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

    /// Back to idle after a call, telling the driver.
    fn end(&mut self, peer: String, reason: EndReason) {
        if self.has_peer {
            self.out.push(Output::ClosePeer);
        }
        self.has_peer = false;
        self.offer = Offer::None;
        self.early_candidates.clear();
        self.phase = if self.name.is_some() { Phase::Idle } else { Phase::Offline };
        self.event(Event::CallEnded { peer, reason });
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
                    self.event(Event::Fatal(EndReason::NameTaken(m)));
                }
            }
            ServerMsg::IncomingCall { from } => {
                if self.phase == Phase::Idle {
                    self.phase = Phase::RingingIn { from: from.clone() };
                    self.event(Event::IncomingCall { from });
                } else {
                    self.send(ClientMsg::reject(from, text::BUSSY));
                }
            }
            ServerMsg::CallResponse { response, sdp_answer, message } => {
                let Phase::RingingOut { peer } = self.phase.clone() else {
                    return;
                };
                if response.is_accepted() {
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
                        (Response::RejectedUnknown, _) => EndReason::UnknownUser(m),
                        (_, text::DECLINED) => EndReason::Declined,
                        (_, text::BUSY) | (_, text::BUSSY) => EndReason::Busy,
                        (_, text::NO_ANSWER) => EndReason::NoAnswer,
                        _ => EndReason::Rejected(if m.is_empty() { "the call was refused".into() } else { m }),
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
                if let Some(peer) = self.call_peer() {
                    let m = message.unwrap_or_else(|| text::REMOTE_HANGUP.into());
                    let reason = if m == text::NO_ANSWER { EndReason::NoAnswer } else { EndReason::RemoteHungUp(m) };
                    self.end(peer, reason);
                }
            }
            ServerMsg::IceCandidate { candidate } => {
                if self.has_peer {
                    self.out.push(Output::RemoteCandidate(candidate));
                }
            }
            ServerMsg::Error { message } => self.event(Event::Error(message)),
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
        assert_eq!(m.handle(Input::Call("dave".into())), [Output::CreatePeer]);
        // Candidates made before the offer is out wait for it.
        assert_eq!(m.handle(Input::LocalCandidate(cand("c1"))), []);
        let out = m.handle(Input::OfferReady("OFFER".into()));
        assert_eq!(
            out,
            [
                Output::Send(ClientMsg::Call { from: "erin".into(), to: "dave".into(), sdp_offer: "OFFER".into() }),
                Output::Send(ClientMsg::OnIceCandidate { candidate: cand("c1") }),
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
    fn busy_auto_reject_uses_bussy() {
        let mut m = registered("carol");
        m.handle(Input::Server(ServerMsg::IncomingCall { from: "bob".into() }));
        assert_eq!(
            m.handle(Input::Server(ServerMsg::IncomingCall { from: "eve".into() })),
            [Output::Send(ClientMsg::reject("eve", "bussy"))]
        );
    }

    #[test]
    fn refusals_map_to_reasons_and_exit_codes() {
        for (msg, reason, code) in [
            (
                ServerMsg::call_unknown("zed"),
                EndReason::UnknownUser("User zed is not registered".into()),
                exit::UNKNOWN_USER,
            ),
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
    }

    #[test]
    fn no_stop_without_a_peer_and_stray_candidates_ignored() {
        let mut m = registered("erin");
        assert_eq!(m.handle(Input::Hangup), []);
        assert_eq!(m.handle(Input::Server(ServerMsg::IceCandidate { candidate: cand("x") })), []);
        // Cancel before the offer is out: nothing to stop on the server.
        m.handle(Input::Call("dave".into()));
        let out = m.handle(Input::Hangup);
        assert!(!out.contains(&Output::Send(ClientMsg::Stop)), "{out:?}");
        // The late offer is dropped.
        assert_eq!(m.handle(Input::OfferReady("O".into())), []);
    }
}
