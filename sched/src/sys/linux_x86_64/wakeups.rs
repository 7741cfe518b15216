//! Helper threads that must wake on time while every CPU runs a worker.
//!
//! `sysmon` and the timer thread sleep almost all the time and must run
//! within microseconds of their deadline, or a slice ends late and a
//! sleeper wakes late. When every CPU is busy with a worker's goroutine,
//! that takes the kernel preempting the worker for them. Measured here
//! (2 vCPUs, kernel 6.18, no steal time), with 4 spinning goroutines on 2
//! workers, `sysmon` overslept its 125 µs rounds by p50 18 µs but p99.9
//! 2-4 ms, which became the scheduling latency's tail. Two settings, both
//! unprivileged and both about this thread only:
//!
//! - timer slack of 1 µs (the default, 50 µs, is added to every sleep);
//! - a short requested slice (`sched_attr.sched_runtime` of a
//!   `SCHED_OTHER` thread, 100 µs): since Linux 6.12 the EEVDF scheduler
//!   gives a thread asking for a short slice an early deadline, so its
//!   wake-up preempts a thread running a long one. Older kernels ignore the
//!   field for this policy; the call's result is ignored too.

/// Applies both settings to the calling thread.
pub(crate) fn favour_wakeups() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and affects this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
    /// `struct sched_attr`, version 0 (48 bytes).
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice: 0,
        priority: 0,
        runtime: 100_000,
        deadline: 0,
        period: 0,
    };
    // SAFETY: the kernel reads `size` bytes of a valid struct; pid 0 is
    // the calling thread. A refusal changes nothing.
    unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
}
