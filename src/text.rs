//! [`InlineStr`]: a short string stored inline, for a call's numbers and
//! caller name and for the values that verdicts report (`NotMatched.value`,
//! `Exempt.value`).
//!
//! Those values are numbers, directions and status words of a few bytes:
//! keeping them inline spares a heap allocation per field of every tracked
//! call, and one per rule per call when a call is evaluated.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Longest string kept inline; with the length byte and the enum tag the
/// type is as large as a `String` (24 bytes).
const INLINE: usize = 22;

/// An immutable string that lives inline when it is at most 22 bytes long
/// (every E.164 number, direction and status word) and on the heap otherwise.
#[derive(Clone)]
pub struct InlineStr(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl InlineStr {
    /// Copies `text`.
    pub fn new(text: &str) -> Self {
        match u8::try_from(text.len()) {
            Ok(len) if text.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..text.len()].copy_from_slice(text.as_bytes());
                Self(Repr::Inline { len, bytes })
            }
            _ => Self(Repr::Heap(text.into())),
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                let bytes = &bytes[..usize::from(*len)];
                // SAFETY: `Repr::Inline` is only built by `InlineStr::new`,
                // which copies a whole `&str` (so on a char boundary) into
                // `bytes[..len]`; the fields are private and never mutated
                // afterwards, so those bytes are still that UTF-8 text.
                // Checking them again cost a validation pass per field read
                // on the policy's hot path (every call evaluation).
                unsafe { std::str::from_utf8_unchecked(bytes) }
            }
            Repr::Heap(text) => text,
        }
    }
}

impl Default for InlineStr {
    fn default() -> Self {
        Self::new("")
    }
}

impl Deref for InlineStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for InlineStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for InlineStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for InlineStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for InlineStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for InlineStr {}

impl Hash for InlineStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for InlineStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for InlineStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for InlineStr {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl From<&str> for InlineStr {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<String> for InlineStr {
    fn from(text: String) -> Self {
        Self::new(&text)
    }
}

impl From<InlineStr> for String {
    fn from(text: InlineStr) -> Self {
        text.as_str().to_owned()
    }
}

impl serde::Serialize for InlineStr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn is_as_large_as_a_string() {
        assert_eq!(
            std::mem::size_of::<InlineStr>(),
            std::mem::size_of::<String>()
        );
    }

    #[test]
    fn short_and_long_texts_round_trip() {
        for text in ["", "outbound", "19005551234", "1234567890123456789012"] {
            let inline = InlineStr::new(text);
            assert!(matches!(inline.0, Repr::Inline { .. }), "{text}");
            assert_eq!(inline, text);
        }
        let long = "sip:someone-with-a-long-name@example.com";
        let heap = InlineStr::from(long);
        assert!(matches!(heap.0, Repr::Heap(_)));
        assert_eq!(heap.as_str(), long);
        assert_eq!(String::from(heap.clone()), long);
        assert_eq!(format!("{heap:?}"), format!("{long:?}"));
        assert_eq!(heap.to_string(), long);
    }

    proptest! {
        #[test]
        fn keeps_any_text(text in "\\PC{0,40}") {
            let inline = InlineStr::new(&text);
            prop_assert_eq!(inline.as_str(), text.as_str());
            prop_assert_eq!(inline.clone(), InlineStr::from(text.clone()));
        }
    }
}
