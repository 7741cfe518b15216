//! On real threads stopped by signal: a pointer held only in a general
//! register (r12), only in a vector register (xmm3), or only in the red zone
//! below SP is found by the conservative part of the scan, with both
//! suspension strategies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pardon_preempt::{Config, Preemption, Registry};
use pardon_stackscan::{RootKind, Scanner};

const KEY: u64 = 0x5A5A_1234_9876_A5A5;

#[derive(Clone, Copy, Debug)]
enum Hide {
    R12,
    Xmm3,
    RedZone,
}

/// Puts `obf ^ KEY` only in the chosen place, sets `ready`, spins until
/// `done`, then wipes the place.
fn hold(hide: Hide, obf: u64, ready: &AtomicU64, done: &AtomicU64) {
    let (r, d) = (ready.as_ptr(), done.as_ptr());
    // SAFETY: each block touches only the named registers, the two flag words
    // and (for the red zone) 8 bytes below RSP, which a non-`nostack` asm
    // block may use.
    unsafe {
        match hide {
            Hide::R12 => std::arch::asm!(
                "mov r12, {o}", "xor r12, {k}", "mov qword ptr [{r}], 1",
                "2: pause", "cmp qword ptr [{d}], 0", "je 2b",
                "xor r12d, r12d",
                o = in(reg) obf, k = in(reg) KEY, r = in(reg) r, d = in(reg) d,
                out("r12") _,
            ),
            Hide::Xmm3 => std::arch::asm!(
                "mov {t}, {o}", "xor {t}, {k}", "movq xmm3, {t}", "xor {t:e}, {t:e}",
                "mov qword ptr [{r}], 1",
                "2: pause", "cmp qword ptr [{d}], 0", "je 2b",
                "pxor xmm3, xmm3",
                o = in(reg) obf, k = in(reg) KEY, r = in(reg) r, d = in(reg) d,
                t = out(reg) _, out("xmm3") _,
            ),
            Hide::RedZone => std::arch::asm!(
                "mov {t}, {o}", "xor {t}, {k}", "mov [rsp - 64], {t}", "xor {t:e}, {t:e}",
                "mov qword ptr [{r}], 1",
                "2: pause", "cmp qword ptr [{d}], 0", "je 2b",
                "mov qword ptr [rsp - 64], 0",
                o = in(reg) obf, k = in(reg) KEY, r = in(reg) r, d = in(reg) d,
                t = out(reg) _,
            ),
        }
    }
}

fn found_after_stop(strategy: Preemption, hide: Hide) {
    let reg = Registry::new(Config {
        preemption: strategy,
        ..Config::default()
    })
    .unwrap();
    let object = Box::new([0u64; 8]);
    let base = object.as_ptr() as usize;
    let obf = base as u64 ^ KEY;
    let ready = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let (reg2, r2, d2) = (reg.clone(), ready.clone(), done.clone());
    let t = std::thread::spawn(move || {
        let _me = reg2.attach().unwrap();
        hold(hide, obf, &r2, &d2);
    });
    while ready.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    let finder = |a: usize| (a >= base && a < base + 64).then_some(base);
    let mut kinds = Vec::new();
    for _ in 0..20 {
        let w = reg.stop_the_world().unwrap();
        let th = w.threads().next().unwrap();
        let (lo, hi) = th.stack_bounds();
        let mut hits = Vec::new();
        let mut sc = Scanner::new(&finder, lo, hi, |b, k| hits.push((b, k)));
        // SAFETY: the thread is stopped; its stack from scan_lo up is readable.
        // This thread links no frames: the chain is empty.
        unsafe { sc.thread(th.scan_lo(), 0, th.gprs()) };
        th.for_each_vector_word(|v| sc.word(v as usize, RootKind::Register));
        drop(w);
        assert!(hits.iter().all(|&(b, _)| b == base));
        assert!(!hits.is_empty(), "{strategy:?}/{hide:?}: pointer not found");
        kinds.extend(hits.into_iter().map(|(_, k)| k));
    }
    done.store(1, Ordering::SeqCst);
    t.join().unwrap();
    let want = match hide {
        Hide::R12 | Hide::Xmm3 => RootKind::Register,
        Hide::RedZone => RootKind::Stack,
    };
    assert!(
        kinds.contains(&want),
        "{strategy:?}/{hide:?}: found only as {kinds:?}"
    );
    drop(object);
}

#[test]
fn pointer_only_in_r12() {
    found_after_stop(Preemption::Signal, Hide::R12);
    found_after_stop(Preemption::SignalInHandler, Hide::R12);
}

#[test]
fn pointer_only_in_xmm3() {
    found_after_stop(Preemption::Signal, Hide::Xmm3);
    found_after_stop(Preemption::SignalInHandler, Hide::Xmm3);
}

#[test]
fn pointer_only_in_red_zone() {
    found_after_stop(Preemption::Signal, Hide::RedZone);
    found_after_stop(Preemption::SignalInHandler, Hide::RedZone);
}
