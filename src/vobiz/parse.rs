//! Pure parsers for the API's JSON answers: the live-call list, both
//! documented call-detail shapes, the final record (CDR), and timestamps.
//!
//! Every instant is rounded to the *latest* moment consistent with what the
//! API wrote, so a call always looks younger than it is, never older.

use std::collections::HashSet;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::{Map, Value};

use super::Error;
use crate::call::{normalize_number, Call, CallStatus, CallUuid, Direction, RawAnswer, Shape};

/// Longest body excerpt carried in [`Error::Malformed`].
pub const EXCERPT_CHARS: usize = 120;

/// The final record of an ended call (`GET /Call/{uuid}/` without `status`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cdr {
    /// The call's UUID.
    pub uuid: CallUuid,
    /// Who ended the call (`API`, `API Request`, `Caller`, ...), as given.
    pub hangup_source: Option<String>,
    /// Numeric hangup cause (16, 4000, ...).
    pub hangup_cause_code: Option<i64>,
    /// Hangup cause name (`NORMAL_CLEARING`, ...).
    pub hangup_cause_name: Option<String>,
    /// When the call ended (latest instant consistent with the field).
    pub end_time: Option<DateTime<Utc>>,
    /// Billed seconds.
    pub bill_duration: Option<u64>,
    /// When the call was answered (latest instant consistent with the field).
    pub answer_time: Option<DateTime<Utc>>,
    /// The record exactly as received.
    pub raw: Value,
}

/// Builds [`Error::Malformed`] with a short, char-safe excerpt of `body`.
pub fn malformed(reason: impl Into<String>, body: &[u8]) -> Error {
    Error::Malformed {
        reason: reason.into(),
        excerpt: excerpt(body),
    }
}

/// The first [`EXCERPT_CHARS`] characters of `body`, lossily decoded.
pub fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(EXCERPT_CHARS)
        .collect()
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Error> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(malformed("expected a JSON object", body)),
        Err(err) => Err(malformed(format!("invalid JSON: {err}"), body)),
    }
}

/// Parses `{"calls": ["uuid", ...]}`; entries that are not valid UUIDs are
/// skipped (see [`parse_call_list_entries`]), a missing or non-array
/// `calls` is malformed.
pub fn parse_call_list(body: &[u8]) -> Result<Vec<CallUuid>, Error> {
    Ok(parse_call_list_entries(body)?.uuids)
}

/// How many skipped list entries are kept (as excerpts) per answer; the
/// count covers them all.
pub const MAX_SKIPPED_KEPT: usize = 1000;

/// A list answer: the valid UUIDs, and what was skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallList {
    /// The valid UUIDs, in list order.
    pub uuids: Vec<CallUuid>,
    /// Entries that are not valid UUIDs.
    pub skipped: usize,
    /// Excerpts of the first [`MAX_SKIPPED_KEPT`] skipped entries.
    pub skipped_entries: Vec<String>,
}

/// Parses a list answer without logging: the caller reports the skipped
/// entries once (see [`SkippedEntries`]), not at every poll.
pub fn parse_call_list_entries(body: &[u8]) -> Result<CallList, Error> {
    // The usual answer (an object whose `calls` are strings without
    // escapes) is read without building a JSON value per entry; anything
    // else goes the general way, which also words the errors.
    if let Ok(list) = serde_json::from_slice::<BorrowedList<'_>>(body) {
        let mut out = CallList {
            uuids: Vec::with_capacity(list.calls.len()),
            ..CallList::default()
        };
        for entry in list.calls {
            match CallUuid::parse(entry) {
                Ok(uuid) => out.uuids.push(uuid),
                Err(_) => out.skip(&Value::String(entry.to_owned())),
            }
        }
        return Ok(out);
    }
    let map = parse_object(body)?;
    let Some(Value::Array(entries)) = map.get("calls") else {
        return Err(malformed("`calls` is missing or not an array", body));
    };
    let mut list = CallList {
        uuids: Vec::with_capacity(entries.len()),
        ..CallList::default()
    };
    for entry in entries {
        match entry.as_str().map(CallUuid::parse) {
            Some(Ok(uuid)) => list.uuids.push(uuid),
            _ => list.skip(entry),
        }
    }
    Ok(list)
}

