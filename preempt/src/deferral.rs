//! Deferred scans of suspended tasks: a coordinator that wants the stacks
//! of suspended tasks but not in its stop.
//!
//! A suspended task's stack does not change until the task runs again. So
//! a coordinator that needs what the stacks held at a stop (a concurrent
//! collector's snapshot) need not read them *in* the stop, where their
//! cost is paid by every thread waiting for the restart: it may read each
//! later, provided it reads it before the task runs again. A source that
//! supports this promises, for a *deferral* begun in a stopped world with
//! a [`TaskScanner`]:
//!
//! - every task suspended at the stop is handed to the scanner, or to the
//!   coordinator's [`Registry::scan_deferred`], before it is switched in
//!   again — so each is scanned exactly as the stop would have seen it;
//! - every task that is switched out *involuntarily* (by a yield request:
//!   at an arbitrary instruction) while the deferral lasts is handed to the
//!   scanner as it is switched out. A task switched out by the preemption
//!   signal may be anywhere: between two instructions whose pair a
//!   coordinator relies on seeing together (a collector's barrier, which
//!   swaps a reference out of the heap and then shades it), with the
//!   first's result only in its saved registers. A thread interrupted
//!   there is seen by the coordinator's next stop; a task switched out
//!   there by this scan.
//!
//! The deferral ends in a later stopped world
//! ([`StoppedWorld::end_deferred`]), which also reports any task the
//! sources could not guarantee scanned; or, if the coordinator cannot make
//! that stop, it is cancelled with the world running
//! ([`Registry::cancel_deferred`]). A deferral belongs to its scanner: a
//! source runs one at a time, and treats a stop that asks for another
//! meanwhile as a source that cannot defer would. A source that cannot defer
//! reports every suspended task at both stops, as before: the default
//! methods of [`TaskSource`] do exactly that, so the coordinator's code is
//! the same for both.

use std::sync::Arc;

use crate::registry::{lock, Registry};
use crate::stop::StoppedWorld;
use crate::tasks::{SuspendedTask, TaskSource};

/// What a coordinator runs on a suspended task whose scan it deferred.
///
/// Called by a source's scheduler, on a thread attached to the registry,
/// inside that thread's no-preempt region (the scheduler's own code):
/// `scan` must not allocate, must not take a lock that a stopped thread
/// may hold, must not block, and must not panic. It is called on many
/// threads at once. A deferral belongs to its scanner, compared by
/// address: a source runs one deferral at a time, and reports its tasks
/// in the stops to any other scanner meanwhile.
pub trait TaskScanner: Send + Sync {
    /// Scans `task` (suspended, and not switched in until this returns).
    fn scan(&self, task: &SuspendedTask<'_>);
}

impl StoppedWorld<'_> {
    /// Begins a deferral in every source (see the module comment): those
    /// that support it hand their suspended tasks to `scanner` or
    /// [`Registry::scan_deferred`] from now on; those that do not report
    /// them to `f` now. Never allocates (the scanner's reference count
    /// only). `f` must not add or remove sources.
    pub fn defer_suspended(
        &self,
        scanner: &Arc<dyn TaskScanner>,
        mut f: impl FnMut(&SuspendedTask<'_>),
    ) {
        let s = lock(&self.registry().inner.sources);
        for src in s.sources() {
            // SAFETY: this world of the source's registry is stopped, and
            // held by the caller until after this call.
            unsafe { src.defer_scans(scanner, &mut f) };
        }
    }

    /// Ends `scanner`'s deferral, begun by an earlier stop (see the module
    /// comment), reporting to `f` every suspended task the coordinator
    /// must scan now: none from a source whose deferred scans are all
    /// done, every one from a source that did not defer for `scanner`.
    pub fn end_deferred(
        &self,
        scanner: &Arc<dyn TaskScanner>,
        mut f: impl FnMut(&SuspendedTask<'_>),
    ) {
        let s = lock(&self.registry().inner.sources);
        for src in s.sources() {
            // SAFETY: as in `defer_suspended`.
            unsafe { src.end_deferral(scanner, &mut f) };
        }
    }
}

impl Registry {
    /// The deferred scans of every source (see the module comment), run on
    /// the calling thread while the world runs: returns once every task
    /// suspended at the deferral's stop has been scanned, by `f` here or by
    /// the scanner before it ran again. Each task handed to `f` stays
    /// suspended until `f` returns, and `f` runs so that no stop overlaps
    /// it (a scheduler may be waiting for it with a stop pending). Call it
    /// outside stops, holding no stopped world; it allocates (a copy of the
    /// list of sources).
    pub fn scan_deferred(
        &self,
        scanner: &Arc<dyn TaskScanner>,
        mut f: impl FnMut(&SuspendedTask<'_>),
    ) {
        for src in self.sources_now() {
            src.scan_deferred(scanner, &mut f);
        }
    }

    /// Ends `scanner`'s deferral in every source without a stop (see
    /// [`TaskSource::cancel_deferral`]): for a coordinator whose second
    /// stop failed. Allocates (a copy of the list of sources).
    pub fn cancel_deferred(&self, scanner: &Arc<dyn TaskScanner>) {
        for src in self.sources_now() {
            src.cancel_deferral(scanner);
        }
    }

    /// The sources, copied out of their lock, which is taken with no stop
    /// overlapping (a stop's coordinator takes it: a thread stopped while
    /// holding it would hold that stop off); the caller may be stopped
    /// while it uses the copy.
    fn sources_now(&self) -> Vec<Arc<dyn TaskSource>> {
        loop {
            // Filled inside the region, allocated outside it (nothing may
            // call the allocator in a no-preempt region).
            let mut copy = Vec::with_capacity(self.with_sources(|s| s.sources().count()));
            let full = self.with_sources(|s| {
                if s.sources().count() > copy.capacity() {
                    return false;
                }
                copy.extend(s.sources().cloned());
                true
            });
            if full {
                return copy;
            }
        }
    }
}
