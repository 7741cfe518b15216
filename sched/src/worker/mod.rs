//! A worker: the thread that runs goroutines (Go's M, bound for now to one
//! P), and the state it keeps for them ([`Worker`], reached through a
//! thread-local). Its two halves are modules of their own: `scheduler`,
//! the loop that finds goroutines and runs them (and the finished ones'
//! reuse), and `switching`, the switches into and out of goroutines (among
//! them the hand-off, a park that switches straight into the goroutine it
//! woke, and the entry the preemption signal's injected call uses to
//! switch a goroutine out). Both read the worker's fields directly: they
//! are its submodules, and the fields' invariants are written beside them.
//!
//! The no-preempt depth of the worker's preempt record (signal mode only)
//! is the switch's invariant: 1 whenever the scheduler runs, 0 in a
//! goroutine's own code. Code that switches to the scheduler raises it to
//! 1 first (`to_scheduler`; the yield hook is called at 1), and code that
//! is switched back into lowers it (`to_scheduler` after its switch
//! returns, by the scheduler or by another goroutine's hand-off;
//! `task_entry` at a goroutine's first instruction; the injected call
//! after the hook returns). So the handler never yields inside the
//! scheduler or half-way through a switch, and the stack bounds the
//! record holds, changed only at depth 1, always describe the stack the
//! thread runs on when the depth is 0.

mod scheduler;
mod switching;

pub(crate) use scheduler::worker_main;
pub(crate) use switching::{on_yield, poll_slow, to_scheduler, to_scheduler_on};

use std::cell::UnsafeCell;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::attach::Holder;
use crate::context::Context;
use crate::linked::{Fifo, RunLink};
use crate::queue::{Proc, Shared, TaskRef, FREE_GLOBAL_MAX, FREE_LOCAL_MAX};
use crate::region::{lock, Region};
use crate::stack::Stack;
use crate::task::{Task, RUNNING};

/// The running worker's state, reached through a thread-local pointer.
pub(crate) struct Worker {
    pub index: usize,
    pub shared: Arc<Shared>,
    /// This worker's entry in `shared.procs`.
    proc_: *const Proc,
    /// The scheduler's own context, which goroutines switch back to.
    sched: UnsafeCell<Context>,
    /// The goroutine running now. Read and written only at no-preempt
    /// depth 1 (the scheduler, and a goroutine on its way to it).
    current: UnsafeCell<Option<TaskRef>>,
    /// The goroutine to run next that this worker itself woke (a send to
    /// a receiver parked here, say): the private half of Go's `runnext`.
    /// A wake-up from this thread needs no lock and no kick (the worker
    /// is awake: it runs the waker); one from another thread goes to the
    /// `next` slot of the proc's locked queue. Touched only by this
    /// thread, inside no-preempt regions (so one goroutine's access is
    /// never interleaved with another's), and emptied into the locked
    /// queue when the worker stops.
    /// Never used in a migrating runtime, whose wake-ups all go to the
    /// locked slot (`queue::Local::next`), where a thief can reach them.
    next: UnsafeCell<Option<TaskRef>>,
    /// In a migrating runtime, the goroutine a hand-off on this thread
    /// has just switched away from, or null: the goroutine switched into
    /// releases it (`Task::released`) as soon as it runs, since only then
    /// is the first one's context saved. Touched only by this thread at
    /// depth 1.
    handed: UnsafeCell<*const Task>,
    /// Finished goroutines this worker keeps for its next spawns (Go's
    /// per-P `gFree`): reusing one costs no allocation and no free, and
    /// the tasks of a spawning goroutine are mostly finished on the other
    /// workers, whose frees then went through another thread's arena.
    /// They keep their stacks here, as Go's do (no pool lock to give one
    /// back at the end and take one at the next start: a spawn 6-8 %
    /// faster on two workers); a batch spilled to the runtime's shared
    /// list gives its stacks to `stacks`, and what does not fit there back
    /// to the pool under one lock. Touched only
    /// by this thread inside no-preempt regions, as `next`; dropped
    /// (outside any region, its stacks unmapped) when the worker ends.
    free: UnsafeCell<Fifo<RunLink>>,
    /// Stacks this worker keeps for goroutines that start without one
    /// (at most `STACK_CACHE`, the capacity reserved when the worker
    /// starts, so keeping one never allocates): those of tasks it spills
    /// to the shared free list or cannot keep. The goroutines that start
    /// on a worker are mostly tasks another worker spilled, which had
    /// given their stacks to the pool: a pool lock at every start, and one
    /// every spill (perf: a tenth of all samples of a run in which
    /// one goroutine spawned for another worker). Touched only by this
    /// thread inside no-preempt regions; dropped with the worker.
    stacks: UnsafeCell<Vec<Stack>>,
    /// The worker's attachment to the preempt registry, in signal mode.
    holder: Option<Holder>,
    /// `Config::migrate`, read where each park and yield switches (one
    /// load from here, not two through `shared`).
    pub migrate: bool,
    /// The thread's own stack, as the record had it at attach.
    own_stack: (usize, usize),
}

