//! [`RawAnswer`]: a call's answer exactly as received, packed small for as
//! long as the call is tracked and turned back into JSON only when an audit
//! record is written.
//!
//! The answer is kept as its compact JSON text (what the audit log writes)
//! with the parts every answer repeats replaced by single bytes: the keys
//! of both documented shapes with their usual values, the call's own UUID,
//! and any other lowercase UUID as its 16 bytes. Compact JSON never holds a
//! byte below 0x20 (JSON escapes control characters inside strings and
//! compact output has no white space), so those bytes are free to stand for
//! the replaced parts and unpacking gives back the same text, byte for byte.
//! A flat answer takes about 90 bytes instead of 1 KB as a parsed value.

use serde_json::Value;

/// Stands for the call's own UUID in quotes (given back at unpacking).
const OWN_UUID: u8 = 0x1F;
/// Followed by 16 bytes: a lowercase hyphenated UUID in quotes.
const PACKED_UUID: u8 = 0x1E;
/// First byte of a text kept as is (one that holds a byte below 0x20,
/// which compact JSON never does; kept safe all the same).
const PLAIN: u8 = 0x00;

/// Texts that every answer of a shape repeats, each replaced by one byte
/// (its index plus one: 0x01..=0x1D).
/// Keys are in the order the audit log writes them (sorted).
const DICTIONARY: [&str; 29] = [
    // Flat shape.
    r#"{"api_id":"#,
    r#","call_status":"#,
    r#","call_uuid":"#,
    r#","caller_name":"#,
    r#","direction":"#,
    r#","from":"#,
    r#","request_uuid":"#,
    r#","session_start":"#,
    r#","stir_attestation":"Not Applicable""#,
    r#","stir_verification":"Not Applicable""#,
    r#","to":"#,
    r#","answer_time":"#,
    // Legacy shape.
    r#"{"answer_time":"#,
    r#","bill_duration":null"#,
    r#","call_direction":"#,
    r#","call_duration":"#,
    r#","call_state":"ACTIVE""#,
    r#","conference_uuid":null,"end_time":null"#,
    r#","from_number":"#,
    r#","hangup_cause_code":null,"hangup_cause_name":null,"hangup_source":null"#,
    r#","initiation_time":"#,
    r#","parent_call_uuid":"#,
    r#","source_ip":"#,
    r#","to_number":"#,
    r#","total_amount":null}"#,
    // Values.
    r#""in-progress""#,
    r#""outbound""#,
    r#""inbound""#,
    "null",
];

/// A call's answer as received (the object the call was read from), packed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RawAnswer(Box<[u8]>);

impl RawAnswer {
    /// Packs `value` (a JSON object or value), the answer for the call `own_uuid`.
    pub fn pack(value: &impl serde::Serialize, own_uuid: &str) -> Self {
        // A map of JSON values always serializes.
        let text = serde_json::to_string(value).unwrap_or_default();
        let bytes = text.as_bytes();
        if bytes.iter().any(|b| *b < 0x20) {
            let mut plain = Vec::with_capacity(bytes.len() + 1);
            plain.push(PLAIN);
            plain.extend_from_slice(bytes);
            return Self(plain.into_boxed_slice());
        }
        let mut out = Vec::with_capacity(bytes.len() / 2);
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            // Every replaced text starts with one of these bytes.
            if !matches!(bytes[at], b'"' | b',' | b'{' | b'n') {
                out.push(bytes[at]);
                at += 1;
                continue;
            }
            if let Some(len) = quoted(rest, own_uuid) {
                out.push(OWN_UUID);
                at += len;
            } else if let Some(uuid) = hex_uuid(rest) {
                out.push(PACKED_UUID);
                out.extend_from_slice(&uuid);
                at += 38;
            } else if let Some((token, entry)) = DICTIONARY
                .iter()
                .enumerate()
                .find(|(_, entry)| rest.starts_with(entry.as_bytes()))
            {
                out.push(token as u8 + 1);
                at += entry.len();
            } else {
                out.push(bytes[at]);
                at += 1;
            }
        }
        Self(out.into_boxed_slice())
    }

    /// The answer's compact JSON text, for the call `own_uuid`.
    pub fn text(&self, own_uuid: &str) -> String {
        let bytes = &self.0;
        if bytes.first() == Some(&PLAIN) {
            return String::from_utf8_lossy(&bytes[1..]).into_owned();
        }
        let mut out = Vec::with_capacity(bytes.len() * 3);
        let mut at = 0;
        while let Some(&byte) = bytes.get(at) {
            at += 1;
            match byte {
                OWN_UUID => {
                    out.push(b'"');
                    out.extend_from_slice(own_uuid.as_bytes());
                    out.push(b'"');
                }
                PACKED_UUID => {
                    let packed = bytes.get(at..at + 16).unwrap_or_default();
                    at += 16;
                    out.extend_from_slice(&unhex_uuid(packed));
                }
                0x01..=0x1D => {
                    let entry = DICTIONARY.get(usize::from(byte) - 1).unwrap_or(&"");
                    out.extend_from_slice(entry.as_bytes());
                }
                other => out.push(other),
            }
        }
        // Only whole UTF-8 sequences were copied, so this never replaces.
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The answer as JSON, for the call `own_uuid` (`null` when empty).
    pub fn to_value(&self, own_uuid: &str) -> Value {
        if self.0.is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.text(own_uuid)).unwrap_or(Value::Null)
    }

    /// How many bytes the packed answer takes on the heap.
    pub fn packed_len(&self) -> usize {
        self.0.len()
    }
}

