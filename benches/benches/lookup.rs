//! The conservative oracle: `find_object` on interior pointers of live
//! objects, on free slots, and on addresses outside the arena.

use criterion::{criterion_group, criterion_main, Criterion};
use pardon::ThreadCache;

#[path = "common/mod.rs"]
mod common;

fn lookup(c: &mut Criterion) {
    let heap = common::raw_heap();
    let pair = common::pair(&heap);
    let mut cache = ThreadCache::new();
    let objs: Vec<usize> = (0..100_000)
        .map(|_| cache.alloc(&heap, pair).unwrap().as_ptr() as usize)
        .collect();
    let probes: Vec<usize> = objs.iter().step_by(7).map(|a| a + 8).collect();
    let mut g = c.benchmark_group("lookup");
    g.bench_function("interior pointer hit (x14286)", |b| {
        b.iter(|| {
            probes
                .iter()
                .filter(|&&p| heap.find_object(p).is_some())
                .count()
        })
    });
    let outside: Vec<usize> = (0..probes.len()).map(|i| 0x1000 + i * 64).collect();
    g.bench_function("outside the arena (x14286)", |b| {
        b.iter(|| {
            outside
                .iter()
                .filter(|&&p| heap.find_object(p).is_some())
                .count()
        })
    });
    let (lo, hi) = heap.arena_range();
    let unused: Vec<usize> = (0..probes.len())
        .map(|i| hi - 8 - i * 64)
        .filter(|&a| a > lo)
        .collect();
    g.bench_function("arena, unused pages (x14286)", |b| {
        b.iter(|| {
            unused
                .iter()
                .filter(|&&p| heap.find_object(p).is_some())
                .count()
        })
    });
    g.finish();
    cache.flush(&heap);
}

criterion_group! { name = benches; config = common::config(); targets = lookup }
criterion_main!(benches);
