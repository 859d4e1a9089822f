use thiserror::Error;

/// Why a frame could not be decoded. `Display` is sent to the client as the
/// `message` of an `error`, so every variant reads as a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtoError {
    #[error("invalid message: not JSON ({0})")]
    NotJson(String),
    #[error("invalid message: expected a JSON object")]
    NotAnObject,
    #[error("invalid message: missing field `id`")]
    MissingId,
    #[error("invalid message: field `id` must be a string")]
    IdNotString,
    #[error("invalid message: unknown id `{0}`")]
    UnknownId(String),
    #[error("invalid `{id}` message: {reason}")]
    BadField { id: String, reason: String },
    #[error("invalid message: binary frames are not supported, send JSON text")]
    Binary,
    #[error("invalid message: {size} bytes is over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}
