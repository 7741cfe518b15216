//! A heap over goroutines, the whole wiring: one preempt registry shared
//! by a `pardon` heap and a signal-preempted `pardon-sched` runtime, each
//! worker a mutator its goroutines share. A thousand goroutines build
//! linked lists with the typed API, keeping them rooted across sleeps and
//! yields while the pacer collects; two more spin in call-free loops,
//! which the collections stop by signal. (Goroutine code does not print:
//! see `Runtime::with_signal_preemption`'s contract.)
//!
//! `cargo run --release -p pardon-bench --example goroutines_heap`

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use pardon::preempt::Registry;
use pardon::{gc_object, with_mutator, Config, Heap, Member};
use pardon_sched::{registry_config, Attacher, Runtime};

gc_object! {
    struct Node {
        next: Member<Node>,
        value: AtomicI64,
    }
}

fn main() {
    // 1. One registry for both: its stops stop the workers, and the
    //    runtime reports its parked goroutines through it.
    let registry = Registry::new(registry_config(Default::default())).expect("registry");
    let heap = Heap::with_registry(
        Config {
            min_heap: 1 << 20,
            ..Config::default()
        },
        registry.clone(),
    )
    .expect("heap");
    // 2. Every worker attaches as a heap mutator.
    // SAFETY: the goroutines below keep no thread-local state of their
    // own and do not print.
    let rt = unsafe {
        Runtime::with_registry(
            pardon_sched::Config {
                attach: Some(Attacher::new(heap.worker_attacher())),
                time_slice: Duration::from_millis(1),
                ..pardon_sched::Config::default()
            },
            registry,
        )
    }
    .expect("runtime");

    // 3. Goroutines allocate through their worker's mutator.
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            rt.go(move || {
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
                n
            })
        })
        .collect();
    let builders: Vec<_> = (0..1000i64)
        .map(|g| {
            rt.go(move || {
                with_mutator(|m| {
                    let head = m.alloc::<Node>().expect("alloc");
                    let mut tail = head.clone();
                    for i in 1..=200 {
                        let n = m.alloc::<Node>().expect("alloc");
                        n.value.store(g * 1000 + i, Relaxed);
                        tail.next.set(Some(&n));
                        tail = n;
                        if i % 50 == 0 {
                            // Parked with its roots: collections scan them.
                            pardon_sched::sleep(Duration::from_millis(1));
                        }
                    }
                    // Walk the list: every node is still there.
                    let (mut sum, mut cur) = (0, head.next.get(m));
                    while let Some(n) = cur {
                        sum += n.value.load(Relaxed);
                        cur = n.next.get(m);
                    }
                    sum
                })
                .expect("a goroutine runs on a worker")
            })
        })
        .collect();
    // 4. Collections from an attached thread meanwhile (the pacer adds
    //    its own, from whichever goroutine allocates when one is due).
    let m = heap.attach().expect("attach");
    while !builders.iter().all(|b| b.is_finished()) {
        m.collect().expect("collect");
        m.blocking(|| std::thread::sleep(Duration::from_millis(2)));
    }
    let mut ok = 0;
    for (g, b) in builders.into_iter().enumerate() {
        let want: i64 = (1..=200).map(|i| g as i64 * 1000 + i).sum();
        if b.join().expect("builder") == want {
            ok += 1;
        }
    }
    stop.store(true, Relaxed);
    for s in spinners {
        s.join().expect("spinner");
    }
    let c = m.collect().expect("collect");
    let stats = heap.stats();
    println!(
        "{ok}/1000 lists intact; {} collections, pause p50 {} us; last: {}",
        stats.collections,
        stats.pause_ns.value_at_quantile(0.5) / 1000,
        c.trace_line()
    );
    assert_eq!(ok, 1000);
}
