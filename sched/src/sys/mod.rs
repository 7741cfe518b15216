//! Platform code: the context switch, the first entry into a new stack,
//! and scheduler settings for threads that must wake on time.
//! Only `linux_x86_64` exists; any other target fails to build with a
//! message.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod linux_x86_64;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub(crate) use linux_x86_64::*;

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!(
    "pardon-sched supports only x86_64 Linux for now: the context switch is per-platform assembly"
);
