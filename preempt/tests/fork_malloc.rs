//! `fork` while attached threads are inside `malloc`: the fork's stop of
//! the world must not park a thread inside libc, where it may hold a
//! `malloc` arena lock that `fork` itself takes next (glibc locks every
//! arena after the `pthread_atfork` prepare handlers have run). It did:
//! a thread stopped by call injection in the middle of `malloc` left the
//! fork waiting for ever (seen in gc's mutator_model test in CI).
//!
//! Two attached threads allocate and free in a loop (most of their time
//! inside libc) while the main thread forks; each child exits at once.
//! Every fork must return; a watchdog turns a hang into a failure.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_preempt::{Config, Preemption, Registry};

fn forks_while_threads_malloc(preemption: Preemption) {
    let reg = Registry::new(Config {
        preemption,
        ..Config::default()
    })
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let allocs = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let (reg, stop, allocs) = (reg.clone(), stop.clone(), allocs.clone());
            std::thread::spawn(move || {
                let _me = reg.attach().unwrap();
                let mut keep: Vec<Vec<u8>> = Vec::new();
                let mut n = 0u64;
                while !stop.load(SeqCst) {
                    // Sizes that go through the arenas, not tcache alone.
                    keep.push(vec![i as u8; 200 + (n as usize % 3000)]);
                    if keep.len() > 64 {
                        keep.swap_remove((n as usize * 7) % keep.len());
                    }
                    n += 1;
                    if n.is_multiple_of(1024) {
                        allocs.fetch_add(1024, SeqCst);
                    }
                }
            })
        })
        .collect();
    while allocs.load(SeqCst) < 10_000 {
        std::thread::yield_now();
    }
    // A watchdog: a fork that never returns ends the test with a message.
    let forks_done = Arc::new(AtomicU64::new(0));
    let fd2 = forks_done.clone();
    let finished = Arc::new(AtomicBool::new(false));
    let f2 = finished.clone();
    std::thread::spawn(move || {
        let mut last = (0, Instant::now());
        while !f2.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            let n = fd2.load(SeqCst);
            if n != last.0 {
                last = (n, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(20) {
                eprintln!("fork {n} has not returned for 20 s: deadlocked");
                // Not `exit`: its handlers may need the very lock the
                // stopped thread holds.
                // SAFETY: ends the process at once.
                unsafe { libc::_exit(101) };
            }
        }
    });
    for _ in 0..100 {
        // SAFETY: the child only calls _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        forks_done.fetch_add(1, SeqCst);
    }
    finished.store(true, SeqCst);
    stop.store(true, SeqCst);
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn fork_while_threads_malloc_with_injection() {
    forks_while_threads_malloc(Preemption::Signal);
}

#[test]
fn fork_while_threads_malloc_with_in_handler_parks() {
    forks_while_threads_malloc(Preemption::SignalInHandler);
}