impl std::fmt::Debug for RawAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawAnswer({} bytes)", self.0.len())
    }
}

/// The length of `"own_uuid"` when `rest` starts with it.
fn quoted(rest: &[u8], own_uuid: &str) -> Option<usize> {
    let uuid = own_uuid.as_bytes();
    let len = uuid.len() + 2;
    let candidate = rest.get(..len)?;
    (!uuid.is_empty()
        && candidate[0] == b'"'
        && candidate[len - 1] == b'"'
        && &candidate[1..len - 1] == uuid)
        .then_some(len)
}

/// Where a hyphenated UUID has its hyphens.
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// The 16 bytes of `"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"` (lowercase hex)
/// when `rest` starts with one.
fn hex_uuid(rest: &[u8]) -> Option<[u8; 16]> {
    let text = rest.get(..38)?;
    if text[0] != b'"' || text[37] != b'"' {
        return None;
    }
    let mut out = [0u8; 16];
    let mut nibbles = 0;
    for (at, &c) in text[1..37].iter().enumerate() {
        if HYPHENS.contains(&at) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let nibble = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        out[nibbles / 2] |= nibble << (4 * (1 - nibbles % 2));
        nibbles += 1;
    }
    Some(out)
}

/// The quoted text of a UUID packed by [`hex_uuid`].
fn unhex_uuid(packed: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(38);
    out.push(b'"');
    for (i, byte) in packed.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 0xF)]);
    }
    out.push(b'"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const OWN: &str = "2ded13fe-4f9b-4958-9bfb-093ea2f29f91";

    fn flat() -> Value {
        json!({
            "api_id": "c9cab827-d7e6-4ab8-b521-f29e593a1c26", "call_status": "in-progress",
            "call_uuid": OWN, "caller_name": "", "direction": "outbound",
            "from": "919262171438", "to": "919148227303", "request_uuid": OWN,
            "session_start": "2026-06-11 16:03:28.586839",
            "stir_attestation": "Not Applicable", "stir_verification": "Not Applicable",
        })
    }

    #[test]
    fn a_flat_answer_packs_small_and_unpacks_to_the_same_text() {
        let value = flat();
        let packed = RawAnswer::pack(&value, OWN);
        assert_eq!(packed.text(OWN), value.to_string());
        assert_eq!(packed.to_value(OWN), value);
        assert!(packed.packed_len() < 100, "{}", packed.packed_len());
    }

    #[test]
    fn uppercase_and_odd_uuids_stay_as_text() {
        let value = json!({"a": "C9CAB827-D7E6-4AB8-B521-F29E593A1C26", "b": "c9cab827d7e64ab8b521f29e593a1c26"});
        let packed = RawAnswer::pack(&value, "x");
        assert_eq!(packed.text("x"), value.to_string());
    }

    #[test]
    fn control_characters_in_values_survive() {
        let value = json!({"caller_name": "a\u{1}\nb\u{1f}", "to": "\u{1e}"});
        let packed = RawAnswer::pack(&value, OWN);
        assert_eq!(packed.to_value(OWN), value);
        assert_eq!(RawAnswer::default().to_value(OWN), Value::Null);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "\\PC{0,12}".prop_map(Value::String),
            Just(json!(OWN)),
            Just(json!("c9cab827-d7e6-4ab8-b521-f29e593a1c26")),
            Just(json!("Not Applicable")),
            Just(json!("in-progress")),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    proptest::sample::select(vec![
                        "api_id",
                        "call_uuid",
                        "to",
                        "from",
                        "call_status",
                        "answer_time",
                        "stir_attestation",
                        "total_amount",
                        "x",
                        "\u{1f}",
                        "\"",
                    ])
                    .prop_map(str::to_owned),
                    inner,
                    0..6,
                )
                .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any answer unpacks to exactly the text it was packed from.
        #[test]
        fn packing_loses_nothing(value in json_value(), own in "[a-f0-9-]{0,40}") {
            let packed = RawAnswer::pack(&value, &own);
            prop_assert_eq!(packed.text(&own), value.to_string());
        }
    }
}
