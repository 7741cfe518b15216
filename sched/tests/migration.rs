//! Goroutines of a migrating runtime (`Runtime::with_migration`) move
//! between workers where they yield or their time slice ends, and only
//! there: a goroutine that parks (a sleep, a contended lock, a join)
//! resumes on the thread it parked on. The safe constructors refuse to
//! migrate.
//!
//! The goroutines here use no thread-locals (the contract): they name
//! their thread by the `gettid` system call. Each test runs until it has
//! seen a goroutine move, however long that takes (bounded at a minute,
//! which only a runtime that never moves one reaches); what it asserts is
//! where goroutines resumed and that their work is all there.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_sched::{go, poll, sleep, yield_now, Config, Mutex, Preemption, Runtime};

/// The calling thread's id, from the kernel (no thread-local involved).
fn tid() -> i64 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

fn migrating(procs: usize, preemption: Preemption) -> Runtime {
    // SAFETY: the goroutines of these tests use no thread-locals, hold
    // nothing bound to their thread, do not print, and allocate only
    // through the system allocator.
    unsafe {
        Runtime::with_migration(Config {
            procs,
            preemption,
            time_slice: Duration::from_micros(200),
            ..Config::default()
        })
    }
    .unwrap()
}

#[test]
fn the_safe_constructors_refuse_to_migrate() {
    let c = Config {
        procs: 1,
        migrate: true,
        ..Config::default()
    };
    let e = Runtime::new(c.clone()).unwrap_err();
    assert!(e.to_string().contains("with_migration"), "{e}");
    // SAFETY: refused before anything runs.
    let e = unsafe { Runtime::with_signal_preemption(c.clone()) }.unwrap_err();
    assert!(e.to_string().contains("with_migration"), "{e}");
    let reg =
        pardon_preempt::Registry::new(pardon_sched::registry_config(Default::default())).unwrap();
    // SAFETY: refused before anything runs.
    let e = unsafe { Runtime::with_registry(c, reg) }.unwrap_err();
    assert!(e.to_string().contains("stay on their worker"), "{e}");
}

/// 200 goroutines on 4 workers yield, sleep, lock and join in turn: after
/// a yield a goroutine may be on another thread (and some are), after each
/// of the parks on the same one; every increment under the lock is there.
fn yields_move_and_parks_stay(preemption: Preemption) {
    let rt = migrating(4, preemption);
    let start = Instant::now();
    let mut rounds = 0u64;
    loop {
        rounds += 1;
        let (moved, parks_moved, total) = rt
            .block_on(|| {
                let lock = Arc::new(Mutex::new(0u64));
                let moved = Arc::new(AtomicU64::new(0));
                let parks_moved = Arc::new(AtomicU64::new(0));
                let hs: Vec<_> = (0..200u64)
                    .map(|i| {
                        let (lock, moved, parks_moved) =
                            (lock.clone(), moved.clone(), parks_moved.clone());
                        go(move || {
                            for k in 0..20u64 {
                                let before = tid();
                                match (i + k) % 4 {
                                    0 => {
                                        yield_now();
                                        if tid() != before {
                                            moved.fetch_add(1, SeqCst);
                                        }
                                        continue;
                                    }
                                    1 => sleep(Duration::from_micros(50)),
                                    2 => *lock.lock() += 1,
                                    _ => go(|| ()).join().unwrap(),
                                }
                                if tid() != before {
                                    parks_moved.fetch_add(1, SeqCst);
                                }
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().unwrap();
                }
                let total = *lock.lock();
                (moved.load(SeqCst), parks_moved.load(SeqCst), total)
            })
            .unwrap();
        assert_eq!(
            parks_moved, 0,
            "{preemption}: a goroutine resumed elsewhere after a park"
        );
        assert_eq!(total, 1000, "{preemption}: increments lost");
        if moved > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{preemption}: no goroutine moved in {rounds} rounds"
        );
    }
    assert!(rt.stats().migrations > 0, "{:?}", rt.stats());
}

#[test]
fn cooperative_yields_move_goroutines_and_parks_do_not() {
    yields_move_and_parks_stay(Preemption::Cooperative);
}

#[test]
fn polling_yields_move_goroutines_and_parks_do_not() {
    yields_move_and_parks_stay(Preemption::Poll);
}

#[test]
fn signal_preempted_runtimes_do_not_migrate_yet() {
    let c = Config {
        procs: 1,
        preemption: Preemption::Signal,
        ..Config::default()
    };
    // SAFETY: refused before anything runs.
    let e = unsafe { Runtime::with_migration(c) }.unwrap_err();
    assert!(e.to_string().contains("Preemption::Poll"), "{e}");
}

/// Load evens out after goroutines start, which a runtime that keeps each
/// goroutine on its first worker cannot do: three goroutines in loops
/// that only poll, on two workers, end their slices at polls and go to the
/// global queue, and each of them runs on both threads.
#[test]
fn goroutines_that_only_poll_run_on_every_worker() {
    let rt = migrating(2, Preemption::Poll);
    let done = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let done = done.clone();
            rt.go(move || {
                let mut threads = vec![tid()];
                while !done.load(SeqCst) {
                    for _ in 0..1000 {
                        poll();
                    }
                    let now = tid();
                    if !threads.contains(&now) {
                        threads.push(now);
                    }
                }
                threads.len()
            })
        })
        .collect();
    let start = Instant::now();
    while rt.stats().migrations < 30 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {:?} in 60 s",
            rt.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    done.store(true, SeqCst);
    let seen: Vec<usize> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(seen.iter().all(|&n| n <= 2), "{seen:?}");
    assert!(
        seen.contains(&2),
        "no goroutine ran on both workers: {seen:?}"
    );
}
