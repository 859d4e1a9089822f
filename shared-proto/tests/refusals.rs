//! The server's refusal texts, byte for byte, and the classifier a client
//! uses to tell them apart. The server builds every refusal from `text`, so
//! these literals are also what it sends.

use proptest::prelude::*;
use shared_proto::*;

#[test]
fn refusal_literals() {
    assert_eq!(text::EMPTY_NAME, "empty user name");
    assert_eq!(text::NAME_CONTROL_CHARS, "user name contains control characters");
    assert_eq!(text::NAME_BIDI_CHARS, "user name contains bidirectional text controls");
    assert_eq!(text::NAME_INVISIBLE_CHARS, "user name contains invisible characters (zero-width, format or filler)");
    assert_eq!(text::SERVER_BUSY, "server busy: no capacity for another call, try again later");
    assert_eq!(text::NO_OFFER, "The call carries no SDP offer");
    assert_eq!(
        text::answer_wrong_from("carol", "alice"),
        "incomingCallResponse from = carol: the call ringing here is from alice"
    );
    assert_eq!(
        text::answer_without_ringing("alice"),
        "incomingCallResponse from = alice: no incoming call rings here; your current call goes on"
    );
    assert_eq!(text::unknown_from("carol"), "unknown from = carol");
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
    assert_eq!(validate_name("alice\u{200b}"), Err(text::NAME_INVISIBLE_CHARS.to_owned()));
    assert_eq!(validate_name("\u{202e}ecila"), Err(text::NAME_BIDI_CHARS.to_owned()));
    assert_eq!(validate_name(&"😀".repeat(64)), Ok(()));
    assert_eq!(validate_name(&"😀".repeat(65)), Err(text::name_too_long(64)));
    // 64 characters once composed, 128 before.
    assert_eq!(validate_name(&"e\u{301}".repeat(64)), Ok(()));
    assert_eq!(validate_name(&format!("  {}  ", "x".repeat(64))), Ok(()));
}

#[test]
fn normalised_names_and_keys() {
    assert_eq!(normalize_name("  alice \u{3000}").as_deref(), Ok("alice"));
    assert_eq!(normalize_name("Rene\u{301}").as_deref(), Ok("Ren\u{e9}"));
    assert_eq!(normalize_name("ALICE").as_deref(), Ok("ALICE"), "the case is kept");
    assert_eq!(name_key("ALICE"), "alice");
    assert_eq!(name_key("Alice"), name_key("alice"));
    assert_eq!(name_key("ａｌｉｃｅ"), "alice");
    assert_eq!(name_key("Ren\u{e9}"), name_key("RENE\u{301}"));
    assert_eq!(name_key(" alice  smith "), "alice smith");
    assert_eq!(name_key("alice\u{a0}smith"), "alice smith");
    assert_ne!(name_key("alice"), name_key("alicé"));
    assert_ne!(name_key("bob1"), name_key("bobl"));
}

#[test]
fn log_safe_escapes_and_truncates() {
    assert_eq!(log_safe("alice").to_string(), r#""alice""#);
    assert_eq!(log_safe("a\nb\r\t\"\\").to_string(), r#""a\nb\r\t\"\\""#);
    assert_eq!(log_safe("\x1b[31mRED").to_string(), r#""\u{1b}[31mRED""#);
    assert_eq!(log_safe("\u{202e}x\u{200b}").to_string(), r#""\u{202e}x\u{200b}""#);
    assert_eq!(log_safe(&"y".repeat(64)).to_string(), format!("\"{}\"", "y".repeat(64)));
    assert_eq!(log_safe(&"y".repeat(65)).to_string(), format!("\"{}…\"", "y".repeat(64)));
    assert_eq!(log_safe("é😀").to_string(), "\"é😀\"");
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
    fn normalize_is_idempotent_and_keys_are_stable(s in any::<String>()) {
        let key = name_key(&s);
        if let Ok(name) = normalize_name(&s) {
            prop_assert_eq!(normalize_name(&name), Ok(name.clone()));
            prop_assert_eq!(name.chars().count() <= MAX_NAME_CHARS, true);
            prop_assert_eq!(name_key(&name), key.clone());
            prop_assert!(!name.chars().any(|c| c.is_control() || is_bidi_control(c) || is_invisible(c)));
        }
        let logged = log_safe(&s).to_string();
        prop_assert!(!logged.chars().any(|c| c.is_control() || is_bidi_control(c) || is_invisible(c)));
        prop_assert!(logged.chars().count() <= LOG_MAX_CHARS * 10 + 3);
    }

    #[test]
    fn name_keys_equal_for_case_variants(s in "[a-zA-Z0-9éÉàÀçÇøØñÑäÄöÖαΑβΒжЖ _.-]{1,64}") {
        let key = name_key(&s);
        prop_assert_eq!(name_key(&s.to_uppercase()), key.clone());
        prop_assert_eq!(name_key(&s.to_lowercase()), key.clone());
        let decomposed: String = s.chars().flat_map(|c| match c {
            'é' => vec!['e', '\u{301}'],
            'É' => vec!['E', '\u{301}'],
            c => vec![c],
        }).collect();
        prop_assert_eq!(name_key(&decomposed), key);
    }

    #[test]
    fn every_refusal_the_server_builds_is_classified(name in any::<String>()) {
        prop_assert_eq!(register_refusal(&text::name_taken(&name)), RegisterRefusal::NameTaken);
        prop_assert_eq!(register_refusal(&text::already_registered(&name)), RegisterRefusal::AlreadyRegistered);
    }

    #[test]
    fn names_near_the_limits_never_panic(
        base in "[a-z \u{0}-\u{1f}\u{a0}\u{3000}é😀\u{200b}\u{202e}]{0,70}",
        pad in 0usize..4,
    ) {
        let name = format!("{}{base}{}", " ".repeat(pad), "\u{3000}".repeat(pad));
        let verdict = validate_name(&name);
        let trimmed = name.trim();
        let empty = trimmed.is_empty();
        let too_long = trimmed.chars().count() > MAX_NAME_CHARS;
        let bad = trimmed.chars().any(|c| c.is_control() || c == '\u{200b}' || c == '\u{202e}');
        prop_assert_eq!(verdict.is_ok(), !empty && !too_long && !bad);
    }
}
