//! JSON bodies the simulated API answers with: lists, the flat and legacy
//! live-call shapes, the CDR, errors and deliberately broken bodies.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use super::faults::{Endpoint, ErrorFormat, MalformedKind};
use super::state::{SimCall, SimStatus};
use crate::call::Shape;

/// `yyyy-MM-dd HH:mm:ss.ffffff` in `zone`.
pub fn micros(t: DateTime<Utc>, zone: Tz) -> String {
    t.with_timezone(&zone)
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

/// `yyyy-MM-dd HH:mm:ss` in `zone`, truncated to the whole second like the API.
pub fn seconds(t: DateTime<Utc>, zone: Tz) -> String {
    t.with_timezone(&zone)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// `{"api_id":..,"calls":[uuids]}` built straight into a string: with
/// 100,000 live calls, no intermediate `Value` or clone per call.
pub fn call_list<'a>(api_id: &str, uuids: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::with_capacity(64);
    let _ = write!(out, r#"{{"api_id":"{api_id}","calls":["#);
    for (i, uuid) in uuids.enumerate() {
        if i > 0 {
            out.push(',');
        }
        // UUIDs are validated at creation ([A-Za-z0-9_-]), so no escaping is needed.
        out.push('"');
        out.push_str(uuid);
        out.push('"');
    }
    out.push_str("]}");
    out
}

/// The live detail of `call` in its own shape.
pub fn detail(call: &SimCall, zone: Tz, now: DateTime<Utc>, api_id: &str) -> Value {
    match call.shape {
        Shape::Flat => flat(call, zone, api_id),
        Shape::Legacy => json!({ "api_id": api_id, "calls": [legacy_entry(call, zone, now)] }),
    }
}

fn flat(call: &SimCall, zone: Tz, api_id: &str) -> Value {
    let mut body = json!({
        "api_id": api_id,
        "call_status": call.status.as_str(),
        "call_uuid": call.uuid,
        "caller_name": call.caller_name,
        "direction": call.direction,
        "from": call.from,
        "to": call.to,
        "request_uuid": call.uuid,
        "session_start": micros(call.started_at, zone),
        "stir_attestation": "Not Applicable",
        "stir_verification": "Not Applicable",
    });
    if let Some(parent) = &call.parent_call_uuid {
        body["parent_call_uuid"] = json!(parent);
    }
    body
}

fn legacy_entry(call: &SimCall, zone: Tz, now: DateTime<Utc>) -> Value {
    let duration = call
        .answered_at
        .map(|at| (now - at).num_seconds().max(0))
        .unwrap_or(0);
    json!({
        "answer_time": call.answered_at.map(|t| seconds(t, zone)),
        "call_direction": call.direction,
        "call_duration": duration,
        "call_state": "ACTIVE",
        "call_uuid": call.uuid,
        "caller_name": call.caller_name,
        "conference_uuid": null,
        "end_time": null,
        "from_number": call.from,
        "to_number": call.to,
        "initiation_time": seconds(call.started_at, zone),
        "parent_call_uuid": call.parent_call_uuid,
        "hangup_cause_code": null,
        "hangup_cause_name": null,
        "hangup_source": null,
        "bill_duration": null,
        "total_amount": null,
        "stir_verification": "Not Applicable",
        "stir_attestation": "Not Applicable",
        "source_ip": "127.0.0.1",
    })
}

/// The final record of an ended call.
pub fn cdr(call: &SimCall, zone: Tz, api_id: &str) -> Value {
    let end = call.ended_at.unwrap_or(call.started_at);
    let bill = call
        .answered_at
        .map(|at| (end - at).num_seconds().max(0))
        .unwrap_or(0);
    let source = match call.ended_by {
        Some(super::state::EndedBy::Caller) => "Caller",
        _ => "API",
    };
    json!({
        "api_id": api_id,
        "answer_time": call.answered_at.map(|t| seconds(t, zone)),
        "bill_duration": bill,
        "billed_duration": (bill + 59) / 60 * 60,
        "call_direction": call.direction,
        "call_duration": (end - call.started_at).num_seconds().max(0),
        "call_uuid": call.uuid,
        "caller_name": call.caller_name,
        "end_time": seconds(end, zone),
        "from_number": call.from,
        "hangup_cause_code": 16,
        "hangup_cause_name": "NORMAL_CLEARING",
        "hangup_source": source,
        "initiation_time": seconds(call.started_at, zone),
        "parent_call_uuid": call.parent_call_uuid,
        "to_number": call.to,
        "total_amount": "0.00000",
        "total_rate": "0.00500",
    })
}

/// An error body in the requested format (`None` for no body).
pub fn error(api_id: &str, status: u16, message: &str, format: ErrorFormat) -> Option<String> {
    match format {
        ErrorFormat::String => Some(json!({ "api_id": api_id, "error": message }).to_string()),
        ErrorFormat::Structured => Some(
            json!({
                "status": "error",
                "error": { "code": format!("E{status}"), "message": message, "details": {} },
                "timestamp": Utc::now().to_rfc3339(),
                "requestId": api_id,
            })
            .to_string(),
        ),
        ErrorFormat::None => None,
    }
}

/// The reason phrase the simulator uses as an error message.
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "invalid request",
        401 => "authentication failed",
        402 => "insufficient balance",
        403 => "forbidden",
        404 => "not found",
        405 => "method not allowed",
        409 => "conflict",
        422 => "unprocessable entity",
        429 => "too many requests",
        500 => "internal server error",
        502 => "bad gateway",
        503 => "service unavailable",
        _ => "error",
    }
}

/// A broken 200 body for `endpoint`; `normal` is what would have been sent.
pub fn malformed(
    kind: MalformedKind,
    endpoint: Endpoint,
    normal: Option<&str>,
    api_id: &str,
) -> (String, &'static str) {
    match kind {
        MalformedKind::Truncated => {
            let whole = normal
                .map(str::to_owned)
                .unwrap_or_else(|| json!({ "api_id": api_id, "message": "ok" }).to_string());
            let mut cut = whole.len() / 2;
            while !whole.is_char_boundary(cut) {
                cut -= 1;
            }
            (whole[..cut].to_owned(), "application/json")
        }
        MalformedKind::Garbage => (
            "<html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>"
                .to_owned(),
            "text/html",
        ),
        MalformedKind::WrongTypes => {
            let body = match endpoint {
                Endpoint::List => json!({ "api_id": api_id, "calls": api_id }),
                _ => json!({
                    "api_id": 7,
                    "call_uuid": 12345,
                    "call_status": ["in-progress"],
                    "session_start": 1_700_000_000,
                    "calls": {"unexpected": true},
                }),
            };
            (body.to_string(), "application/json")
        }
    }
}

/// Whether `status` is listed by `?status=` `filter`.
pub fn listed(status: SimStatus, filter: &str) -> bool {
    match filter {
        "live" => status.is_live(),
        "queued" => status.is_queued(),
        _ => false,
    }
}
