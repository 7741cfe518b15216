//! Moving a thread that keeps a stop waiting onto the coordinator's CPU.
//!
//! A stop ends when the last thread acknowledges, and a thread can only
//! acknowledge when it runs. On a machine with few CPUs the one a stop
//! needs is sometimes runnable but queued behind another task on its CPU
//! while a CPU elsewhere sits idle: the coordinator's own, which went idle
//! when the coordinator slept to wait. Linux does not pull a task that ran
//! within the last half millisecond (`sched_migration_cost`) to an idle
//! CPU, so the thread waits for its own CPU: a scheduler tick or more,
//! 1-4 ms. docs/STATUS.md traces such a stop: the mutator, its signal
//! pending, queued 1.1 ms behind the kernel's DAMON thread while the other
//! vCPU idled.
//!
//! So when a thread has kept a stop waiting for
//! [`Config::move_after`](crate::Config::move_after), the coordinator
//! narrows its affinity to the coordinator's CPU, which the kernel honours
//! at once by moving the queued thread there; the coordinator then sleeps,
//! leaving that CPU to it. Once every thread has acknowledged (or the stop
//! has failed), each moved thread gets its affinity back, before the stop
//! returns, so nobody outside the stop can see the narrowed mask on a
//! running thread. A thread is moved only if its affinity already allows
//! the coordinator's CPU and some other CPU as well (a thread pinned to
//! one CPU stays there), and it is given back its old affinity only if
//! the mask is still the one the move set (if someone else changed it
//! meanwhile, theirs stands). What remains: a change of affinity made by
//! another thread between our reading of the mask and our narrowing it is
//! lost, a window of one system call that only a program setting a stopped
//! thread's affinity during a stop can hit.
//!
//! Everything here runs on the coordinator, inside the stopped-world path:
//! two or three system calls per moved thread, no allocation, no lock
//! beyond the thread list the coordinator already holds.

use std::sync::atomic::Ordering;

use crate::handshake::{outstanding, ThreadRecord};
use crate::sys;

/// Moves every thread of `threads` that has not acknowledged epoch `e`
/// (the coordinator `me` excepted) to the calling thread's CPU, where the
/// move is allowed (see the module's essay), remembering each one's
/// affinity. Returns how many it moved. `threads` is the registry's list,
/// borrowed from its held lock.
pub(crate) fn move_laggards(
    threads: &[*const ThreadRecord],
    me: Option<&ThreadRecord>,
    e: u64,
) -> u32 {
    let Ok(cpu) = usize::try_from(sys::current_cpu()) else {
        return 0;
    };
    let here = sys::only_cpu(cpu);
    if sys::mask_count(&here) != 1 {
        return 0;
    }
    let mut moved = 0;
    for r in outstanding(threads, me, e) {
        if r.moved_to.load(Ordering::Relaxed) >= 0 {
            continue;
        }
        let Some(before) = sys::affinity(r.tid) else {
            continue;
        };
        if !sys::mask_has(&before, cpu) || sys::mask_count(&before) < 2 {
            continue;
        }
        // SAFETY: `moved_from` is touched only by the coordinator holding
        // the thread-list lock, which we are (see its field comment).
        unsafe { *r.moved_from.get() = before };
        if sys::set_affinity(r.tid, &here) {
            r.moved_to.store(cpu as i32, Ordering::Relaxed);
            moved += 1;
        }
    }
    moved
}

/// Gives every thread that [`move_laggards`] moved its affinity back
/// (unless it was changed since), and forgets the move. Called by the
/// coordinator before the stop returns, whether it succeeded or not.
pub(crate) fn restore_moved(threads: &[*const ThreadRecord]) {
    for &p in threads {
        // SAFETY: records in the list are live while its lock is held, and
        // the caller holds it.
        let r = unsafe { &*p };
        let Ok(cpu) = usize::try_from(r.moved_to.load(Ordering::Relaxed)) else {
            continue;
        };
        r.moved_to.store(-1, Ordering::Relaxed);
        let still_ours =
            sys::affinity(r.tid).is_some_and(|now| sys::mask_eq(&now, &sys::only_cpu(cpu)));
        if still_ours {
            // SAFETY: as in `move_laggards`: coordinator-only, under the
            // thread-list lock; written there before `moved_to` was set.
            let before = unsafe { &*r.moved_from.get() };
            sys::set_affinity(r.tid, before);
        }
    }
}
