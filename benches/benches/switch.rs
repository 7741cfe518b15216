//! A context switch round trip (there and back: two switches) with
//! pardon-sched's own switch and with corosensei 0.3's `Coroutine`
//! (resume, then yield), side by side: the measurement behind choosing our
//! own switch (docs/STATUS.md).

use std::hint::black_box;

use corosensei::{Coroutine, CoroutineResult};
use criterion::{criterion_group, criterion_main, Criterion};
use pardon_sched::{switch, Context, Stack};

#[path = "common/mod.rs"]
mod common;

struct Pair {
    main: Context,
    task: Context,
}

extern "C" fn bounce(arg: usize) -> ! {
    // SAFETY: the Pair the bench keeps alive while it switches.
    let p = unsafe { &mut *(arg as *mut Pair) };
    loop {
        // SAFETY: the main context was saved by the switch that got us here.
        unsafe { switch(&mut p.task, &p.main) };
    }
}

fn switches(c: &mut Criterion) {
    let mut g = c.benchmark_group("switch-round-trip");
    g.throughput(criterion::Throughput::Elements(1000));
    let stack = Stack::new(64 * 1024).unwrap();
    let mut pair = Box::new(Pair {
        main: Context::empty(),
        task: Context::empty(),
    });
    let arg = &mut *pair as *mut Pair as usize;
    // SAFETY: `stack` outlives the bench; only this task uses it.
    pair.task = unsafe { Context::new(&stack, bounce, arg) };
    let p = &mut *pair as *mut Pair;
    g.bench_function("pardon-sched", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                // SAFETY: the task bounces straight back.
                unsafe { switch(&mut (*p).main, &(*p).task) };
            }
        })
    });
    let mut co = Coroutine::new(|y, mut x: u64| loop {
        x = y.suspend(x + 1);
    });
    g.bench_function("corosensei 0.3", |b| {
        b.iter(|| {
            for i in 0..1000u64 {
                match co.resume(black_box(i)) {
                    CoroutineResult::Yield(v) => {
                        black_box(v);
                    }
                    CoroutineResult::Return(()) => unreachable!(),
                }
            }
        })
    });
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = switches }
criterion_main!(benches);
