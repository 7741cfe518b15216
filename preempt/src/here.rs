//! Regions of the calling thread, whatever registry it is attached to:
//! for a library whose locks both threads of a registry and the tasks of
//! a scheduler over it take (a heap's, a scheduler's), which cannot name
//! the registry at each lock. Each is empty on a thread that is not
//! attached.

use std::sync::atomic::Ordering;

use crate::handshake::ThreadRecord;

/// A no-yield region of the calling thread, whatever registry it is
/// attached to, ended by drop (see
/// [`Attached::no_yield`](crate::Attached::no_yield)); nothing if the
/// thread is not attached. For a library's own locks that tasks of one
/// thread may all take (a heap's, from goroutines of one worker): a task
/// switched out holding one would leave the next task of its thread that
/// takes it blocking the thread for ever, as the holder can only resume
/// there. Stops are taken inside as anywhere else.
///
/// The record stays allocated while a guard is open: a thread that
/// detaches inside one leaks its record (memory, never soundness). A
/// guard leaked with `mem::forget` leaves the region open for good: the
/// thread is never yielded again, and a scheduler's waits on it refuse to
/// run (pardon-sched panics, naming the region).
pub struct NoYieldHere {
    rec: *const ThreadRecord,
}

/// Opens a [`NoYieldHere`] on the calling thread.
#[inline]
pub fn no_yield_here() -> NoYieldHere {
    NoYieldHere::on(crate::handshake::CURRENT.with(|c| c.get()))
}

impl NoYieldHere {
    /// Opens the region in `rec`, which must be null or the calling
    /// thread's live record. Also held by a coordinator from before it
    /// waits for the registry's coordinator lock until after it has let go
    /// of it (found: a goroutine preempted between taking the lock and
    /// becoming the coordinator, and another of its worker blocked in its
    /// own collection).
    #[inline]
    pub(crate) fn on(rec: *const ThreadRecord) -> NoYieldHere {
        if !rec.is_null() {
            // SAFETY: the caller's contract: the calling thread's live
            // record.
            let d = unsafe { &(*rec).no_yield };
            // Owner only: a plain increment (the handler that reads it
            // runs on this thread).
            d.store(d.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        }
        NoYieldHere { rec }
    }
}

impl Drop for NoYieldHere {
    #[inline]
    fn drop(&mut self) {
        if self.rec.is_null() {
            return;
        }
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        // SAFETY: the record this guard counted in: not freed while its
        // no-yield count is open (`Attached`'s drop leaks it then), and the
        // guard is `!Send`, so this is its owner thread.
        let d = unsafe { &(*self.rec).no_yield };
        d.store(d.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
    }
}

/// A no-preempt region of the calling thread, whatever registry it is
/// attached to, ended by drop (see [`Attached::enter_no_preempt`](crate::Attached::enter_no_preempt)):
/// nothing if the thread is not attached. For a scheduler's own locks
/// taken by a thread outside it: its workers take them inside their own
/// no-preempt regions, so such a thread stopped while it held one would
/// leave a worker blocked where a stop must wait for it, and the stop
/// would wait for ever. A stop that asks meanwhile parks the thread as the
/// outermost region ends.
///
/// The record stays allocated while a guard is open, as for
/// [`NoYieldHere`]; a guard leaked with `mem::forget` leaves the thread
/// unstoppable, and stops of its registry then fail by their timeout.
pub struct NoPreemptHere {
    rec: *const ThreadRecord,
}

/// Opens a [`NoPreemptHere`] on the calling thread.
#[inline]
pub fn no_preempt_here() -> NoPreemptHere {
    let rec = crate::handshake::CURRENT.with(|c| c.get());
    if !rec.is_null() {
        // SAFETY: the calling thread's live record (`CURRENT` is cleared
        // before a record is freed, and a record is not freed while a
        // region of its thread is open).
        unsafe { (*rec).enter_no_preempt() };
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    }
    NoPreemptHere { rec }
}

impl Drop for NoPreemptHere {
    #[inline]
    fn drop(&mut self) {
        if self.rec.is_null() {
            return;
        }
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        // SAFETY: the record this guard counted in, still allocated (see
        // the type's comment); the guard is `!Send`, so this is its
        // owner thread.
        let rec = unsafe { &*self.rec };
        if rec.exit_no_preempt() == 1 && rec.poll_flag.load(Ordering::Relaxed) != 0 {
            crate::park::poll_slow(rec);
        }
    }
}

/// Runs `f` in a safe region of the calling thread, whatever registry it
/// is attached to (see [`Registry::blocking`](crate::Registry::blocking)):
/// for a library's waits on a thread outside its scheduler, which must not
/// hold a stop off while they block. Just runs `f` on a thread that is not
/// attached, or is in a safe or no-preempt region already. `f` must let go
/// of every lock a stopped thread's code could need before it returns: the
/// region's end waits for a stop in progress to end.
pub fn blocking_here<R>(f: impl FnOnce() -> R) -> R {
    match crate::handshake::current() {
        Some(rec) => crate::safe::blocking_in(rec, f),
        None => f(),
    }
}
