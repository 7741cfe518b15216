//! No-preempt regions on a worker, and taking a runtime lock inside one
//! ([`lock`]: the runtime's own `lock::Lock`, or a `std` mutex where a
//! thread outside the runtime waits with a `std` condition variable).
//!
//! With signal preemption a goroutine can be switched out at any
//! instruction of the program's own code (`pardon-preempt`'s yield
//! requests). Switched out while it held one of the runtime's own locks (a
//! run queue, a channel's state), it would leave the next goroutine on its
//! worker that takes the same lock blocking the worker's thread for ever:
//! the goroutine holding it can only run on that thread. So the runtime
//! takes its locks inside a no-preempt region of the worker's preempt
//! record, where the signal handler refuses to yield, and switches between
//! contexts inside one too: the region's depth is 1 in the scheduler and
//! 0 in a goroutine's own code, and moves with the thread across a switch
//! (see `worker`). On a thread outside the runtime, a region is the
//! thread's own no-preempt region if it is attached to a registry (the
//! runtime's, shared with a heap whose mutator it is): a stop must not
//! park it holding a lock a worker takes at depth 1. Elsewhere regions are
//! empty.

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard};

use crate::lock::{Lock, LockGuard};
use crate::worker::worker;

/// A no-preempt region, ended by drop: in the worker's preempt record,
/// or in that of a thread outside the runtime attached to a registry.
pub(crate) struct Region {
    attached: Option<&'static pardon_preempt::Attached>,
    /// Outside the runtime: the thread's own region, if it is attached (a
    /// heap's mutator, say). A stop of the registry the runtime shares
    /// would otherwise park it holding a runtime lock, and a worker that
    /// then takes the lock, at depth 1, would hold the stop off for ever
    /// (found: a mutator thread sending to a goroutine while a collector
    /// thread stopped the world).
    _outside: Option<pardon_preempt::NoPreemptHere>,
}

impl Region {
    /// Enters a region on the calling thread: a worker's of a
    /// signal-preempted runtime, or an attached thread's outside it.
    #[inline]
    pub(crate) fn enter() -> Region {
        match worker() {
            Some(w) => {
                let attached = w.attached();
                if let Some(a) = attached {
                    a.enter_no_preempt();
                }
                Region {
                    attached,
                    _outside: None,
                }
            }
            None => Region {
                attached: None,
                _outside: Some(pardon_preempt::no_preempt_here()),
            },
        }
    }
}

impl Drop for Region {
    #[inline]
    fn drop(&mut self) {
        // The same thread's record: a region does not outlive the call
        // that entered it, and no goroutine is switched out inside one (a
        // wait there is refused, a yield signal too), so none changes
        // thread in it, even in a migrating runtime.
        if let Some(a) = self.attached {
            a.exit_no_preempt();
        }
    }
}

/// Runs `f` where the calling goroutine is never switched out (yields
/// are refused) but stops are taken as anywhere: for a lock that only
/// code outside stopped worlds takes, held where the allocator is called
/// (starting a thread). On a thread that is not a worker of a
/// signal-preempted runtime, just runs `f`.
pub(crate) fn no_yield<R>(f: impl FnOnce() -> R) -> R {
    match worker().and_then(|w| w.attached()) {
        Some(a) => a.no_yield(f),
        None => f(),
    }
}

/// A lock [`lock`] can take inside a region: the runtime's own ([`Lock`]),
/// or a `std` mutex, for state a thread outside the runtime waits on with
/// a `std` condition variable (the timers', the blocking pool's).
pub(crate) trait RegionLock {
    type Data;
    type Guard<'a>: DerefMut<Target = Self::Data>
    where
        Self: 'a;
    /// Takes the lock, with no region of its own.
    fn acquire(&self) -> Self::Guard<'_>;
}

impl<T> RegionLock for Lock<T> {
    type Data = T;
    type Guard<'a>
        = LockGuard<'a, T>
    where
        T: 'a;
    #[inline]
    fn acquire(&self) -> LockGuard<'_, T> {
        self.lock()
    }
}

impl<T> RegionLock for Mutex<T> {
    type Data = T;
    type Guard<'a>
        = MutexGuard<'a, T>
    where
        T: 'a;
    #[inline]
    fn acquire(&self) -> MutexGuard<'_, T> {
        lock_plain(self)
    }
}

/// A lock held inside a no-preempt region: the guard unlocks before the
/// region ends (fields drop in order).
pub(crate) struct Locked<'a, L: RegionLock + 'a> {
    guard: L::Guard<'a>,
    _region: Region,
}

impl<L: RegionLock> Deref for Locked<'_, L> {
    type Target = L::Data;
    fn deref(&self) -> &L::Data {
        &self.guard
    }
}

impl<L: RegionLock> DerefMut for Locked<'_, L> {
    fn deref_mut(&mut self) -> &mut L::Data {
        &mut self.guard
    }
}

/// Takes a runtime lock inside a no-preempt region.
pub(crate) fn lock<L: RegionLock>(m: &L) -> Locked<'_, L> {
    let region = Region::enter();
    Locked {
        guard: m.acquire(),
        _region: region,
    }
}

/// Locks a `std` mutex without a region: for threads outside the
/// runtime, which wait on a `std` condition variable with the guard (a
/// poisoned lock is taken anyway: the runtime's state is kept consistent
/// across the panics it lets through, which are the user's and happen
/// outside its locks).
pub(crate) fn lock_plain<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
