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

/// A set of CPUs, as the kernel's affinity calls take it (1,024 bits).
pub(crate) type CpuMask = libc::cpu_set_t;

/// The empty set.
pub(crate) const fn empty_mask() -> CpuMask {
    // SAFETY: `cpu_set_t` is an array of integers; all zeroes is the empty
    // set.
    unsafe { std::mem::zeroed() }
}

/// The CPUs thread `tid` may run on, or `None` if the kernel would not say
/// (the thread has gone). One system call; no allocation, no lock.
pub(crate) fn affinity(tid: i32) -> Option<CpuMask> {
    let mut set = empty_mask();
    // SAFETY: `set` is a writable `cpu_set_t` of exactly the size passed.
    let r = unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<CpuMask>(), &mut set) };
    (r == 0).then_some(set)
}

/// Lets thread `tid` run only on the CPUs of `set`; false if the kernel
/// refused (the thread has gone, or `set` holds no CPU it may use). If the
/// thread is queued on a CPU outside `set` it is moved at once. One system
/// call; no allocation, no lock of ours.
pub(crate) fn set_affinity(tid: i32, set: &CpuMask) -> bool {
    // SAFETY: `set` is a readable `cpu_set_t` of exactly the size passed.
    unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<CpuMask>(), set) == 0 }
}

/// CPUs a `CpuMask` can name.
pub(crate) const MASK_CPUS: usize = 8 * std::mem::size_of::<CpuMask>();

/// The set holding only `cpu`, or the empty set if `cpu` is out of range.
pub(crate) fn only_cpu(cpu: usize) -> CpuMask {
    let mut set = empty_mask();
    if cpu < MASK_CPUS {
        // SAFETY: `cpu` is within the set's bits (checked above); CPU_SET
        // writes one of them.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// Whether `cpu` is in `set`.
pub(crate) fn mask_has(set: &CpuMask, cpu: usize) -> bool {
    // SAFETY: CPU_ISSET reads one bit, within the set (checked first).
    cpu < MASK_CPUS && unsafe { libc::CPU_ISSET(cpu, set) }
}

/// How many CPUs `set` holds.
pub(crate) fn mask_count(set: &CpuMask) -> usize {
    // SAFETY: CPU_COUNT only reads the set.
    unsafe { libc::CPU_COUNT(set) as usize }
}

/// Whether the two sets are equal.
pub(crate) fn mask_eq(a: &CpuMask, b: &CpuMask) -> bool {
    // SAFETY: CPU_EQUAL only reads the two sets.
    unsafe { libc::CPU_EQUAL(a, b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask helpers against a set built bit by bit, over every CPU a
    /// mask can name and one past: out-of-range CPUs give the empty set
    /// and are never members (no panic: these run in the stop path).
    #[test]
    fn masks_name_exactly_the_cpus_put_in() {
        for cpu in 0..=MASK_CPUS {
            let m = only_cpu(cpu);
            let want = usize::from(cpu < MASK_CPUS);
            assert_eq!(mask_count(&m), want, "cpu {cpu}");
            for other in [0, cpu.saturating_sub(1), cpu, cpu + 1, MASK_CPUS + 7] {
                assert_eq!(mask_has(&m, other), other == cpu && cpu < MASK_CPUS);
            }
            assert_eq!(mask_eq(&m, &empty_mask()), cpu >= MASK_CPUS);
        }
        let mine = affinity(0).expect("sched_getaffinity of the caller");
        assert!(mask_count(&mine) >= 1);
        assert!(mask_has(&mine, current_cpu() as usize));
        assert!(affinity(i32::MAX).is_none(), "no such thread");
    }
}