/// A list answer whose `calls` are all strings without escapes.
#[derive(serde::Deserialize)]
struct BorrowedList<'a> {
    #[serde(borrow)]
    calls: Vec<&'a str>,
}

impl CallList {
    /// Counts `entry` as skipped, keeping an excerpt of the first ones.
    fn skip(&mut self, entry: &Value) {
        self.skipped += 1;
        if self.skipped_entries.len() < MAX_SKIPPED_KEPT {
            self.skipped_entries
                .push(excerpt(entry.to_string().as_bytes()));
        }
    }
}

/// The skipped entries of the previous list answer, so that each is
/// reported when it first appears, not at every poll.
#[derive(Debug, Default)]
pub struct SkippedEntries {
    previous: HashSet<String>,
}

impl SkippedEntries {
    /// Takes one answer's skipped entries; returns those the previous
    /// answer did not have, in list order.
    pub fn fresh(&mut self, list: &CallList) -> Vec<String> {
        let current: HashSet<String> = list.skipped_entries.iter().cloned().collect();
        let mut reported = HashSet::new();
        let fresh = list
            .skipped_entries
            .iter()
            .filter(|entry| !self.previous.contains(*entry) && reported.insert(*entry))
            .cloned()
            .collect();
        self.previous = current;
        fresh
    }
}

/// Parses a call detail in either documented shape into a [`Call`].
///
/// Legacy answers (`{"calls": [...]}`) use the entry whose `call_uuid` is
/// `requested`, else the first; any answer naming a different call is
/// malformed, so we never act on the wrong call.
pub fn parse_call_detail(body: &[u8], requested: &CallUuid, zone: Tz) -> Result<Call, Error> {
    let map = parse_object(body)?;
    match map.get("calls") {
        Some(Value::Array(entries)) => {
            let entry = pick_entry(entries, requested)
                .ok_or_else(|| malformed("`calls` is empty", body))?;
            let Value::Object(call) = entry else {
                return Err(malformed("`calls[]` entry is not an object", body));
            };
            legacy_call(call, requested, zone).map_err(|reason| malformed(reason, body))
        }
        Some(_) => Err(malformed("`calls` is not an array", body)),
        None => flat_call(&map, requested, zone).map_err(|reason| malformed(reason, body)),
    }
}

/// Parses a final record (CDR): a flat object, or a `calls[]` list picked
/// like [`parse_call_detail`].
pub fn parse_cdr(body: &[u8], requested: &CallUuid, zone: Tz) -> Result<Cdr, Error> {
    let map = parse_object(body)?;
    let record = match map.get("calls") {
        Some(Value::Array(entries)) => match pick_entry(entries, requested) {
            Some(Value::Object(entry)) => entry.clone(),
            Some(_) => return Err(malformed("`calls[]` entry is not an object", body)),
            None => return Err(malformed("`calls` is empty", body)),
        },
        _ => map,
    };
    cdr_from(record, requested, zone).map_err(|reason| malformed(reason, body))
}

fn pick_entry<'a>(entries: &'a [Value], requested: &CallUuid) -> Option<&'a Value> {
    entries
        .iter()
        .find(|entry| entry.get("call_uuid").and_then(Value::as_str) == Some(requested.as_str()))
        .or_else(|| entries.first())
}

/// Checks that the object's `call_uuid`, when present, is the requested one.
fn check_uuid(obj: &Map<String, Value>, requested: &CallUuid) -> Result<CallUuid, String> {
    match obj.get("call_uuid") {
        None | Some(Value::Null) => {
            tracing::warn!(call_uuid = %requested, "answer has no call_uuid; assuming the requested call");
            Ok(requested.clone())
        }
        Some(Value::String(s)) if s == requested.as_str() => Ok(requested.clone()),
        Some(Value::String(s)) => Err(format!(
            "answer is for call {:?}, not the requested {requested}",
            excerpt(s.as_bytes())
        )),
        Some(_) => Err("`call_uuid` is not a string".to_owned()),
    }
}

