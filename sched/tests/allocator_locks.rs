//! A thread stopped inside `malloc` may hold the allocator's lock for as
//! long as the world stays stopped, and a stop waits for every worker to
//! leave its no-preempt region (the scheduler runs in one throughout, and
//! every runtime lock is taken in one). So the runtime must never call the
//! system allocator there: a worker that blocked on that lock would hold
//! the stop off until `stop_timeout`, and the stop would fail.
//!
//! This binary's global allocator emulates such a lock
//! (`pardon_preempt::testing`): while it is "held", every allocation or
//! free on a worker thread waits. A thread
//! attached to the runtime's registry "holds" it in bursts (takes it,
//! then spins in a call-free loop, where a stop parks it), while the world
//! is stopped and restarted every millisecond and goroutines exercise one
//! part of the runtime. A worker that waits at no-preempt depth 0 (in a
//! goroutine's own code) is stopped like any thread; one that waits in a
//! region fails the stop.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_preempt::testing::{self as gate, Gate};
use pardon_preempt::Registry;
use pardon_sched::{channel, go, sleep, yield_now, Runtime};

mod own_registry;

#[global_allocator]
static GATE: Gate = Gate;

/// A runtime of two signal-preempted workers over a registry of its own,
/// its workers marked as victims. The goroutines of these tests use no
/// thread-locals of their own (the gate's flag is set once per worker, by
/// the attach hook, and only read after), do not print, and allocate
/// through a gate that keeps no per-thread cache.
fn runtime() -> (Runtime, Registry) {
    own_registry::runtime(2, Duration::from_millis(1), gate::arm)
}

/// Runs `work` as goroutines (`copies` of it) for a second or more while
/// another attached thread "holds the allocator's lock" in bursts of 20
/// ms, 5 ms apart, and the world is stopped every millisecond. Returns the
/// first stop's error, if any, and how many times a worker waited for the
/// lock (so a test can tell it met it).
fn stops_while_held(copies: usize, work: fn(&AtomicBool)) -> (Result<(), String>, usize) {
    // The lock and the counter are the process's: one test at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    gate::reset();
    let (rt, registry) = runtime();
    let done = Arc::new(AtomicBool::new(false));
    let goroutines: Vec<_> = (0..copies)
        .map(|_| {
            let done = done.clone();
            rt.go(move || work(&done))
        })
        .collect();
    let released = AtomicBool::new(false);
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            let _a = registry.attach().unwrap();
            while !released.load(SeqCst) {
                gate::hold(true);
                // Stopped by the signal anywhere in here, "holding" it.
                let t0 = Instant::now();
                while !released.load(SeqCst) && t0.elapsed() < Duration::from_millis(20) {
                    std::hint::spin_loop();
                }
                gate::hold(false);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        // For a second, and on until a worker has met the held lock (a
        // loaded machine may take longer), at most a minute.
        let t0 = Instant::now();
        let mut r = Ok(());
        while r.is_ok()
            && (t0.elapsed() < Duration::from_secs(1) || gate::waits() == 0)
            && t0.elapsed() < Duration::from_secs(60)
        {
            r = rt
                .stop_the_world()
                .map(drop)
                .map_err(|e| format!("a stop failed: {e}"));
            std::thread::sleep(Duration::from_millis(1));
        }
        released.store(true, SeqCst);
        r
    });
    done.store(true, SeqCst);
    for g in goroutines {
        g.join().unwrap();
    }
    drop(rt);
    (r, gate::waits())
}

fn check(copies: usize, work: fn(&AtomicBool)) {
    let (r, waited) = stops_while_held(copies, work);
    assert!(r.is_ok(), "{}", r.unwrap_err());
    assert!(waited > 0, "no worker met the held lock");
}

/// Spawning and ending goroutines: run queues, each worker's task list,
/// the stack pool, and the goroutine's own memory freed at its end.
#[test]
fn spawning_and_ending_goroutines() {
    check(4, |done| {
        while !done.load(SeqCst) {
            let hs: Vec<_> = (0..32).map(|i| go(move || i * 2)).collect();
            for (i, h) in hs.into_iter().enumerate() {
                assert_eq!(h.join().unwrap(), i * 2);
            }
        }
    });
}

/// Yielding and being preempted with many goroutines queued: the run
/// queues grow and shrink. (Each round also allocates, in the goroutine's
/// own code, so the workers meet the held lock there and are stopped.)
#[test]
fn yields_with_long_run_queues() {
    check(64, |done| {
        let mut x = 0u64;
        while !done.load(SeqCst) {
            for _ in 0..1000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
            }
            std::hint::black_box(Box::new(x));
            yield_now();
        }
    });
}

/// Channels (an unbounded one that grows, a bounded one, a rendezvous),
/// the goroutine-aware mutex, condition variable and wait group, and
/// sleeping: every wait list and buffer.
#[test]
fn channels_locks_and_timers() {
    check(4, |done| {
        let mut round = 0u64;
        while !done.load(SeqCst) {
            round += 1;
            let (tx, rx) = channel::unbounded::<u64>();
            let n = 1 + round % 300;
            let h = go(move || (0..n).map(|_| rx.recv().unwrap()).sum::<u64>());
            for i in 0..n {
                tx.send(i).unwrap();
            }
            assert_eq!(h.join().unwrap(), n * (n - 1) / 2);
            for cap in [0, 2] {
                let (tx, rx) = channel::channel::<u64>(cap);
                let h = go(move || (0..20).map(|_| rx.recv().unwrap()).sum::<u64>());
                for i in 0..20 {
                    tx.send(i).unwrap();
                }
                assert_eq!(h.join().unwrap(), 190);
            }
            let m = Arc::new(pardon_sched::Mutex::new(0u64));
            let cv = Arc::new(pardon_sched::Condvar::new());
            let wg = pardon_sched::WaitGroup::new();
            let waiters: Vec<_> = (0..8)
                .map(|_| {
                    let (m, cv, wg) = (m.clone(), cv.clone(), wg.clone());
                    wg.add(1);
                    go(move || {
                        let mut g = m.lock();
                        *g += 1;
                        while *g < 100 {
                            g = cv.wait(g);
                        }
                        drop(g);
                        wg.done();
                    })
                })
                .collect();
            while *m.lock() < 8 {
                yield_now();
            }
            *m.lock() = 100;
            cv.notify_all();
            wg.wait();
            for w in waiters {
                w.join().unwrap();
            }
            sleep(Duration::from_micros(50 + round % 200));
        }
    });
}
