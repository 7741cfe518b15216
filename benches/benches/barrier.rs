//! The cost of a reference store (`Member::set`) with no cycle marking:
//! on a plain heap (a release store), on a generational heap (the card
//! mark first) and on a concurrent heap (the deletion barrier's off path:
//! a swap, a fence and one load and branch on the phase word). And
//! `Mutator::store_word`, the raw form, which adds the checked lookup.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pardon::{gc_object, Config, Heap, Member};

#[path = "common/mod.rs"]
mod common;

gc_object! {
    struct Node {
        next: Member<Node>,
        other: Member<Node>,
    }
}

fn barrier(c: &mut Criterion) {
    let mut g = c.benchmark_group("member-set");
    g.throughput(criterion::Throughput::Elements(1000));
    for (name, generational, concurrent) in [
        ("plain", false, false),
        ("generational", true, false),
        ("concurrent, not marking", false, true),
    ] {
        let heap = Heap::new(Config {
            arena_size: 1 << 30,
            gc_percent: None,
            generational,
            concurrent,
            ..Config::default()
        })
        .unwrap();
        let m = heap.attach().unwrap();
        let a = m.alloc::<Node>().unwrap();
        let b = m.alloc::<Node>().unwrap();
        let c2 = m.alloc::<Node>().unwrap();
        g.bench_function(name, |bench| {
            bench.iter(|| {
                for i in 0..1000 {
                    let v = if i & 1 == 0 { &b } else { &c2 };
                    black_box(&a).next.set(Some(black_box(v)));
                }
            })
        });
        if name != "generational" {
            let raw = a.addr();
            let (bv, cv) = (b.addr(), c2.addr());
            g.bench_function(format!("store_word, {name}"), |bench| {
                bench.iter(|| {
                    for i in 0..1000 {
                        let v = if i & 1 == 0 { bv } else { cv };
                        // SAFETY: word 0 of a Node, its `next` Member, gets
                        // the address of another live Node.
                        unsafe { m.store_word(black_box(raw), 0, v) }.unwrap();
                    }
                })
            });
        }
    }
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = barrier }
criterion_main!(benches);
