//! `errno` survives a stop. A thread stopped by the signal may have been
//! interrupted between a failing libc call and the read of `errno` that
//! reports it (std's `io::Error::last_os_error` runs in the program's own
//! code, where the signal lands); the stop's own system calls (a futex
//! wait that finds its word moved fails with `EAGAIN`) must not change
//! the value the interrupted code then reads.
//!
//! The thread stores a value in `errno` and spins without calls, then
//! checks it; the coordinator stops it over and over. Only the values
//! read are asserted, never a duration.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use pardon_preempt::{Config, Preemption, Registry};

/// Stops the coordinator makes.
const STOPS: u64 = 30_000;

fn survives(strategy: Preemption) {
    let reg = Registry::new(Config {
        preemption: strategy,
        ..Config::default()
    })
    .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let (reg2, done2, rounds2) = (reg.clone(), done.clone(), rounds.clone());
    let spinner = std::thread::spawn(move || {
        let _me = reg2.attach().unwrap();
        // SAFETY: this thread's errno slot, valid for its life.
        let slot = unsafe { libc::__errno_location() };
        let mut wrong = 0u64;
        let mut value = 1;
        while !done2.load(SeqCst) {
            value = value % 4000 + 1;
            // SAFETY: as above.
            unsafe { std::ptr::write_volatile(slot, value) };
            for i in 0..2_000u64 {
                std::hint::black_box(i);
            }
            // SAFETY: as above.
            if unsafe { std::ptr::read_volatile(slot) } != value {
                wrong += 1;
            }
            rounds2.fetch_add(1, SeqCst);
        }
        wrong
    });
    while rounds.load(SeqCst) == 0 {
        std::thread::yield_now();
    }
    for _ in 0..STOPS {
        drop(reg.stop_the_world().unwrap());
    }
    done.store(true, SeqCst);
    let wrong = spinner.join().unwrap();
    assert_eq!(
        wrong, 0,
        "{strategy:?}: a stop changed the stopped thread's errno"
    );
}

#[test]
fn errno_survives_an_injected_stop() {
    survives(Preemption::Signal);
}

#[test]
fn errno_survives_a_stop_in_the_handler() {
    survives(Preemption::SignalInHandler);
}
