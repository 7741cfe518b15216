//! The context switch: save the callee-saved general registers of the
//! System V ABI on the current stack (rbx, rbp, r12-r15), store the stack
//! pointer, load the other one and restore its registers. A switch is an
//! ordinary call as far as the compiler knows, so the caller-saved
//! registers are the caller's business, as for any call.
//!
//! MXCSR and the x87 control word (callee-saved control bits in the ABI)
//! are *not* switched: tasks share their thread's floating-point control
//! state, as with corosensei and Go. Saving them made a round trip 12 ns
//! instead of 7 (`stmxcsr`/`fnstcw` alone cost that; loading only when the
//! values differ was slower still, 15 ns). A task that changes the
//! rounding mode must restore it before it switches; a task switched by
//! asynchronous preemption keeps its whole state, which the preemption
//! trampoline saves with XSAVE.
//!
//! A new stack is prepared so that the first switch into it "returns" into
//! `pardon_sched_start`, which calls the entry function with its argument
//! on a 16-byte aligned stack.

use std::arch::global_asm;

global_asm!(
    ".globl pardon_sched_switch",
    ".type pardon_sched_switch, @function",
    "pardon_sched_switch:",
    // rdi: where to store this context's stack pointer; rsi: the stack
    // pointer to switch to.
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rdi], rsp",
    "mov rsp, rsi",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    // Not `ret`: the return stack buffer predicts the caller of this
    // switch, never the other context's (a misprediction on every switch:
    // 22 ns a round trip instead of 7 here). An indirect jump is predicted
    // from its own history.
    "pop rcx",
    "jmp rcx",
    ".size pardon_sched_switch, . - pardon_sched_switch",
    "",
    ".globl pardon_sched_start",
    ".type pardon_sched_start, @function",
    "pardon_sched_start:",
    // Entered by the first switch's `ret`: rbx holds the argument, r12 the
    // entry function. No frame to return to: the entry never returns.
    "mov rdi, rbx",
    "and rsp, -16",
    "xor ebp, ebp",
    "call r12",
    "ud2",
    ".size pardon_sched_start, . - pardon_sched_start",
);

extern "C" {
    fn pardon_sched_switch(save: *mut usize, load: usize);
    fn pardon_sched_start();
}

/// A context that is not running: its saved stack pointer, where the
/// switch left its callee-saved registers.
#[derive(Debug, Default)]
pub(crate) struct Registers {
    pub sp: usize,
}

/// Switches from the running context, whose stack pointer is stored into
/// `save`, to the one saved at `load`.
///
/// # Safety
/// `load` must be a stack pointer saved by `switch` (or made by
/// `prepare_stack`) on a stack that is still mapped and whose context is
/// not running; `save` must stay valid until something switches back.
#[inline(always)]
pub(crate) unsafe fn switch(save: &mut Registers, load: &Registers) {
    // SAFETY: caller contract; the callee-saved state is saved on the
    // current stack and restored from the other, as the ABI requires of a
    // call.
    unsafe { pardon_sched_switch(&mut save.sp, load.sp) }
}

/// Lays out, below `top` (16-byte aligned, the highest address of a
/// stack), the state a first `switch` into it restores: it then calls
/// `entry(arg)`, which must never return. Returns the context.
///
/// # Safety
/// `[top - 64, top)` must be writable memory of a stack that nothing else
/// uses.
pub(crate) unsafe fn prepare_stack(
    top: usize,
    entry: extern "C" fn(usize) -> !,
    arg: usize,
) -> Registers {
    debug_assert_eq!(top % 16, 0);
    let words: [u64; 8] = [
        0,                                               // r15
        0,                                               // r14
        0,                                               // r13
        entry as usize as u64,                           // r12
        arg as u64,                                      // rbx
        0,                                               // rbp
        pardon_sched_start as *const () as usize as u64, // the first `ret`
        0,                                               // padding
    ];
    let sp = top - words.len() * 8;
    // SAFETY: caller contract: the words below `top` are ours to write.
    unsafe { std::ptr::copy_nonoverlapping(words.as_ptr(), sp as *mut u64, words.len()) };
    Registers { sp }
}
