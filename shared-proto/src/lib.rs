//! Wire messages of the `/one2one` signaling WebSocket.
//!
//! The protocol is the one of Kurento's "one to one video call" tutorial, kept
//! byte for byte so that the tutorial's own browser page works unchanged:
//! every frame is one JSON text object whose string field `id` names the
//! message. Field names are exactly those on the wire (`sdpOffer`,
//! `callResponse`, ...), and the server's literals, typos included
//! (`"rejected "`, `"rejected: "`), are reproduced by [`Response`].
//!
//! This crate has no IO and no async: it only turns text into typed values
//! and back. [`decode_client`] and [`decode_server`] never panic and report
//! every malformed input as a [`ProtoError`] whose `Display` is a sentence a
//! user can read.

use serde::{Deserialize, Serialize};

mod error;
mod names;
pub use error::ProtoError;
pub use names::{
    LOG_MAX_CHARS, LogSafe, MAX_NAME_CHARS, is_bidi_control, is_invisible, log_safe, name_key, normalize_name,
    validate_name,
};

/// The `callResponse` value of an `incomingCallResponse`.
///
/// The original server treats anything but `"accept"` as a rejection; so do
/// we, which is why unknown values decode to [`CallAnswer::Reject`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallAnswer {
    Accept,
    #[serde(other)]
    Reject,
}

/// The `response` field of `registerResponse` and `callResponse`, with the
/// original's exact literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    #[serde(rename = "accepted")]
    Accepted,
    /// `"rejected"`: a declined call, a busy callee, a media failure.
    #[serde(rename = "rejected")]
    Rejected,
    /// `"rejected "` (trailing space): a refused registration.
    #[serde(rename = "rejected ")]
    RejectedRegister,
    /// `"rejected: "` (colon and space): an unknown callee.
    #[serde(rename = "rejected: ")]
    RejectedUnknown,
    /// Any other text a server might send; clients only compare with
    /// `"accepted"`.
    #[serde(other)]
    Other,
}

impl Response {
    pub fn is_accepted(self) -> bool {
        self == Response::Accepted
    }
}

/// An ICE candidate as the browser's `RTCIceCandidate.toJSON()` gives it,
/// and as the server sends it back (with Kurento's two type tags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(rename = "sdpMLineIndex", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mline_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
    #[serde(rename = "__module__", default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(rename = "__type__", default, skip_serializing_if = "Option::is_none")]
    pub type_tag: Option<String>,
}

impl IceCandidate {
    /// A candidate as a client sends it.
    pub fn new(candidate: impl Into<String>, sdp_mid: Option<String>, index: Option<u16>) -> Self {
        IceCandidate {
            candidate: candidate.into(),
            sdp_mid,
            sdp_mline_index: index,
            username_fragment: None,
            module: None,
            type_tag: None,
        }
    }

    /// The same candidate tagged the way kurento-client serialises it
    /// (`"__module__":"kurento","__type__":"IceCandidate"`), as the server
    /// sends it in `iceCandidate`.
    pub fn kurento_tagged(mut self) -> Self {
        self.username_fragment = None;
        self.module = Some("kurento".to_owned());
        self.type_tag = Some("IceCandidate".to_owned());
        self
    }
}

/// Client → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "id")]
pub enum ClientMsg {
    #[serde(rename = "register")]
    Register { name: String },
    #[serde(rename = "call")]
    Call {
        /// The caller's claimed name. The server ignores it and uses the
        /// sender's registered name (the original trusted it, bug Q2).
        #[serde(default)]
        from: String,
        to: String,
        #[serde(rename = "sdpOffer")]
        sdp_offer: String,
    },
    #[serde(rename = "incomingCallResponse")]
    IncomingCallResponse {
        #[serde(default)]
        from: String,
        #[serde(rename = "callResponse")]
        call_response: CallAnswer,
        #[serde(rename = "sdpOffer", default, skip_serializing_if = "Option::is_none")]
        sdp_offer: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    #[serde(rename = "onIceCandidate")]
    OnIceCandidate { candidate: IceCandidate },
    #[serde(rename = "stop")]
    Stop,
}

impl ClientMsg {
    /// The wire name of the message, for logs and errors.
    pub fn id(&self) -> &'static str {
        match self {
            ClientMsg::Register { .. } => "register",
            ClientMsg::Call { .. } => "call",
            ClientMsg::IncomingCallResponse { .. } => "incomingCallResponse",
            ClientMsg::OnIceCandidate { .. } => "onIceCandidate",
            ClientMsg::Stop => "stop",
        }
    }

