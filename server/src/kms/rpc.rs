//! KMS's JSON-RPC shapes: replies, errors and events, as jsoncpp writes
//! them (serde_json's maps keep keys sorted, like KMS).

use serde_json::{Map, Value, json};

/// A JSON-RPC error as KMS sends it: `code`, `message` and, for Kurento's
/// own errors, `data.type`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {message}")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub kind: Option<&'static str>,
}

impl RpcError {
    fn new(code: i64, kind: Option<&'static str>, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into(), kind }
    }
    pub fn parse() -> RpcError {
        RpcError::new(-32700, None, "Parse error.")
    }
    pub fn invalid_request() -> RpcError {
        RpcError::new(-32600, None, "Invalid JSON-RPC request.")
    }
    pub fn method_not_found() -> RpcError {
        RpcError::new(-32601, None, "Method not found.")
    }
    pub fn params_required() -> RpcError {
        RpcError::new(-32602, Some("INVALID_PARAMS"), "'params' is required")
    }
    /// A missing top-level parameter.
    pub fn required(name: &str) -> RpcError {
        RpcError::new(-32000, None, format!("'{name}' parameter is required"))
    }
    /// A top-level parameter of the wrong type.
    pub fn should_be_string(name: &str) -> RpcError {
        RpcError::new(-32000, None, format!("'{name}' parameter should be a string"))
    }
    pub fn too_large(size: usize, limit: usize) -> RpcError {
        RpcError::new(-32600, None, format!("Request too large: {size} bytes (limit {limit})"))
    }
    pub fn queue_full(max_bytes: usize) -> RpcError {
        RpcError::new(
            -32000,
            None,
            format!("Too many pending requests: at most {max_bytes} bytes wait behind an offer"),
        )
    }
    pub fn rate_limited(per_second: u32) -> RpcError {
        RpcError::new(-32000, None, format!("Too many requests: at most {per_second} per second"))
    }
    /// A bad or missing member of `operationParams` / `constructorParams`.
    pub fn marshall(message: impl Into<String>) -> RpcError {
        RpcError::new(40001, Some("MARSHALL_ERROR"), message)
    }
    pub fn connect_error(message: impl Into<String>) -> RpcError {
        RpcError::new(40004, Some("CONNECT_ERROR"), message)
    }
    pub fn not_implemented(message: impl Into<String>) -> RpcError {
        RpcError::new(40006, Some("NOT_IMPLEMENTED"), message)
    }
    pub fn invalid_session(message: impl Into<String>) -> RpcError {
        RpcError::new(40007, Some("INVALID_SESSION"), message)
    }
    pub fn no_resources(message: impl Into<String>) -> RpcError {
        RpcError::new(40009, Some("NOT_ENOUGH_RESOURCES"), message)
    }
    pub fn type_not_found(message: impl Into<String>) -> RpcError {
        RpcError::new(40100, Some("MEDIA_OBJECT_TYPE_NOT_FOUND"), message)
    }
    pub fn object_not_found(id: &str) -> RpcError {
        RpcError::new(40101, Some("MEDIA_OBJECT_NOT_FOUND"), format!("Object '{}' not found", clip(id)))
    }
    pub fn operation_not_found(message: impl Into<String>) -> RpcError {
        RpcError::new(40105, Some("MEDIA_OBJECT_METHOD_NOT_FOUND"), message)
    }
    pub fn event_not_supported(name: &str) -> RpcError {
        RpcError::new(40106, Some("MEDIA_OBJECT_EVENT_NOT_SUPPORTED"), format!("Event '{}' not supported", clip(name)))
    }
    pub fn sdp_parse(message: impl Into<String>) -> RpcError {
        RpcError::new(40201, Some("SDP_PARSE_ERROR"), message)
    }
    pub fn process_offer(message: impl Into<String>) -> RpcError {
        RpcError::new(40205, Some("SDP_END_POINT_PROCESS_OFFER_ERROR"), message)
    }
    pub fn already_negotiated() -> RpcError {
        RpcError::new(40208, Some("SDP_END_POINT_ALREADY_NEGOTIATED"), "Endpoint already negotiated")
    }
    pub fn add_candidate(message: impl Into<String>) -> RpcError {
        RpcError::new(40401, Some("ICE_ADD_CANDIDATE_ERROR"), message)
    }
}

