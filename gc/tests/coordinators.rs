//! Regression test: several attached threads collecting at once. A thread
//! that waits to coordinate is stopped by another coordinator between steps
//! of its own pre-collection sweep; that sweep must not carry the old sweep
//! generation across the other collection (it once did, sweeping freshly
//! swept spans again against cleared mark bits and freeing live objects).

use std::sync::atomic::{AtomicI64, Ordering};

use pardon::{gc_object, Config, Heap, Member, Preemption};

gc_object! {
    struct Cell {
        next: Member<Cell>,
        value: AtomicI64,
    }
}

fn run(preemption: Preemption, allocate: bool) {
    let heap = Heap::new(Config {
        preemption,
        gc_percent: None,
        arena_size: 1 << 30,
        verify: true,
        ..Config::default()
    })
    .unwrap();
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let h = heap.clone();
            std::thread::spawn(move || {
                let m = h.attach().unwrap();
                let keep = m.alloc::<Cell>().unwrap();
                keep.value.store(1000 + t, Ordering::Relaxed);
                for i in 0..1500 {
                    if allocate {
                        for _ in 0..50 {
                            let x = m.alloc::<Cell>().unwrap();
                            x.value.store(7, Ordering::Relaxed);
                            x.next.set(Some(&keep));
                        }
                    }
                    m.collect().unwrap();
                    assert_eq!(
                        keep.value.load(Ordering::Relaxed),
                        1000 + t,
                        "thread {t}, iteration {i}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(heap.collections() > 0);
}

#[test]
fn concurrent_coordinators_polls_only() {
    run(Preemption::Poll, false);
    run(Preemption::Poll, true);
}

#[test]
fn concurrent_coordinators_signal() {
    run(Preemption::Signal, true);
    run(Preemption::SignalInHandler, true);
}
