//! Scanning parked goroutines after a stop rather than in it
//! (pardon-preempt's *deferral*): the part of the task source that lets a
//! concurrent collector keep a million parked goroutines out of its pause.
//!
//! A stop that begins a deferral ([`Deferral::begin`]) only numbers it:
//! every goroutine whose `Task::scanned` is not the deferral's number is
//! *owed* a scan of its stack as the stop saw it. Goroutines running at the
//! stop are not owed one (the stop saw them as threads), nor are those
//! that first run later (their stacks are new). An owed goroutine is
//! scanned by whichever comes first:
//!
//! - its worker, in the scheduler, before it switches it in
//!   ([`Deferral::before_resume`]): the goroutine has not run since the
//!   stop, so its stack is as the stop saw it;
//! - the coordinator's pass over the workers' task lists
//!   ([`Deferral::scan_owed`], through `TaskSource::scan_deferred`).
//!
//! Both *claim* a goroutine first, by one compare-and-swap of `scanned`
//! from the value they read to the deferral's number with [`SCANNING`]
//! set, and store the number alone when done: so each owed goroutine is
//! scanned once, and a worker that finds its goroutine claimed by the
//! coordinator waits for the scan to end before switching in (the
//! coordinator scans with no stop overlapping, so the wait is short and
//! never waits for a stopped thread). A goroutine that leaves its worker
//! by a yield or a preemption while the deferral lasts is scanned again as
//! it is switched out ([`Deferral::after_yield`]): the signal may have
//! taken it between a barrier's swap and its shading, the swapped-out
//! reference only in its saved registers. Parks are calls into the
//! runtime, never inside a barrier, and need nothing.
//!
//! One deferral at a time, owned by its scanner (compared by address): a
//! stop that asks for another while one is under way is refused, and the
//! task source then reports every parked goroutine in that stop, as a
//! source that cannot defer does. A deferral ends in a stop, or, for a
//! collector whose second stop failed, by cancellation with the world
//! running ([`Deferral::cancel`]): workers run the scanner under its lock,
//! so none is inside it once the cancellation has taken it.
//!
//! A goroutine owed a scan has not run since the stop, so it has not
//! ended, and it cannot run while claimed: its stack stays as the stop saw
//! it. The pass holds each claimed goroutine by reference for the scan
//! (the runtime may be dropped meanwhile, emptying its lists).

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use pardon_preempt::{SuspendedTask, TaskScanner};

use crate::queue::{Shared, TaskRef};
use crate::region::lock_plain;
use crate::suspended::{AHEAD, STACK_LINES};
use crate::task::Task;

/// Set in `Task::scanned` while a claim's scan runs.
pub(crate) const SCANNING: u64 = 1 << 63;

/// How many goroutines the coordinator's pass claims under one hold of a
/// task list's lock (and then scans in one no-preempt stretch).
const BATCH: usize = 32;

/// A runtime's deferral state (one deferral at a time, its scanner's).
#[derive(Default)]
pub(crate) struct Deferral {
    /// Whether a deferral is under way. Set and cleared in stopped
    /// worlds; read by workers in their scheduler (depth 1, which a stop
    /// excludes, so it does not change under them) and by the pass.
    on: AtomicBool,
    /// The deferral's number (raised by each `begin`). A goroutine whose
    /// `scanned` equals it owes nothing.
    epoch: AtomicU64,
    /// Whether the coordinator's pass has gone over every list since the
    /// deferral began: then no goroutine is owed a scan any more.
    complete: AtomicBool,
    /// The coordinator's scanner, which owns the deferral: set in stopped
    /// worlds, taken in one or by a cancellation; locked by workers for
    /// each scan (depth 1, so never held by a stopped thread).
    scanner: Mutex<Option<Arc<dyn TaskScanner>>>,
}

