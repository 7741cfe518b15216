//! Allocation: pardon's thread-cache fast path against the system allocator,
//! for the 16-byte two-pointer node and a 64-byte object; and the whole
//! mutator path (`Mutator::alloc_raw`: pacer check, no-preempt region,
//! cache) that an embedder calls.

use criterion::{criterion_group, criterion_main, Criterion};
use pardon::{Config, Heap, ThreadCache, TypeDesc};

#[path = "common/mod.rs"]
mod common;

fn alloc(c: &mut Criterion) {
    let heap = common::raw_heap();
    let pair = common::pair(&heap);
    let obj64 = heap
        .register_type(&TypeDesc {
            name: "Obj64",
            size: 64,
            align: 8,
            pointer_words: &[0],
        })
        .unwrap();
    let leaf16 = heap
        .register_type(&TypeDesc {
            name: "Leaf16",
            size: 16,
            align: 8,
            pointer_words: &[],
        })
        .unwrap();
    let mut g = c.benchmark_group("alloc");
    // Only the allocations are timed; after each batch of 10,000 a collection
    // (untimed) frees them all, so the heap does not grow without bound.
    for (name, ty) in [
        ("pardon 16B", pair),
        ("pardon 16B no-scan", leaf16),
        ("pardon 64B", obj64),
    ] {
        g.throughput(criterion::Throughput::Elements(10_000));
        g.bench_function(name, |b| {
            let mut cache = ThreadCache::new();
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let t = std::time::Instant::now();
                    for _ in 0..10_000 {
                        std::hint::black_box(cache.alloc(&heap, ty).unwrap());
                    }
                    total += t.elapsed();
                    heap.collect_with(&mut [&mut cache], |_| {});
                }
                total
            })
        });
    }
    {
        // Pacing off: the untimed collection after each batch is the only one.
        let heap = Heap::new(Config {
            gc_percent: None,
            ..Config::default()
        })
        .unwrap();
        let ty = heap.register_type(&common::PAIR).unwrap();
        let m = heap.attach().unwrap();
        g.throughput(criterion::Throughput::Elements(10_000));
        g.bench_function("pardon Mutator::alloc_raw 16B", |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let t = std::time::Instant::now();
                    for _ in 0..10_000 {
                        std::hint::black_box(m.alloc_raw(ty).unwrap());
                    }
                    total += t.elapsed();
                    m.collect().unwrap();
                }
                total
            })
        });
    }
    g.bench_function("Box<[u64; 2]> 16B", |b| {
        b.iter(|| {
            for _ in 0..10_000 {
                std::hint::black_box(Box::new([0u64; 2]));
            }
        })
    });
    g.bench_function("Box<[u64; 8]> 64B", |b| {
        b.iter(|| {
            for _ in 0..10_000 {
                std::hint::black_box(Box::new([0u64; 8]));
            }
        })
    });
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = alloc }
criterion_main!(benches);
