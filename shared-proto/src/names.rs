//! User names: what a name may hold, the form it is registered (and shown)
//! in, and the key by which two names count as the same.
//!
//! - [`normalize_name`] turns what a client sent into the name the server
//!   registers and shows: NFC, then trimmed of whitespace. It refuses an
//!   empty name, one over [`MAX_NAME_CHARS`] characters (Unicode scalar
//!   values of the NFC form, not bytes or UTF-16 units), and any name
//!   holding control characters, bidirectional text controls, or invisible
//!   characters (general category Cf such as zero-width spaces and joiners,
//!   line and paragraph separators, Hangul fillers, the combining grapheme
//!   joiner, the blank Braille pattern). Each refusal is one of the
//!   [`text`](crate::text) messages that [`register_refusal`](crate::register_refusal)
//!   classifies as `NameInvalid`.
//! - [`name_key`] is the key uniqueness and lookups compare: NFKC, lower
//!   case, NFKC again, runs of whitespace as one space. `Alice`, `ALICE`,
//!   `ａｌｉｃｅ` and `alice` share a key; the registered name keeps the case
//!   (and width) it was given.
//! - [`log_safe`] makes any client string safe for a log line.

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::text;

/// The longest user name the server accepts, in characters (of the NFC form,
/// once trimmed).
pub const MAX_NAME_CHARS: usize = 64;

/// Bidirectional text controls: the embeddings, overrides and isolates, and
/// the three marks (LRM, RLM, ALM).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that draw nothing (or nothing but blank) and so let two
/// names look alike: every format character (general category Cf: zero-width
/// space, joiners, word joiner, BOM, soft hyphen, tags, ...), the line and
/// paragraph separators, the Hangul fillers, the combining grapheme joiner,
/// the Khmer inherent vowels and the blank Braille pattern. Variation
/// selectors are allowed: emoji need them.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
    ) || matches!(
        c,
        '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180E}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FFA0}'
    )
}

/// The name the server registers for `raw`: NFC, trimmed, checked. The error
/// is the `registerResponse.message` the server sends. Never panics.
pub fn normalize_name(raw: &str) -> Result<String, String> {
    let nfc: String = raw.nfc().collect();
    let name = nfc.trim();
    if name.is_empty() {
        return Err(text::EMPTY_NAME.to_owned());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(text::name_too_long(MAX_NAME_CHARS));
    }
    if name.chars().any(char::is_control) {
        return Err(text::NAME_CONTROL_CHARS.to_owned());
    }
    if name.chars().any(is_bidi_control) {
        return Err(text::NAME_BIDI_CHARS.to_owned());
    }
    if name.chars().any(is_invisible) {
        return Err(text::NAME_INVISIBLE_CHARS.to_owned());
    }
    Ok(name.to_owned())
}

/// Checks a user name the way the server does ([`normalize_name`]), without
/// the normalised name. Never panics.
pub fn validate_name(name: &str) -> Result<(), String> {
    normalize_name(name).map(drop)
}

/// The key two names are compared by: equal keys are the same user. NFKC,
/// lower case, NFKC again, whitespace trimmed and each run of it one space.
/// Case variants (`Alice`, `ALICE`), width variants (`ａｌｉｃｅ`), composed
/// and decomposed accents share a key. Never panics.
pub fn name_key(name: &str) -> String {
    let folded: String = name.nfkc().collect::<String>().to_lowercase().nfkc().collect();
    let mut key = String::with_capacity(folded.len());
    for word in folded.split_whitespace() {
        if !key.is_empty() {
            key.push(' ');
        }
        key.push_str(word);
    }
    key
}

/// How many characters of a client string [`log_safe`] keeps.
pub const LOG_MAX_CHARS: usize = 64;

/// A client-supplied string made safe for one log line: in double quotes,
/// with quotes, backslashes, control, format, bidi and other invisible
/// characters escaped (`\n`, `\"`, `\u{1b}`, `\u{202e}`), and cut after
/// [`LOG_MAX_CHARS`] characters with `…`. Use it as a tracing field with
/// `%`: `tracing::info!(to = %log_safe(&to), "...")`.
pub fn log_safe(s: &str) -> LogSafe<'_> {
    LogSafe(s)
}

/// See [`log_safe`].
#[derive(Clone, Copy)]
pub struct LogSafe<'a>(&'a str);

impl fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        f.write_char('"')?;
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(LOG_MAX_CHARS) {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() || is_bidi_control(c) || is_invisible(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        if chars.next().is_some() {
            f.write_char('…')?;
        }
        f.write_char('"')
    }
}

impl fmt::Debug for LogSafe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
