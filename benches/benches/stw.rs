//! One stop-the-world and restart of spinning threads (call-free loops with
//! no polls), by signal with call injection and with the in-handler park,
//! and of polling threads in polls-only mode.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use pardon::preempt::{Config, EveryIteration, NoPoll, PollStrategy, Preemption, Registry};
use pardon_bench::kernels::spin;

#[path = "common/mod.rs"]
mod common;

fn spinners(
    reg: &Registry,
    n: usize,
    polls: bool,
) -> (Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let hs = (0..n)
        .map(|_| {
            let (reg, stop) = (reg.clone(), stop.clone());
            std::thread::spawn(move || {
                let me = reg.attach().unwrap();
                fn run<P: PollStrategy>(mut p: P, stop: &AtomicBool) {
                    let mut x = 1;
                    while !stop.load(Ordering::Relaxed) {
                        x = spin(1_000_000, x, &mut p);
                    }
                }
                if polls {
                    run(EveryIteration(me.poller()), &stop)
                } else {
                    run(NoPoll, &stop)
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    (stop, hs)
}

fn stw(c: &mut Criterion) {
    let mut g = c.benchmark_group("stop-the-world");
    for (name, mode, polls) in [
        ("signal inject", Preemption::Signal, false),
        ("signal in-handler", Preemption::SignalInHandler, false),
        ("polls only", Preemption::Poll, true),
    ] {
        for n in [1, 2] {
            let reg = Registry::new(Config {
                preemption: mode,
                ..Config::default()
            })
            .unwrap();
            let (stop, hs) = spinners(&reg, n, polls);
            g.bench_function(format!("{name}, {n} spinning"), |b| {
                // SAFETY: the world is dropped at once: nothing runs while
                // it is held. (The collector's kind of stop.)
                b.iter(|| drop(unsafe { reg.stop_the_world_anywhere() }.unwrap()))
            });
            stop.store(true, Ordering::Relaxed);
            for h in hs {
                h.join().unwrap();
            }
        }
    }
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = stw }
criterion_main!(benches);
