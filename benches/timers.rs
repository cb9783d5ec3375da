//! Deadline-queue benchmarks (`engine::timers::TimerQueue`) at 100,000
//! entries: filling it, rescheduling every key, popping everything in order,
//! and the breaker's range count.

use std::hint::black_box;
use std::time::Duration;

use callwarden::call::CallUuid;
use callwarden::engine::timers::TimerQueue;
use chrono::{DateTime, TimeDelta, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const N: usize = 100_000;

fn keys() -> Vec<CallUuid> {
    (0..N)
        .map(|i| CallUuid::parse(&format!("{i:08x}-0000-4000-a000-{:012x}", i * 31)).unwrap())
        .collect()
}

fn t0() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(20_000)
}

/// Deadlines spread over an hour in a scrambled order, as calls arrive.
fn at(i: usize) -> DateTime<Utc> {
    t0() + TimeDelta::milliseconds(((i * 2_654_435_761) % 3_600_000) as i64)
}

fn filled(keys: &[CallUuid]) -> TimerQueue<CallUuid> {
    let mut q = TimerQueue::default();
    for (i, key) in keys.iter().enumerate() {
        q.schedule(key.clone(), at(i));
    }
    q
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("timers");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(N as u64));

    group.bench_function("schedule 100k new keys", |b| {
        b.iter(|| black_box(filled(&keys).len()))
    });
    group.bench_function("reschedule 100k keys (queue of 100k)", |b| {
        b.iter_batched(
            || filled(&keys),
            |mut q| {
                for (i, key) in keys.iter().enumerate() {
                    q.schedule(key.clone(), at(i + 1));
                }
                q
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("pop_due all 100k in order", |b| {
        b.iter_batched(
            || filled(&keys),
            |mut q| black_box(q.pop_due(t0() + TimeDelta::hours(2)).len()),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("cancel 100k keys", |b| {
        b.iter_batched(
            || filled(&keys),
            |mut q| {
                for key in &keys {
                    q.cancel(key);
                }
                q
            },
            BatchSize::LargeInput,
        )
    });

    group.throughput(Throughput::Elements(1));
    let q = filled(&keys);
    group.bench_function("next_at + count_until (breaker) at 100k", |b| {
        b.iter(|| {
            black_box(q.next_at());
            black_box(q.count_until(t0() + TimeDelta::seconds(5), 101))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