fn flat_call(obj: &Map<String, Value>, requested: &CallUuid, zone: Tz) -> Result<Call, String> {
    let uuid = check_uuid(obj, requested)?;
    let raw = RawAnswer::pack(obj, uuid.as_str());
    let status = match obj.get("call_status") {
        Some(Value::String(s)) => CallStatus::from_api(s),
        Some(_) => return Err("`call_status` is not a string".to_owned()),
        None => return Err("`call_status` is missing".to_owned()),
    };
    Ok(Call {
        uuid,
        direction: Direction::from_api(&text(obj, "direction")?),
        from: normalize_number(&text(obj, "from")?).into(),
        to: normalize_number(&text(obj, "to")?).into(),
        caller_name: text(obj, "caller_name")?.into(),
        status,
        started_at: timestamp(obj, "session_start", zone)?,
        answered_at: timestamp(obj, "answer_time", zone)?,
        duration_s: seconds(obj, "call_duration")?,
        parent_call_uuid: parent(obj)?,
        shape: Shape::Flat,
        raw,
    })
}

fn legacy_call(obj: &Map<String, Value>, requested: &CallUuid, zone: Tz) -> Result<Call, String> {
    let uuid = check_uuid(obj, requested)?;
    let raw = RawAnswer::pack(obj, uuid.as_str());
    let answered_at = timestamp(obj, "answer_time", zone)?;
    // An answer time that is given but unreadable still says "answered":
    // the engine then times the call from the first answer that showed it
    // in progress, as for the flat shape, instead of waiting forever.
    let answer_given =
        matches!(obj.get("answer_time"), Some(Value::String(s)) if !s.trim().is_empty());
    let status = match (obj.get("call_state"), obj.get("call_status")) {
        (Some(Value::String(state)), _) if state.trim().eq_ignore_ascii_case("active") => {
            if answered_at.is_some() || answer_given {
                CallStatus::InProgress
            } else {
                CallStatus::Ringing
            }
        }
        (Some(Value::String(state)), _) => CallStatus::from_api(state),
        (Some(Value::Null) | None, Some(Value::String(status))) => CallStatus::from_api(status),
        (None | Some(Value::Null), _) => {
            return Err("neither `call_state` nor `call_status` is given".to_owned())
        }
        (Some(_), _) => return Err("`call_state` is not a string".to_owned()),
    };
    let direction = match obj.get("call_direction") {
        Some(_) => text(obj, "call_direction")?,
        None => text(obj, "direction")?,
    };
    Ok(Call {
        uuid,
        direction: Direction::from_api(&direction),
        from: normalize_number(&text(obj, "from_number")?).into(),
        to: normalize_number(&text(obj, "to_number")?).into(),
        caller_name: text(obj, "caller_name")?.into(),
        status,
        started_at: timestamp(obj, "initiation_time", zone)?,
        answered_at,
        duration_s: seconds(obj, "call_duration")?,
        parent_call_uuid: parent(obj)?,
        shape: Shape::Legacy,
        raw,
    })
}

fn cdr_from(obj: Map<String, Value>, requested: &CallUuid, zone: Tz) -> Result<Cdr, String> {
    let uuid = check_uuid(&obj, requested)?;
    let hangup_cause_code = match obj.get("hangup_cause_code") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => return Err("`hangup_cause_code` is not a number".to_owned()),
    };
    let optional = |key: &str| -> Result<Option<String>, String> {
        Ok(Some(text(&obj, key)?).filter(|s| !s.is_empty()))
    };
    Ok(Cdr {
        uuid,
        hangup_source: optional("hangup_source")?,
        hangup_cause_code,
        hangup_cause_name: optional("hangup_cause_name")?,
        end_time: timestamp(&obj, "end_time", zone)?,
        bill_duration: seconds(&obj, "bill_duration")?,
        answer_time: timestamp(&obj, "answer_time", zone)?,
        raw: Value::Object(obj),
    })
}

/// A text field: absent or null is `""`, numbers are accepted as text.
fn text(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(format!("`{key}` is not a string")),
    }
}

/// Whole seconds: a non-negative integer or numeric string; absent or null is `None`.
fn seconds(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) => Ok(Some(v)),
            None => {
                tracing::warn!(field = key, value = %n, "ignoring negative or fractional seconds");
                Ok(None)
            }
        },
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("`{key}` is not a whole number of seconds")),
        Some(_) => Err(format!("`{key}` is not a number")),
    }
}

