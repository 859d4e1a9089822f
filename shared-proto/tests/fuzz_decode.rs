//! The decoders never panic, whatever arrives, and every valid message
//! survives a round trip.

use proptest::prelude::*;
use shared_proto::*;

/// JSON-ish text built from the protocol's own vocabulary, so that the
/// fuzzer reaches deep into the field decoding instead of failing at `{`.
fn jsonish() -> impl Strategy<Value = String> {
    let ids = prop::sample::select(vec![
        "register",
        "call",
        "incomingCallResponse",
        "onIceCandidate",
        "stop",
        "registerResponse",
        "incomingCall",
        "callResponse",
        "startCommunication",
        "stopCommunication",
        "iceCandidate",
        "error",
        "",
        "x",
    ]);
    let keys = prop::sample::select(vec![
        "name",
        "from",
        "to",
        "sdpOffer",
        "sdpAnswer",
        "callResponse",
        "message",
        "candidate",
        "sdpMid",
        "sdpMLineIndex",
        "usernameFragment",
        "response",
        "__module__",
        "id",
    ]);
    let values = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| if f.is_finite() { f.to_string() } else { "1e400".into() }),
        "[a-z \\\\\"\u{0}-\u{1f}é😀]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just(r#"{"candidate":"c","sdpMid":"0","sdpMLineIndex":70000}"#.to_string()),
        Just("[1,{}]".to_string()),
        Just(r#""accept""#.to_string()),
    ];
    (ids, prop::collection::vec((keys, values), 0..6)).prop_map(|(id, fields)| {
        let mut s = format!(r#"{{"id":"{id}""#);
        for (k, v) in fields {
            s.push_str(&format!(r#","{k}":{v}"#));
        }
        s.push('}');
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        let _ = decode_client(&s);
        let _ = decode_server(&s);
    }

    #[test]
    fn protocol_shaped_text_never_panics_and_round_trips(s in jsonish()) {
        if let Ok(m) = decode_client(&s) {
            prop_assert_eq!(decode_client(&encode(&m)).unwrap(), m);
        }
        if let Ok(m) = decode_server(&s) {
            prop_assert_eq!(decode_server(&encode(&m)).unwrap(), m);
        }
    }

    #[test]
    fn truncated_and_mutated_messages_never_panic(cut in 0usize..200, byte in any::<u8>(), at in 0usize..200) {
        let base = r#"{"id":"onIceCandidate","candidate":{"candidate":"candidate:1 1 udp 2122260223 10.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#;
        let mut bytes = base.as_bytes()[..cut.min(base.len())].to_vec();
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = byte;
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = decode_client(&text);
    }
}