    pub fn accept(from: impl Into<String>, sdp_offer: impl Into<String>) -> Self {
        ClientMsg::IncomingCallResponse {
            from: from.into(),
            call_response: CallAnswer::Accept,
            sdp_offer: Some(sdp_offer.into()),
            message: None,
        }
    }

    pub fn reject(from: impl Into<String>, message: impl Into<String>) -> Self {
        ClientMsg::IncomingCallResponse {
            from: from.into(),
            call_response: CallAnswer::Reject,
            sdp_offer: None,
            message: Some(message.into()),
        }
    }
}

/// Server → client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "id")]
pub enum ServerMsg {
    #[serde(rename = "registerResponse")]
    RegisterResponse {
        response: Response,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    #[serde(rename = "incomingCall")]
    IncomingCall { from: String },
    #[serde(rename = "callResponse")]
    CallResponse {
        response: Response,
        #[serde(rename = "sdpAnswer", default, skip_serializing_if = "Option::is_none")]
        sdp_answer: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    #[serde(rename = "startCommunication")]
    StartCommunication {
        #[serde(rename = "sdpAnswer")]
        sdp_answer: String,
    },
    #[serde(rename = "stopCommunication")]
    StopCommunication {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    #[serde(rename = "iceCandidate")]
    IceCandidate { candidate: IceCandidate },
    #[serde(rename = "error")]
    Error { message: String },
}

/// Texts the server sends, kept in one place so both binaries agree.
pub mod text {
    /// `stopCommunication.message` when the other side hung up or left
    /// (the original's wording, kept).
    pub const REMOTE_HANGUP: &str = "remote user hanged out";
    /// `callResponse.message` when the callee declined.
    pub const DECLINED: &str = "user declined";
    /// `callResponse.message` when the callee was ringing or in a call.
    pub const BUSY: &str = "user busy";
    /// What a busy browser sends as its rejection reason (sic).
    pub const BUSSY: &str = "bussy";
    /// `callResponse.message` and `stopCommunication.message` when nobody
    /// answered in time.
    pub const NO_ANSWER: &str = "no answer";
    /// `stopCommunication.message` to the callee when the caller cancelled.
    pub const CANCELLED: &str = "caller cancelled";
    /// `stopCommunication.message` when the server shuts down.
    pub const SHUTDOWN: &str = "server shutting down";
    /// `registerResponse.message` for a name that is empty or only
    /// whitespace (the original's words).
    pub const EMPTY_NAME: &str = "empty user name";
    /// How `registerResponse.message` starts for a name over
    /// [`MAX_NAME_CHARS`](crate::MAX_NAME_CHARS); see [`name_too_long`].
    pub const NAME_TOO_LONG_PREFIX: &str = "user name is longer than ";
    /// `registerResponse.message` for a name with control characters.
    pub const NAME_CONTROL_CHARS: &str = "user name contains control characters";
    /// `registerResponse.message` for a name with bidirectional text
    /// controls (U+202A..U+202E, U+2066..U+2069, U+200E, U+200F, U+061C).
    pub const NAME_BIDI_CHARS: &str = "user name contains bidirectional text controls";
    /// `registerResponse.message` for a name with characters that draw
    /// nothing ([`is_invisible`](crate::is_invisible)).
    pub const NAME_INVISIBLE_CHARS: &str = "user name contains invisible characters (zero-width, format or filler)";
    /// How `registerResponse.message` starts when the connection already
    /// has a name; see [`already_registered`].
    pub const ALREADY_REGISTERED_PREFIX: &str = "This connection is already registered as ";
    /// `callResponse.message` when the caller calls their own name.
    pub const SELF_CALL: &str = "You cannot call yourself";
    /// `callResponse.message` when the caller already has a call of their
    /// own (ringing out, connecting or established).
    pub const ALREADY_IN_CALL: &str = "You are already in a call";
    /// `callResponse.message` when the server has no capacity (media ports)
    /// for another call; the callee was not rung.
    pub const SERVER_BUSY: &str = "server busy: no capacity for another call, try again later";
    /// `callResponse.message` for a `call` without an SDP offer.
    pub const NO_OFFER: &str = "The call carries no SDP offer";
    /// `callResponse.message` for an offer whose media has no codec the
    /// server carries (Opus audio, VP8 or H.264 video).
    pub const NO_USABLE_CODEC: &str = "The call offers no codec this server carries (Opus audio, VP8 or H.264 video)";

    /// `error.message` to a callee whose `incomingCallResponse` names a
    /// `from` other than the caller ringing it; the ringing call goes on.
    pub fn answer_wrong_from(from: &str, ringing_from: &str) -> String {
        format!("incomingCallResponse from = {from}: the call ringing here is from {ringing_from}")
    }

    /// `error.message` to a user in a call (ringing out, connecting or
    /// established) who sends an `incomingCallResponse`: nothing rings
    /// them, and their call goes on.
    pub fn answer_without_ringing(from: &str) -> String {
        format!("incomingCallResponse from = {from}: no incoming call rings here; your current call goes on")
    }

    /// `stopCommunication.message` to a socket without a call that answers
    /// one (the caller is gone, or never was): the original's words.
    pub fn unknown_from(from: &str) -> String {
        format!("unknown from = {from}")
    }

    /// `registerResponse.message` for a name someone else holds:
    /// `"User <name> is already registered"` (the original's words).
    pub fn name_taken(name: &str) -> String {
        format!("{NAME_TAKEN_PREFIX}{name}{NAME_TAKEN_SUFFIX}")
    }
    pub(crate) const NAME_TAKEN_PREFIX: &str = "User ";
    pub(crate) const NAME_TAKEN_SUFFIX: &str = " is already registered";

    /// `registerResponse.message` for a name over `max_chars` characters:
    /// `"user name is longer than <max_chars> characters"`.
    pub fn name_too_long(max_chars: usize) -> String {
        format!("{NAME_TOO_LONG_PREFIX}{max_chars} characters")
    }

    /// `registerResponse.message` for a second `register` on a connection
    /// registered as `current`.
    pub fn already_registered(current: &str) -> String {
        format!("{ALREADY_REGISTERED_PREFIX}{current}")
    }
}

/// Why a registration was refused, from `registerResponse.message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterRefusal {
    /// Another connection holds the name ([`text::name_taken`]).
    NameTaken,
    /// The name is empty, too long, or holds control, bidi-control or
    /// invisible characters ([`normalize_name`]).
    NameInvalid,
    /// This connection already has a name ([`text::already_registered`]).
    AlreadyRegistered,
    /// Any other text (another server, a future refusal).
    Other,
}

/// Classifies the `message` of a refused `registerResponse` by the exact
/// texts the server sends (see [`text`]). Never panics.
pub fn register_refusal(message: &str) -> RegisterRefusal {
    if message.starts_with(text::ALREADY_REGISTERED_PREFIX) {
        RegisterRefusal::AlreadyRegistered
    } else if message == text::EMPTY_NAME
        || message == text::NAME_CONTROL_CHARS
        || message == text::NAME_BIDI_CHARS
        || message == text::NAME_INVISIBLE_CHARS
        || message.strip_prefix(text::NAME_TOO_LONG_PREFIX).is_some_and(|rest| {
            rest.strip_suffix(" characters").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    {
        RegisterRefusal::NameInvalid
    } else if message.strip_prefix(text::NAME_TAKEN_PREFIX).is_some_and(|rest| rest.ends_with(text::NAME_TAKEN_SUFFIX))
    {
        RegisterRefusal::NameTaken
    } else {
        RegisterRefusal::Other
    }
}

impl ServerMsg {
    pub fn id(&self) -> &'static str {
        match self {
            ServerMsg::RegisterResponse { .. } => "registerResponse",
            ServerMsg::IncomingCall { .. } => "incomingCall",
            ServerMsg::CallResponse { .. } => "callResponse",
            ServerMsg::StartCommunication { .. } => "startCommunication",
            ServerMsg::StopCommunication { .. } => "stopCommunication",
            ServerMsg::IceCandidate { .. } => "iceCandidate",
            ServerMsg::Error { .. } => "error",
        }
    }

    pub fn register_accepted() -> Self {
        ServerMsg::RegisterResponse { response: Response::Accepted, message: None }
    }

    pub fn register_rejected(message: impl Into<String>) -> Self {
        ServerMsg::RegisterResponse { response: Response::RejectedRegister, message: Some(message.into()) }
    }

    pub fn call_accepted(sdp_answer: impl Into<String>) -> Self {
        ServerMsg::CallResponse { response: Response::Accepted, sdp_answer: Some(sdp_answer.into()), message: None }
    }

    pub fn call_rejected(message: impl Into<String>) -> Self {
        ServerMsg::CallResponse { response: Response::Rejected, sdp_answer: None, message: Some(message.into()) }
    }

    /// `"rejected: "` + `"User <to> is not registered"`, as the original.
    pub fn call_unknown(to: &str) -> Self {
        ServerMsg::CallResponse {
            response: Response::RejectedUnknown,
            sdp_answer: None,
            message: Some(format!("User {to} is not registered")),
        }
    }

    pub fn stop(message: impl Into<String>) -> Self {
        ServerMsg::StopCommunication { message: Some(message.into()) }
    }

    pub fn error(message: impl Into<String>) -> Self {
        ServerMsg::Error { message: message.into() }
    }
}

/// Encodes a message as one JSON text frame.
pub fn encode<T: Serialize>(msg: &T) -> String {
    // Serialising these types cannot fail: every field is a string, a number,
    // an option or a unit enum, and no map has non-string keys.
    serde_json::to_string(msg)
        .unwrap_or_else(|e| format!(r#"{{"id":"error","message":"internal encoding error: {e}"}}"#))
}

/// Decodes a client → server frame.
pub fn decode_client(text: &str) -> Result<ClientMsg, ProtoError> {
    decode(text, &["register", "call", "incomingCallResponse", "onIceCandidate", "stop"])
}

/// Decodes a server → client frame.
pub fn decode_server(text: &str) -> Result<ServerMsg, ProtoError> {
    decode(
        text,
        &[
            "registerResponse",
            "incomingCall",
            "callResponse",
            "startCommunication",
            "stopCommunication",
            "iceCandidate",
            "error",
        ],
    )
}

fn decode<T: serde::de::DeserializeOwned>(text: &str, known: &[&str]) -> Result<T, ProtoError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ProtoError::NotJson(e.to_string()))?;
    let obj = value.as_object().ok_or(ProtoError::NotAnObject)?;
    let id = match obj.get("id") {
        None => return Err(ProtoError::MissingId),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return Err(ProtoError::IdNotString),
    };
    if !known.contains(&id.as_str()) {
        return Err(ProtoError::UnknownId(truncate(&id, 64)));
    }
    serde_json::from_value(value).map_err(|e| ProtoError::BadField { id, reason: e.to_string() })
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
