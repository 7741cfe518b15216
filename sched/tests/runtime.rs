//! The cooperative runtime: many goroutines, joins from goroutines and
//! from outside, panics as errors, yields interleaving goroutines on one
//! worker, stacks reused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pardon_sched::{go, yield_now, Config, Runtime};

fn rt(procs: usize) -> Runtime {
    Runtime::new(Config {
        procs,
        ..Config::default()
    })
    .unwrap()
}

#[test]
fn ten_thousand_goroutines_sum() {
    let rt = rt(2);
    let total = rt
        .block_on(|| {
            let hs: Vec<_> = (0..10_000u64).map(|i| go(move || i * 2)).collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        })
        .unwrap();
    assert_eq!(total, 2 * (0..10_000u64).sum::<u64>());
}

#[test]
fn a_panic_is_the_join_error_and_unwinds_only_its_goroutine() {
    let rt = rt(2);
    let r = rt.block_on(|| {
        let bad = go(|| -> u32 { panic!("boom") });
        let good = go(|| 7u32);
        (bad.join().is_err(), good.join().unwrap())
    });
    assert_eq!(r.unwrap(), (true, 7));
    let err = rt.block_on(|| panic!("outer")).unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"outer"));
}

#[test]
fn yields_interleave_goroutines_on_one_worker() {
    let rt = rt(1);
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let l2 = log.clone();
    rt.block_on(move || {
        let hs: Vec<_> = (0..3)
            .map(|g| {
                let l = l2.clone();
                go(move || {
                    for i in 0..3 {
                        l.lock().unwrap().push((g, i));
                        yield_now();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    })
    .unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 9);
    // With one worker and yields, no goroutine runs its three steps in a
    // row: each yield lets the others run.
    let first_three: Vec<_> = log[..3].iter().map(|(g, _)| *g).collect();
    assert!(
        first_three.windows(2).all(|w| w[0] != w[1]),
        "no interleaving: {log:?}"
    );
}

#[test]
fn deep_join_chains_and_nested_spawns() {
    let rt = rt(2);
    fn chain(n: u32) -> u32 {
        if n == 0 {
            0
        } else {
            go(move || chain(n - 1)).join().unwrap() + 1
        }
    }
    assert_eq!(rt.block_on(|| chain(200)).unwrap(), 200);
}

#[test]
fn goroutines_on_many_workers_all_run() {
    let rt = rt(4);
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    rt.block_on(move || {
        let hs: Vec<_> = (0..1000)
            .map(|_| {
                let c = c.clone();
                go(move || {
                    for _ in 0..10 {
                        c.fetch_add(1, Ordering::Relaxed);
                        yield_now();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    })
    .unwrap();
    assert_eq!(count.load(Ordering::Relaxed), 10_000);
}

#[test]
fn bad_settings_are_errors() {
    assert!(Runtime::new(Config {
        procs: 0,
        ..Config::default()
    })
    .is_err());
    assert!(Runtime::new(Config {
        stack_size: 1000,
        ..Config::default()
    })
    .is_err());
}

#[test]
fn wait_groups_mutexes_and_sleep_park_goroutines() {
    use pardon_sched::{sleep, Mutex, WaitGroup};
    use std::time::{Duration, Instant};
    // One worker: a goroutine waiting on the mutex, the group or a sleep
    // must let the others run, or this never finishes.
    let rt = rt(1);
    let r = rt.block_on(|| {
        let m = Arc::new(Mutex::new(0u64));
        let wg = WaitGroup::new();
        let guard = m.lock();
        for i in 0..50u64 {
            wg.add(1);
            let (m, wg) = (m.clone(), wg.clone());
            go(move || {
                sleep(Duration::from_millis(i % 5));
                *m.lock() += i;
                wg.done();
            });
        }
        // Let them all reach the mutex while it is held.
        let t0 = Instant::now();
        sleep(Duration::from_millis(20));
        let slept = t0.elapsed();
        drop(guard);
        wg.wait();
        let total = *m.lock();
        (total, slept)
    });
    let (total, slept) = r.unwrap();
    assert_eq!(total, (0..50u64).sum::<u64>());
    assert!(slept >= Duration::from_millis(20), "slept only {slept:?}");
}

#[test]
fn two_runtimes_and_outside_threads_share_sync_objects() {
    use pardon_sched::WaitGroup;
    let a = rt(1);
    let b = rt(3);
    let wg = WaitGroup::new();
    wg.add(2);
    let (w1, w2) = (wg.clone(), wg.clone());
    let h1 = a.go(move || w1.done());
    let h2 = b.go(move || w2.done());
    // An outside thread waits (it blocks).
    wg.wait();
    h1.join().unwrap();
    h2.join().unwrap();
    // A goroutine of one runtime joins one of the other's.
    let h = b.go(|| 5u32);
    assert_eq!(a.block_on(move || h.join().unwrap()).unwrap(), 5);
}

/// A `WaitGroup` reused round after round, its count falling to zero on
/// whichever worker finishes last, waited for by goroutines on both
/// workers and by a thread outside: no waiter returns before every `done`
/// of its round (each round's goroutines count what they did), none is
/// left waiting. And a `done` without its `add` panics, leaving the count
/// at zero.
#[test]
fn a_wait_group_wakes_every_waiter_once_its_count_falls_to_zero() {
    use pardon_sched::WaitGroup;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    let rt = rt(2);
    let finished = Arc::new(AtomicUsize::new(0));
    for round in 0..200usize {
        let wg = WaitGroup::new();
        let n = 1 + round % 17;
        wg.add(n);
        for _ in 0..n {
            let (wg, finished) = (wg.clone(), finished.clone());
            rt.go(move || {
                finished.fetch_add(1, SeqCst);
                wg.done();
            });
        }
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (wg, finished) = (wg.clone(), finished.clone());
                rt.go(move || {
                    wg.wait();
                    finished.load(SeqCst)
                })
            })
            .collect();
        wg.wait();
        let want = (0..=round).map(|r| 1 + r % 17).sum::<usize>();
        assert!(
            finished.load(SeqCst) >= want,
            "round {round}: a thread woke early"
        );
        for w in waiters {
            assert!(
                w.join().unwrap() >= want,
                "round {round}: a goroutine woke early"
            );
        }
    }
    let wg = WaitGroup::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wg.done()));
    assert!(r.is_err(), "a done without its add must panic");
    wg.wait();
}

/// The shape that lost a goroutine before (an idle worker's second look at
/// the queues took the task and dropped it): many short `block_on`s on two
/// workers, each a join two deep. Debug builds hung within a few hundred
/// rounds.
#[test]
fn an_idle_worker_never_drops_what_it_finds() {
    let rt = rt(2);
    fn chain(n: u32) -> u32 {
        if n == 0 {
            0
        } else {
            go(move || chain(n - 1)).join().unwrap() + 1
        }
    }
    for _ in 0..2000 {
        assert_eq!(rt.block_on(|| chain(2)).unwrap(), 2);
    }
}

/// A goroutine stays on the thread it first ran on, whatever it waits for
/// (yield, sleep, join, mutex): safe code may hold thread-local addresses
/// and thread-bound values across those calls.
#[test]
fn goroutines_never_change_thread() {
    use pardon_sched::{sleep, Mutex};
    use std::time::Duration;
    let rt = rt(4);
    let moved = Arc::new(AtomicUsize::new(0));
    let m2 = moved.clone();
    rt.block_on(move || {
        let lock = Arc::new(Mutex::new(0u32));
        let hs: Vec<_> = (0..200)
            .map(|i| {
                let (moved, lock) = (m2.clone(), lock.clone());
                go(move || {
                    let me = std::thread::current().id();
                    for k in 0..20 {
                        match (i + k) % 4 {
                            0 => yield_now(),
                            1 => sleep(Duration::from_micros(50)),
                            2 => *lock.lock() += 1,
                            _ => go(|| ()).join().unwrap(),
                        }
                        if std::thread::current().id() != me {
                            moved.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    })
    .unwrap();
    assert_eq!(moved.load(Ordering::Relaxed), 0);
}

/// A bounded buffer from a goroutine `Mutex` and two `Condvar`s, on one
/// worker: every item arrives once, in order, and neither side blocks the
/// worker (or this would hang).
#[test]
fn condvars_make_a_bounded_buffer() {
    use pardon_sched::{Condvar, Mutex};
    use std::collections::VecDeque;
    struct Buf {
        q: Mutex<VecDeque<u32>>,
        not_full: Condvar,
        not_empty: Condvar,
    }
    let rt = rt(1);
    let got = rt
        .block_on(|| {
            let b = Arc::new(Buf {
                q: Mutex::new(VecDeque::new()),
                not_full: Condvar::new(),
                not_empty: Condvar::new(),
            });
            let p = b.clone();
            go(move || {
                for i in 0..1000 {
                    let mut q = p.q.lock();
                    while q.len() == 3 {
                        q = p.not_full.wait(q);
                    }
                    q.push_back(i);
                    drop(q);
                    p.not_empty.notify_one();
                }
            });
            let mut got = Vec::new();
            while got.len() < 1000 {
                let mut q = b.q.lock();
                while q.is_empty() {
                    q = b.not_empty.wait(q);
                }
                got.push(q.pop_front().unwrap());
                drop(q);
                b.not_full.notify_all();
            }
            got
        })
        .unwrap();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
}

#[test]
fn a_goroutine_without_a_stack_is_a_join_error_not_a_hang() {
    // 100 TiB of address space per stack: more than a process has, so
    // every stack mapping fails.
    let rt = Runtime::new(Config {
        procs: 1,
        stack_size: 100 << 40,
        ..Config::default()
    })
    .unwrap();
    let e = rt.block_on(|| 1).unwrap_err();
    let msg = e.downcast_ref::<String>().expect("a message");
    assert!(msg.contains("could not start"), "{msg}");
}

/// Whether the kernel has lightweight guard regions (Linux 6.13), without
/// which each stack costs two of the process's `vm.max_map_count`
/// mappings and about 32,000 stacks is the limit.
fn kernel_has_guard_regions() -> bool {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = r
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (6, 13)
}

#[test]
fn forty_thousand_goroutines_park_at_once() {
    if !kernel_has_guard_regions() {
        eprintln!("skipped: this kernel has no guard regions (Linux 6.13)");
        return;
    }
    const N: usize = 40_000;
    let rt = Runtime::new(Config {
        procs: 2,
        ..Config::default()
    })
    .unwrap();
    let (tx, rx) = pardon_sched::channel::unbounded::<()>();
    let started = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..N)
        .map(|_| {
            let (rx, started) = (rx.clone(), started.clone());
            rt.go(move || {
                started.fetch_add(1, Ordering::SeqCst);
                rx.recv().is_ok()
            })
        })
        .collect();
    // Every one of them holds a stack, parked in `recv`, once all have
    // started; one that could not start has finished (with an error).
    let t0 = std::time::Instant::now();
    while started.load(Ordering::SeqCst) < N
        && !handles.iter().any(|h| h.is_finished())
        && t0.elapsed() < std::time::Duration::from_secs(120)
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        started.load(Ordering::SeqCst),
        N,
        "not all goroutines started"
    );
    for _ in 0..N {
        tx.send(()).unwrap();
    }
    for h in handles {
        assert!(h.join().unwrap());
    }
}

/// Goroutines spawned from outside while every worker sleeps each wake a
/// worker of their own: two cooperative goroutines that wait for each
/// other without yielding both run. (Each such spawn used to wake the
/// first sleeper it found, the same worker twice: that worker took both,
/// and the other slept on, so the first goroutine waited for ever.)
#[test]
fn spawns_from_outside_wake_distinct_sleepers() {
    use std::time::{Duration, Instant};
    let rt = Runtime::new(Config {
        procs: 2,
        preemption: pardon_sched::Preemption::Cooperative,
        ..Config::default()
    })
    .unwrap();
    for round in 0..20 {
        // Both workers asleep first.
        std::thread::sleep(Duration::from_millis(5));
        let started = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let started = started.clone();
                rt.go(move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    let t0 = Instant::now();
                    // No yield: only another worker can run the other one.
                    while started.load(Ordering::SeqCst) < 2 {
                        if t0.elapsed() > Duration::from_secs(20) {
                            return false;
                        }
                        std::hint::spin_loop();
                    }
                    true
                })
            })
            .collect();
        for h in hs {
            assert!(
                h.join().unwrap(),
                "round {round}: the second goroutine never ran"
            );
        }
    }
}

/// A goroutine that cannot start has its closure dropped by its worker's
/// scheduler, not by a goroutine: what the closure captured may use the
/// runtime's waits in its `Drop` (here, a channel send that finds room)
/// and must get the behaviour a thread outside the runtime gets, not a
/// panic in the scheduler (which ended the worker, and every join on it
/// hung).
#[test]
fn a_closure_dropped_by_the_scheduler_may_send_on_a_channel() {
    struct SendsOnDrop(pardon_sched::channel::Sender<u32>);
    impl Drop for SendsOnDrop {
        fn drop(&mut self) {
            let _ = self.0.send(7);
        }
    }
    // Every stack mapping fails (see the test above): the goroutine never
    // starts, and its worker drops its closure.
    let rt = Runtime::new(Config {
        procs: 1,
        stack_size: 100 << 40,
        ..Config::default()
    })
    .unwrap();
    for cap in [Some(4), None] {
        let (tx, rx) = match cap {
            Some(c) => pardon_sched::channel::channel::<u32>(c),
            None => pardon_sched::channel::unbounded::<u32>(),
        };
        let guard = SendsOnDrop(tx);
        let h = rt.go(move || {
            let _keep = &guard;
        });
        assert!(h.join().is_err(), "the goroutine could not start");
        assert_eq!(rx.recv(), Ok(7), "capacity {cap:?}: the drop's send");
        // The worker is still there.
        let h = rt.go(|| 1);
        assert!(h.join().is_err());
    }
}

/// Finished goroutines keep their stacks only on their worker's own free
/// list (64 a worker) and in the pool (`stack_pool`). After 2,000
/// goroutines that were all alive at once have ended, at most
/// `stack_pool + 65 × procs` stacks stay mapped (a worker may not yet have put away
/// the goroutine it ran last), and 3,000 more spawned one after another
/// map none beyond that: they reuse them. Counted by the pool, whose count
/// only an unmapping lowers.
#[test]
fn finished_goroutines_keep_a_bounded_number_of_stacks() {
    let procs = 2;
    let pool = 8;
    // The pool, and per worker 64 finished goroutines with their stacks,
    // 32 more stacks, and the one of a goroutine running.
    let bound = (pool + (64 + 32 + 1) * procs) as u64;
    let rt = Runtime::new(Config {
        procs,
        stack_pool: pool,
        ..Config::default()
    })
    .unwrap();
    let n = 2000;
    let started = pardon_sched::WaitGroup::new();
    let (tx, rx) = pardon_sched::channel::unbounded::<()>();
    let hs: Vec<_> = (0..n)
        .map(|_| {
            started.add(1);
            let (s, rx) = (started.clone(), rx.clone());
            rt.go(move || {
                s.done();
                rx.recv().unwrap();
            })
        })
        .collect();
    started.wait();
    let during = rt.stats().stacks_mapped;
    assert!(
        during >= n as u64,
        "{n} goroutines alive on {during} stacks"
    );
    for _ in 0..n {
        tx.send(()).unwrap();
    }
    for h in hs {
        h.join().unwrap();
    }
    let after = rt.stats().stacks_mapped;
    assert!(
        after <= bound,
        "{after} stacks still mapped after {n} goroutines ended (at most {bound})"
    );
    for i in 0..3000 {
        rt.go(move || i).join().unwrap();
        let now = rt.stats().stacks_mapped;
        assert!(
            now <= bound,
            "{now} stacks mapped at spawn {i} (at most {bound})"
        );
    }
}