/// A timestamp field; an unreadable value is `None` with a warning, so the
/// engine falls back to first-seen time (later, never earlier).
fn timestamp(
    obj: &Map<String, Value>,
    key: &str,
    zone: Tz,
) -> Result<Option<DateTime<Utc>>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => {
            let parsed = parse_timestamp(s, zone);
            if parsed.is_none() {
                tracing::warn!(field = key, value = %excerpt(s.as_bytes()), "ignoring unreadable timestamp");
            }
            Ok(parsed)
        }
        Some(_) => Err(format!("`{key}` is not a string")),
    }
}

fn parent(obj: &Map<String, Value>) -> Result<Option<CallUuid>, String> {
    match obj.get("parent_call_uuid") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => match CallUuid::parse(s) {
            Ok(uuid) => Ok(Some(uuid)),
            Err(err) => {
                tracing::warn!(value = %excerpt(s.as_bytes()), %err, "ignoring invalid parent_call_uuid");
                Ok(None)
            }
        },
        Some(_) => Err("`parent_call_uuid` is not a string".to_owned()),
    }
}

/// Reads an API timestamp as the latest instant consistent with it.
///
/// `yyyy-MM-dd HH:mm:ss[.f…]` without a zone is read in `zone`; RFC 3339
/// with an offset keeps its offset. One unit of the written resolution is
/// added (+1 s for whole seconds, +1 µs for six fraction digits), and a local
/// time that occurs twice (DST fold) takes the later occurrence.
pub fn parse_timestamp(raw: &str, zone: Tz) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    let unit = resolution(raw)?;
    let instant = if let Ok(with_offset) = DateTime::parse_from_rfc3339(raw) {
        with_offset.with_timezone(&Utc)
    } else {
        let naive = NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f"))
            .ok()?;
        local_latest(naive, zone)?
    };
    instant.checked_add_signed(unit)
}

fn local_latest(naive: NaiveDateTime, zone: Tz) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(_, later) => Some(later.with_timezone(&Utc)),
        // A wall time skipped by a DST jump: the gap is at most a few hours;
        // the first real instant after it is the latest consistent reading.
        LocalResult::None => (1..=4).find_map(|hours| {
            zone.from_local_datetime(&(naive + TimeDelta::hours(hours)))
                .earliest()
                .map(|t| t.with_timezone(&Utc))
        }),
    }
}

