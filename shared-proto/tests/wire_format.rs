//! Golden JSON: every message of the protocol, both directions, byte for
//! byte. `decode(fixture) == value` and `encode(value) == fixture`.

use shared_proto::*;

fn client_golden(json: &str, value: ClientMsg) {
    assert_eq!(decode_client(json).unwrap(), value, "decoding {json}");
    assert_eq!(encode(&value), json, "encoding {value:?}");
}

fn server_golden(json: &str, value: ServerMsg) {
    assert_eq!(decode_server(json).unwrap(), value, "decoding {json}");
    assert_eq!(encode(&value), json, "encoding {value:?}");
}

#[test]
fn register() {
    client_golden(r#"{"id":"register","name":"alice"}"#, ClientMsg::Register { name: "alice".into() });
}

#[test]
fn call() {
    client_golden(
        r#"{"id":"call","from":"alice","to":"bob","sdpOffer":"v=0\r\n"}"#,
        ClientMsg::Call { from: "alice".into(), to: "bob".into(), sdp_offer: "v=0\r\n".into() },
    );
}

#[test]
fn call_without_from_is_accepted() {
    // `from` is ignored by the server, so its absence is no error.
    assert_eq!(
        decode_client(r#"{"id":"call","to":"bob","sdpOffer":"x"}"#).unwrap(),
        ClientMsg::Call { from: String::new(), to: "bob".into(), sdp_offer: "x".into() }
    );
}

#[test]
fn incoming_call_response_accept() {
    client_golden(
        r#"{"id":"incomingCallResponse","from":"alice","callResponse":"accept","sdpOffer":"v=0"}"#,
        ClientMsg::accept("alice", "v=0"),
    );
}

#[test]
fn incoming_call_response_reject_declined_and_bussy() {
    client_golden(
        r#"{"id":"incomingCallResponse","from":"alice","callResponse":"reject","message":"user declined"}"#,
        ClientMsg::reject("alice", "user declined"),
    );
    client_golden(
        r#"{"id":"incomingCallResponse","from":"alice","callResponse":"reject","message":"bussy"}"#,
        ClientMsg::reject("alice", text::BUSSY),
    );
}

#[test]
fn incoming_call_response_unknown_answer_is_a_rejection() {
    let msg = decode_client(r#"{"id":"incomingCallResponse","from":"a","callResponse":"maybe"}"#).unwrap();
    assert!(matches!(msg, ClientMsg::IncomingCallResponse { call_response: CallAnswer::Reject, .. }));
}

#[test]
fn on_ice_candidate_with_username_fragment() {
    let cand = IceCandidate {
        username_fragment: Some("abcd".into()),
        ..IceCandidate::new("candidate:1 1 UDP 2122260223 10.0.0.1 5000 typ host", Some("0".into()), Some(0))
    };
    client_golden(
        r#"{"id":"onIceCandidate","candidate":{"candidate":"candidate:1 1 UDP 2122260223 10.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}"#,
        ClientMsg::OnIceCandidate { candidate: cand },
    );
}

#[test]
fn on_ice_candidate_tolerates_kurento_tags_and_extra_fields() {
    let msg = decode_client(
        r#"{"id":"onIceCandidate","extra":1,"candidate":{"candidate":"c","sdpMid":"1","sdpMLineIndex":1,"__module__":"kurento","__type__":"IceCandidate","other":true}}"#,
    )
    .unwrap();
    let ClientMsg::OnIceCandidate { candidate } = msg else { panic!("wrong variant") };
    assert_eq!(candidate.candidate, "c");
    assert_eq!(candidate.sdp_mid.as_deref(), Some("1"));
    assert_eq!(candidate.sdp_mline_index, Some(1));
}

#[test]
fn stop() {
    client_golden(r#"{"id":"stop"}"#, ClientMsg::Stop);
}

#[test]
fn register_response_accepted() {
    server_golden(r#"{"id":"registerResponse","response":"accepted"}"#, ServerMsg::register_accepted());
}

#[test]
fn register_response_rejected_has_trailing_space() {
    server_golden(
        r#"{"id":"registerResponse","response":"rejected ","message":"User alice is already registered"}"#,
        ServerMsg::register_rejected("User alice is already registered"),
    );
    server_golden(
        r#"{"id":"registerResponse","response":"rejected ","message":"empty user name"}"#,
        ServerMsg::register_rejected(text::EMPTY_NAME),
    );
}

#[test]
fn incoming_call() {
    server_golden(r#"{"id":"incomingCall","from":"alice"}"#, ServerMsg::IncomingCall { from: "alice".into() });
}

#[test]
fn call_response_accepted() {
    server_golden(
        r#"{"id":"callResponse","response":"accepted","sdpAnswer":"v=0\r\n"}"#,
        ServerMsg::call_accepted("v=0\r\n"),
    );
}

#[test]
fn call_response_rejected() {
    server_golden(
        r#"{"id":"callResponse","response":"rejected","message":"user declined"}"#,
        ServerMsg::call_rejected(text::DECLINED),
    );
}

#[test]
fn call_response_unknown_user_has_colon_and_space() {
    server_golden(
        r#"{"id":"callResponse","response":"rejected: ","message":"User zed is not registered"}"#,
        ServerMsg::call_unknown("zed"),
    );
}

#[test]
fn start_communication() {
    server_golden(
        r#"{"id":"startCommunication","sdpAnswer":"v=0"}"#,
        ServerMsg::StartCommunication { sdp_answer: "v=0".into() },
    );
}

#[test]
fn stop_communication() {
    server_golden(
        r#"{"id":"stopCommunication","message":"remote user hanged out"}"#,
        ServerMsg::stop(text::REMOTE_HANGUP),
    );
    server_golden(r#"{"id":"stopCommunication"}"#, ServerMsg::StopCommunication { message: None });
}

#[test]
fn ice_candidate_carries_kurento_tags() {
    let cand =
        IceCandidate::new("candidate:1 1 udp 1 10.0.0.1 5000 typ host", Some("0".into()), Some(0)).kurento_tagged();
    server_golden(
        r#"{"id":"iceCandidate","candidate":{"candidate":"candidate:1 1 udp 1 10.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"__module__":"kurento","__type__":"IceCandidate"}}"#,
        ServerMsg::IceCandidate { candidate: cand },
    );
}

#[test]
fn error() {
    server_golden(
        r#"{"id":"error","message":"Invalid message [object Object]"}"#,
        ServerMsg::error("Invalid message [object Object]"),
    );
}

#[test]
fn unknown_response_literal_decodes_as_other() {
    let msg = decode_server(r#"{"id":"callResponse","response":"nope","message":"x"}"#).unwrap();
    assert!(matches!(msg, ServerMsg::CallResponse { response: Response::Other, .. }));
}

#[test]
fn bad_input_gives_clear_errors() {
    let cases: &[(&str, &str)] = &[
        ("not json", "invalid message: not JSON"),
        ("[1,2]", "invalid message: expected a JSON object"),
        (r#"{"name":"x"}"#, "invalid message: missing field `id`"),
        (r#"{"id":7}"#, "invalid message: field `id` must be a string"),
        (r#"{"id":"dance"}"#, "invalid message: unknown id `dance`"),
        (r#"{"id":"register"}"#, "invalid `register` message: missing field `name`"),
        (r#"{"id":"register","name":5}"#, "invalid `register` message: invalid type: integer `5`, expected a string"),
        (r#"{"id":"call","to":"b"}"#, "invalid `call` message: missing field `sdpOffer`"),
        (
            r#"{"id":"onIceCandidate","candidate":{"candidate":"c","sdpMLineIndex":-1}}"#,
            "invalid `onIceCandidate` message: invalid value: integer `-1`, expected u16",
        ),
    ];
    for (input, want) in cases {
        let err = decode_client(input).unwrap_err().to_string();
        assert!(err.starts_with(want), "{input}: got {err:?}, want prefix {want:?}");
    }
}
