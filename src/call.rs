//! The normalized call: one type for both documented API shapes, shared by
//! the client, the policy evaluator and the engine.
//!
//! A daemon tracks up to 100,000 calls at once, so a [`Call`] is kept
//! small: the UUID is shared by every map that holds it, numbers and names
//! are inline, and the raw answer is packed ([`RawAnswer`]) until an audit
//! record needs it.

mod raw;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use raw::RawAnswer;

use crate::text::InlineStr;

/// A validated Vobiz call UUID, safe to put in a URL path.
///
/// An empty UUID in `DELETE /Call/{uuid}/` can mean "every call of the
/// account", so a DELETE is only ever built from this type.
///
/// The text is shared: the engine keys several maps and timers by a call's
/// UUID, and each clone costs a reference count, not a copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallUuid(Arc<str>);

impl Serialize for CallUuid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Why a string was refused as a call UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUuid {
    /// Empty or only white space.
    #[error("call UUID is empty")]
    Empty,
    /// Longer than any UUID the API hands out.
    #[error("call UUID is longer than 64 characters")]
    TooLong,
    /// Contains a character that could change the URL path.
    #[error("call UUID contains {0:?}, which is not a letter, digit, '-' or '_'")]
    BadCharacter(char),
}

impl CallUuid {
    /// Validates `raw`: 1 to 64 characters of `[A-Za-z0-9_-]`.
    pub fn parse(raw: &str) -> Result<Self, InvalidUuid> {
        if raw.trim().is_empty() {
            return Err(InvalidUuid::Empty);
        }
        if raw.len() > 64 {
            return Err(InvalidUuid::TooLong);
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(InvalidUuid::BadCharacter(bad));
        }
        Ok(Self(Arc::from(raw)))
    }

    /// The UUID as sent to and received from the API.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for CallUuid {
    type Err = InvalidUuid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Which way a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Placed to the account.
    Inbound,
    /// Placed by the account.
    Outbound,
    /// The API gave no direction, or one we do not know.
    Unknown,
}

impl Direction {
    /// Reads the API's `direction` / `call_direction` value.
    pub fn from_api(raw: &str) -> Self {
        match raw.trim().to_ascii_lowercase().as_str() {
            "inbound" => Self::Inbound,
            "outbound" => Self::Outbound,
            _ => Self::Unknown,
        }
    }

    /// The word policies match against (`""` when unknown).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
            Self::Unknown => "",
        }
    }
}

/// The normalized status of a call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum CallStatus {
    /// Created through the API, not yet ringing.
    Queued,
    /// Ringing at the far end.
    Ringing,
    /// Early media before answer.
    EarlyMedia,
    /// Answered and connected.
    InProgress,
    /// Any other word the API used (`completed`, `busy`, ...), lower-cased.
    Other(Box<str>),
}

impl CallStatus {
    /// Reads the flat shape's `call_status` (legacy `call_state` is mapped by the parser).
    pub fn from_api(raw: &str) -> Self {
        let word = raw.trim().to_ascii_lowercase().replace('_', "-");
        match word.as_str() {
            "queued" => Self::Queued,
            "ringing" => Self::Ringing,
            "early-media" => Self::EarlyMedia,
            "in-progress" | "inprogress" | "answered" | "active" => Self::InProgress,
            _ => Self::Other(word.into()),
        }
    }

    /// The word policies match against.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Queued => "queued",
            Self::Ringing => "ringing",
            Self::EarlyMedia => "early-media",
            Self::InProgress => "in-progress",
            Self::Other(word) => word,
        }
    }
}

impl From<CallStatus> for String {
    fn from(status: CallStatus) -> Self {
        status.as_str().to_owned()
    }
}

/// Which documented response shape a call detail came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Current docs: `call_status`, `session_start`, no duration.
    Flat,
    /// Older docs: `calls[]` with `call_state`, `answer_time`, `call_duration`.
    Legacy,
}