impl Deferral {
    /// The current deferral's number, which a goroutine that gets its
    /// first stack takes (it owes no scan).
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Relaxed)
    }

    /// Whether a deferral is under way (see the field).
    #[inline]
    pub(crate) fn on(&self) -> bool {
        self.on.load(Relaxed)
    }

    /// Begins a deferral owned by `scanner`, unless one of another
    /// scanner is under way: returns whether it began (if not, the caller
    /// reports every goroutine now). World stopped (of the registry the
    /// workers are attached to). The goroutines running now were seen as
    /// threads by the stop: they owe nothing.
    pub(crate) fn begin(&self, shared: &Shared, scanner: &Arc<dyn TaskScanner>) -> bool {
        let mut slot = lock_plain(&self.scanner);
        if self.on.load(Relaxed) && !owns(&slot, scanner) {
            return false;
        }
        let epoch = self.epoch.fetch_add(1, Relaxed) + 1;
        for p in &shared.procs {
            let t = p.current.load(Relaxed) as *const Task;
            if !t.is_null() {
                // SAFETY: a worker's `current` names the goroutine it runs,
                // which it holds until it clears the word (at depth 1, so
                // not during this stop).
                unsafe { (*t).scanned.store(epoch, Relaxed) };
            }
        }
        *slot = Some(scanner.clone());
        self.complete.store(false, Relaxed);
        self.on.store(true, Release);
        true
    }

    /// Ends `scanner`'s deferral (world stopped), reporting to `f` every
    /// goroutine still owed a scan if the pass did not finish (none
    /// otherwise). Returns false, doing nothing, if `scanner` owns no
    /// deferral here (the caller then reports every goroutine).
    pub(crate) fn end(
        &self,
        shared: &Shared,
        scanner: &Arc<dyn TaskScanner>,
        f: &mut dyn FnMut(&SuspendedTask<'_>),
    ) -> bool {
        let mut slot = lock_plain(&self.scanner);
        if !self.on.load(Relaxed) || !owns(&slot, scanner) {
            return false;
        }
        if !self.complete.load(Relaxed) {
            let epoch = self.epoch();
            for p in &shared.procs {
                let list = p.tasks.lock();
                for t in list.iter() {
                    let s = t.scanned.load(Acquire);
                    // Running goroutines were stopped as threads; a
                    // claimed one is scanned by a thread at depth 1,
                    // which the stop excluded: so none is claimed now.
                    if s != epoch && !crate::suspended::is_running(t) {
                        // SAFETY: switched out and its worker stopped.
                        if let Some(task) = unsafe { report(t) } {
                            f(&task);
                        }
                    }
                }
            }
        }
        self.on.store(false, Relaxed);
        // Dropped here, in the stop: never the scanner's last reference
        // (the coordinator holds its own).
        slot.take();
        true
    }

    /// Ends `scanner`'s deferral with the world running (see
    /// `TaskSource::cancel_deferral`). A worker scans under the scanner's
    /// lock, so none is inside the scanner once this has taken it.
    pub(crate) fn cancel(&self, scanner: &Arc<dyn TaskScanner>) {
        let mut slot = lock_plain(&self.scanner);
        if owns(&slot, scanner) {
            self.on.store(false, Relaxed);
            slot.take();
        }
    }

    /// Whether `t` owes no scan to the deferral under way (or none is):
    /// a worker may then switch it in without scanning it (a hand-off
    /// does only then: a scan wants the scheduler's stack).
    #[inline]
    pub(crate) fn settled(&self, t: &Task) -> bool {
        !self.on() || t.scanned.load(Acquire) == self.epoch()
    }

    /// Before a worker switches `t` in (depth 1): scans it if it is owed
    /// a scan, or waits for the pass's scan of it to end.
    pub(crate) fn before_resume(&self, t: &Task) {
        let epoch = self.epoch();
        loop {
            let s = t.scanned.load(Acquire);
            if s == epoch {
                return;
            }
            if s & SCANNING != 0 {
                // The coordinator scans it, with no stop overlapping: a
                // few hundred nanoseconds, unless the kernel took its CPU.
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
                std::thread::yield_now();
                continue;
            }
            if t.scanned
                .compare_exchange(s, epoch | SCANNING, AcqRel, Relaxed)
                .is_ok()
            {
                self.scan_with_scanner(t);
                t.scanned.store(epoch, Release);
                return;
            }
        }
    }

    /// After a worker switched `t` out by a yield or a preemption (depth
    /// 1): scans it as it stopped (see the module comment).
    pub(crate) fn after_yield(&self, t: &Task) {
        self.scan_with_scanner(t);
    }

    /// Runs the scanner on `t`, which the calling worker holds switched
    /// out (or has claimed). Under the scanner's lock: a worker never holds
    /// the scanner's last reference (whose drop would free memory here, at
    /// depth 1), and a cancellation waits for the scan.
    fn scan_with_scanner(&self, t: &Task) {
        let scanner = lock_plain(&self.scanner);
        // SAFETY: `t` is switched out and this worker holds it (it is the
        // only one that could switch it in).
        if let (Some(scanner), Some(task)) = (&*scanner, unsafe { report(t) }) {
            scanner.scan(&task);
        }
    }

    /// The coordinator's pass, world running (see the module comment):
    /// claims and hands to `f` every goroutine still owed a scan, a batch
    /// at a time, each batch with no stop overlapping.
    pub(crate) fn scan_owed(
        &self,
        shared: &Shared,
        scanner: &Arc<dyn TaskScanner>,
        f: &mut dyn FnMut(&SuspendedTask<'_>),
    ) {
        let Some(registry) = &shared.registry else {
            return;
        };
        let epoch = {
            let slot = lock_plain(&self.scanner);
            if !self.on.load(Acquire) || !owns(&slot, scanner) {
                return;
            }
            self.epoch()
        };
        for p in &shared.procs {
            let mut at = 0;
            let mut done = false;
            while !done {
                // The batch's goroutines, held by reference: the runtime
                // may be dropped meanwhile, emptying the lists. Released
                // after the region (a last reference frees the task).
                let mut claimed: [Option<TaskRef>; BATCH] = Default::default();
                registry.outside_stops(|| {
                    if !self.on.load(Relaxed) || self.epoch() != epoch {
                        // Ended (or a later one began) meanwhile.
                        done = true;
                        return;
                    }
                    let mut n = 0;
                    {
                        let list = p.tasks.lock();
                        while n < BATCH {
                            let Some(slot) = list.slot(at) else {
                                done = true;
                                break;
                            };
                            at += 1;
                            // Bound by cache misses, as a stop's report
                            // is: ask for the task AHEAD places on.
                            if let Some(Some(n)) = list.slot(at + AHEAD) {
                                let p = Arc::as_ptr(n) as usize;
                                crate::sys::prefetch(p);
                                crate::sys::prefetch(p + 63);
                            }
                            let Some(t) = slot else { continue };
                            let s = t.scanned.load(Acquire);
                            if s != epoch
                                && s & SCANNING == 0
                                && t.scanned
                                    .compare_exchange(s, epoch | SCANNING, AcqRel, Relaxed)
                                    .is_ok()
                            {
                                claimed[n] = Some(t.clone());
                                n += 1;
                            }
                        }
                    }
                    let claimed = &claimed[..n];
                    let sp = |t: &Option<TaskRef>| {
                        let t = t.as_ref().expect("claimed");
                        // SAFETY: claimed, so not switched in (its worker
                        // waits for the claim): its context is not written.
                        unsafe { (*t.ctx.get()).sp() }
                    };
                    for t in claimed.iter().take(AHEAD / 2) {
                        prefetch_stack(sp(t));
                    }
                    for (i, t) in claimed.iter().enumerate() {
                        if let Some(next) = claimed.get(i + AHEAD / 2) {
                            prefetch_stack(sp(next));
                        }
                        let t = t.as_ref().expect("claimed");
                        // SAFETY: claimed, so not switched in, and it has
                        // not run since the stop, so it has not ended: its
                        // cells are unchanged and its stack is its own
                        // (held by the reference above).
                        if let Some(task) = unsafe { report(t) } {
                            f(&task);
                        }
                        t.scanned.store(epoch, Release);
                    }
                });
                drop(claimed);
            }
        }
        if self.on.load(Relaxed) && self.epoch() == epoch {
            self.complete.store(true, Release);
        }
    }
}

/// Whether the deferral in `slot` is `scanner`'s (by address: the
/// scanners' vtables may be duplicated across codegen units).
fn owns(slot: &Option<Arc<dyn TaskScanner>>, scanner: &Arc<dyn TaskScanner>) -> bool {
    slot.as_ref()
        .is_some_and(|s| std::ptr::addr_eq(Arc::as_ptr(s), Arc::as_ptr(scanner)))
}

/// Asks for the saved words of a parked goroutine's stack (its saved
/// registers and the runtime's park frames lie there).
fn prefetch_stack(sp: usize) {
    for line in 0..STACK_LINES {
        crate::sys::prefetch(sp + line * 64);
    }
}

/// What a stop would report of `t`: its stack, saved stack pointer and
/// word, or `None` if it has no stack.
///
/// # Safety
/// `t` is switched out, and nothing switches it in or out until the
/// report has been used: its worker is stopped or is the caller, or a
/// claim holds it.
pub(crate) unsafe fn report(t: &Task) -> Option<SuspendedTask<'static>> {
    // SAFETY: the caller's promise: nothing writes these cells now.
    unsafe {
        let s = (*t.stack.get()).as_ref()?;
        Some(SuspendedTask {
            stack: (s.bottom(), s.top()),
            sp: (*t.ctx.get()).sp(),
            registers: &[],
            word: *t.word.get(),
        })
    }
}
