//! Thread identity, stack bounds and signal sending.

use std::io;

/// The kernel thread id of the calling thread.
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The calling thread's stack as `(lo, hi)`: `lo` is the lowest usable address
/// and `hi` one past the highest. Read once, at attach: for the main thread
/// glibc parses `/proc/self/maps`, which allocates and is slow.
pub(crate) fn current_stack_bounds() -> io::Result<(usize, usize)> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: pthread_getattr_np initialises `attr` on success; we only read it
    // after checking the return code, and destroy it exactly once.
    unsafe {
        let rc = libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let lo = addr as usize;
        Ok((lo, lo + size))
    }
}

/// Sends `sig` to thread `tid` of this process. `tgkill` rather than
/// `pthread_kill`: it needs no `pthread_t`, whose lifetime ends at join, and a
/// thread that has already gone simply yields `ESRCH`.
pub(crate) fn send_signal(pid: i32, tid: i32, sig: i32) -> bool {
    // SAFETY: tgkill takes plain integers; the worst outcome is an error code.
    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) == 0 }
}

/// The CPU the calling thread runs on (glibc reads it from the thread's rseq
/// area or the vDSO: no system call, no lock, async-signal-safe), or -1.
#[inline]
pub(crate) fn current_cpu() -> i32 {
    // SAFETY: sched_getcpu takes no arguments and only reads per-thread state.
    unsafe { libc::sched_getcpu() }
}

/// The current stack pointer, approximately (the address of a local).
#[inline(always)]
pub(crate) fn approx_sp() -> usize {
    let x = 0u8;
    std::hint::black_box(&x) as *const u8 as usize
}
