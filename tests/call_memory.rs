//! What one tracked call costs in memory: the `Call` value plus every heap
//! byte it keeps, for answers in both documented shapes as the simulator
//! writes them. Counted with a counting global allocator, not RSS, so the
//! figure is exact and does not depend on the machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use callwarden::call::{Call, CallUuid};
use callwarden::vobiz::parse_call_detail;

/// The budget per tracked call (the value and its heap).
const BUDGET: usize = 512;

/// Counts the live heap bytes and blocks of the current thread, so that
/// tests running beside this one do not disturb the count.
struct Counting;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static LIVE_BLOCKS: Cell<isize> = const { Cell::new(0) };
}

fn add(bytes: isize, blocks: isize) {
    // `try_with`: the thread-local may be gone while a thread exits.
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + bytes));
    let _ = LIVE_BLOCKS.try_with(|live| live.set(live.get() + blocks));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize, 1);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize), -1);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize, 0);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> (isize, isize) {
    (LIVE_BYTES.with(Cell::get), LIVE_BLOCKS.with(Cell::get))
}

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

/// A flat-shape answer, as `callwarden sim` writes it (compact JSON).
fn flat(i: usize) -> String {
    format!(
        concat!(
            r#"{{"api_id":"{api}","call_status":"in-progress","call_uuid":"{id}","caller_name":"","#,
            r#""direction":"outbound","from":"+1415555{from:04}","to":"+44{to}","request_uuid":"{id}","#,
            r#""session_start":"2026-06-11 16:03:28.{us:06}","stir_attestation":"Not Applicable","#,
            r#""stir_verification":"Not Applicable"}}"#
        ),
        api = uuid(i + 1_000_000),
        id = uuid(i),
        from = i % 10_000,
        to = 2_071_000_000 + i,
        us = i % 1_000_000,
    )
}

/// A legacy-shape answer, as `callwarden sim` writes it.
fn legacy(i: usize) -> String {
    format!(
        concat!(
            r#"{{"api_id":"{api}","calls":[{{"answer_time":"2026-06-11 16:03:33","#,
            r#""call_direction":"inbound","call_duration":75,"call_state":"ACTIVE","#,
            r#""call_uuid":"{id}","caller_name":"","conference_uuid":null,"end_time":null,"#,
            r#""from_number":"+91{from}","to_number":"+1415555{to:04}","#,
            r#""initiation_time":"2026-06-11 16:03:28","parent_call_uuid":null,"#,
            r#""hangup_cause_code":null,"hangup_cause_name":null,"hangup_source":null,"#,
            r#""bill_duration":null,"total_amount":null,"stir_verification":"Not Applicable","#,
            r#""stir_attestation":"Not Applicable","source_ip":"127.0.0.1"}}]}}"#
        ),
        api = uuid(i + 1_000_000),
        id = uuid(i),
        from = 9_000_000_000u64 + i as u64,
        to = i % 10_000,
    )
}

/// Parses `count` answers made by `body` and keeps the calls; returns the
/// heap bytes and blocks they hold, per call.
fn held_per_call(count: usize, body: impl Fn(usize) -> String) -> (usize, usize) {
    let inputs: Vec<(String, String)> = (0..count).map(|i| (body(i), uuid(i))).collect();
    let mut calls: Vec<Call> = Vec::with_capacity(count);
    let (bytes_before, blocks_before) = live();
    for (text, id) in &inputs {
        // The UUID as read from the live list: the call shares its text.
        let id = CallUuid::parse(id).expect("valid UUID");
        let call = parse_call_detail(text.as_bytes(), &id, chrono_tz::UTC).expect("parses");
        calls.push(call);
    }
    let (bytes_after, blocks_after) = live();
    assert_eq!(calls.len(), count);
    let per = |delta: isize| usize::try_from(delta).unwrap_or(0) / count;
    (
        per(bytes_after - bytes_before),
        per(blocks_after - blocks_before),
    )
}

fn report(shape: &str, (heap, blocks): (usize, usize)) -> usize {
    let value = std::mem::size_of::<Call>();
    let total = value + heap;
    println!(
        "{shape}: size_of::<Call>() = {value} B, heap held = {heap} B in {blocks} blocks, total {total} B per call"
    );
    total
}

#[test]
fn a_tracked_call_fits_its_memory_budget() {
    let flat = report("flat", held_per_call(1_000, flat));
    let legacy = report("legacy", held_per_call(1_000, legacy));
    assert!(flat <= BUDGET, "flat call takes {flat} B, over {BUDGET} B");
    assert!(
        legacy <= BUDGET,
        "legacy call takes {legacy} B, over {BUDGET} B"
    );
}
