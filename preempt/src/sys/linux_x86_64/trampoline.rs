//! The call-injection trampoline, Go's `asyncPreempt` for this crate.
//!
//! The signal handler does not push the resume address the way Go's
//! `pushCall` does. Without `SA_ONSTACK` the kernel builds its signal frame,
//! XSAVE image included, right below the interrupted SP minus the 128-byte red
//! zone; a word written there before `sigreturn` would corrupt the state the
//! kernel is about to restore (the last bytes of the image are the
//! `FP_XSTATE_MAGIC2` marker and the AVX-512 high registers). So the handler
//! leaves two words *below its own frame*, at an address `L`:
//!
//! ```text
//!   [L]     resume RIP (the interrupted instruction)
//!   [L + 8] interrupted RSP
//! ```
//!
//! and returns with RSP = L and RIP = `pardon_async_preempt`. Once the kernel
//! has restored the context the signal frame is dead memory, so the first
//! instructions below rebuild what a real CALL from the interrupted
//! instruction would have left, one red zone lower: RSP = T = (interrupted
//! RSP minus 136) with `[T]` = resume RIP. They use only MOV, PUSH, POP and LEA, none of
//! which touches the flags, and restore the two scratch registers they borrow.
//!
//! From there the frame is, from the top down:
//!
//! ```text
//!   interrupted RSP ->  ... caller's data ...
//!                       128-byte red zone (left untouched)
//!   T               ->  resume RIP          (popped by `ret 128`)
//!                       saved RBP
//!                       saved RFLAGS
//!                       RAX RBX RCX RDX RSI RDI R8 .. R15   (TrampolineFrame)
//!                       padding to 64 bytes
//!   XSAVE area      ->  XSAVE_SIZE bytes, 64-byte aligned, header zeroed
//! ```
//!
//! then calls `pardon_preempt_park_injected(frame, xsave)` with a 16-byte
//! aligned stack and DF clear, as the C ABI requires. After it returns the
//! trampoline restores everything bit-exactly (XRSTOR with the same all-ones
//! mask, then the general registers and flags) and executes `ret 128`, which
//! pops the resume RIP and lands RSP exactly on the interrupted value.

use super::regs::{TrampolineFrame, XSAVE_SIZE};

extern "C" {
    /// The trampoline's entry point; only ever entered by a rewritten ucontext.
    pub(crate) fn pardon_async_preempt();
}

/// Called by the trampoline with every register saved.
///
/// # Safety
/// Only the trampoline calls this, with `frame` pointing at the frame it just
/// pushed and `xsave` at its XSAVE image, both on the current thread's stack.
///
/// Keeps the interrupted code's `errno`, as a signal handler must: the
/// thread may have been stopped between a failing libc call and the read
/// of `errno` that reports it (in the program's own code, where the signal
/// lands), and what runs here sets it (a futex wait that finds its word
/// moved fails with `EAGAIN`; a yield hook runs other tasks on the
/// thread). It is put back through a fresh `__errno_location` (an opaque
/// call), on whichever thread the call returns on: the interrupted code
/// reads it there.
#[no_mangle]
unsafe extern "C" fn pardon_preempt_park_injected(frame: *mut TrampolineFrame, xsave: *mut u8) {
    // SAFETY: __errno_location returns this thread's errno slot, always
    // valid.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: forwarded contract: both pointers are live for the whole call.
    unsafe { crate::park::park_injected(&*frame, xsave as usize) };
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

std::arch::global_asm!(
    ".globl pardon_async_preempt",
    ".type pardon_async_preempt, @function",
    ".p2align 4",
    "pardon_async_preempt:",
    // Rebuild a CALL-shaped frame one red zone below the interrupted RSP.
    "push rax",
    "mov rax, [rsp + 16]", // interrupted RSP
    "lea rax, [rax - 136]", // T
    "push rbx",
    "mov rbx, [rsp + 16]", // resume RIP, from [L]
    "mov [rax], rbx",
    "mov rbx, [rsp + 8]", // interrupted RAX
    "mov [rax - 8], rbx",
    "mov rbx, [rsp]", // interrupted RBX back in place
    "lea rsp, [rax - 8]",
    "pop rax", // RSP = T, [T] = resume RIP
    // Save the general registers and the flags.
    "push rbp",
    "mov rbp, rsp",
    "pushfq",
    "push rax",
    "push rbx",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rbx, rsp", // rbx = &TrampolineFrame, preserved across the call
    // The extended state, 64-byte aligned, with a zeroed XSAVE header.
    "and rsp, -64",
    "mov eax, dword ptr [rip + {xsave_size}]",
    "sub rsp, rax",
    "xor eax, eax",
    "mov [rsp + 512], rax",
    "mov [rsp + 520], rax",
    "mov [rsp + 528], rax",
    "mov [rsp + 536], rax",
    "mov [rsp + 544], rax",
    "mov [rsp + 552], rax",
    "mov [rsp + 560], rax",
    "mov [rsp + 568], rax",
    "mov eax, -1",
    "mov edx, -1",
    "xsave64 [rsp]",
    "cld",
    "mov rdi, rbx",
    "mov rsi, rsp",
    "call {park}",
    "mov eax, -1",
    "mov edx, -1",
    "xrstor64 [rsp]",
    "mov rsp, rbx",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rbx",
    "pop rax",
    "popfq",
    "pop rbp",
    "ret 128",
    ".size pardon_async_preempt, . - pardon_async_preempt",
    xsave_size = sym XSAVE_SIZE,
    park = sym pardon_preempt_park_injected,
);

/// Bytes of stack the injected call may use below the interrupted SP: red zone,
/// frame, alignment, the XSAVE image and the park path's own frames (which
/// include a futex syscall). The handler refuses to inject with less free.
pub(crate) fn injection_stack_need() -> usize {
    128 + 8 * 18 + 64 + XSAVE_SIZE.load(std::sync::atomic::Ordering::Relaxed) as usize + 8192
}
