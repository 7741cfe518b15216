//! Helpers of the heap-over-goroutines tests: the shared setup, objects
//! with canaries, addresses masked where the collector must not see them,
//! a call-free loop holding an object in one register only, and stack
//! scrubbing (tests are built without optimisation, where dead locals
//! would keep objects alive conservatively and hide a lost root).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon::stackscan::{frame_map, DynFrame, FrameMap};
use pardon::{Config, Heap, Mutator, Type};
use pardon_sched::Runtime;

pub static ONE: FrameMap = frame_map!(1; [0]);

/// Masks addresses held where the collector must not see them as such.
pub const KEY: usize = 0x5a5a_0000_0000_0000;

pub fn setup(procs: usize, slice: Duration) -> (Heap, Runtime, Type) {
    setup_with(
        procs,
        slice,
        Config {
            gc_percent: None,
            verify: true,
            ..Config::default()
        },
    )
}

/// As `setup`, with the heap's settings.
pub fn setup_with(procs: usize, slice: Duration, config: Config) -> (Heap, Runtime, Type) {
    let (heap, rt) = pardon_bench::goroutine_heap::heap_and_runtime(
        config,
        pardon_sched::Config {
            procs,
            time_slice: slice,
            ..pardon_sched::Config::default()
        },
    )
    .unwrap();
    let ty = pardon_bench::goroutine_heap::node_type(&heap).unwrap();
    (heap, rt, ty)
}

/// A new object whose word 0 is `canary`, returned masked.
#[inline(never)]
pub fn new_masked(m: &Mutator, ty: Type, canary: u64) -> usize {
    let a = m.alloc_raw(ty).unwrap();
    // SAFETY: a fresh 32-byte object; word 0 is data.
    unsafe { *(a as *mut u64) = canary };
    a ^ KEY
}

/// Overwrites the stack below the caller's frame, where the frames of the
/// functions it called left copies of addresses: the park that follows
/// would otherwise keep some of them in its scanned range, and the test
/// could not tell whether the frame slot or a stale copy kept an object.
#[inline(never)]
pub fn scrub() {
    let junk = [0usize; 2048];
    std::hint::black_box(&junk);
}

/// Stores the object at masked address `masked` in slot 0 of `fr`: the
/// unmasked address exists only in this (returned, overwritten) frame and
/// in the slot. (Tests are built without optimisation, where every local
/// of the caller would otherwise stay on its stack.)
#[inline(never)]
pub fn put_slot(fr: &DynFrame<'_>, masked: usize) {
    fr.set(0, masked ^ KEY);
}

/// A new two-node chain (canaries `c` and `c + 1`) in slot 0 of `fr`.
#[inline(never)]
pub fn put_chain(m: &Mutator, ty: Type, fr: &DynFrame<'_>, c: u64) {
    let head = new_masked(m, ty, c) ^ KEY;
    let tail = new_masked(m, ty, c + 1) ^ KEY;
    // SAFETY: word 1 of a node is its reference.
    unsafe { *(head as *mut usize).add(1) = tail };
    fr.set(0, head);
}

/// Whether the chain in slot 0 of `fr` still has canaries `c`, `c + 1`.
#[inline(never)]
pub fn chain_ok(fr: &DynFrame<'_>, c: u64) -> bool {
    let head = fr.get(0);
    // SAFETY: the chain `put_chain` built.
    let tail = unsafe { *(head as *const usize).add(1) };
    canary_of(head ^ KEY) == c && canary_of(tail ^ KEY) == c + 1
}

/// Reads word 0 of the object at masked address `masked`.
pub fn canary_of(masked: usize) -> u64 {
    // SAFETY: the caller's object, which the test expects alive.
    unsafe { *((masked ^ KEY) as *const u64) }
}

/// Holds the object at masked address `masked` in r11 only (every other
/// scratch register cleared) while spinning without calls until `*flag`
/// is non-zero; returns it masked again.
#[inline(never)]
pub fn hold_in_r11(masked: usize, flag: &AtomicU32) -> usize {
    let out: usize;
    // SAFETY: reads `*flag`; touches only the registers declared.
    unsafe {
        std::arch::asm!(
            "mov r11, rdi",
            "xor r11, rsi",
            "xor edi, edi",
            "xor ecx, ecx",
            "xor r8d, r8d",
            "xor r9d, r9d",
            "xor r10d, r10d",
            "2:",
            "pause",
            "cmp dword ptr [rdx], 0",
            "je 2b",
            "xor r11, rsi",
            "mov rax, r11",
            inout("rdi") masked => _,
            in("rsi") KEY,
            in("rdx") flag.as_ptr(),
            out("rax") out,
            out("rcx") _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
        );
    }
    out
}

/// Allocates `n` objects that nothing keeps.
#[inline(never)]
pub fn garbage(m: &Mutator, ty: Type, n: usize) {
    for _ in 0..n {
        std::hint::black_box(m.alloc_raw(ty).unwrap());
    }
}

/// Allocates over freed slots, writing a pattern a canary cannot match.
pub fn churn(m: &Mutator, ty: Type, n: usize) {
    for _ in 0..n {
        let a = m.alloc_raw(ty).unwrap();
        // SAFETY: a fresh object.
        unsafe { *(a as *mut u64) = 0xdead_dead };
    }
}

/// Ends the call-free loops when dropped, so a failing test unwinds
/// (and drops its runtime, which waits for its workers) instead of hanging.
pub struct ReleaseOnDrop(pub Arc<AtomicU32>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.store(1, SeqCst);
    }
}

pub fn wait_for(counter: &AtomicUsize, n: usize, what: &str) {
    let start = Instant::now();
    while counter.load(SeqCst) < n {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: {} of {n} after 60 s",
            counter.load(SeqCst)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
