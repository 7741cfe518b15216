//! The holder of a stopped world may allocate: `Registry::stop_the_world`
//! parks no thread inside libc (unless blocked in a waiting system call).
//! A coordinator that allocated waited for ever on a thread parked inside
//! `malloc`, which held the arena's lock (reproduced with
//! `MALLOC_ARENA_MAX=1`, where every thread shares one arena; gdb showed
//! the coordinator in `malloc` waiting on `main_arena` and the parked
//! threads' injected calls below `malloc`). This file is a process of its
//! own, so the one-arena setting made at its start is the only one.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_preempt::{Config, Preemption, Registry};

/// Four attached threads alternate call-free stretches with allocating and
/// freeing blocks past glibc's per-thread cache (so each takes the arena's
/// lock) while a coordinator thread stops
/// the world, allocates and frees while it holds it, and restarts, for
/// `stops` rounds. Every round must end: a round that does not within a
/// minute is a hang, and the watchdog (the test thread, which allocates
/// nothing while it waits) ends the process with a message. With the
/// collector's kind of stop (`stop_the_world_anywhere`) in the
/// coordinator's place, three runs of 2,000 rounds hung, every one.
fn coordinator_allocates(preemption: Preemption, stops: usize) {
    // SAFETY: mallopt takes two integers; M_ARENA_MAX only limits how
    // many arenas later threads may create.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let reg = Registry::new(Config {
        preemption,
        ..Config::default()
    })
    .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4u64)
        .map(|k| {
            let (reg, done) = (reg.clone(), done.clone());
            std::thread::spawn(move || {
                let _me = reg.attach().unwrap();
                let mut x = k + 1;
                let mut keep: Vec<Vec<u8>> = Vec::with_capacity(65);
                while !done.load(SeqCst) {
                    // A stretch of the program's own code, then a block
                    // past glibc's per-thread cache (its arena's lock).
                    for _ in 0..2000 {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                    }
                    keep.push(vec![1u8; 1100 + (x >> 40) as usize % 7000]);
                    if keep.len() > 64 {
                        keep.swap_remove((x >> 20) as usize % 64);
                    }
                }
            })
        })
        .collect();
    let rounds = Arc::new(AtomicUsize::new(0));
    let coordinator = {
        let (reg, rounds) = (reg.clone(), rounds.clone());
        std::thread::spawn(move || {
            let mut held: Vec<Vec<u8>> = Vec::new();
            for i in 0..stops {
                let world = reg.stop_the_world().unwrap();
                held.push(vec![2u8; 5000 + i % 50 * 1000]);
                if held.len() > 50 {
                    held.clear();
                }
                drop(world);
                rounds.fetch_add(1, SeqCst);
            }
        })
    };
    let (mut last, mut since) = (0, Instant::now());
    while !coordinator.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        let now = rounds.load(SeqCst);
        if now != last {
            (last, since) = (now, Instant::now());
        }
        if since.elapsed() > Duration::from_secs(60) {
            // Not a panic: formatting its message allocates, and the arena
            // is what the coordinator waits for. Ends the whole process.
            let msg = b"coordinator_allocates: a stop's holder waited for ever \
                (allocating while it held the world)\n";
            // SAFETY: writes a static buffer to stderr, then ends the
            // process at once.
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::_exit(1);
            }
        }
    }
    coordinator.join().unwrap();
    done.store(true, SeqCst);
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn the_holder_of_a_stopped_world_may_allocate_with_injection() {
    coordinator_allocates(Preemption::Signal, 2000);
}

#[test]
fn the_holder_of_a_stopped_world_may_allocate_with_in_handler_parks() {
    coordinator_allocates(Preemption::SignalInHandler, 2000);
}

/// The price of that care: a thread in library code is caught only in
/// the moments it spends in its own, so a thread spinning on `yield_now`
/// (in `sched_yield` nearly always) delays a careful stop. With the
/// coordinator's usual back-off between re-signals (doubling to 20 ms)
/// such stops took 0.2 ms to 3 s, and one in five of them timed out at
/// 3 s; a careful stop now re-signals at the base interval throughout
/// (1-370 ms a stop, median ~12, measured with a CI run beside it). Every
/// one of 20 stops must succeed within a 20 s timeout: a guard against
/// stops that never end, with room for a loaded machine (it would not
/// catch the back-off's slow stops).
#[test]
fn a_careful_stop_catches_a_thread_spinning_on_yield_now() {
    let reg = Registry::new(Config {
        stop_timeout: Duration::from_secs(20),
        ..Config::default()
    })
    .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let spinner = {
        let (reg, done) = (reg.clone(), done.clone());
        std::thread::spawn(move || {
            let _me = reg.attach().unwrap();
            while !done.load(SeqCst) {
                std::thread::yield_now();
            }
        })
    };
    // The spinner is attached before the first stop.
    while reg.thread_count() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    for i in 0..20 {
        let world = reg.stop_the_world();
        assert!(world.is_ok(), "stop {i}: {:?}", world.err());
    }
    done.store(true, SeqCst);
    spinner.join().unwrap();
}