/// One live call as the API described it, normalized.
///
/// Instants are the *latest* instant consistent with the API's field: a
/// whole-second timestamp `09:03:43` is read as `09:03:44`, so a call always
/// looks younger, never older, than it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The call's own UUID.
    pub uuid: CallUuid,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Calling number, normalized with [`normalize_number`].
    pub from: InlineStr,
    /// Called number, normalized with [`normalize_number`].
    pub to: InlineStr,
    /// Caller name as given (empty when absent).
    pub caller_name: InlineStr,
    /// Normalized status.
    pub status: CallStatus,
    /// When the session started (`session_start` / `initiation_time`), if given.
    pub started_at: Option<DateTime<Utc>>,
    /// When the call was answered (`answer_time`), if given.
    pub answered_at: Option<DateTime<Utc>>,
    /// `call_duration` in whole seconds, if given (legacy shape).
    pub duration_s: Option<u64>,
    /// The A-leg this call is a B-leg of, if any.
    pub parent_call_uuid: Option<CallUuid>,
    /// The response shape it was parsed from.
    pub shape: Shape,
    /// The call object exactly as received, for the audit log: read it
    /// with [`Call::raw_value`].
    pub raw: RawAnswer,
}

impl Call {
    /// The call object exactly as received, as JSON (for an audit record).
    pub fn raw_value(&self) -> serde_json::Value {
        self.raw.to_value(self.uuid.as_str())
    }

    /// An answered outbound call `id` from +14155550100 to +14155550101,
    /// with no timestamps: the base unit tests change fields of.
    #[cfg(test)]
    pub(crate) fn for_test(id: &str) -> Self {
        Call {
            uuid: CallUuid::parse(id).expect("a test UUID"),
            direction: Direction::Outbound,
            from: "14155550100".into(),
            to: "14155550101".into(),
            caller_name: "".into(),
            status: CallStatus::InProgress,
            started_at: None,
            answered_at: None,
            duration_s: None,
            parent_call_uuid: None,
            shape: Shape::Flat,
            raw: RawAnswer::default(),
        }
    }
}

/// What a `to`/`from` value holds once read as a phone number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberDigits {
    /// A phone number: ASCII digits only, no `+`, no separators.
    Digits(String),
    /// Digits mixed with characters we cannot read as part of a number
    /// (`911#`, Arabic-Indic digits, an unknown invisible character):
    /// protection treats it as protected, matching as a raw string.
    Doubtful,
    /// Not a number at all (`anonymous`, `sip:alice@example.com`, empty).
    NotNumber,
}

/// Characters that render as nothing and would hide a number from an exact
/// comparison: zero-width space and joiners, word joiner, BOM, soft hyphen,
/// direction marks and embeddings.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
    )
}

/// Full-width forms (`９１１`, `＋`, `ｔｅｌ：`) read as their ASCII twins, the
/// ideographic space as a space; invisible characters dropped.
fn fold_width(raw: &str) -> String {
    raw.chars()
        .filter(|c| !is_invisible(*c))
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            other => other,
        })
        .collect()
}

/// The user part of a `tel:`, `sip:` or `sips:` URI (host, `;params` and
/// `?headers` dropped, `%XX` escapes decoded), or `None` for other values.
fn uri_user_part(value: &str) -> Option<String> {
    let lower = value.get(..5).unwrap_or(value).to_ascii_lowercase();
    let rest = if lower.starts_with("tel:") || lower.starts_with("sip:") {
        &value[4..]
    } else if lower.starts_with("sips:") {
        &value[5..]
    } else {
        return None;
    };
    let user = rest.split('@').next().unwrap_or(rest);
    let user = user.split([';', '?']).next().unwrap_or(user);
    Some(percent_decode(user))
}