impl Worker {
    /// The worker's preempt record, in signal mode.
    #[inline(always)]
    pub(crate) fn attached(&self) -> Option<&pardon_preempt::Attached> {
        self.holder.as_ref().map(Holder::get)
    }

    pub(crate) fn proc_(&self) -> &Proc {
        // SAFETY: points into `self.shared.procs`, which lives as long as
        // the `shared` Arc this worker holds.
        unsafe { &*self.proc_ }
    }

    /// The goroutine running now. Only at depth 1 (see `current`).
    fn current(&self) -> Option<&TaskRef> {
        // SAFETY: only this thread touches `current`, and never while a
        // mutable access is live (they are all in this module and its submodules, each a
        // single statement).
        unsafe { (*self.current.get()).as_ref() }
    }

    /// A new task of this worker's runtime, with nothing to run yet (the
    /// caller's reference is its only one): a finished one from this
    /// worker's free list (refilled from the runtime's when empty), or a
    /// new allocation. Called from goroutine code (depth 0).
    pub(crate) fn new_task(&self) -> TaskRef {
        let reused = {
            let _region = Region::enter();
            // SAFETY: this thread's own list, inside a region (see `free`).
            let free = unsafe { &mut *self.free.get() };
            if free.is_empty() {
                let mut g = lock(&self.shared.free);
                let n = g.len().min(FREE_LOCAL_MAX / 2);
                let mut batch = g.split_front(n);
                free.append(&mut batch);
            }
            free.pop_front()
        };
        match reused {
            Some(mut t) => {
                Arc::get_mut(&mut t)
                    .expect("a task on a free list has no other reference")
                    .reuse();
                t
            }
            None => Arc::new(Task::new(self.shared.clone())),
        }
    }

    /// Keeps a finished task for reuse if nothing else refers to it and
    /// the free lists have room; otherwise gives it back (to be dropped in
    /// a window). At depth 1.
    fn recycle(&self, mut t: TaskRef) -> Option<TaskRef> {
        if Arc::get_mut(&mut t).is_none() {
            return Some(t);
        }
        // SAFETY: this thread's own list, at depth 1 (see `free`).
        let free = unsafe { &mut *self.free.get() };
        if free.len() >= FREE_LOCAL_MAX {
            let mut g = lock(&self.shared.free);
            if g.len() + FREE_LOCAL_MAX / 2 > FREE_GLOBAL_MAX {
                // Enough kept.
                return Some(t);
            }
            let mut half = free.split_front(FREE_LOCAL_MAX / 2);
            // Their stacks to the pool, all under one lock: only tasks on
            // a worker's own list keep theirs (see `free`).
            // SAFETY: this thread's own cache, at depth 1 (see `stacks`).
            let cache = unsafe { &mut *self.stacks.get() };
            self.shared.stacks.put_all(
                half.iter()
                    .filter_map(|t| {
                        // SAFETY: dead tasks on this thread's own list: no
                        // other reference, and only this thread touches
                        // them.
                        unsafe { (*t.stack.get()).take() }
                    })
                    .filter_map(|s| cache_stack(cache, s)),
            );
            g.append(&mut half);
        }
        free.push_back(t);
        None
    }

    /// Whether the caller is a goroutine of this worker (not its
    /// scheduler). `current` is written only by this thread, at depth 1,
    /// around the switches: goroutine code always finds itself there, the
    /// scheduler's windows find it empty.
    fn in_goroutine(&self) -> bool {
        // SAFETY: only this thread touches `current`, and never while a
        // mutable access is live (they are all in this module and its submodules, each a
        // single statement at depth 1).
        unsafe { (*self.current.get()).is_some() }
    }

    /// Whether `t` is the goroutine this worker runs now.
    pub(crate) fn runs(&self, t: &Task) -> bool {
        // SAFETY: as in `in_goroutine`.
        let cur = unsafe { (*self.current.get()).as_ref() };
        cur.is_some_and(|c| std::ptr::eq(Arc::as_ptr(c), t))
    }

    /// Queues `t`, woken on this thread, to run next here: see `next`.
    /// `t` must be runnable and at home here.
    /// (Its region is the worker's own record's, entered directly: nothing
    /// in it can panic, and `Region::enter` would look the worker up again
    /// through the thread-local, 25 of a channel switch's instructions.)
    #[inline]
    pub(crate) fn put_next(&self, t: TaskRef) {
        self.raise();
        self.put_next_raised(t);
        self.lower();
    }

    /// [`Worker::put_next`] for a caller already inside one of this
    /// worker's no-preempt regions (a park's closure), on its thread.
    #[inline]
    pub(crate) fn put_next_raised(&self, t: TaskRef) {
        debug_assert_eq!(t.home.load(Relaxed), self.index);
        debug_assert!(self.attached().is_none_or(|a| a.no_preempt_depth() > 0));
        if self.migrate {
            self.put_next_shared(t);
            return;
        }
        // SAFETY: this thread's own slot, inside a region (see `next`);
        // the one access ends before the lock below.
        let old = unsafe { (*self.next.get()).replace(t) };
        if let Some(old) = old {
            // Displaced, as by Go's `runqput`: to the back of the queue.
            self.proc_().lock_local().queue.push_back(old);
        }
    }

