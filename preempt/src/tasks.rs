//! Suspended tasks: execution contexts that are on no thread, which a
//! stopped world covers too.
//!
//! A scheduler that runs many tasks on few threads (pardon-sched's
//! goroutines) leaves most of them suspended at any moment: switched out,
//! their registers saved on their own stacks. They are already stopped —
//! nothing runs them while the world is — so a stop never signals or waits
//! for them, and its time to safepoint does not depend on how many there
//! are. But a collector must still see their stacks. The scheduler adds a
//! [`TaskSource`] to the registry its workers are attached to; a
//! coordinator asks [`StoppedWorld::for_each_suspended`] for every
//! suspended task of every source, beside [`StoppedWorld::threads`] for
//! the running ones.
//!
//! This crate still knows nothing of heaps or frames: a suspended task is
//! a stack range, a saved stack pointer and an opaque word, the same three
//! things a stopped thread reports.

use std::sync::Arc;

use crate::registry::{lock, Registry};
use crate::stop::StoppedWorld;

/// One suspended task, as a [`TaskSource`] reports it.
#[derive(Clone, Copy, Debug)]
pub struct SuspendedTask<'a> {
    /// The bounds `(lo, hi)` of the stack it runs on.
    pub stack: (usize, usize),
    /// Its saved stack pointer: the lowest address to scan. Whatever the
    /// switch away from it saved on its stack (callee-saved registers, or
    /// every register after an asynchronous preemption) lies at or above
    /// it.
    pub sp: usize,
    /// Registers saved somewhere other than its stack (often none).
    pub registers: &'a [u64],
    /// Its task word, saved from its thread's
    /// [`Attached::task_word_cell`](crate::Attached::task_word_cell) when
    /// it was switched out.
    pub word: usize,
}