/// Decodes `%XX` escapes; an escape that is not two hex digits stays as is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a `to`/`from` value as a phone number.
///
/// Full-width digits are read as ASCII and invisible characters dropped;
/// a `tel:`/`sip:`/`sips:` URI is reduced to its user part; then `+`,
/// white space and `-().` are dropped. What remains is a number when it is
/// ASCII digits; [`NumberDigits::Doubtful`] when it holds digits (of any
/// script) and other characters but no ASCII letter. No country code is
/// guessed.
pub fn number_digits(raw: &str) -> NumberDigits {
    let folded = fold_width(raw);
    let trimmed = folded.trim();
    let user = uri_user_part(trimmed);
    let candidate = user.as_deref().unwrap_or(trimmed);
    let digits: String = candidate
        .chars()
        .filter(|c| !(matches!(c, '+' | '-' | '.' | '(' | ')') || c.is_whitespace()))
        .collect();
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        return NumberDigits::Digits(digits);
    }
    // A name (`bob_2`, `alice`) has letters; digits with anything else but
    // no letter may be a number in disguise.
    let has_digit = digits.chars().any(char::is_numeric);
    let has_letter = digits.chars().any(|c| c.is_ascii_alphabetic());
    if has_digit && !has_letter {
        NumberDigits::Doubtful
    } else {
        NumberDigits::NotNumber
    }
}

