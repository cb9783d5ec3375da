//! Fault injection: the `POST /_sim/faults` body, its validation, and the
//! per-request decision (outage, resets, random errors, scripted answers).

use std::collections::VecDeque;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// The fault set; every field is optional and `{}` clears all faults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Delay before every API answer, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Share of API requests (0..=1) answered with `error_status`.
    #[serde(default)]
    pub error_rate: f64,
    /// Status for `error_rate` (default 500).
    pub error_status: Option<u16>,
    /// Scripted answers, consumed in order, then normal behaviour.
    #[serde(default)]
    pub scripts: Vec<Script>,
    /// Every API request answers 503 for this many seconds from now.
    pub outage_s: Option<f64>,
    /// Share of API requests (0..=1) whose connection is dropped unanswered.
    #[serde(default)]
    pub reset_rate: f64,
    /// Offset of the `Date` header from the simulator's clock, in seconds.
    #[serde(default)]
    pub date_skew_s: i64,
    /// More offset of the `Date` header, in milliseconds (added to
    /// `date_skew_s`), so the server's second can start at any phase.
    #[serde(default)]
    pub date_skew_ms: i64,
    /// IANA zone the zone-less timestamps are rendered in (default UTC).
    pub timestamp_zone: Option<String>,
}

/// Which API operation a script applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `GET /Call/`.
    List,
    /// `GET /Call/{uuid}/`.
    Detail,
    /// `DELETE /Call/{uuid}/`.
    Hangup,
    /// `POST` or `DELETE /Call/{uuid}/Speak/`.
    Speak,
}

/// A sequence of scripted answers for the requests it matches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// HTTP method to match (any when absent).
    pub method: Option<String>,
    /// Operation to match (any when absent).
    pub endpoint: Option<Endpoint>,
    /// Call UUID to match (any when absent).
    pub uuid: Option<String>,
    /// Answers, first one first.
    pub responses: VecDeque<Scripted>,
}

/// One scripted answer: a bare status, or an object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scripted {
    /// Answer with this status (a 2xx still performs the operation).
    Status(u16),
    /// A richer answer.
    Action(ScriptedAction),
}

/// A scripted answer with options; exactly one of `status`, `malformed`, `reset`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedAction {
    /// Answer with this status.
    pub status: Option<u16>,
    /// `Retry-After` header value to send with it.
    pub retry_after: Option<String>,
    /// Shape of the error body (default `string`).
    pub error_format: Option<ErrorFormat>,
    /// Answer 200 with a broken body (the operation is still performed).
    pub malformed: Option<MalformedKind>,
    /// Drop the connection without an answer.
    pub reset: Option<bool>,
    /// With `reset`: perform the operation first, then drop the connection
    /// (the answer is lost, e.g. a DELETE that did hang up).
    pub act_first: Option<bool>,
}

/// How a scripted error body looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorFormat {
    /// `{"api_id", "error": "..."}` as the SDKs read it.
    #[default]
    String,
    /// `{"status":"error","error":{"code","message","details"},...}` from the error page.
    Structured,
    /// No body at all.
    None,
}

/// A kind of broken 200 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedKind {
    /// The normal JSON cut in half.
    Truncated,
    /// An HTML page.
    Garbage,
    /// JSON whose fields have the wrong types.
    WrongTypes,
}

/// What to do with one request before (or instead of) normal handling.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Behave normally.
    Normal,
    /// Drop the connection.
    Reset,
    /// Answer this error.
    Fail {
        /// Status code.
        status: u16,
        /// `Retry-After` header.
        retry_after: Option<String>,
        /// Body format.
        format: ErrorFormat,
    },
    /// Behave normally, but answer this 2xx status on success.
    Succeed(u16),
    /// Behave normally, but answer 200 with a broken body.
    Malformed(MalformedKind),
    /// Behave normally, then drop the connection instead of answering.
    ResetAfter,
}

/// The faults in force, with their derived state.
#[derive(Debug, Clone)]
pub struct ActiveFaults {
    /// The spec as set.
    pub spec: FaultSpec,
    /// End of the outage, if one is in force.
    pub outage_until: Option<DateTime<Utc>>,
    /// Zone for rendering timestamps.
    pub zone: Tz,
    /// Scripts still holding answers.
    scripts: Vec<Script>,
}

impl Default for ActiveFaults {
    fn default() -> Self {
        Self {
            spec: FaultSpec::default(),
            outage_until: None,
            zone: Tz::UTC,
            scripts: Vec::new(),
        }
    }
}

