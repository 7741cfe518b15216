//! Marking and sweeping: a complete binary tree of 2^21 - 1 16-byte nodes
//! (the binary-trees shape) marked from its root by one thread and by two;
//! the same tree of 24-byte nodes, what an object header word would cost on
//! that shape (the layout choice in docs/design.md); and a sweep of 2^17
//! dead nodes. Each mark iteration also finishes the sweep of the previous
//! cycle (all of the tree's spans), as a collection does.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pardon::{RawHeap, ThreadCache, Type};

#[path = "common/mod.rs"]
mod common;

fn tree(heap: &RawHeap, cache: &mut ThreadCache, ty: Type, depth: u32) -> usize {
    let n = cache.alloc(heap, ty).unwrap().as_ptr() as *mut usize;
    if depth > 0 {
        let l = tree(heap, cache, ty, depth - 1);
        let r = tree(heap, cache, ty, depth - 1);
        // SAFETY: `n` is a fresh 16-byte node; words 0 and 1 are its children.
        unsafe {
            *n = l;
            *n.add(1) = r;
        }
    }
    n as usize
}

fn mark_sweep(c: &mut Criterion) {
    let mut g = c.benchmark_group("gc");
    g.sample_size(10);
    let depth = 20;
    let nodes = (1u64 << (depth + 1)) - 1;
    for (name, size, workers) in [
        ("mark 2^21 nodes, 16 B (heap bits), 1 worker", 16, 1),
        ("mark 2^21 nodes, 16 B (heap bits), 2 workers", 16, 2),
        ("mark 2^21 nodes, 24 B (as with a header), 1 worker", 24, 1),
    ] {
        let heap = common::raw_heap_marking_with(workers);
        let ty = heap
            .register_type(&pardon::TypeDesc {
                name: "Node",
                size,
                align: 8,
                pointer_words: &[0, 1],
            })
            .unwrap();
        let mut cache = ThreadCache::new();
        let root = tree(&heap, &mut cache, ty, depth);
        g.throughput(Throughput::Elements(nodes));
        g.bench_function(name, |b| {
            b.iter(|| {
                let st = heap.collect_with(&mut [&mut cache], |m| {
                    m.mark_word(root);
                });
                assert_eq!(st.objects as u64, nodes);
            })
        });
    }
    let heap = common::raw_heap();
    let ty = common::pair(&heap);
    let dead = 1u64 << 17;
    g.throughput(Throughput::Bytes(dead * 16));
    g.bench_function("sweep 2^17 dead 16 B nodes", |b| {
        b.iter_batched(
            || {
                let mut c2 = ThreadCache::new();
                for _ in 0..dead {
                    std::hint::black_box(c2.alloc(&heap, ty).unwrap());
                }
                heap.collect_with(&mut [&mut c2], |_| {});
            },
            |_| heap.finish_sweep(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = mark_sweep }
criterion_main!(benches);
