//! Register state survives preemption bit-exactly: general registers, flags
//! (DF set, to check the trampoline's CLD/POPF), MXCSR, XMM/YMM/ZMM and the
//! red zone below SP, across at least 10,000 stops with each strategy. The
//! coordinator also checks that the registers it is handed for a thread
//! stopped inside the loop are exactly the loop's patterns.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use pardon_preempt::{Config, Preemption, Registry, GPR_NAMES};

mod regloop;
use regloop::*;

#[test]
fn unpreempted_loop_round_trips() {
    let width = Width::best();
    let inp = pattern(7);
    let mut out = vec![0u64; WORDS];
    width.run(&inp, &mut out, 1000);
    assert_eq!(compare(width, &inp, &out), Vec::<String>::new());
}

fn survives(strategy: Preemption) {
    const STOPS_IN_LOOP: u64 = 10_000;
    let width = Width::best();
    let reg = Registry::new(Config {
        preemption: strategy,
        ..Config::default()
    })
    .unwrap();
    let inp = Arc::new(pattern(42));
    let done = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicU64::new(0));
    let (reg2, inp2, done2, runs2) = (reg.clone(), inp.clone(), done.clone(), runs.clone());
    let mutator = std::thread::spawn(move || {
        let _me = reg2.attach().unwrap();
        let mut out = vec![0u64; WORDS];
        let mut failures = Vec::new();
        while !done2.load(Ordering::Relaxed) {
            width.run(&inp2, &mut out, 2_000_000);
            runs2.fetch_add(1, Ordering::Relaxed);
            let bad = compare(width, &inp2, &out);
            if !bad.is_empty() {
                failures.push(bad);
            }
        }
        failures
    });
    while runs.load(Ordering::Relaxed) == 0 {
        std::thread::yield_now();
    }
    // GPR_NAMES order: rax rbx rcx rdx rsi rdi rbp rsp r8..r15 rip rflags.
    let idx = |n: &str| GPR_NAMES.iter().position(|g| *g == n).unwrap();
    let mut in_loop = 0u64;
    let mut seen_vec = 0u64;
    let mut stops = 0u64;
    let start = std::time::Instant::now();
    while in_loop < STOPS_IN_LOOP {
        assert!(
            start.elapsed().as_secs() < 120,
            "too few stops landed in the loop: {in_loop} of {stops} in 120 s"
        );
        // Let the thread run again: a stop that finds it still parked from
        // the last one re-parks it without a signal, which tests nothing.
        std::thread::sleep(std::time::Duration::from_micros(100));
        let w = reg.stop_the_world().unwrap();
        stops += 1;
        let t = w.threads().next().unwrap();
        let g = t.gprs();
        if w.stats().signals > 0 && width.loop_range().contains(&g[idx("rip")]) {
            // Stopped inside the spin loop: every general register must read back
            // as its pattern, and the flags too.
            in_loop += 1;
            for (i, name) in GPR_ORDER.iter().enumerate() {
                assert_eq!(g[idx(name)], inp[i], "stopped thread's {name}");
            }
            assert_eq!(
                g[idx("rflags")] & 0xCD5,
                FLAGS_PATTERN & 0xCD5,
                "stopped thread's flags"
            );
            let mut found = false;
            let want = inp[VEC + 8 * 5];
            t.for_each_vector_word(|v| found |= v == want);
            if found {
                seen_vec += 1;
            }
        }
        drop(w);
    }
    done.store(true, Ordering::Relaxed);
    let failures = mutator.join().unwrap();
    assert!(
        failures.is_empty(),
        "register state corrupted: {:?}",
        &failures[..1]
    );
    assert_eq!(
        seen_vec, in_loop,
        "vector words not reported for every stop"
    );
    eprintln!(
        "{strategy:?} {width:?}: {stops} stops, {in_loop} inside the loop, {} loop runs",
        runs.load(Ordering::Relaxed)
    );
}

#[test]
fn registers_survive_injection() {
    survives(Preemption::Signal);
}

#[test]
fn registers_survive_in_handler_park() {
    survives(Preemption::SignalInHandler);
}
