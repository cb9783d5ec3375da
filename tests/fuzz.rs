//! Bounded fuzzing with proptest: the policy loader (arbitrary text and
//! mutations of a valid file, durations, crons, zones), number
//! normalization, UUID validation and the API response parsers. Each must
//! answer (value or error), never panic, and keep its promises.

use std::path::PathBuf;

use callwarden::call::{normalize_number, CallUuid};
use callwarden::config;
use callwarden::vobiz::{parse_call_detail, parse_call_list, parse_cdr, parse_timestamp};
use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

const VALID_POLICY: &str = r#"[[rule]]
name = "outbound-60m"
description = "Outbound calls end after 60 minutes."
max_duration = "60m"
measure_from = "answer"
priority = 3
[rule.match]
direction = ["outbound"]
to = ["+1900*", "44*"]
status = ["in-progress"]
[rule.unless]
to = ["+1800*"]
[[rule.window]]
cron = "0 0 2 * * Sun"
duration = "2h"
timezone = "Europe/London"
[rule.action]
hangup = "whole"
warn_before = "60s"
warn_text = "This call will end in one minute."
"#;

const FLAT: &str = r#"{"api_id":"c9cab827-d7e6-4ab8-b521-f29e593a1c26","call_status":"in-progress","call_uuid":"2ded13fe-4f9b-4958-9bfb-093ea2f29f91","caller_name":"","direction":"outbound","from":"919262171438","to":"919148227303","request_uuid":"2ded13fe-4f9b-4958-9bfb-093ea2f29f91","session_start":"2026-06-11 16:03:28.586839","stir_attestation":"Not Applicable","stir_verification":"Not Applicable"}"#;

const LEGACY: &str = r#"{"api_id":"c8b427f6-58ce-11e1-86da-adf28403fe48","calls":[{"answer_time":"2014-10-15 09:03:43","call_direction":"outbound","call_duration":180,"call_state":"ACTIVE","call_uuid":"2ded13fe-4f9b-4958-9bfb-093ea2f29f91","conference_uuid":null,"end_time":null,"from_number":"+14156667777","to_number":"+14156667778","initiation_time":"2014-10-15 09:03:38","parent_call_uuid":null,"hangup_cause_code":null}]}"#;

const LIST: &str = r#"{"api_id":"c9527676-5839-11e1-86da-6ff39efcb949","calls":["eac94337-b1cd-499b-82d1-b39bca50dc31","0a70a7fb-168e-4944-a846-4f3f4d2f96f1"]}"#;

fn requested() -> CallUuid {
    CallUuid::parse("2ded13fe-4f9b-4958-9bfb-093ea2f29f91").unwrap()
}

/// Loads `text` as the only policy file; every diagnostic must be well formed.
fn load(text: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("p.toml");
    std::fs::write(&path, text).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 3, 29, 0, 30, 0).unwrap();
    let diagnostics = match config::load_policy_files(std::slice::from_ref(&path), now) {
        Ok((_, warnings)) => warnings,
        Err(errors) => {
            assert!(errors.iter().any(|d| d.is_error()));
            errors
        }
    };
    let lines = text.iter().filter(|b| **b == b'\n').count() + 1;
    for d in diagnostics {
        assert!(d.line >= 1 && d.col >= 1, "{d:?}");
        assert!(d.line <= lines, "{d:?} past the end ({lines} lines)");
        assert!(!d.to_string().contains('\n'), "{d:?}");
    }
}

