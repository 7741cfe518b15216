//! Parked goroutines' stacks scanned after a concurrent cycle's first
//! stop (`gc/src/mark/stacks.rs`, `sched/src/deferred.rs`), end to end:
//! goroutines woken while the cycles mark move the only reference to an
//! object from the heap onto their stacks and back, and goroutines
//! preempted every 200 µs move references between heap objects through
//! the barrier, while an attached thread runs concurrent cycles back to
//! back in verify mode.
//!
//! The hazard the deferral must close: a goroutine parked at the first
//! stop with an object only on its stack, woken before anything scanned
//! that stack, stores the object into a heap object the marker has
//! already scanned and forgets its own copy. Unless its worker scanned it
//! before switching it in, nothing marks the object. Each holder here is
//! a global root (so the marker scans it early); verify mode re-marks
//! from every root, every parked stack included, and canaries written by
//! the test check every object's contents.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pardon::{with_mutator, Config, Mutator, Type};
use pardon_sched::channel;

/// Word 1 of a node is its reference.
const REF: usize = 1;

/// Takes the object out of `holder` (masked): returns it unmasked, to be
/// held on the caller's stack only.
#[inline(never)]
fn take_out(m: &Mutator, holder: usize) -> usize {
    let h = holder ^ KEY;
    // SAFETY: `h` is a live node (a global root); word 1 is a reference.
    let x = unsafe { m.load_word_unchecked(h, REF) };
    // SAFETY: as above; null is a valid reference.
    unsafe { m.store_word_unchecked(h, REF, 0) };
    x
}

/// Puts `*held` back into `holder` (masked) and clears the caller's copy.
#[inline(never)]
fn put_back(m: &Mutator, holder: usize, held: &mut usize) {
    // SAFETY: as in `take_out`; `*held` is the live node taken out.
    unsafe { m.store_word_unchecked(holder ^ KEY, REF, *held) };
    *held = 0;
}

/// Whether the holder (masked) and the object it or `held` holds still
/// carry their canaries.
#[inline(never)]
fn intact(m: &Mutator, holder: usize, held: usize, c: u64) -> bool {
    let x = if held != 0 {
        held
    } else {
        // SAFETY: a live holder.
        unsafe { m.load_word_unchecked(holder ^ KEY, REF) }
    };
    x != 0 && canary_of(holder) == c && canary_of(x ^ KEY) == c + 1
}

/// Moves the object from `a` to `b` (both masked holders) and back, through
/// the barrier, `n` times; returns whether its canary held throughout.
#[inline(never)]
fn swap_between(m: &Mutator, a: usize, b: usize, c: u64, n: usize) -> bool {
    let mut ok = true;
    for _ in 0..n {
        let mut y = take_out(m, a);
        put_back(m, b, &mut y);
        let mut y = take_out(m, b);
        put_back(m, a, &mut y);
        ok &= intact(m, a, 0, c);
    }
    ok
}

/// A holder (a global root) holding a new object; canaries `c` and
/// `c + 1`. Returns the holder masked.
#[inline(never)]
fn holder(m: &Mutator, ty: Type, c: u64) -> usize {
    let h = new_masked(m, ty, c);
    let x = new_masked(m, ty, c + 1) ^ KEY;
    m.heap().add_root(h ^ KEY).unwrap();
    // SAFETY: a fresh node; `x` is live (on this stack).
    unsafe { m.store_word_unchecked(h ^ KEY, REF, x) };
    h
}

#[test]
fn goroutines_woken_and_preempted_while_concurrent_cycles_mark_keep_their_objects() {
    const SLEEPERS: usize = 600;
    const SWAPPERS: usize = 4;
    const CYCLES: usize = 24;
    let (heap, rt, ty) = setup_with(
        2,
        Duration::from_micros(200),
        Config {
            gc_percent: None,
            verify: true,
            concurrent: true,
            ..Config::default()
        },
    );
    let parked = Arc::new(AtomicUsize::new(0));
    let mut wakers = Vec::new();
    let mut joins = Vec::new();
    for i in 0..SLEEPERS as u64 {
        let (tx, rx) = channel::channel::<()>(1);
        wakers.push(tx);
        let parked = parked.clone();
        joins.push(rt.go(move || {
            with_mutator(|m| {
                let c = 0x10_0000 + 2 * i;
                let h = holder(m, ty, c);
                // Every other wake-up, the object's only reference is
                // here, on this goroutine's stack, across its park.
                let mut held: usize = 0;
                let mut ok = true;
                parked.fetch_add(1, SeqCst);
                loop {
                    scrub();
                    if rx.recv().is_err() {
                        break;
                    }
                    if held == 0 {
                        held = std::hint::black_box(take_out(m, h));
                    } else {
                        put_back(m, h, &mut held);
                    }
                    ok &= intact(m, h, held, c);
                }
                ok
            })
            .unwrap()
        }));
    }
    let stop = Arc::new(AtomicU32::new(0));
    let _stop = ReleaseOnDrop(stop.clone());
    for i in 0..SWAPPERS as u64 {
        let stop = stop.clone();
        joins.push(rt.go(move || {
            with_mutator(|m| {
                let c = 0x20_0000 + 2 * i;
                let a = holder(m, ty, c);
                let b = new_masked(m, ty, 0);
                m.heap().add_root(b ^ KEY).unwrap();
                let mut ok = true;
                while stop.load(SeqCst) == 0 {
                    ok &= swap_between(m, a, b, c, 64);
                }
                ok
            })
            .unwrap()
        }));
    }
    wait_for(&parked, SLEEPERS, "sleepers");

    // Wake-ups throughout the cycles, from a thread outside the runtime.
    let waking = Arc::new(AtomicBool::new(true));
    let waker = {
        let waking = waking.clone();
        std::thread::spawn(move || {
            while waking.load(SeqCst) {
                for tx in &wakers {
                    tx.send(()).unwrap();
                }
            }
            wakers
        })
    };
    let m = heap.attach().unwrap();
    for round in 0..CYCLES {
        let c = m.collect().unwrap();
        assert!(c.verified, "round {round}");
        // The path under test: no stop read a parked stack (each was
        // scanned after the first stop, by the pass or by its worker).
        assert_eq!(c.suspended_tasks, 0, "round {round}");
        churn(&m, ty, 5_000);
    }
    waking.store(false, SeqCst);
    drop(waker.join().unwrap());
    stop.store(1, SeqCst);
    for (k, j) in joins.into_iter().enumerate() {
        assert!(j.join().unwrap(), "goroutine {k} found an object damaged");
    }
}
