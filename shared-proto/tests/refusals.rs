//! The server's refusal texts, byte for byte, and the classifier a client
//! uses to tell them apart. The server builds every refusal from `text`, so
//! these literals are also what it sends.

use proptest::prelude::*;
use shared_proto::*;

#[test]
fn refusal_literals() {
    assert_eq!(text::EMPTY_NAME, "empty user name");
    assert_eq!(text::NAME_CONTROL_CHARS, "user name contains control characters");
    assert_eq!(text::NAME_TOO_LONG_PREFIX, "user name is longer than ");
    assert_eq!(text::name_too_long(MAX_NAME_CHARS), "user name is longer than 64 characters");
    assert_eq!(text::name_taken("alice"), "User alice is already registered");
    assert_eq!(text::ALREADY_REGISTERED_PREFIX, "This connection is already registered as ");
    assert_eq!(text::already_registered("alice"), "This connection is already registered as alice");
    assert_eq!(text::SELF_CALL, "You cannot call yourself");
    assert_eq!(text::ALREADY_IN_CALL, "You are already in a call");
    assert_eq!(text::BUSY, "user busy");
    assert_eq!(MAX_NAME_CHARS, 64);
}

#[test]
fn refusals_on_the_wire() {
    assert_eq!(
        encode(&ServerMsg::register_rejected(text::name_taken("alice"))),
        r#"{"id":"registerResponse","response":"rejected ","message":"User alice is already registered"}"#
    );
    assert_eq!(
        encode(&ServerMsg::call_rejected(text::SELF_CALL)),
        r#"{"id":"callResponse","response":"rejected","message":"You cannot call yourself"}"#
    );
    assert_eq!(
        encode(&ServerMsg::call_rejected(text::ALREADY_IN_CALL)),
        r#"{"id":"callResponse","response":"rejected","message":"You are already in a call"}"#
    );
}

#[test]
fn validate_name_rules() {
    assert_eq!(validate_name(""), Err(text::EMPTY_NAME.to_owned()));
    assert_eq!(validate_name("   "), Err(text::EMPTY_NAME.to_owned()));
    assert_eq!(validate_name("\u{3000}\u{a0}"), Err(text::EMPTY_NAME.to_owned()));
    assert_eq!(validate_name(&"x".repeat(65)), Err(text::name_too_long(64)));
    assert_eq!(validate_name("a\u{7}b"), Err(text::NAME_CONTROL_CHARS.to_owned()));
    assert_eq!(validate_name(&"é".repeat(64)), Ok(()));
    assert_eq!(validate_name("alice smith"), Ok(()));
    assert_eq!(validate_name(" alice "), Ok(()));
}

#[test]
fn classifier() {
    use RegisterRefusal::*;
    for (message, want) in [
        ("User alice is already registered", NameTaken),
        ("User  is already registered", NameTaken),
        ("User alice is already registered as bob is already registered", NameTaken),
        ("empty user name", NameInvalid),
        ("user name is longer than 64 characters", NameInvalid),
        ("user name is longer than 32 characters", NameInvalid),
        ("user name contains control characters", NameInvalid),
        ("This connection is already registered as alice", AlreadyRegistered),
        ("This connection is already registered as ", AlreadyRegistered),
        ("", Other),
        ("User alice is not registered", Other),
        ("User is already registered", Other),
        ("user alice is already registered", Other),
        ("user name is longer than", Other),
        ("user name is longer than many characters", Other),
        ("Empty user name", Other),
        ("rejected ", Other),
    ] {
        assert_eq!(register_refusal(message), want, "{message:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, .. ProptestConfig::default() })]

    #[test]
    fn validate_name_and_classifier_never_panic(s in any::<String>()) {
        let _ = register_refusal(&s);
        if let Err(reason) = validate_name(&s) {
            prop_assert_eq!(register_refusal(&reason), RegisterRefusal::NameInvalid);
        }
    }

    #[test]
    fn every_refusal_the_server_builds_is_classified(name in any::<String>()) {
        prop_assert_eq!(register_refusal(&text::name_taken(&name)), RegisterRefusal::NameTaken);
        prop_assert_eq!(register_refusal(&text::already_registered(&name)), RegisterRefusal::AlreadyRegistered);
    }

    #[test]
    fn names_near_the_limits_never_panic(
        base in "[a-z \u{0}-\u{1f}\u{a0}\u{3000}é😀\u{200b}]{0,70}",
        pad in 0usize..4,
    ) {
        let name = format!("{}{base}{}", " ".repeat(pad), "\u{3000}".repeat(pad));
        let verdict = validate_name(&name);
        let trimmed_empty = name.trim().is_empty();
        let too_long = name.chars().count() > MAX_NAME_CHARS;
        let control = name.chars().any(char::is_control);
        prop_assert_eq!(verdict.is_ok(), !trimmed_empty && !too_long && !control);
    }
}
