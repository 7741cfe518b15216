//! Shared helpers for the criterion benches (included with `#[path]`).

#![allow(dead_code)]

use std::time::Duration;

use criterion::Criterion;
use pardon::{Config, RawHeap, Type, TypeDesc};

/// Short runs: this machine is small and shared; the suite is for trends.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

/// A raw heap with a large arena and no pacer.
pub fn raw_heap() -> RawHeap {
    raw_heap_marking_with(pardon::default_mark_workers())
}

/// A raw heap with a large arena, no pacer and `workers` marking threads.
pub fn raw_heap_marking_with(workers: usize) -> RawHeap {
    RawHeap::new(Config {
        arena_size: 8 << 30,
        gc_percent: None,
        mark_workers: workers,
        ..Config::default()
    })
    .unwrap()
}

/// The binary-trees node: 16 bytes, two pointers.
/// The 16-byte two-pointer node.
pub const PAIR: TypeDesc<'static> = TypeDesc {
    name: "Pair",
    size: 16,
    align: 8,
    pointer_words: &[0, 1],
};

pub fn pair(heap: &RawHeap) -> Type {
    heap.register_type(&PAIR).unwrap()
}
