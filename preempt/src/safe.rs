//! Safe regions (Boehm's `GC_do_blocking`): a thread about to block in a
//! system call says so, counts as stopped for the whole time, and is never
//! signalled. It cannot leave the region while a stop holds it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::handshake::ThreadRecord;
use crate::state::{self, StopKind};
use crate::sys;

/// Enters a safe region: publishes the callee-saved registers and stack
/// pointer, then `RUNNING -> SAFE`.
#[inline(never)]
pub(crate) fn enter_safe_region(rec: &ThreadRecord) {
    // A coordinator reads these of a SAFE thread only after the SeqCst state
    // store below.
    let sp = rec.publish_call_registers();
    rec.scan_lo.store(sp, Ordering::Relaxed);
    rec.park_kind
        .store(StopKind::SafeRegion as u32, Ordering::Relaxed);
    rec.xsave_ptr.store(0, Ordering::Relaxed);
    rec.state.store(state::SAFE, Ordering::SeqCst);
    // A coordinator may have decided to signal us just before we switched to
    // SAFE. Let that signal land now rather than inside the blocking call; a
    // signal that was dropped (lost) is not waited on for long.
    let start = Instant::now();
    while rec.signal_pending.load(Ordering::SeqCst) != 0 {
        if start.elapsed() > Duration::from_millis(1) {
            break;
        }
        std::hint::spin_loop();
    }
    if let Some(e) = rec.request_pending() {
        // A stop is waiting for us: we are stopped now, and held.
        let _ = rec.state.compare_exchange(
            state::SAFE,
            state::SAFE_STOPPED,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        rec.poll_flag.store(0, Ordering::Relaxed);
        rec.count_park(StopKind::SafeRegion);
        rec.ack(e);
    }
}

/// Leaves a safe region, sleeping while a stop holds the thread in it, then
/// honours a request that arrived meanwhile.
pub(crate) fn exit_safe_region(rec: &ThreadRecord) {
    let reg = rec.registry();
    loop {
        let w = reg.world.load(Ordering::SeqCst);
        match rec.state.compare_exchange(
            state::SAFE,
            state::RUNNING,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => break,
            Err(state::SAFE_STOPPED) => sys::futex_wait(&reg.world, w, None),
            Err(_) => break,
        }
    }
    if rec.poll_flag.load(Ordering::Relaxed) != 0 {
        crate::park::poll_slow(rec);
    }
}

/// Runs `f` in a safe region of `rec`'s thread (the caller's own record):
/// just runs it if the thread is in a safe region already, or in a
/// no-preempt region, where one cannot be entered (the caller then holds
/// stops off). The region ends however `f` ends.
pub(crate) fn blocking_in<R>(rec: &ThreadRecord, f: impl FnOnce() -> R) -> R {
    if rec.state.load(Ordering::SeqCst) != state::RUNNING
        || rec.no_preempt.load(Ordering::Relaxed) != 0
    {
        return f();
    }
    enter_safe_region(rec);
    /// Leaves the region however `f` ends.
    struct Leave<'a>(&'a ThreadRecord);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            exit_safe_region(self.0);
        }
    }
    let _leave = Leave(rec);
    f()
}
