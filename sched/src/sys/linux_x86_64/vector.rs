//! Clearing the vector registers, for a goroutine of a migrating runtime
//! that has just been switched back into.
//!
//! A switch saves only the callee-saved general registers: the vector
//! registers a goroutine resumes with hold whatever the scheduler or the
//! goroutine it came from left there (dead values: every one of them is
//! caller-saved across the switch's call). The yield hook of a migrating
//! runtime reads the interrupted goroutine's registers, vector ones
//! included, for pointers into its worker's state, and a stale one keeps
//! the goroutine on its worker (`worker::switching::holds_its_worker`):
//! three loops on two workers, each started by the scheduler, never moved
//! until their first vector register was cleared at entry.

use std::arch::asm;
use std::sync::OnceLock;

/// Whether the CPU has AVX (`vzeroall` clears YMM0-15 in one instruction).
fn has_avx() -> bool {
    static AVX: OnceLock<bool> = OnceLock::new();
    *AVX.get_or_init(|| std::arch::is_x86_feature_detected!("avx"))
}

/// `asm!` running the given instructions with XMM0-15 declared clobbered,
/// so that the compiler keeps nothing in them across it.
macro_rules! clobbering_xmm {
    ($($insn:literal),+) => {
        asm!(
            $($insn),+,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            options(nomem, nostack, preserves_flags),
        )
    };
}

/// Zeroes XMM0-15 (and their YMM halves with AVX). Only where none of
/// them holds a live value: right after a switch returns, which as a call
/// leaves them all dead. (AVX-512's ZMM16-31 are not cleared: a stale
/// pointer there costs a goroutine a move, nothing else.)
#[inline]
pub(crate) fn clear_vector_registers() {
    if has_avx() {
        // SAFETY: AVX is present; the registers written are declared
        // clobbered.
        unsafe { clobbering_xmm!("vzeroall") };
    } else {
        // SAFETY: SSE is part of x86-64; as above.
        unsafe {
            clobbering_xmm!(
                "xorps xmm0, xmm0",
                "xorps xmm1, xmm1",
                "xorps xmm2, xmm2",
                "xorps xmm3, xmm3",
                "xorps xmm4, xmm4",
                "xorps xmm5, xmm5",
                "xorps xmm6, xmm6",
                "xorps xmm7, xmm7",
                "xorps xmm8, xmm8",
                "xorps xmm9, xmm9",
                "xorps xmm10, xmm10",
                "xorps xmm11, xmm11",
                "xorps xmm12, xmm12",
                "xorps xmm13, xmm13",
                "xorps xmm14, xmm14",
                "xorps xmm15, xmm15"
            )
        };
    }
}
