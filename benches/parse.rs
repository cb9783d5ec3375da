//! Response-parsing benchmarks: the live list of 100,000 UUIDs, and one call
//! detail in each documented shape (flat and legacy).

use std::hint::black_box;
use std::time::Duration;

use callwarden::call::CallUuid;
use callwarden::vobiz::{parse_call_detail, parse_call_list};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn uuid(i: usize) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        i,
        i % 0xffff,
        i % 0xfff,
        (i * 7) % 0xfff,
        i * 2_654_435_761
    )
}

fn list_body(n: usize) -> Vec<u8> {
    let uuids: Vec<String> = (0..n).map(|i| format!("\"{}\"", uuid(i))).collect();
    format!(
        r#"{{"api_id":"c9527676-5839-11e1-86da-6ff39efcb949","calls":[{}]}}"#,
        uuids.join(",")
    )
    .into_bytes()
}

const FLAT: &str = r#"{"api_id": "c9cab827-d7e6-4ab8-b521-f29e593a1c26", "call_status": "in-progress",
 "call_uuid": "2ded13fe-4f9b-4958-9bfb-093ea2f29f91", "caller_name": "",
 "direction": "outbound", "from": "919262171438", "to": "919148227303",
 "request_uuid": "2ded13fe-4f9b-4958-9bfb-093ea2f29f91",
 "session_start": "2026-06-11 16:03:28.586839",
 "stir_attestation": "Not Applicable", "stir_verification": "Not Applicable"}"#;

const LEGACY: &str = r#"{"api_id": "c8b427f6-58ce-11e1-86da-adf28403fe48",
 "calls": [{"answer_time": "2014-10-15 09:03:43", "call_direction": "outbound",
   "call_duration": 180, "call_state": "ACTIVE", "call_uuid": "97ceeb52-58b6-11e1-86da-77300b68f8bb",
   "conference_uuid": null, "end_time": null, "from_number": "+14156667777",
   "to_number": "+14156667778", "initiation_time": "2014-10-15 09:03:38",
   "parent_call_uuid": null, "hangup_cause_code": null, "hangup_cause_name": null,
   "hangup_source": null, "bill_duration": null, "total_amount": null,
   "stir_verification": "verified", "stir_attestation": "A", "source_ip": "1.1.1.1"}]}"#;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));

    let body = list_body(100_000);
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("live list, 100k UUIDs", |b| {
        b.iter(|| black_box(parse_call_list(black_box(&body)).unwrap().len()))
    });

    group.throughput(Throughput::Elements(1));
    let flat = CallUuid::parse("2ded13fe-4f9b-4958-9bfb-093ea2f29f91").unwrap();
    group.bench_function("call detail, flat shape", |b| {
        b.iter(|| {
            black_box(parse_call_detail(black_box(FLAT.as_bytes()), &flat, chrono_tz::UTC).unwrap())
        })
    });
    let legacy = CallUuid::parse("97ceeb52-58b6-11e1-86da-77300b68f8bb").unwrap();
    group.bench_function("call detail, legacy shape", |b| {
        b.iter(|| {
            black_box(
                parse_call_detail(black_box(LEGACY.as_bytes()), &legacy, chrono_tz::UTC).unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
