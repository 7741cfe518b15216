//! Root gathering per parked goroutine (issue 21's target: at most 200 ns
//! for a goroutine with 4 shadow frames): full collections of a heap over
//! `N` parked goroutines (and two call-free loops), timing only the root
//! gathering each collection reports (`CycleStats::roots`), per goroutine
//! through criterion's throughput. The collections' marking is not timed.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pardon_bench::goroutine_heap::{Options, Scene};

#[path = "common/mod.rs"]
mod common;

fn roots(c: &mut Criterion) {
    let mut g = c.benchmark_group("goroutine-roots");
    for parked in [1_000usize, 10_000] {
        let o = Options {
            procs: 2,
            workers: 2,
            parked,
            frames: 4,
            samples: 0,
            slice: Duration::from_millis(10),
            concurrent: false,
        };
        let scene = Scene::new(&o).expect("scene");
        let m = scene.heap().attach().expect("attach");
        g.throughput(Throughput::Elements(parked as u64));
        g.bench_function(format!("{parked}-parked-4-frames"), |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    let c = m.collect().expect("collect");
                    assert!(c.suspended_tasks >= parked);
                    t += c.roots;
                }
                t
            })
        });
        drop(m);
        drop(scene);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = roots
}
criterion_main!(benches);
