//! Go's TestAsyncPreempt shapes: call-free loops stopped and restarted many
//! times, by signal with both strategies, on 1, 2 and 4 threads.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{spawn_attached, wait_progress};
use pardon_preempt::{AckWait, Attached, Config, Preemption, Registry, StopKind};

#[inline(never)]
fn empty() {
    black_box(());
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    /// A loop with arithmetic only; progress published every 2^16 iterations.
    CallFree,
    /// A leaf loop with no frame: the body is inline asm that never touches memory.
    Frameless,
    /// `loop {}` with an atomic store.
    AtomicStore,
    /// A loop calling an empty non-inlined function.
    EmptyCall,
}

fn run(me: &Attached, shape: Shape, stop: &AtomicBool, progress: &AtomicU64) -> u64 {
    let _ = me;
    let mut x: u64 = 1;
    while !stop.load(Ordering::Relaxed) {
        match shape {
            Shape::CallFree => {
                for _ in 0..(1 << 16) {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                }
            }
            Shape::Frameless => {
                // SAFETY: pure register arithmetic on a scratch register.
                unsafe {
                    std::arch::asm!(
                        "mov ecx, 65536",
                        "2:",
                        "imul {x}, {x}, 3",
                        "add {x}, 7",
                        "dec ecx",
                        "jnz 2b",
                        x = inout(reg) x,
                        out("ecx") _,
                        options(nomem, nostack),
                    );
                }
            }
            Shape::AtomicStore => {
                for i in 0..(1 << 16) {
                    progress.store(i | 1, Ordering::Relaxed);
                }
            }
            Shape::EmptyCall => {
                for _ in 0..(1 << 12) {
                    empty();
                }
            }
        }
        progress.fetch_add(1, Ordering::Relaxed);
    }
    x
}

fn stop_many(mode: Preemption, shape: Shape, threads: usize, rounds: usize) {
    stop_many_waiting(mode, AckWait::Futex, shape, threads, rounds)
}

fn stop_many_waiting(mode: Preemption, wait: AckWait, shape: Shape, threads: usize, rounds: usize) {
    let reg = Registry::new(Config {
        preemption: mode,
        wait,
        stop_timeout: Duration::from_secs(20),
        ..Config::default()
    })
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (hs, progress) = spawn_attached(&reg, threads, &stop, move |me, stop, p| {
        run(me, shape, stop, p)
    });
    wait_progress(&progress);
    // Count signals, not stops: a thread still parked from the previous stop
    // is re-parked without a signal and was not interrupted anew. A short
    // pause between stops lets threads run again.
    let mut signals = 0usize;
    let start = std::time::Instant::now();
    while signals < threads * rounds {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "only {signals} signalled stops"
        );
        std::thread::sleep(Duration::from_micros(100));
        let w = reg.stop_the_world().expect("stop");
        signals += w.stats().signals as usize;
        let mut n = 0;
        for t in w.threads() {
            n += 1;
            match t.kind() {
                StopKind::Injected | StopKind::InHandler => {}
                k => panic!("unexpected stop kind {k:?}"),
            }
            let (lo, hi) = t.stack_bounds();
            assert!(
                lo <= t.scan_lo() && t.scan_lo() < hi,
                "scan_lo outside the stack"
            );
        }
        assert_eq!(n, threads);
        drop(w);
    }
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
}

const ROUNDS: usize = 1000;

macro_rules! shape_tests {
    ($($name:ident: $shape:expr, $strategy:expr;)*) => {$(
        #[test]
        fn $name() {
            for threads in [1, 2, 4] {
                stop_many($strategy, $shape, threads, ROUNDS);
            }
        }
    )*};
}

shape_tests! {
    call_free_inject: Shape::CallFree, Preemption::Signal;
    call_free_handler: Shape::CallFree, Preemption::SignalInHandler;
    frameless_inject: Shape::Frameless, Preemption::Signal;
    frameless_handler: Shape::Frameless, Preemption::SignalInHandler;
    atomic_store_inject: Shape::AtomicStore, Preemption::Signal;
    atomic_store_handler: Shape::AtomicStore, Preemption::SignalInHandler;
    empty_call_inject: Shape::EmptyCall, Preemption::Signal;
    empty_call_handler: Shape::EmptyCall, Preemption::SignalInHandler;
}

/// The Go `suspendG` baseline wait (spin, yield, re-signal every 5 µs) stops
/// and restarts the same loops.
#[test]
fn go_suspendg_wait_stops_call_free_loops() {
    for strategy in [Preemption::Signal, Preemption::SignalInHandler] {
        for threads in [1, 2, 4] {
            stop_many_waiting(strategy, AckWait::GoSuspendG, Shape::CallFree, threads, 200);
        }
    }
}

/// In polls-only mode a call-free loop is not stopped until it polls.
#[test]
fn polls_only_waits_for_the_poll() {
    let reg = Registry::new(Config {
        preemption: Preemption::Poll,
        ..Config::default()
    })
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let may_poll = Arc::new(AtomicBool::new(false));
    let mp = may_poll.clone();
    let (hs, progress) = spawn_attached(&reg, 1, &stop, move |me, stop, p| {
        let mut x = 1u64;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..1000 {
                x = black_box(x.wrapping_mul(3).wrapping_add(1));
            }
            p.fetch_add(1, Ordering::Relaxed);
            if mp.load(Ordering::Relaxed) {
                me.poll();
            }
        }
        x
    });
    wait_progress(&progress);
    let reg2 = reg.clone();
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let coord = std::thread::spawn(move || {
        let w = reg2.stop_the_world().expect("stop");
        d2.store(true, Ordering::SeqCst);
        let kinds: Vec<StopKind> = w.threads().map(|t| t.kind()).collect();
        drop(w);
        kinds
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(!done.load(Ordering::SeqCst), "stopped without polling");
    // The loop still runs while the stop waits: its counter moves (waited
    // for, not timed: a loaded machine may not schedule it for a while).
    let before = progress[0].load(Ordering::Relaxed);
    let t0 = std::time::Instant::now();
    while progress[0].load(Ordering::Relaxed) == before {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the loop stopped running while the stop waited for its poll"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    may_poll.store(true, Ordering::SeqCst);
    let kinds = coord.join().unwrap();
    assert_eq!(kinds, vec![StopKind::Poll]);
    assert_eq!(reg.signals_sent(), 0);
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
}
