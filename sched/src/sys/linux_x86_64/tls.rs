//! The calling thread's worker, in a thread-local word that only
//! assembly reads and writes.
//!
//! A `thread_local!` is read through an address the compiler computes
//! from the thread pointer and takes to be fixed for the whole of a
//! function, so it may compute it once and keep it across calls. A
//! goroutine that resumes on another thread (a runtime that migrates
//! them, `Config::migrate`) would then go on reading the first thread's
//! word, through code of this crate inlined into its own. An `asm!` block
//! that is not `pure` is run every time it is reached, so each lookup
//! here reads the word of the thread that runs it. It costs the same two
//! instructions as the `thread_local!` it replaces.
//!
//! The word lives in the initial-exec TLS model (an offset from the thread
//! pointer found in the GOT, which the linker folds into a constant in an
//! executable): a shared library holding this crate must be loaded at
//! program start, not by a late `dlopen` (whose static TLS room may be
//! too small).

use std::arch::{asm, global_asm};

global_asm!(
    ".pushsection .tbss.pardon_sched_current_worker,\"awT\",@nobits",
    ".p2align 3",
    ".globl pardon_sched_current_worker",
    ".hidden pardon_sched_current_worker",
    ".type pardon_sched_current_worker, @object",
    ".size pardon_sched_current_worker, 8",
    "pardon_sched_current_worker:",
    ".zero 8",
    ".popsection",
);

/// The calling thread's word (0 until set).
#[inline(always)]
pub(crate) fn current_worker() -> usize {
    let v: usize;
    // SAFETY: reads the calling thread's own word of its static TLS block
    // (every thread has one, zeroed at its start); no other memory.
    unsafe {
        asm!(
            "mov {v}, qword ptr [rip + pardon_sched_current_worker@GOTTPOFF]",
            "mov {v}, qword ptr fs:[{v}]",
            v = out(reg) v,
            options(nostack, readonly, preserves_flags),
        );
    }
    v
}

/// Sets the calling thread's word.
#[inline]
pub(crate) fn set_current_worker(w: usize) {
    // SAFETY: writes the calling thread's own word of its static TLS block
    // and nothing else.
    unsafe {
        asm!(
            "mov {t}, qword ptr [rip + pardon_sched_current_worker@GOTTPOFF]",
            "mov qword ptr fs:[{t}], {w}",
            t = out(reg) _,
            w = in(reg) w,
            options(nostack, preserves_flags),
        );
    }
}
