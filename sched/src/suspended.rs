//! The goroutines a stopped world must report: every one that has a stack
//! and is not running, found through per-worker lists, and the task source
//! that hands them to whoever stops the registry (a collector, through
//! `pardon-preempt`'s [`TaskSource`]).
//!
//! Kept only by runtimes made with
//! [`Runtime::with_registry`](crate::Runtime::with_registry), whose
//! registry someone else may stop. A goroutine enters its worker's list
//! when it first runs (it gets its stack then) and leaves it when it ends;
//! both happen in the worker's scheduler, at no-preempt depth 1, so no
//! stopped world sees a list half-changed, and no stopped thread holds a
//! list's lock (the coordinator takes it).

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use pardon_preempt::{SuspendedTask, TaskScanner, TaskSource};

use crate::queue::{Shared, TaskRef};
use crate::room::Room;
use crate::task::{Task, RUNNING};

/// One worker's goroutines that have a stack: a slab, so that adding and
/// removing cost no search (a goroutine remembers its index).
///
/// Changed by the scheduler, in its no-preempt region, which must not
/// allocate (see `linked`): so it is grown beforehand, outside the region
/// (`room::grow`, through [`Room`]), and `add` and `remove` never
/// allocate. `free` can always take every index of `slots`: its capacity
/// is at least the slots'.
#[derive(Default)]
pub(crate) struct TaskList {
    slots: Vec<Option<TaskRef>>,
    free: Vec<usize>,
}

impl TaskList {
    /// Adds `t`; returns its index. The list must have room
    /// ([`Room::has_room`]).
    pub(crate) fn add(&mut self, t: TaskRef) -> usize {
        debug_assert!(self.has_room(), "TaskList::add would allocate");
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(t);
                i
            }
            None => {
                self.slots.push(Some(t));
                self.slots.len() - 1
            }
        }
    }

    /// Removes the task at `i`, handing it back (to drop where freeing is
    /// allowed).
    pub(crate) fn remove(&mut self, i: usize) -> Option<TaskRef> {
        let t = self.slots.get_mut(i)?.take()?;
        debug_assert!(self.free.len() < self.free.capacity());
        self.free.push(i);
        Some(t)
    }

    /// Slot `i`: `None` past the end, `Some(None)` if free.
    pub(crate) fn slot(&self, i: usize) -> Option<&Option<TaskRef>> {
        self.slots.get(i)
    }

    /// Every goroutine in the list.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &TaskRef> + '_ {
        self.slots.iter().flatten()
    }

    /// Empties the list (the runtime is gone), handing its goroutines to
    /// the caller to drop outside the lock.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = TaskRef> + '_ {
        self.free.clear();
        self.slots.drain(..).flatten()
    }
}

impl Room for TaskList {
    fn has_room(&self) -> bool {
        !self.free.is_empty() || self.slots.len() < self.room_for()
    }
    fn room_for(&self) -> usize {
        self.slots.capacity().min(self.free.capacity())
    }
    fn with_room(n: usize) -> Self {
        TaskList {
            slots: Vec::with_capacity(n),
            free: Vec::with_capacity(n),
        }
    }
    fn move_into(&mut self, to: &mut Self) {
        // Indices are kept: the slots move in order.
        debug_assert!(to.slots.is_empty() && to.room_for() >= self.slots.len());
        to.slots.append(&mut self.slots);
        to.free.append(&mut self.free);
    }
}

/// How many tasks ahead the report prefetches a task.
pub(crate) const AHEAD: usize = 16;
/// Cache lines of a parked goroutine's saved stack prefetched (the saved
/// registers and the runtime's park frames lie there).
pub(crate) const STACK_LINES: usize = 16;

/// A runtime's task source.
pub(crate) struct Source(pub Arc<Shared>);

