//! The media boundary. The call core ([`crate::signaling`]) only ever
//! speaks [`MediaCmd`] and hears [`MediaEvent`]; whether a call's media runs
//! in the embedded relay ([`relay`]), on a Kurento Media Server
//! ([`kurento`]) or in the scripted fake of the tests ([`scripted`]) is
//! invisible to it. [`MediaConfig`] picks one (`--media`).
//!
//! The commands are shaped like Kurento's model, which the embedded relay
//! follows too: a call is a pipeline with one WebRTC endpoint per user
//! ("leg"); each leg answers its own user's offer and trickles its own
//! candidates, so answers and candidates come back per leg, in any order.

pub mod kurento;
pub mod plane;
pub mod relay;
pub mod scripted;

use std::sync::Arc;
use std::time::Duration;

use shared_proto::IceCandidate;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// One call, from `call` to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "call-{}", self.0)
    }
}

/// One side of a call: each user talks WebRTC to the media server on their
/// own leg (a WebRtcEndpoint in Kurento's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    Caller,
    Callee,
}

impl Leg {
    pub const BOTH: [Leg; 2] = [Leg::Caller, Leg::Callee];

    pub fn other(self) -> Leg {
        match self {
            Leg::Caller => Leg::Callee,
            Leg::Callee => Leg::Caller,
        }
    }

    /// 0 for the caller, 1 for the callee.
    pub fn index(self) -> usize {
        match self {
            Leg::Caller => 0,
            Leg::Callee => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Leg::Caller => "caller",
            Leg::Callee => "callee",
        }
    }
}

impl std::fmt::Display for Leg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the call core asks of a media backend. Commands for one call
/// arrive in order: `Start`, then any `AddCandidate`s, then exactly one
/// `Release`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCmd {
    /// Build the call's pipeline and both legs, and answer each user's
    /// offer on that user's leg (both users are offerers). Each answer is
    /// reported on its own ([`MediaEvent::Answer`]).
    Start { call: CallId, caller_offer: String, callee_offer: String },
    /// A candidate of a user, for that user's leg. A backend keeps the ones
    /// that arrive before the leg exists and adds them once it does.
    AddCandidate { call: CallId, leg: Leg, candidate: IceCandidate },
    /// Free everything the call holds, even mid-setup. Sent on every end
    /// after `Start`.
    Release { call: CallId },
}

/// What a media backend reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The SDP answer to the offer of the user on `leg`.
    Answer { call: CallId, leg: Leg, sdp: String },
    /// A candidate of the media server's side of `leg`, for that leg's user.
    /// May come before the leg's answer.
    Candidate { call: CallId, leg: Leg, candidate: IceCandidate },
    /// The call's media cannot go on: the call ends, and both users are
    /// told `error`'s text.
    Failed { call: CallId, error: MediaError },
    /// Media has flowed both ways (each leg has received RTP that was
    /// forwarded to the other). Ends the call's set-up time; repeats and
    /// events for calls that are gone are ignored.
    Established { call: CallId },
}

impl MediaEvent {
    pub fn call(&self) -> CallId {
        match self {
            MediaEvent::Answer { call, .. }
            | MediaEvent::Candidate { call, .. }
            | MediaEvent::Failed { call, .. }
            | MediaEvent::Established { call } => *call,
        }
    }
}

/// Why a call's media failed. The text is what both users are shown, so it
/// is written for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// One user's offer cannot be answered.
    #[error("the {leg}'s offer: {reason}")]
    BadOffer { leg: Leg, reason: String },
    /// The two offers share no codec of any kind.
    #[error("no common codec: the two sides share neither Opus audio nor a video codec")]
    NoCommonCodec,
    /// ICE or DTLS of one leg failed.
    #[error("media connection to the {leg} failed")]
    ConnectionFailed { leg: Leg },
    /// No media resources are left (ports, sessions).
    #[error("server busy: {0}")]
    NoCapacity(String),
    /// No media server could be reached to place the call.
    #[error("media server unreachable: {0}")]
    Unreachable(String),
    /// A media server did not answer a request in time.
    #[error("media server did not answer {what} within {} s", .after.as_secs_f32())]
    Timeout { what: String, after: Duration },
    /// A media server answered a request with an error.
    #[error("media server refused {what}: {message} (code {code})")]
    Refused { what: String, code: i64, message: String },
    /// The media server's connection broke and its session could not be
    /// resumed (it restarted, or it forgot the session).
    #[error("media server lost: {0}")]
    Lost(String),
    /// Anything else the media side could not do.
    #[error("media error: {0}")]
    Internal(String),
}

/// A place where calls get their media. Implementations never block:
/// `submit` queues the command and returns at once. Commands of one call
/// are applied in the order they were submitted, and every `Start` is
/// followed by exactly one `Release`, which frees everything, even
/// mid-setup.
pub trait MediaBackend: Send + Sync + 'static {
    fn submit(&self, cmd: MediaCmd);

    /// Frees every call and waits until their resources are gone.
    fn shutdown(&self) -> futures_util::future::BoxFuture<'static, ()>;
}

/// Where backends send what they have to say.
pub type EventSink = mpsc::UnboundedSender<MediaEvent>;

/// Makes a backend once the server knows where its events go.
pub type BackendFactory = Arc<dyn Fn(EventSink, Arc<Metrics>) -> Arc<dyn MediaBackend> + Send + Sync>;

/// Which backend carries the calls of the `/one2one` signaling (`--media`).
/// The embedded relay's own settings ([`relay::RelayConfig`]) are kept
/// apart, in [`crate::ServerConfig::relay`]: `--kms-listen` uses the relay
/// whatever backend signaling uses.
#[derive(Clone, Default)]
pub enum MediaConfig {
    /// The built-in WebRTC relay: nothing else has to run.
    #[default]
    Embedded,
    /// Kurento Media Servers, reached over their JSON-RPC WebSocket.
    Kurento(kurento::KurentoConfig),
    /// A backend built by the embedding code (the tests' scripted fake).
    Custom(BackendFactory),
}

impl std::fmt::Debug for MediaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaConfig::Embedded => f.write_str("Embedded"),
            MediaConfig::Kurento(k) => f.debug_tuple("Kurento").field(k).finish(),
            MediaConfig::Custom(_) => f.write_str("Custom"),
        }
    }
}