/// One unit of the timestamp's written resolution (fraction digits after the seconds).
fn resolution(raw: &str) -> Option<TimeDelta> {
    // The seconds field ends at index 19 in both `yyyy-MM-dd HH:mm:ss` and the RFC 3339 form.
    let rest = raw.get(19..)?;
    let digits = rest
        .strip_prefix('.')
        .map(|frac| frac.chars().take_while(char::is_ascii_digit).count())
        .unwrap_or(0);
    let nanos = match digits {
        0 => 1_000_000_000,
        1..=9 => 10_i64.pow(9 - digits as u32),
        _ => 1,
    };
    Some(TimeDelta::nanoseconds(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    const UUID: &str = "2ded13fe-4f9b-4958-9bfb-093ea2f29f91";

    fn uuid(s: &str) -> CallUuid {
        CallUuid::parse(s).unwrap()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn legacy_active_call_with_unreadable_answer_time_is_answered() {
        let body =
            include_bytes!("../../tests/fixtures/hostile/api/legacy_unreadable_answer_time.json");
        let requested = uuid("97ceeb52-58b6-41e1-86da-77300b68f8bb");
        let call = parse_call_detail(body, &requested, Tz::UTC).unwrap();
        assert_eq!(call.status, CallStatus::InProgress);
        assert_eq!(call.answered_at, None);
        assert_eq!(call.started_at, None);
        assert_eq!(call.duration_s, Some(7200));
        // Without an answer time at all it is still ringing.
        let ringing = br#"{"calls":[{"call_state":"ACTIVE","answer_time":null,"call_uuid":"97ceeb52-58b6-41e1-86da-77300b68f8bb"}]}"#;
        let call = parse_call_detail(ringing, &requested, Tz::UTC).unwrap();
        assert_eq!(call.status, CallStatus::Ringing);
    }

    #[test]
    fn list_skips_invalid_entries() {
        let body = br#"{"api_id":"x","calls":["eac94337-b1cd-499b-82d1-b39bca50dc31","",7,"a/b","0a70a7fb"]}"#;
        let list = parse_call_list(body).unwrap();
        assert_eq!(
            list,
            vec![
                uuid("eac94337-b1cd-499b-82d1-b39bca50dc31"),
                uuid("0a70a7fb")
            ]
        );
    }

    #[test]
    fn string_only_lists_read_like_any_list() {
        // The first body takes the borrowed path, the second (a number, an
        // escaped string) the general one: same UUIDs, same skipped entries.
        let fast = br#"{"calls":["eac94337-b1cd-499b-82d1-b39bca50dc31","a/b","","0a70a7fb"]}"#;
        let general =
            br#"{"calls":["eac94337-b1cd-499b-82d1-b39bca50dc31","a\/b","",7,"0a70a7fb"]}"#;
        let fast = parse_call_list_entries(fast).unwrap();
        let general = parse_call_list_entries(general).unwrap();
        assert_eq!(fast.uuids, general.uuids);
        assert_eq!(fast.skipped_entries, ["\"a/b\"", "\"\""]);
        assert_eq!(general.skipped_entries, ["\"a/b\"", "\"\"", "7"]);
        assert!(parse_call_list_entries(br#"{"calls":null}"#).is_err());
        assert!(parse_call_list_entries(br#"["x"]"#).is_err());
    }

    #[test]
    fn skipped_entries_are_reported_once_while_listed() {
        let list = |body: &str| parse_call_list_entries(body.as_bytes()).unwrap();
        let good = "eac94337-b1cd-499b-82d1-b39bca50dc31";
        let mut seen = SkippedEntries::default();
        let first = list(&format!(r#"{{"calls":["{good}","a/b",7,"a/b"]}}"#));
        assert_eq!(first.uuids.len(), 1);
        assert_eq!(first.skipped, 3);
        assert_eq!(seen.fresh(&first), [r#""a/b""#, "7"]);
        assert!(seen.fresh(&first).is_empty(), "reported again");
        let more = list(&format!(r#"{{"calls":["{good}","a/b",7,null]}}"#));
        assert_eq!(seen.fresh(&more), ["null"]);
        // Gone, then back: reported again.
        assert!(seen.fresh(&list(r#"{"calls":[]}"#)).is_empty());
        assert_eq!(seen.fresh(&more).len(), 3);
        // Kept excerpts are bounded; the count is not.
        let many = format!(
            r#"{{"calls":[{}]}}"#,
            vec!["1"; MAX_SKIPPED_KEPT + 5].join(",")
        );
        let many = list(&many);
        assert_eq!(many.skipped, MAX_SKIPPED_KEPT + 5);
        assert_eq!(many.skipped_entries.len(), MAX_SKIPPED_KEPT);
    }

    #[test]
    fn list_without_calls_is_malformed() {
        for body in [
            &br#"{"api_id":"x"}"#[..],
            br#"{"calls":"nope"}"#,
            b"[]",
            b"<html>",
            b"",
        ] {
            assert!(
                matches!(parse_call_list(body), Err(Error::Malformed { .. })),
                "{body:?}"
            );
        }
    }

    #[test]
    fn flat_shape_parses_with_microseconds_rounded_up() {
        let body = format!(
            r#"{{"api_id":"a","call_status":"in-progress","call_uuid":"{UUID}","caller_name":"",
            "direction":"outbound","from":"919262171438","to":"+91 9148227303",
            "session_start":"2026-06-11 16:03:28.586839","parent_call_uuid":""}}"#
        );
        let call = parse_call_detail(body.as_bytes(), &uuid(UUID), Tz::UTC).unwrap();
        assert_eq!(call.status, CallStatus::InProgress);
        assert_eq!(call.direction, Direction::Outbound);
        assert_eq!(call.to, "919148227303");
        assert_eq!(call.shape, Shape::Flat);
        assert_eq!(call.parent_call_uuid, None);
        let expected = utc(2026, 6, 11, 16, 3, 28) + TimeDelta::microseconds(586_840);
        assert_eq!(call.started_at, Some(expected));
        assert_eq!(
            call.raw_value()["session_start"],
            "2026-06-11 16:03:28.586839"
        );
    }

    #[test]
    fn flat_shape_for_another_call_is_malformed() {
        let body = br#"{"call_status":"ringing","call_uuid":"other-call"}"#;
        let err = parse_call_detail(body, &uuid(UUID), Tz::UTC).unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }));
    }

    #[test]
    fn legacy_shape_picks_the_requested_entry_and_rounds_seconds_up() {
        let body = format!(
            r#"{{"api_id":"a","calls":[
              {{"call_uuid":"other","call_state":"ACTIVE"}},
              {{"answer_time":"2014-10-15 09:03:43","call_direction":"outbound","call_duration":180,
               "call_state":"ACTIVE","call_uuid":"{UUID}","from_number":"+14156667777",
               "to_number":"+14156667778","initiation_time":"2014-10-15 09:03:38",
               "parent_call_uuid":"97ceeb52-58b6-11e1-86da-77300b68f8bb"}}]}}"#
        );
        let zone: Tz = "Asia/Kolkata".parse().unwrap();
        let call = parse_call_detail(body.as_bytes(), &uuid(UUID), zone).unwrap();
        assert_eq!(call.status, CallStatus::InProgress);
        assert_eq!(call.shape, Shape::Legacy);
        assert_eq!(call.duration_s, Some(180));
        assert_eq!(call.from, "14156667777");
        // 09:03:43 IST = 03:33:43 UTC, read as the latest instant: 03:33:44.
        assert_eq!(call.answered_at, Some(utc(2014, 10, 15, 3, 33, 44)));
        assert_eq!(call.started_at, Some(utc(2014, 10, 15, 3, 33, 39)));
        assert_eq!(
            call.parent_call_uuid,
            Some(uuid("97ceeb52-58b6-11e1-86da-77300b68f8bb"))
        );
    }

    #[test]
    fn legacy_active_without_answer_is_ringing() {
        let body = br#"{"calls":[{"call_state":"ACTIVE","answer_time":null,"call_duration":0}]}"#;
        let call = parse_call_detail(body, &uuid(UUID), Tz::UTC).unwrap();
        assert_eq!(call.status, CallStatus::Ringing);
        assert_eq!(call.uuid, uuid(UUID));
    }

    #[test]
    fn legacy_first_entry_for_another_call_is_malformed() {
        let body = br#"{"calls":[{"call_uuid":"someone-else","call_state":"ACTIVE"}]}"#;
        assert!(parse_call_detail(body, &uuid(UUID), Tz::UTC).is_err());
        assert!(parse_call_detail(br#"{"calls":[]}"#, &uuid(UUID), Tz::UTC).is_err());
    }

    #[test]
    fn wrong_types_are_malformed() {
        for body in [
            &br#"{"call_uuid":123,"call_status":"ringing"}"#[..],
            br#"{"call_uuid":null,"call_status":true}"#,
            br#"{"call_status":"ringing","session_start":5}"#,
            br#"{"calls":[{"call_state":["ACTIVE"]}]}"#,
            br#"{"calls":{"a":1}}"#,
        ] {
            let err = parse_call_detail(body, &uuid(UUID), Tz::UTC).unwrap_err();
            assert!(
                matches!(err, Error::Malformed { .. }),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn invalid_parent_is_dropped() {
        let body = br#"{"call_status":"ringing","parent_call_uuid":"not a uuid!"}"#;
        let call = parse_call_detail(body, &uuid(UUID), Tz::UTC).unwrap();
        assert_eq!(call.parent_call_uuid, None);
    }

    #[test]
    fn timestamps_round_to_the_latest_instant() {
        assert_eq!(
            parse_timestamp("2026-01-01 00:00:00", Tz::UTC),
            Some(utc(2026, 1, 1, 0, 0, 1))
        );
        assert_eq!(
            parse_timestamp("2026-01-01 00:00:00.5", Tz::UTC),
            Some(utc(2026, 1, 1, 0, 0, 0) + TimeDelta::milliseconds(600))
        );
        assert_eq!(
            parse_timestamp("2026-01-01T02:00:00+02:00", Tz::UTC),
            Some(utc(2026, 1, 1, 0, 0, 1))
        );
        assert_eq!(
            parse_timestamp("2026-01-01T00:00:00.000001Z", Tz::UTC),
            Some(utc(2026, 1, 1, 0, 0, 0) + TimeDelta::microseconds(2))
        );
        let london: Tz = "Europe/London".parse().unwrap();
        // 01:30 happens twice on 2026-10-25 in London: the later one is 01:30 UTC.
        assert_eq!(
            parse_timestamp("2026-10-25 01:30:00", london),
            Some(utc(2026, 10, 25, 1, 30, 1))
        );
        // 01:30 does not exist on 2026-03-29 in London: the first instant after the gap.
        assert_eq!(
            parse_timestamp("2026-03-29 01:30:00", london),
            Some(utc(2026, 3, 29, 1, 30, 1))
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01 00:00:00",
            "0000-00-00 00:00:00",
            "2026-01-01",
        ] {
            assert_eq!(parse_timestamp(bad, Tz::UTC), None, "{bad}");
        }
    }

    #[test]
    fn cdr_parses() {
        let body = format!(
            r#"{{"api_id":"a","call_uuid":"{UUID}","hangup_source":"API","hangup_cause_code":16,
            "hangup_cause_name":"NORMAL_CLEARING","end_time":"2026-01-01 10:00:05",
            "bill_duration":"60","answer_time":"2026-01-01 09:59:05"}}"#
        );
        let cdr = parse_cdr(body.as_bytes(), &uuid(UUID), Tz::UTC).unwrap();
        assert_eq!(cdr.hangup_source.as_deref(), Some("API"));
        assert_eq!(cdr.hangup_cause_code, Some(16));
        assert_eq!(cdr.bill_duration, Some(60));
        assert_eq!(cdr.end_time, Some(utc(2026, 1, 1, 10, 0, 6)));
        assert!(parse_cdr(br#"{"call_uuid":"x-y"}"#, &uuid(UUID), Tz::UTC).is_err());
    }

    #[test]
    fn excerpt_is_bounded_and_char_safe() {
        let body = "é".repeat(500);
        let e = excerpt(body.as_bytes());
        assert_eq!(e.chars().count(), EXCERPT_CHARS);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,30}".prop_map(Value::String),
            Just(Value::String("2026-01-01 00:00:00".into())),
            Just(Value::String(UUID.into())),
            Just(Value::String("ACTIVE".into())),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let keys = prop_oneof![
                Just("calls".to_owned()),
                Just("call_uuid".to_owned()),
                Just("call_status".to_owned()),
                Just("call_state".to_owned()),
                Just("session_start".to_owned()),
                Just("answer_time".to_owned()),
                Just("call_duration".to_owned()),
                Just("parent_call_uuid".to_owned()),
                Just("hangup_cause_code".to_owned()),
                "[a-z_]{1,12}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(keys, inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_call_list(&body);
            let _ = parse_call_detail(&body, &uuid(UUID), Tz::UTC);
            let _ = parse_cdr(&body, &uuid(UUID), Tz::UTC);
        }

        #[test]
        fn parsers_never_panic_on_json(value in arb_json()) {
            let body = serde_json::to_vec(&value).unwrap();
            let _ = parse_call_list(&body);
            if let Ok(call) = parse_call_detail(&body, &uuid(UUID), Tz::UTC) {
                prop_assert_eq!(call.uuid, uuid(UUID));
            }
            let _ = parse_cdr(&body, &uuid(UUID), Tz::UTC);
        }

        #[test]
        fn timestamps_never_panic_and_never_go_earlier(s in ".{0,40}", secs in 0i64..4_000_000_000) {
            let _ = parse_timestamp(&s, Tz::UTC);
            let t = DateTime::<Utc>::from_timestamp(secs, 0).unwrap();
            let written = t.format("%Y-%m-%d %H:%M:%S").to_string();
            let read = parse_timestamp(&written, Tz::UTC).unwrap();
            prop_assert_eq!(read, t + TimeDelta::seconds(1));
        }
    }
}