/// A source of suspended tasks: a scheduler's goroutines that are not
/// running on a thread.
///
/// # Safety
/// Implementors promise, for every call of
/// [`TaskSource::for_each_suspended`] made as its contract allows:
/// - *completeness*: every task of the scheduler whose stack may hold
///   something a coordinator cares about, and that is not running on a
///   thread attached to the registry, is reported exactly once (a
///   collector frees what no thread and no reported task reaches);
/// - *stability*: `[sp, stack.1)` of each report is mapped, readable and
///   not written by anything until the world restarts;
/// - the word is the task's own, saved as the cell's contract says.
pub unsafe trait TaskSource: Send + Sync {
    /// Calls `f` with every suspended task.
    ///
    /// # Safety
    /// The caller holds a stopped world of a registry this source was
    /// added to (so no thread of the scheduler is switching a task in or
    /// out).
    unsafe fn for_each_suspended(&self, f: &mut dyn FnMut(&SuspendedTask<'_>));

    /// Calls `f` with the suspended tasks of part `part` of `parts`
    /// (`part < parts`): the parts of one stopped world together report
    /// every suspended task exactly once, as
    /// [`TaskSource::for_each_suspended`] does alone, and calls for
    /// different parts may run at once on different threads (a collector
    /// reading parked stacks in parallel). The default puts every task in
    /// part 0.
    ///
    /// # Safety
    /// As for [`TaskSource::for_each_suspended`].
    unsafe fn for_each_suspended_part(
        &self,
        part: usize,
        parts: usize,
        f: &mut dyn FnMut(&SuspendedTask<'_>),
    ) {
        let _ = parts;
        if part == 0 {
            // SAFETY: the caller holds a stopped world, as required.
            unsafe { self.for_each_suspended(f) }
        }
    }

    /// Begins a deferral of its suspended tasks' scans, owned by `scanner`
    /// (see `deferral`): from now until [`TaskSource::end_deferral`] with
    /// the same scanner, every task suspended now is handed to `scanner` or
    /// to [`TaskSource::scan_deferred`]'s `f` before it runs again, and
    /// every task switched out by a yield request is handed to `scanner`
    /// as it is switched out. Reports to `f` the tasks the caller must
    /// scan now: none, or, from a source that cannot defer (the default)
    /// or has a deferral of another scanner under way, every suspended
    /// task.
    ///
    /// # Safety
    /// As for [`TaskSource::for_each_suspended`].
    unsafe fn defer_scans(
        &self,
        scanner: &Arc<dyn crate::TaskScanner>,
        f: &mut dyn FnMut(&SuspendedTask<'_>),
    ) {
        let _ = scanner;
        // SAFETY: the caller holds a stopped world, as required.
        unsafe { self.for_each_suspended(f) }
    }

    /// World running: hands every task of `scanner`'s deferral not
    /// scanned yet to `f`, each kept suspended until `f` returns, with no
    /// stop overlapping `f`; returns once every task suspended at the
    /// deferral's stop has been scanned (here or by the scanner). Does
    /// nothing for a deferral `scanner` does not own (and by default).
    fn scan_deferred(
        &self,
        scanner: &Arc<dyn crate::TaskScanner>,
        f: &mut dyn FnMut(&SuspendedTask<'_>),
    ) {
        let _ = (scanner, f);
    }

    /// Ends `scanner`'s deferral, reporting to `f` the suspended tasks the
    /// caller must scan now: those whose deferred scan cannot be
    /// guaranteed, or every suspended task if `scanner` owns no deferral
    /// here (the default).
    ///
    /// # Safety
    /// As for [`TaskSource::for_each_suspended`].
    unsafe fn end_deferral(
        &self,
        scanner: &Arc<dyn crate::TaskScanner>,
        f: &mut dyn FnMut(&SuspendedTask<'_>),
    ) {
        let _ = scanner;
        // SAFETY: the caller holds a stopped world, as required.
        unsafe { self.for_each_suspended(f) }
    }

    /// World running: ends `scanner`'s deferral without a stop, for a
    /// coordinator that could not make the stop that would end it (what it
    /// deferred is then no longer guaranteed scanned). Returns once no
    /// thread is inside `scanner`. Does nothing by default.
    fn cancel_deferral(&self, scanner: &Arc<dyn crate::TaskScanner>) {
        let _ = scanner;
    }
}

/// Identifies a source added to a registry, to remove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSourceId(u64);

/// The sources of one registry.
#[derive(Default)]
pub(crate) struct Sources {
    next: u64,
    list: Vec<(u64, Arc<dyn TaskSource>)>,
}

impl Sources {
    /// The sources, in the order they were added.
    pub(crate) fn sources(&self) -> impl Iterator<Item = &Arc<dyn TaskSource>> {
        self.list.iter().map(|(_, s)| s)
    }
}

impl Registry {
    /// Runs `f` on the sources with no stopped world reading them: outside
    /// stops, or inside the caller's own (whose coordinator is then this
    /// thread, and every other thread that could change them is stopped or
    /// waits for the coordinator lock).
    pub(crate) fn with_sources<R>(&self, f: impl FnOnce(&mut Sources) -> R) -> R {
        if self.world_held_by_me() {
            return f(&mut lock(&self.inner.sources));
        }
        self.outside_stops(|| f(&mut lock(&self.inner.sources)))
    }

    /// Adds a source of suspended tasks, which every later stopped world
    /// of this registry reports (see [`StoppedWorld::for_each_suspended`]).
    /// Waits for a stop in progress to end (unless the caller holds it).
    pub fn add_task_source(&self, source: Arc<dyn TaskSource>) -> TaskSourceId {
        let mut source = Some(source);
        loop {
            // `with_sources` is a no-preempt region on an attached thread,
            // where nothing may call the allocator: the push must find
            // room, made outside.
            let added = self.with_sources(|s| {
                if s.list.len() == s.list.capacity() {
                    return None;
                }
                s.next += 1;
                let id = s.next;
                s.list.push((id, source.take().expect("added once")));
                Some(TaskSourceId(id))
            });
            if let Some(id) = added {
                return id;
            }
            let want = self.with_sources(|s| s.list.len()) * 2 + 4;
            let mut bigger = Vec::with_capacity(want);
            let spare = self.with_sources(|s| {
                if s.list.len() > want {
                    // Grown meanwhile past this one: hand it back.
                    return bigger;
                }
                bigger.append(&mut s.list);
                std::mem::replace(&mut s.list, bigger)
            });
            // The old buffer (or the unused new one) is freed out here.
            drop(spare);
        }
    }

    /// Removes a source; returns it, or `None` if `id` is not one of this
    /// registry's. Waits for a stop in progress to end (unless the caller
    /// holds it), so no coordinator is using it afterwards.
    pub fn remove_task_source(&self, id: TaskSourceId) -> Option<Arc<dyn TaskSource>> {
        self.with_sources(|s| {
            let i = s.list.iter().position(|(k, _)| *k == id.0)?;
            Some(s.list.remove(i).1)
        })
    }
}

/// A stopped world's suspended tasks, in parts that several threads may
/// read at once ([`StoppedWorld::suspended_parts`]). Holds the sources'
/// lock, which no stopped thread can hold.
pub struct SuspendedParts<'w> {
    sources: std::sync::MutexGuard<'w, Sources>,
}

impl SuspendedParts<'_> {
    /// Calls `f` with the suspended tasks of part `part` of `parts` of
    /// every source (see [`TaskSource::for_each_suspended_part`]): the
    /// parts together are what [`StoppedWorld::for_each_suspended`]
    /// reports. Never allocates.
    ///
    /// # Panics
    /// If `part >= parts`.
    pub fn for_each(&self, part: usize, parts: usize, mut f: impl FnMut(&SuspendedTask<'_>)) {
        assert!(part < parts, "part {part} of {parts}");
        for (_, src) in &self.sources.list {
            // SAFETY: the world these parts were taken from is stopped and
            // held (they borrow it) until after this call.
            unsafe { src.for_each_suspended_part(part, parts, &mut f) };
        }
    }
}

impl StoppedWorld<'_> {
    /// The suspended tasks in parts several threads may read at once, for
    /// as long as this world stays stopped.
    pub fn suspended_parts(&self) -> SuspendedParts<'_> {
        SuspendedParts {
            sources: lock(&self.registry().inner.sources),
        }
    }

    /// Calls `f` with every suspended task of every source added to the
    /// registry. Never allocates; takes only the sources' lock, which no
    /// stopped thread can hold (it is taken only outside stops). `f` must
    /// not add or remove sources (the lock is held while it runs).
    pub fn for_each_suspended(&self, mut f: impl FnMut(&SuspendedTask<'_>)) {
        let s = lock(&self.registry().inner.sources);
        for (_, src) in &s.list {
            // SAFETY: this world of the source's registry is stopped, and
            // held by the caller until after this call.
            unsafe { src.for_each_suspended(&mut f) };
        }
    }

    /// How many sources of suspended tasks the world reports.
    pub fn task_sources(&self) -> usize {
        lock(&self.registry().inner.sources).list.len()
    }
}
