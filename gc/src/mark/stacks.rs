//! Parked goroutines' stacks scanned after a concurrent cycle's first
//! stop, not in it.
//!
//! A goroutine that is switched out cannot change its stack until it runs
//! again, so what its stack held at the first stop can be read later, as
//! long as it is read before the goroutine runs. A task source that can
//! defer (pardon-sched's) promises exactly that for a *deferral* (see
//! `pardon_preempt`'s `deferral` module): the first stop only begins one
//! ([`Suspended::Defer`](crate::rootscan::Suspended)); after the restart
//! the coordinator scans every parked goroutine still owed a scan
//! ([`Collector::scan_deferred_stacks`], into its own gray stack), while
//! each worker scans, with the [`StackShader`] below, any owed goroutine it
//! is about to switch in, and any goroutine the preemption signal switches
//! out while the deferral lasts; the second stop ends the deferral
//! ([`Suspended::EndDeferral`](crate::rootscan::Suspended)). Neither stop
//! then reads a parked goroutine's stack: the first stop's length no longer
//! grows with the number of goroutines parked.
//!
//! Why it is sound, with the deletion barrier (see `barrier`): the cycle
//! marks what was reachable at its first stop. A parked goroutine's stack
//! scanned later is the stack the stop would have scanned, and every word
//! of it that named an object then names the same allocated object now
//! (nothing is freed while marking); a word naming a slot allocated since
//! marks a new object, which is live anyway. A goroutine that ran after
//! the stop was scanned before it ran, and what it loads afterwards was
//! reachable at the stop (or is new), which is the barrier's business, as
//! for a thread. The one thing the barrier leaves to a rescan — a
//! reference swapped out of the heap but not yet shaded, held only in
//! registers, when the signal interrupts the store sequence — is covered
//! for goroutines by the scan as the signal switches them out (for threads
//! by the second stop's rescan, as before). A source that cannot defer
//! reports every suspended task at both stops, as before.
//!
//! Verify mode re-marks at the second stop from every root, every parked
//! goroutine's stack included, and so checks that nothing a deferred scan
//! should have found was left unmarked.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use pardon_preempt::{SuspendedTask, TaskScanner};

use crate::collector::Collector;
use crate::mark::barrier::OFF;
use crate::mark::Marker;
use crate::rootscan::scan_task;
use crate::stats::CycleStats;

/// A concurrent cycle's scanner of parked goroutines for their workers:
/// shades what a goroutine's stack reaches (marks it and queues it for the
/// coordinator, as the barrier does). Installed by the first stop,
/// dropped by the second (or, if the cycle is abandoned or panics, by the
/// cancellation that follows: `CancelOnDrop`).
pub(crate) struct StackShader(pub Arc<Collector>);

impl TaskScanner for StackShader {
    fn scan(&self, task: &SuspendedTask<'_>) {
        let raw = &self.0.raw;
        // Off once a cycle has been abandoned: nothing to shade for.
        if raw.phase.load(Relaxed) == OFF {
            return;
        }
        let mut unused = CycleStats::default();
        // SAFETY: the source hands over a task that stays switched out
        // until this returns, reported as its contract says (its stack
        // range readable and unchanged, its word its own chain head).
        unsafe { scan_task(raw, task, &mut unused, &mut |v| raw.shade(v)) };
    }
}

/// Cancels a cycle's deferral when dropped, world running (see
/// `Registry::cancel_deferred`): a no-op once the second stop has ended
/// it; otherwise (the second stop failed, or the cycle panicked) the
/// sources stop scanning for the cycle and let go of its scanner.
pub(crate) struct CancelOnDrop<'a>(
    pub &'a pardon_preempt::Registry,
    pub &'a Arc<dyn TaskScanner>,
);

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        self.0.cancel_deferred(self.1);
    }
}

impl Collector {
    /// The scanner a concurrent cycle's first stop hands to the task
    /// sources, made before the stop (it allocates).
    pub(crate) fn stack_shader(&self) -> Option<Arc<dyn TaskScanner>> {
        let me = self.me.upgrade()?;
        Some(Arc::new(StackShader(me)))
    }

    /// World running, after the first stop: scans every parked goroutine
    /// still owed a scan into `m` (see the module comment). Each scan runs
    /// with no stop overlapping it (the source's doing).
    pub(crate) fn scan_deferred_stacks(
        &self,
        shader: &Arc<dyn TaskScanner>,
        m: &mut Marker<'_>,
        cycle: &mut CycleStats,
    ) {
        let at = Instant::now();
        let raw = &self.raw;
        let mut tasks = 0;
        let mut counts = CycleStats::default();
        self.registry.scan_deferred(shader, |task| {
            // SAFETY: as in `StackShader::scan`.
            unsafe {
                scan_task(raw, task, &mut counts, &mut |v| {
                    m.mark_word(v);
                })
            };
            tasks += 1;
        });
        cycle.deferred_tasks += tasks;
        cycle.words_scanned += counts.words_scanned;
        cycle.precise_roots += counts.precise_roots;
        cycle.conservative_roots += counts.conservative_roots;
        cycle.deferred_scan = at.elapsed();
    }
}