/// Client text echoed in an error message, cut so that a huge id does not
/// make a huge reply.
pub fn clip(s: &str) -> String {
    const MAX: usize = 128;
    match s.char_indices().nth(MAX) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

/// `{"id":…,"jsonrpc":"2.0","result":…}`.
pub fn result(id: &Value, result: Value) -> String {
    json!({ "id": id, "jsonrpc": "2.0", "result": result }).to_string()
}

/// A result object: `value` if any, plus `sessionId`.
pub fn with_session(session: &str, value: Option<Value>) -> Value {
    let mut m = Map::new();
    if let Some(v) = value {
        m.insert("value".into(), v);
    }
    m.insert("sessionId".into(), Value::String(session.to_owned()));
    Value::Object(m)
}

pub fn error(id: &Value, e: &RpcError) -> String {
    let mut err = Map::new();
    err.insert("code".into(), e.code.into());
    err.insert("message".into(), Value::String(e.message.clone()));
    if let Some(kind) = e.kind {
        err.insert("data".into(), json!({ "type": kind }));
    }
    json!({ "error": Value::Object(err), "id": id, "jsonrpc": "2.0" }).to_string()
}

/// The `IceCandidateFound` event of `object`, exactly as KMS 7 sends it.
pub fn ice_candidate_found(object: &str, candidate: &shared_proto::IceCandidate, unix_millis: u64) -> String {
    let c = json!({
        "__module__": "kurento",
        "__type__": "IceCandidate",
        "candidate": candidate.candidate,
        "sdpMLineIndex": candidate.sdp_mline_index.unwrap_or(0),
        "sdpMid": candidate.sdp_mid.clone().unwrap_or_default(),
    });
    json!({
        "jsonrpc": "2.0",
        "method": "onEvent",
        "params": { "value": {
            "data": {
                "candidate": c,
                "source": object,
                "tags": [],
                "timestampMillis": unix_millis.to_string(),
                "type": "IceCandidateFound",
            },
            "object": object,
            "type": "IceCandidateFound",
        }},
    })
    .to_string()
}

/// `getInfo` of the server manager: only `modules[].name` is read by
/// kurento-client, which needs core, elements and filters.
pub fn server_info() -> Value {
    let module = |name: &str, factories: &[&str]| json!({ "name": name, "version": "7.3.0", "generationTime": "one2one-server", "factories": factories });
    json!({
        "version": "7.3.0",
        "modules": [
            module("core", &["MediaPipeline"]),
            module("elements", &["WebRtcEndpoint"]),
            module("filters", &[]),
        ],
        "type": "KMS",
        "capabilities": ["transactions"],
    })
}

/// `describe`'s answer for one of our types.
pub fn describe(kind: &str, session: &str) -> Value {
    let hierarchy: &[&str] = match kind {
        "ServerManager" | "MediaPipeline" => &["kurento.MediaObject"],
        _ => &[
            "kurento.BaseRtpEndpoint",
            "kurento.SdpEndpoint",
            "kurento.SessionEndpoint",
            "kurento.Endpoint",
            "kurento.MediaElement",
            "kurento.MediaObject",
        ],
    };
    json!({
        "hierarchy": hierarchy,
        "qualifiedType": format!("kurento.{kind}"),
        "sessionId": session,
        "type": kind,
    })
}

/// A random (version 4) UUID as text.
pub fn uuid(bits: u128) -> String {
    let b = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{b:032x}");
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_the_transcript() {
        assert_eq!(result(&json!(0), json!({"value":"pong"})), r#"{"id":0,"jsonrpc":"2.0","result":{"value":"pong"}}"#);
        assert_eq!(
            error(&Value::Null, &RpcError::parse()),
            r#"{"error":{"code":-32700,"message":"Parse error."},"id":null,"jsonrpc":"2.0"}"#
        );
        assert_eq!(
            error(&json!(7), &RpcError::object_not_found("x")),
            r#"{"error":{"code":40101,"data":{"type":"MEDIA_OBJECT_NOT_FOUND"},"message":"Object 'x' not found"},"id":7,"jsonrpc":"2.0"}"#
        );
        let c = shared_proto::IceCandidate::new("candidate:1 1 udp 1 10.0.0.1 5 typ host", Some("0".into()), Some(0));
        let ev: Value = serde_json::from_str(&ice_candidate_found("P/E", &c, 1700000000123)).unwrap();
        assert_eq!(ev["params"]["value"]["data"]["timestampMillis"], "1700000000123");
        assert_eq!(ev["params"]["value"]["data"]["candidate"]["__type__"], "IceCandidate");
        assert_eq!(ev["params"]["value"]["object"], "P/E");
        let u = uuid(u128::MAX);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