/// A byte-level mutation of `base`: replace, insert or delete at positions.
fn mutated(base: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len();
    proptest::collection::vec((0..3u8, 0..len, any::<u8>()), 1..8).prop_map(move |edits| {
        let mut bytes = base.as_bytes().to_vec();
        for (kind, at, byte) in edits {
            let at = at.min(bytes.len().saturating_sub(1));
            match kind {
                0 if !bytes.is_empty() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        bytes
    })
}

/// TOML-ish text: the loader's tokens in random order.
fn tomlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("[[rule]]\n".to_owned()),
        Just("[rule.match]\n".to_owned()),
        Just("[rule.unless]\n".to_owned()),
        Just("[[rule.window]]\n".to_owned()),
        Just("[rule.action]\n".to_owned()),
        Just("name = \"r\"\n".to_owned()),
        Just("max_duration = \"1m\"\n".to_owned()),
        Just("idle_timeout = \"0s\"\n".to_owned()),
        Just("to = [\"+1*\"]\n".to_owned()),
        Just("cron = \"0 0 2 * * Sun\"\n".to_owned()),
        Just("duration = \"2h\"\n".to_owned()),
        Just("warn_before = \"30s\"\n".to_owned()),
        "[a-z_]{1,12} = \"[ -~]{0,16}\"\n",
        "[a-z_]{1,12} = [0-9]{1,25}\n",
        "[\\[\\]{}=\",.\\n a-z0-9]{1,20}",
    ];
    proptest::collection::vec(token, 0..30).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn policy_loader_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        load(&bytes);
    }

    #[test]
    fn policy_loader_survives_tomlish_text(text in tomlish()) {
        load(text.as_bytes());
    }

    #[test]
    fn policy_loader_survives_mutations_of_a_valid_file(bytes in mutated(VALID_POLICY)) {
        load(&bytes);
    }

    #[test]
    fn durations_crons_and_zones_never_panic(
        duration in prop_oneof!["[0-9]{0,22}[a-zµ ]{0,8}", "[ -~]{0,24}"],
        cron in prop_oneof![
            "([0-9*/,LW#?-]{1,6} ){5,7}",
            "[0-9]{1,2} [0-9]{1,2} [0-9]{1,2} [0-9]{1,2} [0-9]{1,2} [0-7]",
            "[ -~]{0,30}",
        ],
        zone in prop_oneof!["[A-Za-z_/+-]{0,24}", Just("Europe/London".to_owned())],
    ) {
        let text = format!(
            "[[rule]]\nname = \"r\"\nmax_duration = {duration:?}\n[[rule.window]]\ncron = {cron:?}\nduration = {duration:?}\ntimezone = {zone:?}\n"
        );
        load(text.as_bytes());
    }

    #[test]
    fn number_normalization_is_total_and_idempotent(raw in "\\PC{0,24}") {
        let once = normalize_number(&raw);
        prop_assert_eq!(normalize_number(&once), once.clone());
        if once.chars().all(|c| c.is_ascii_digit()) && !once.is_empty() {
            prop_assert!(!once.contains('+'));
        } else if raw.is_ascii() {
            // Only full-width forms are folded in a value that is no number.
            prop_assert_eq!(once, raw.trim());
        }
    }

    #[test]
    fn a_valid_uuid_is_never_blank_or_a_path(raw in "\\PC{0,80}") {
        if let Ok(uuid) = CallUuid::parse(&raw) {
            let s = uuid.as_str();
            prop_assert!(!s.trim().is_empty() && s.len() <= 64);
            prop_assert!(!s.contains('/') && !s.contains('.') && !s.contains('?'));
        }
    }

    #[test]
    fn api_parsers_survive_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_call_list(&bytes);
        let _ = parse_call_detail(&bytes, &requested(), Tz::UTC);
        let _ = parse_cdr(&bytes, &requested(), Tz::UTC);
    }

    #[test]
    fn api_parsers_survive_mutated_answers(
        flat in mutated(FLAT),
        legacy in mutated(LEGACY),
        list in mutated(LIST),
    ) {
        for body in [&flat, &legacy] {
            // Whatever the damage, an accepted answer is about the call asked for.
            if let Ok(call) = parse_call_detail(body, &requested(), Tz::Asia__Kolkata) {
                prop_assert_eq!(call.uuid, requested());
            }
            if let Ok(cdr) = parse_cdr(body, &requested(), Tz::UTC) {
                prop_assert_eq!(cdr.uuid, requested());
            }
        }
        if let Ok(uuids) = parse_call_list(&list) {
            prop_assert!(uuids.iter().all(|u| !u.as_str().trim().is_empty()));
        }
    }

    #[test]
    fn api_parsers_survive_wrong_types_in_any_field(
        field in prop_oneof![
            Just("call_uuid"), Just("call_status"), Just("session_start"), Just("from"),
            Just("to"), Just("direction"), Just("answer_time"), Just("call_duration"),
            Just("parent_call_uuid"), Just("calls"),
        ],
        value in prop_oneof![
            Just(serde_json::json!(null)), Just(serde_json::json!(-1)),
            Just(serde_json::json!(1e308)), Just(serde_json::json!(u64::MAX)),
            Just(serde_json::json!([])), Just(serde_json::json!({})),
            Just(serde_json::json!("")), Just(serde_json::json!(true)),
            Just(serde_json::json!("9999-99-99 99:99:99")),
        ],
    ) {
        for base in [FLAT, LEGACY] {
            let mut doc: serde_json::Value = serde_json::from_str(base).unwrap();
            if let Some(entry) = doc.get_mut("calls").and_then(|c| c.get_mut(0)) {
                entry[field] = value.clone();
            } else {
                doc[field] = value.clone();
            }
            let body = doc.to_string();
            let _ = parse_call_detail(body.as_bytes(), &requested(), Tz::UTC);
            let _ = parse_cdr(body.as_bytes(), &requested(), Tz::UTC);
        }
    }

    #[test]
    fn timestamps_parse_or_refuse_in_every_zone(
        raw in prop_oneof![
            "[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?",
            "\\PC{0,32}",
        ],
        zone in prop_oneof![Just(Tz::UTC), Just(Tz::America__New_York), Just(Tz::Asia__Kolkata),
                            Just(Tz::Europe__London), Just(Tz::Pacific__Chatham)],
    ) {
        let _ = parse_timestamp(&raw, zone);
    }
}

#[test]
fn spring_forward_gap_and_fall_back_overlap_parse_without_panic() {
    // 02:30 does not exist in New York on 2026-03-08; 01:30 exists twice on 2026-11-01.
    let _ = parse_timestamp("2026-03-08 02:30:00", Tz::America__New_York);
    let _ = parse_timestamp("2026-11-01 01:30:00", Tz::America__New_York);
    let _ = parse_timestamp("262143-12-31 23:59:59", Tz::UTC);
}
