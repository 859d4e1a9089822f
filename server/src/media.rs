//! The media boundary. Signaling only ever speaks [`MediaCmd`] and hears
//! [`MediaEvent`]; whether the media runs in the embedded relay or, later, in
//! a Kurento Media Server is invisible to it.

pub mod relay;

use tokio::sync::mpsc;

pub use crate::signaling::{CallId, Leg, MediaCmd, MediaEvent};

/// A place where calls get their media. Implementations must never block:
/// `submit` queues the command and returns at once. Commands of one call are
/// applied in the order they were submitted, and every `Start` is followed
/// by exactly one `Release`, which must free everything, even mid-setup.
pub trait MediaBackend: Send + Sync + 'static {
    fn submit(&self, cmd: MediaCmd);

    /// Frees every call and waits until their resources are gone.
    fn shutdown(&self) -> futures_util::future::BoxFuture<'static, ()>;
}

/// Where backends send what they have to say.
pub type EventSink = mpsc::UnboundedSender<MediaEvent>;
