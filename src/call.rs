//! The normalized call: one type for both documented API shapes, shared by
//! the client, the policy evaluator and the engine.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A validated Vobiz call UUID, safe to put in a URL path.
///
/// An empty UUID in `DELETE /Call/{uuid}/` can mean "every call of the
/// account", so a DELETE is only ever built from this type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CallUuid(String);

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
        Ok(Self(raw.to_owned()))
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
    Other(String),
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
            _ => Self::Other(word),
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    /// The call's own UUID.
    pub uuid: CallUuid,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Calling number, normalized with [`normalize_number`].
    pub from: String,
    /// Called number, normalized with [`normalize_number`].
    pub to: String,
    /// Caller name as given (empty when absent).
    pub caller_name: String,
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
    /// The call object exactly as received, for the audit log.
    pub raw: serde_json::Value,
}

/// Normalizes a phone number for matching: drops `+`, spaces and the usual
/// punctuation (`-`, `.`, `(`, `)`) when what remains is all digits.
///
/// Anything else (SIP URIs, `anonymous`, empty) is returned trimmed but
/// otherwise unchanged, so it can still be matched as a raw string. No
/// country code is guessed.
pub fn normalize_number(raw: &str) -> String {
    let trimmed = raw.trim();
    let digits: String = trimmed
        .chars()
        .filter(|c| !matches!(c, '+' | ' ' | '-' | '.' | '(' | ')'))
        .collect();
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        digits
    } else {
        trimmed.to_owned()
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
    fn status_words_normalize() {
        assert_eq!(CallStatus::from_api("In-Progress"), CallStatus::InProgress);
        assert_eq!(CallStatus::from_api("early_media"), CallStatus::EarlyMedia);
        assert_eq!(CallStatus::from_api("completed").as_str(), "completed");
    }
}