    /// Releases the goroutine a hand-off on this thread switched away
    /// from, if any (see `handed`). At depth 1, by the goroutine switched
    /// into, once running.
    #[inline]
    fn release_handed(&self) {
        // SAFETY: this thread's own cell, at depth 1 (see `handed`).
        let h = unsafe { std::mem::replace(&mut *self.handed.get(), std::ptr::null()) };
        if !h.is_null() {
            // SAFETY: the task is alive: its reference is its waker's or a
            // run queue's, and no other thread may run it (and so end it)
            // before this release.
            release(unsafe { &*h });
        }
    }

    /// [`Worker::put_next_raised`] of a migrating runtime: into the locked
    /// slot, where a thief can reach it (see `next`). Out of line, so the
    /// private slot's path stays short.
    #[inline(never)]
    fn put_next_shared(&self, t: TaskRef) {
        let mut l = self.proc_().lock_local_raised();
        if let Some(old) = l.next.replace(t) {
            l.queue.push_back(old);
        }
    }

    #[inline]
    fn raise(&self) {
        self.debug_assert_here();
        if let Some(a) = self.attached() {
            a.enter_no_preempt();
        }
    }

    #[inline]
    fn lower(&self) {
        self.debug_assert_here();
        if let Some(a) = self.attached() {
            a.exit_no_preempt();
        }
    }

    /// Debug builds: that the calling thread is this worker's. A goroutine
    /// of a migrating runtime that used a worker it looked up before a
    /// move would fail it (see `switching::holds_its_worker`).
    #[inline(always)]
    fn debug_assert_here(&self) {
        debug_assert!(
            worker().is_some_and(|w| std::ptr::eq(w, self)),
            "a worker's state used from another thread"
        );
    }
}

/// Lets other workers take `t`, which this thread has switched out and
/// will not touch again (`Task::released`), unless the thread is unwinding
/// a panic: std counts a panic on the thread where it began, so a
/// goroutine that parked in a destructor during an unwind stays (as one
/// that yields then does: the count is the thread's, so any goroutine of
/// the worker that unwinds keeps the others home meanwhile). Migrating
/// runtimes only. The caller must not touch `t` afterwards: another worker
/// may run it at once.
fn release(t: &Task) {
    if !std::thread::panicking() {
        t.released.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Sets the calling thread's worker (null: none), read by [`worker`].
pub(super) fn set_worker(w: *const Worker) {
    crate::sys::set_current_worker(w as usize);
}

/// The worker running the caller, or `None` outside the runtime. Read
/// afresh at every call, however the code is inlined (see `sys::tls`): a
/// goroutine of a migrating runtime finds the worker it runs on now.
#[inline]
pub(crate) fn worker() -> Option<&'static Worker> {
    let p = crate::sys::current_worker() as *const Worker;
    // SAFETY: set by the worker's loop to its own Worker, which outlives
    // every goroutine it runs on its thread (the loop returns only at
    // shutdown, once no goroutine runs there); the word is this thread's.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The worker running the caller if the caller is a goroutine; `None` on
/// threads outside the runtime and in a worker's scheduler, whose windows
/// run code a goroutine's closure may reach (the closure of a goroutine
/// that could not start is dropped there, and so is what a finished one's
/// task held). Such code waits as a thread outside the runtime does:
/// parking needs a goroutine to switch out.
#[inline]
pub(crate) fn goroutine() -> Option<&'static Worker> {
    worker().filter(|w| w.in_goroutine())
}

/// Whether the calling thread is the worker that runs `t` and `t` is
/// parking: its `current`, and announced `WAITING` (or woken since) by a
/// park not yet switched away. Then a waker of `t` dropped here is the
/// park's first, whose reference `current` still holds (see `park`).
pub(crate) fn parking_here(t: &Task) -> bool {
    worker().is_some_and(|w| {
        // SAFETY: only this thread touches `current`, and never while a
        // mutable access is live (as `in_goroutine`).
        let cur = unsafe { (*w.current.get()).as_ref() };
        cur.is_some_and(|c| std::ptr::eq(Arc::as_ptr(c), t)) && t.state.load(Relaxed) != RUNNING
    })
}

/// References to the running goroutine's task (its `Arc` count), for
/// tests of who owns a parked goroutine (see `park`).
#[cfg(test)]
pub(crate) fn current_references() -> usize {
    let w = goroutine().expect("a goroutine");
    Arc::strong_count(w.current().expect("a running goroutine"))
}

/// The most stacks a worker keeps for goroutines that start without one.
pub(crate) const STACK_CACHE: usize = 32;

/// Keeps `s` in a worker's stack cache if it has room, or hands it back.
fn cache_stack(cache: &mut Vec<Stack>, s: Stack) -> Option<Stack> {
    if cache.len() < cache.capacity() {
        cache.push(s);
        None
    } else {
        Some(s)
    }
}
