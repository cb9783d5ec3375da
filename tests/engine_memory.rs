//! What the engine holds per tracked call: the call itself plus every map,
//! set and timer entry the engine keeps for it. The real engine tracks
//! calls from the in-process simulator; the heap it frees when it stops,
//! counted with a counting global allocator (not RSS, so the figure is
//! exact and does not depend on the machine), divided by the calls.
//!
//! One test in this binary: the counter is process-wide (the simulator and
//! the memory writer run on threads of their own), so nothing may run
//! beside it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use callwarden::audit::AuditLog;
use callwarden::vobiz::Client;
use common::calls::outbound;

use common::engine::{settings, start_on, wait_for};
use common::{add_calls, default_sim};

/// The budget per tracked call: the `Call` (about 380 bytes with its
/// shared pointer, see tests/call_memory.rs) and the engine's bookkeeping
/// around it.
const BUDGET: isize = 1_024;

/// The two fleets: the engine's fixed costs (client, connections, policy,
/// channels) cancel out of the difference. Both fill their hash tables to
/// the same share (3,000 and 6,000 calls in 4,096 and 8,192 buckets), so
/// the difference is what a call costs at that fill, not a step of growth.
const FLEETS: [usize; 2] = [3_000, 6_000];

/// Every call gets a winning rule and a hangup timer, as in production;
/// the limit is far enough away that none falls due during the test.
const POLICY: &str = r#"
[[rule]]
name = "limit-1h"
max_duration = "1h"
measure_from = "start"
[rule.match]
direction = ["outbound"]
"#;

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Tracks every call of `sim` (`calls` of them) with a fresh engine, waits
/// until they are read and timed and the start-up is over, stops the engine
/// and returns the heap it freed from what it kept.
async fn freed_by_engine(sim: &callwarden::sim::SimHandle, calls: usize) -> isize {
    // The client outlives the engine: its connection buffers (which grow
    // with the size of the list answer, up to a cap) are not the engine's.
    let client = Arc::new(Client::new(common::client_config(sim)).expect("client"));
    let state = tempfile::tempdir().expect("tempdir");
    let audit = AuditLog::open(state.path()).expect("audit");
    let running = start_on(Arc::clone(&client), POLICY, settings(), state, audit);
    let status = running.status.clone();
    let settled = wait_for(Duration::from_secs(300), || {
        let s = status.borrow();
        s.tracked_calls == calls && s.pending_details == 0 && s.next_deadlines.len() == 20
    })
    .await;
    assert!(settled, "the engine tracks every call: {:?}", {
        let s = status.borrow();
        (s.tracked_calls, s.pending_details)
    });
    // Two more polls, so that nothing of the start-up (reads in flight,
    // their queue) is held.
    let mut polls = status.clone();
    for _ in 0..2 {
        let seen = polls.borrow().last_poll_ok;
        tokio::time::timeout(
            Duration::from_secs(60),
            polls.wait_for(|s| s.last_poll_ok != seen),
        )
        .await
        .expect("the engine keeps polling")
        .expect("the engine runs");
    }
    // What the engine keeps: the least the heap holds over three polls.
    // Everything else (a list answer being handled, the call memory being
    // written on its own thread, a clock probe) is freed again, so only
    // adds to some samples.
    let mut held = isize::MAX;
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        held = held.min(LIVE_BYTES.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status.borrow().tracked_calls, calls, "no call ended");
    drop((status, polls));
    let _state = running.stop().await;
    let freed = held - LIVE_BYTES.load(Ordering::Relaxed);
    drop(client);
    freed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_holds_at_most_a_kilobyte_per_tracked_call() {
    let sim = default_sim();
    let mut freed = Vec::new();
    let mut placed = 0;
    for fleet in FLEETS {
        let calls: Vec<Value> = (placed..fleet)
            .map(|i| outbound(60.0, &format!("+4420710{i:05}")))
            .collect();
        for chunk in calls.chunks(1_000) {
            add_calls(&sim, Value::Array(chunk.to_vec())).await;
        }
        placed = fleet;
        freed.push(freed_by_engine(&sim, fleet).await);
    }
    let per_call = (freed[1] - freed[0]) / (FLEETS[1] - FLEETS[0]) as isize;
    println!(
        "the engine freed {} bytes at {} calls and {} at {}: {per_call} bytes per tracked call",
        freed[0], FLEETS[0], freed[1], FLEETS[1]
    );
    assert!(
        per_call <= BUDGET,
        "{per_call} bytes per tracked call, over the budget of {BUDGET}"
    );
    assert!(
        per_call > 300,
        "{per_call} bytes per call: less than the call itself, so the count missed the engine"
    );
}
