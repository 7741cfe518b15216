//! The talk's scheduler deadlock: on one worker, goroutine A takes a
//! spinlock (an atomic swap in a loop with no calls), starts B and yields
//! while holding it; B spins for the lock, with no calls either. A can only
//! release the lock once B gives up the worker, which only preemption can
//! make it do.
//!
//! `cargo run --release -p pardon-sched --example spinlock -- --mode coop|poll|signal
//!  [--rounds 10] [--slice-us 1000]`
//!
//! With `signal` every round completes in about one time slice; with
//! `coop` (and with `poll`, whose loop here does not poll) the first round
//! deadlocks, which a watchdog on the main thread reports after a second,
//! exiting with status 3 (Go's `GODEBUG=asyncpreemptoff=1` hangs instead).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_sched::{go, yield_now, Config, Preemption, Runtime};

fn usage(msg: &str) -> ! {
    eprintln!(
        "spinlock: {msg}\nusage: spinlock --mode coop|poll|signal [--rounds N] [--slice-us N]"
    );
    std::process::exit(2)
}

fn main() {
    let mut mode = None;
    let mut rounds = 10usize;
    let mut slice_us = 1000u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        match a.as_str() {
            "--mode" => {
                let v = value("--mode");
                mode = Some(
                    v.parse::<Preemption>()
                        .unwrap_or_else(|e| usage(&e.to_string())),
                );
            }
            "--rounds" => {
                let v = value("--rounds");
                rounds =
                    v.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| {
                        usage(&format!("--rounds: {v:?} is not a positive number"))
                    });
            }
            "--slice-us" => {
                let v = value("--slice-us");
                slice_us = v.parse().unwrap_or_else(|_| {
                    usage(&format!(
                        "--slice-us: {v:?} is not a number of microseconds"
                    ))
                });
            }
            _ => usage(&format!("unknown argument {a:?}")),
        }
    }
    let mode = mode.unwrap_or_else(|| usage("--mode is required"));
    let config = Config {
        procs: 1,
        preemption: mode,
        time_slice: Duration::from_micros(slice_us),
        ..Config::default()
    };
    let rt = if mode == Preemption::Signal {
        // SAFETY: the goroutines below use no thread-locals, do not print
        // and allocate only through the system allocator.
        unsafe { Runtime::with_signal_preemption(config) }
    } else {
        Runtime::new(config)
    }
    .unwrap_or_else(|e| usage(&e.to_string()));

    let lock = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let (l, d) = (lock.clone(), done.clone());
    let start = Instant::now();
    let all = rt.go(move || {
        for _ in 0..rounds {
            // A: take the lock, start B, yield while holding it.
            while l.swap(true, SeqCst) {}
            let lb = l.clone();
            let b = go(move || {
                // B: spin for the lock; no calls in the loop.
                while lb.compare_exchange(false, true, SeqCst, SeqCst).is_err() {}
                lb.store(false, SeqCst);
            });
            yield_now();
            l.store(false, SeqCst);
            b.join().expect("B");
            d.fetch_add(1, SeqCst);
        }
    });
    // The watchdog: progress or a report, never a hang.
    let mut last = (0, Instant::now());
    while !all.is_finished() {
        std::thread::sleep(Duration::from_millis(1));
        let n = done.load(SeqCst);
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(1) {
            println!(
                "mode {mode}: DEADLOCK after {n} of {rounds} rounds: B has spun on the lock for \
                 a second and A, which holds it, never ran again"
            );
            std::process::exit(3);
        }
    }
    let el = start.elapsed();
    println!(
        "mode {mode}: {rounds} rounds in {el:.1?} ({:.2} ms a round, time slice {slice_us} µs, \
         {} preemptions)",
        el.as_secs_f64() * 1000.0 / rounds as f64,
        rt.stats().preemptions
    );
}