/// Normalizes a phone number for matching: the digits of
/// [`number_digits`] when it reads as a number.
///
/// Anything else (`sip:alice@example.com`, `anonymous`, empty) is returned
/// trimmed but otherwise as given, so it can still be matched as a raw
/// string.
pub fn normalize_number(raw: &str) -> String {
    match number_digits(raw) {
        NumberDigits::Digits(digits) => digits,
        NumberDigits::Doubtful | NumberDigits::NotNumber => raw.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_rejects_empty_blank_and_path_characters() {
        assert_eq!(CallUuid::parse(""), Err(InvalidUuid::Empty));
        assert_eq!(CallUuid::parse("   "), Err(InvalidUuid::Empty));
        assert_eq!(CallUuid::parse("a/b"), Err(InvalidUuid::BadCharacter('/')));
        assert_eq!(CallUuid::parse("../x"), Err(InvalidUuid::BadCharacter('.')));
        assert_eq!(CallUuid::parse(&"a".repeat(65)), Err(InvalidUuid::TooLong));
        assert!(CallUuid::parse("eac94337-b1cd-499b-82d1-b39bca50dc31").is_ok());
    }

    #[test]
    fn numbers_normalize_to_digits_and_keep_non_numbers() {
        assert_eq!(normalize_number("+1 (900) 555-1234"), "19005551234");
        assert_eq!(normalize_number("919262171438"), "919262171438");
        assert_eq!(
            normalize_number("sip:alice@example.com"),
            "sip:alice@example.com"
        );
        assert_eq!(normalize_number(" anonymous "), "anonymous");
        assert_eq!(normalize_number("+"), "+");
        assert_eq!(normalize_number(""), "");
    }

    #[test]
    fn uri_numbers_reduce_to_their_user_part() {
        let digits = |s: &str| NumberDigits::Digits(s.to_owned());
        assert_eq!(number_digits("tel:911"), digits("911"));
        assert_eq!(number_digits("TEL:+1-900-555-0101"), digits("19005550101"));
        assert_eq!(number_digits("sip:112@carrier.example"), digits("112"));
        assert_eq!(number_digits("sip:999@host;user=phone"), digits("999"));
        assert_eq!(
            number_digits("sips:+19005550101@carrier.example;user=phone"),
            digits("19005550101")
        );
        assert_eq!(number_digits("tel:+911;phone-context=x"), digits("911"));
        assert_eq!(number_digits("sip:%39%311@host"), digits("911"));
        assert_eq!(number_digits("sip:911"), digits("911"));
        assert_eq!(
            number_digits("sip:alice@example.com"),
            NumberDigits::NotNumber
        );
        assert_eq!(number_digits("anonymous"), NumberDigits::NotNumber);
        assert_eq!(number_digits(""), NumberDigits::NotNumber);
        assert_eq!(number_digits("tel:"), NumberDigits::NotNumber);
        assert_eq!(normalize_number("sip:112@carrier.example"), "112");
        assert_eq!(
            normalize_number("sip:alice@example.com;transport=tls"),
            "sip:alice@example.com;transport=tls"
        );
    }

    #[test]
    fn full_width_and_invisible_characters_are_read_safely() {
        let digits = |s: &str| NumberDigits::Digits(s.to_owned());
        assert_eq!(number_digits("９１１"), digits("911"));
        assert_eq!(number_digits("＋９１１"), digits("911"));
        assert_eq!(number_digits("ｔｅｌ：９１１"), digits("911"));
        assert_eq!(number_digits("9\u{200B}1\u{2060}1\u{FEFF}"), digits("911"));
        assert_eq!(number_digits("\u{202E}911"), digits("911"));
        assert_eq!(number_digits("9\u{3000}11"), digits("911"));
        // Digits we cannot read are never an ordinary number.
        assert_eq!(number_digits("٩١١"), NumberDigits::Doubtful);
        assert_eq!(number_digits("911#"), NumberDigits::Doubtful);
        assert_eq!(number_digits("sip:9_11@host"), NumberDigits::Doubtful);
        assert_eq!(number_digits("911\u{0430}"), NumberDigits::Doubtful);
        // Names with digits are names.
        assert_eq!(number_digits("sip:bob_2@host"), NumberDigits::NotNumber);
        assert_eq!(number_digits("ext 12a"), NumberDigits::NotNumber);
        assert_eq!(normalize_number("９１１"), "911");
        assert_eq!(normalize_number("ａｎｏｎｙｍｏｕｓ"), "ａｎｏｎｙｍｏｕｓ");
    }

    proptest::proptest! {
        /// However a number is dressed (URI, full width, invisible
        /// characters, separators), it reads as its digits; and a value is
        /// never read as a number other than its own digits.
        #[test]
        fn dressed_numbers_read_as_their_digits(
            digits in "[0-9]{1,15}",
            form in 0usize..5,
            noise in proptest::collection::vec((0usize..16, 0usize..6), 0..4),
            wide in proptest::collection::vec(proptest::bool::ANY, 15),
        ) {
            let mut dressed: String = digits
                .chars()
                .zip(wide.iter().cycle())
                .map(|(c, w)| if *w { char::from_u32(c as u32 + 0xFEE0).unwrap() } else { c })
                .collect();
            for (at, kind) in noise {
                let at = dressed.char_indices().nth(at).map_or(dressed.len(), |(i, _)| i);
                let inserted = ['\u{200B}', '\u{2060}', '\u{FEFF}', ' ', '-', '\u{202E}'][kind];
                dressed.insert(at, inserted);
            }
            let dressed = match form {
                0 => dressed,
                1 => format!("tel:+{dressed}"),
                2 => format!("sip:{dressed}@carrier.example;user=phone"),
                3 => format!("sips:+{dressed}@host"),
                _ => format!("+{dressed}"),
            };
            proptest::prop_assert_eq!(number_digits(&dressed), NumberDigits::Digits(digits));
        }

        #[test]
        fn any_value_reads_as_its_own_digits_or_not_at_all(value in "\\PC{0,24}") {
            if let NumberDigits::Digits(digits) = number_digits(&value) {
                let ascii: String = fold_width(&value).chars().filter(char::is_ascii_digit).collect();
                // `%XX` escapes may add digits; never lose or reorder them.
                if !value.contains('%') {
                    proptest::prop_assert!(ascii.contains(&digits), "{value:?} -> {digits}");
                }
                proptest::prop_assert!(digits.chars().all(|c| c.is_ascii_digit()));
            }
        }
    }

    #[test]
    fn status_words_normalize() {
        assert_eq!(CallStatus::from_api("In-Progress"), CallStatus::InProgress);
        assert_eq!(CallStatus::from_api("early_media"), CallStatus::EarlyMedia);
        assert_eq!(CallStatus::from_api("completed").as_str(), "completed");
    }
}
