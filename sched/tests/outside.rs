//! Threads outside the runtime but attached to the registry it shares (a
//! heap's mutators, say) using its channels, joins and wait groups while
//! the world is stopped again and again: a stop must never park such a
//! thread holding a runtime lock that a worker then waits for inside its
//! scheduler, where the stop waits for the worker (found: a heap's
//! mutator thread talking to goroutines while the heap's collector
//! stopped the world; every such stop timed out).

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_sched::{channel, WaitGroup};

mod own_registry;

#[test]
fn an_attached_thread_outside_the_runtime_never_holds_a_stop_off() {
    let (rt, registry) = own_registry::runtime(2, Duration::from_millis(1), || {});
    let done = Arc::new(AtomicBool::new(false));
    // A stopper, as a collector's thread would be.
    let stopper = {
        let (registry, done) = (registry.clone(), done.clone());
        std::thread::spawn(move || {
            let mut stops = 0u64;
            loop {
                registry.stop_the_world().map_err(|e| e.to_string())?;
                stops += 1;
                if done.load(SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok::<u64, String>(stops)
        })
    };
    // This thread, attached to the same registry, talks to goroutines:
    // channel sends and receives both ways, joins and a wait group.
    let _me = registry.attach().unwrap();
    let t0 = Instant::now();
    let mut rounds = 0;
    while t0.elapsed() < Duration::from_secs(2) || rounds < 200 {
        rounds += 1;
        let (to_tx, to_rx) = channel::channel::<u64>(1);
        let (back_tx, back_rx) = channel::channel::<u64>(0);
        let wg = WaitGroup::new();
        wg.add(1);
        let g = {
            let wg = wg.clone();
            rt.go(move || {
                let mut sum = 0;
                while let Ok(v) = to_rx.recv() {
                    sum += v;
                    back_tx.send(v).unwrap();
                }
                wg.done();
                sum
            })
        };
        for v in 0..50 {
            to_tx.send(v).unwrap();
            assert_eq!(back_rx.recv().unwrap(), v);
        }
        drop(to_tx);
        wg.wait();
        assert_eq!(g.join().unwrap(), (0..50).sum::<u64>());
    }
    done.store(true, SeqCst);
    let stops = stopper.join().unwrap().expect("every stop succeeded");
    assert!(stops > 0);
}
