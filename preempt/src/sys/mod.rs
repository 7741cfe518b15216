//! Platform code: everything that depends on the OS, the CPU architecture or the
//! layout of a signal context lives below this module, behind a narrow interface.
//!
//! Only `linux_x86_64` exists today; aarch64 Linux is the next port. Any other
//! target fails to build with a message rather than compiling a registry that
//! cannot stop anything.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod linux_x86_64;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub(crate) use linux_x86_64::*;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub use linux_x86_64::{spill_callee_saved, Gprs, GPR_NAMES, NGPRS};

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!(
    "pardon-preempt supports only x86_64 Linux for now (aarch64 Linux is planned): \
     signal preemption needs per-platform ucontext, trampoline and futex code"
);