// SAFETY: completeness: every goroutine with a stack is in its worker's
// list from before its first switch in until after its last switch out,
// and one that is not RUNNING is on no thread (RUNNING is set and cleared
// by its worker at depth 1, around the switches). Stability: a goroutine
// that is not running is resumed only by its worker's scheduler, which is
// stopped (or idle in a safe region, from which it returns only after the
// restart); its stack is freed only after it ends. The word is the one
// `worker::run` saved from the task word cell when it switched it out.
// Deferral (see `deferred`): a goroutine suspended at the stop that
// begins one owes a scan, which its worker makes before switching it in
// (or waits for the pass's); the pass claims it first, so it cannot run
// while scanned; a goroutine switched out `RUNNING` (a yield or a
// preemption) is scanned as it is switched out while one lasts.
unsafe impl TaskSource for Source {
    unsafe fn for_each_suspended(&self, f: &mut dyn FnMut(&SuspendedTask<'_>)) {
        for p in &self.0.procs {
            let list = p.tasks.lock();
            // SAFETY: the caller's stopped world, as required.
            unsafe { report(&list.slots, 0..list.slots.len(), f) };
        }
    }

    /// Part `part` of each worker's list is its `part`-th of `parts`
    /// slices; the parts visit the lists in rotated orders, so that two
    /// threads reading two parts at once rarely wait on one list's lock.
    unsafe fn for_each_suspended_part(
        &self,
        part: usize,
        parts: usize,
        f: &mut dyn FnMut(&SuspendedTask<'_>),
    ) {
        let procs = &self.0.procs;
        for k in 0..procs.len() {
            let p = &procs[(part + k) % procs.len()];
            let list = p.tasks.lock();
            let n = list.slots.len();
            let range = n * part / parts..n * (part + 1) / parts;
            // SAFETY: the caller's stopped world, as required.
            unsafe { report(&list.slots, range, f) };
        }
    }

    unsafe fn defer_scans(
        &self,
        scanner: &Arc<dyn TaskScanner>,
        now: &mut dyn FnMut(&SuspendedTask<'_>),
    ) {
        // Begun: nothing to report now (each goroutine is scanned before it
        // runs again, or by the coordinator's pass: see `deferred`).
        if !self.0.deferral.begin(&self.0, scanner) {
            // SAFETY: the caller's stopped world, as required.
            unsafe { self.for_each_suspended(now) };
        }
    }

    fn scan_deferred(&self, scanner: &Arc<dyn TaskScanner>, f: &mut dyn FnMut(&SuspendedTask<'_>)) {
        self.0.deferral.scan_owed(&self.0, scanner, f);
    }

    unsafe fn end_deferral(
        &self,
        scanner: &Arc<dyn TaskScanner>,
        f: &mut dyn FnMut(&SuspendedTask<'_>),
    ) {
        if !self.0.deferral.end(&self.0, scanner, f) {
            // SAFETY: the caller's stopped world, as required.
            unsafe { self.for_each_suspended(f) };
        }
    }

    fn cancel_deferral(&self, scanner: &Arc<dyn TaskScanner>) {
        self.0.deferral.cancel(scanner);
    }
}

/// Reports the switched-out goroutines among `slots[range]` to `f`.
///
/// # Safety
/// A stopped world of the registry the runtime shares (see the `Sync`
/// argument above `Source`): nothing switches these goroutines in or out.
unsafe fn report(
    slots: &[Option<TaskRef>],
    range: std::ops::Range<usize>,
    f: &mut dyn FnMut(&SuspendedTask<'_>),
) {
    let end = range.end;
    for i in range {
        // The walk is bound by cache misses, a parked goroutine's state
        // and stack being cold: ask for the task AHEAD places on, and for
        // the saved stack words of the one half as far (whose task should
        // have arrived by then).
        if let Some(Some(n)) = slots.get(i + AHEAD).filter(|_| i + AHEAD < end) {
            // The fields read here lead the task (`Task` is `repr(C)`),
            // but an allocation is only 16-aligned: they may straddle two
            // lines.
            let at = Arc::as_ptr(n) as usize;
            crate::sys::prefetch(at);
            crate::sys::prefetch(at + 63);
        }
        if let Some(Some(n)) = slots.get(i + AHEAD / 2).filter(|_| i + AHEAD / 2 < end) {
            // SAFETY: as below: a switched-out task's context is not
            // written while the world is stopped (a running one's is not
            // read for the scan, and a stale value only mis-aims a hint).
            let sp = unsafe { (*n.ctx.get()).sp() };
            for line in 0..STACK_LINES {
                crate::sys::prefetch(sp + line * 64);
            }
        }
        let Some(t) = &slots[i] else { continue };
        if is_running(t) {
            continue;
        }
        // SAFETY: the task is switched out and its worker stopped (see
        // above), so nothing writes its cells now; its stack stays with it
        // until it is dead, and dead tasks leave the list before their
        // stacks are returned.
        if let Some(task) = unsafe { crate::deferred::report(t) } {
            f(&task);
        }
    }
}

/// Whether `t` is on a thread, as a stopped world sees it (its worker
/// sets and clears `RUNNING` at depth 1, around the switches).
pub(crate) fn is_running(t: &Task) -> bool {
    t.state.load(SeqCst) == RUNNING
}
