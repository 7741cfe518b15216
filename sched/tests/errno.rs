//! `errno` survives a preemption. A goroutine switched out by the signal
//! may have been interrupted between a failing libc call and the read of
//! `errno` that reports it (std's `io::Error::last_os_error` runs in the
//! program's own code, where the signal may land); the goroutines its
//! worker runs meanwhile set `errno` too. The injected call keeps the
//! interrupted goroutine's value, as a signal handler must.
//!
//! Each goroutine here stores a value of its own in `errno` and spins
//! without calls, then checks it is still there; preempted by the signal
//! at a 50 µs slice, the others on its worker ran between the store and
//! the check in most rounds. The test asserts only the values read, never
//! a duration: it runs until the runtime has made `PREEMPTED` preemptions,
//! however long that takes.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use pardon_sched::{go, Config, Preemption, Runtime};

/// Preemptions the runtime must make before the goroutines end.
const PREEMPTED: u64 = 1000;
/// Goroutines on the one worker.
const GOROUTINES: i32 = 3;

#[test]
fn errno_survives_a_preemption() {
    let config = Config {
        procs: 1,
        preemption: Preemption::Signal,
        time_slice: Duration::from_micros(50),
        ..Config::default()
    };
    // SAFETY: the goroutines use no thread-local but errno, which the
    // runtime keeps per goroutine (what this test checks); they do not
    // print, and allocate nothing.
    let rt = Arc::new(unsafe { Runtime::with_signal_preemption(config) }.unwrap());
    let wrong = Arc::new(AtomicU64::new(0));
    let w2 = wrong.clone();
    let rt2 = rt.clone();
    rt.block_on(move || {
        let handles: Vec<_> = (0..GOROUTINES)
            .map(|g| {
                let wrong = w2.clone();
                let rt = rt2.clone();
                go(move || {
                    let mine = 1000 + g;
                    // SAFETY: this thread's errno slot (goroutines never
                    // change thread in this runtime).
                    let slot = unsafe { libc::__errno_location() };
                    let mut rounds = 0u64;
                    let start = std::time::Instant::now();
                    while !rounds.is_multiple_of(64) || rt.stats().preemptions < PREEMPTED {
                        assert!(
                            start.elapsed() < Duration::from_secs(300),
                            "only {:?} in 300 s",
                            rt.stats()
                        );
                        // SAFETY: as above.
                        unsafe { std::ptr::write_volatile(slot, mine) };
                        // Long enough that the slice often ends in it.
                        for i in 0..20_000u64 {
                            std::hint::black_box(i);
                        }
                        // SAFETY: as above.
                        let now = unsafe { std::ptr::read_volatile(slot) };
                        if now != mine {
                            wrong.fetch_add(1, SeqCst);
                        }
                        rounds += 1;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    })
    .unwrap();
    assert!(rt.stats().preemptions >= PREEMPTED);
    assert_eq!(
        wrong.load(SeqCst),
        0,
        "a goroutine found another's errno after it was preempted"
    );
}