impl ActiveFaults {
    /// Validates `spec` and starts its clocks at `now`.
    pub fn from_spec(spec: FaultSpec, now: DateTime<Utc>) -> Result<Self, String> {
        for (name, rate) in [
            ("error_rate", spec.error_rate),
            ("reset_rate", spec.reset_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        if let Some(status) = spec.error_status {
            if !(400..=599).contains(&status) {
                return Err("error_status must be a 4xx or 5xx status".to_owned());
            }
        }
        let zone = match &spec.timestamp_zone {
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| format!("unknown timestamp_zone {name:?}"))?,
            None => Tz::UTC,
        };
        let outage_until = match spec.outage_s {
            Some(s) if s.is_finite() && (0.0..1e9).contains(&s) => {
                Some(now + TimeDelta::microseconds((s * 1e6) as i64))
            }
            Some(_) => return Err("outage_s must be between 0 and 1e9 seconds".to_owned()),
            None => None,
        };
        for script in &spec.scripts {
            for answer in &script.responses {
                validate(answer)?;
            }
        }
        Ok(Self {
            scripts: spec.scripts.clone(),
            spec,
            outage_until,
            zone,
        })
    }

    /// Faults that hit every API request before authentication: outage, resets, random errors.
    pub fn before_auth(&self, rng: &mut StdRng, now: DateTime<Utc>) -> Plan {
        if self.outage_until.is_some_and(|until| now < until) {
            return Plan::Fail {
                status: 503,
                retry_after: None,
                format: ErrorFormat::String,
            };
        }
        if self.spec.reset_rate > 0.0 && rng.random_bool(self.spec.reset_rate) {
            return Plan::Reset;
        }
        if self.spec.error_rate > 0.0 && rng.random_bool(self.spec.error_rate) {
            return Plan::Fail {
                status: self.spec.error_status.unwrap_or(500),
                retry_after: None,
                format: ErrorFormat::String,
            };
        }
        Plan::Normal
    }

    /// Consumes the next scripted answer for this request, if a script matches.
    pub fn scripted(&mut self, method: &str, endpoint: Endpoint, uuid: Option<&str>) -> Plan {
        let found = self.scripts.iter_mut().find(|s| {
            !s.responses.is_empty()
                && s.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && s.endpoint.is_none_or(|e| e == endpoint)
                && s.uuid.as_deref().is_none_or(|u| Some(u) == uuid)
        });
        let Some(answer) = found.and_then(|s| s.responses.pop_front()) else {
            return Plan::Normal;
        };
        match answer {
            Scripted::Status(status) => status_plan(status, None, ErrorFormat::String),
            Scripted::Action(action) => {
                if action.reset == Some(true) && action.act_first == Some(true) {
                    Plan::ResetAfter
                } else if action.reset == Some(true) {
                    Plan::Reset
                } else if let Some(kind) = action.malformed {
                    Plan::Malformed(kind)
                } else {
                    status_plan(
                        action.status.unwrap_or(500),
                        action.retry_after,
                        action.error_format.unwrap_or_default(),
                    )
                }
            }
        }
    }
}

fn status_plan(status: u16, retry_after: Option<String>, format: ErrorFormat) -> Plan {
    if (200..300).contains(&status) {
        Plan::Succeed(status)
    } else {
        Plan::Fail {
            status,
            retry_after,
            format,
        }
    }
}

fn validate(answer: &Scripted) -> Result<(), String> {
    let status_ok = |s: u16| {
        if (200..=599).contains(&s) {
            Ok(())
        } else {
            Err(format!("scripted status {s} is not between 200 and 599"))
        }
    };
    match answer {
        Scripted::Status(s) => status_ok(*s),
        Scripted::Action(a) => {
            let given = [
                a.status.is_some(),
                a.malformed.is_some(),
                a.reset == Some(true),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if given != 1 {
                return Err(
                    "a scripted answer needs exactly one of status, malformed, reset".to_owned(),
                );
            }
            if a.act_first.is_some() && a.reset != Some(true) {
                return Err("act_first goes with reset".to_owned());
            }
            if let Some(value) = &a.retry_after {
                if value.contains(['\r', '\n']) {
                    return Err("retry_after must be one line".to_owned());
                }
            }
            a.status.map_or(Ok(()), status_ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn spec(json: &str) -> FaultSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn scripts_are_consumed_in_order_then_normal() {
        let now = Utc::now();
        let mut faults = ActiveFaults::from_spec(
            spec(r#"{"scripts":[{"endpoint":"hangup","responses":[500,{"status":429,"retry_after":"2"},204]}]}"#),
            now,
        )
        .unwrap();
        assert_eq!(faults.scripted("GET", Endpoint::List, None), Plan::Normal);
        assert!(matches!(
            faults.scripted("DELETE", Endpoint::Hangup, Some("a")),
            Plan::Fail { status: 500, .. }
        ));
        assert_eq!(
            faults.scripted("DELETE", Endpoint::Hangup, Some("a")),
            Plan::Fail {
                status: 429,
                retry_after: Some("2".into()),
                format: ErrorFormat::String
            }
        );
        assert_eq!(
            faults.scripted("DELETE", Endpoint::Hangup, Some("a")),
            Plan::Succeed(204)
        );
        assert_eq!(
            faults.scripted("DELETE", Endpoint::Hangup, Some("a")),
            Plan::Normal
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        let now = Utc::now();
        for bad in [
            r#"{"error_rate":2}"#,
            r#"{"timestamp_zone":"Mars/Base"}"#,
            r#"{"outage_s":-1}"#,
            r#"{"scripts":[{"responses":[99]}]}"#,
            r#"{"scripts":[{"responses":[{"status":500,"reset":true}]}]}"#,
        ] {
            assert!(ActiveFaults::from_spec(spec(bad), now).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<FaultSpec>(r#"{"latency":1}"#).is_err());
    }

    #[test]
    fn outage_and_rates() {
        let now = Utc::now();
        let mut rng = StdRng::seed_from_u64(1);
        let faults = ActiveFaults::from_spec(spec(r#"{"outage_s":10}"#), now).unwrap();
        assert!(matches!(
            faults.before_auth(&mut rng, now),
            Plan::Fail { status: 503, .. }
        ));
        assert_eq!(
            faults.before_auth(&mut rng, now + TimeDelta::seconds(11)),
            Plan::Normal
        );
        let faults = ActiveFaults::from_spec(spec(r#"{"reset_rate":1}"#), now).unwrap();
        assert_eq!(faults.before_auth(&mut rng, now), Plan::Reset);
        let faults =
            ActiveFaults::from_spec(spec(r#"{"error_rate":1,"error_status":502}"#), now).unwrap();
        assert!(matches!(
            faults.before_auth(&mut rng, now),
            Plan::Fail { status: 502, .. }
        ));
    }
}
