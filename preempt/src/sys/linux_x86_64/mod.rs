//! x86_64 Linux: futexes, `tgkill`, ucontext layout, XSAVE, the trampoline.

mod futex;
mod regs;
mod signal;
mod text;
mod thread;
mod trampoline;

pub(crate) use futex::{futex_wait, futex_wake};
pub(crate) use regs::{
    for_each_vector_word, gprs_from_ucontext, stack_pointer, xsave_from_ucontext, xsave_layout,
    TrampolineFrame,
};
pub use regs::{spill_callee_saved, Gprs, GPR_NAMES, NGPRS};
pub(crate) use signal::{
    handler_installed, inject_call, install, interrupted_pc, interrupted_rax, interrupted_sp,
    is_waiting_syscall, Ucontext, PARK_STACK_NEED, RED_ZONE,
};
pub(crate) use text::exe_text_range;
pub(crate) use thread::{
    affinity, approx_sp, current_cpu, current_stack_bounds, empty_mask, gettid, mask_count,
    mask_eq, mask_has, only_cpu, send_signal, set_affinity, CpuMask,
};
pub(crate) use trampoline::injection_stack_need;
