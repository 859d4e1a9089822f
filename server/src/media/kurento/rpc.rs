//! Kurento's JSON-RPC 2.0 frames, without IO: requests as kurento-client
//! 7.3.0 writes them, and whatever a media server sends decoded into
//! [`Incoming`] (never a panic, whatever the text).

use serde_json::{Map, Value, json};

/// The well-known id of the media server's manager object.
pub const SERVER_MANAGER: &str = "manager_ServerManager";

/// KMS's "unknown session" code (`INVALID_SESSION`).
pub const INVALID_SESSION: i64 = 40007;

/// An error a media server answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

/// One frame from the media server.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The answer to request `id`: its `result`, or its `error`.
    Reply { id: u64, outcome: Result<Value, RpcError> },
    /// A JSON-RPC answer to request `id` that is neither a result nor an
    /// error (e.g. `"result":null`).
    BadReply { id: u64, why: String },
    /// `onEvent`: an event of `object`.
    Event { object: String, kind: String, data: Value },
    /// Valid, but nothing this client asked for (another notification, an
    /// answer to an id it never used).
    Ignored(String),
    /// Not JSON-RPC at all, or an error that names no request (`id` null):
    /// nobody can tell which request it was meant for.
    Malformed(String),
}

/// The text of a request frame.
pub fn request(id: u64, method: &str, params: Option<Value>) -> String {
    let mut frame = Map::new();
    frame.insert("jsonrpc".into(), json!("2.0"));
    frame.insert("id".into(), json!(id));
    frame.insert("method".into(), json!(method));
    if let Some(p) = params {
        frame.insert("params".into(), p);
    }
    Value::Object(frame).to_string()
}

/// `params` with `"sessionId"` added (params that are not an object are
/// left alone; this client never builds such).
pub fn with_session(params: Option<Value>, session: Option<&str>) -> Option<Value> {
    let Some(s) = session else { return params };
    let mut p = params.unwrap_or_else(|| Value::Object(Map::new()));
    if let Value::Object(m) = &mut p {
        m.insert("sessionId".into(), json!(s));
    }
    Some(p)
}

fn id_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Decodes one frame's text.
pub fn decode(text: &str) -> Incoming {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Incoming::Malformed(format!("not JSON ({e})")),
    };
    let Value::Object(m) = v else {
        return Incoming::Malformed("not a JSON object".into());
    };
    if let Some(method) = m.get("method") {
        let Some(method) = method.as_str() else {
            return Incoming::Malformed("`method` is not a string".into());
        };
        if method != "onEvent" {
            return Incoming::Ignored(format!("notification {method:?}"));
        }
        let value = m.get("params").and_then(|p| p.get("value"));
        let object = value.and_then(|v| v.get("object")).and_then(Value::as_str);
        let kind = value.and_then(|v| v.get("type")).and_then(Value::as_str);
        return match (object, kind) {
            (Some(o), Some(k)) => Incoming::Event {
                object: o.to_owned(),
                kind: k.to_owned(),
                data: value.and_then(|v| v.get("data")).cloned().unwrap_or(Value::Null),
            },
            _ => Incoming::Malformed("onEvent without params.value.object and type".into()),
        };
    }
    let id = m.get("id").and_then(id_of);
    let error = m.get("error").filter(|e| !e.is_null());
    let Some(id) = id else {
        return match error {
            Some(e) => Incoming::Malformed(format!("an error for no request: {e}")),
            None => Incoming::Malformed("neither a request nor an answer to one".into()),
        };
    };
    if let Some(e) = error {
        let code = e.get("code").and_then(Value::as_i64);
        let message = e.get("message").and_then(Value::as_str);
        return match (code, message) {
            (Some(code), Some(message)) => {
                Incoming::Reply { id, outcome: Err(RpcError { code, message: message.into() }) }
            }
            _ => Incoming::BadReply { id, why: "an error without code and message".into() },
        };
    }
    match m.get("result") {
        Some(r @ Value::Object(_)) => Incoming::Reply { id, outcome: Ok(r.clone()) },
        Some(Value::Null) | None => Incoming::BadReply { id, why: "no result".into() },
        Some(_) => Incoming::BadReply { id, why: "a result that is not an object".into() },
    }
}

/// `result.value` as a string (object ids, SDP answers).
pub fn value_str(result: &Value) -> Option<&str> {
    result.get("value").and_then(Value::as_str)
}

/// `result.sessionId`.
pub fn session_of(result: &Value) -> Option<&str> {
    result.get("sessionId").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_look_like_kurento_clients() {
        let p = with_session(Some(json!({"object": "X"})), Some("S"));
        let f: Value = serde_json::from_str(&request(3, "release", p)).unwrap();
        assert_eq!(f, json!({"jsonrpc":"2.0","id":3,"method":"release","params":{"object":"X","sessionId":"S"}}));
        let f: Value = serde_json::from_str(&request(0, "ping", None)).unwrap();
        assert_eq!(f, json!({"jsonrpc":"2.0","id":0,"method":"ping"}));
        assert_eq!(with_session(None, Some("S")), Some(json!({"sessionId":"S"})));
        assert_eq!(with_session(None, None), None);
    }

    #[test]
    fn decodes_replies_events_and_garbage() {
        assert_eq!(
            decode(r#"{"id":1,"jsonrpc":"2.0","result":{"value":"pong"}}"#),
            Incoming::Reply { id: 1, outcome: Ok(json!({"value":"pong"})) }
        );
        assert_eq!(
            decode(r#"{"id":"7","jsonrpc":"2.0","error":{"code":40007,"message":"Invalid session"}}"#),
            Incoming::Reply { id: 7, outcome: Err(RpcError { code: 40007, message: "Invalid session".into() }) }
        );
        assert!(matches!(decode(r#"{"id":2,"jsonrpc":"2.0","result":null}"#), Incoming::BadReply { id: 2, .. }));
        assert!(matches!(decode(r#"{"id":2,"error":{"code":"x"}}"#), Incoming::BadReply { id: 2, .. }));
        let ev = r#"{"jsonrpc":"2.0","method":"onEvent","params":{"value":{"data":{"candidate":{}},"object":"E","type":"IceCandidateFound"}}}"#;
        assert_eq!(
            decode(ev),
            Incoming::Event { object: "E".into(), kind: "IceCandidateFound".into(), data: json!({"candidate":{}}) }
        );
        for bad in ["", "{", "[1]", "null", "42", r#"{"jsonrpc":"2.0"}"#, r#"{"id":null,"error":{"code":-32700}}"#] {
            assert!(matches!(decode(bad), Incoming::Malformed(_)), "{bad}");
        }
        assert!(matches!(decode(r#"{"method":"other","params":{}}"#), Incoming::Ignored(_)));
        assert!(matches!(decode(r#"{"method":"onEvent","params":{}}"#), Incoming::Malformed(_)));
    }
}
