//! A worker: the thread that runs goroutines (Go's M, bound for now to one
//! P), its scheduler loop, the switches into and out of goroutines (among
//! them the hand-off, a park that switches straight into the goroutine it
//! woke), and the entry the preemption signal's injected call uses to
//! switch a goroutine out.
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

use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::Arc;

use crate::attach::Holder;
use crate::context::{switch, Context};
use crate::linked::{Fifo, RunLink};
use crate::queue::{Place, Proc, Shared, TaskRef, FREE_GLOBAL_MAX, FREE_LOCAL_MAX};
use crate::region::{lock, Region};
use crate::stack::Stack;
use crate::task::{Task, DEAD, NO_HOME, RUNNABLE, RUNNING, WAITING};

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
    next: UnsafeCell<Option<TaskRef>>,
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
        // mutable access is live (they are all in this module, each a
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
        // mutable access is live (they are all in this module, each a
        // single statement at depth 1).
        unsafe { (*self.current.get()).is_some() }
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
        // SAFETY: this thread's own slot, inside a region (see `next`);
        // the one access ends before the lock below.
        let old = unsafe { (*self.next.get()).replace(t) };
        if let Some(old) = old {
            // Displaced, as by Go's `runqput`: to the back of the queue.
            self.proc_().lock_local().queue.push_back(old);
        }
    }

    #[inline]
    fn raise(&self) {
        if let Some(a) = self.attached() {
            a.enter_no_preempt();
        }
    }

    #[inline]
    fn lower(&self) {
        if let Some(a) = self.attached() {
            a.exit_no_preempt();
        }
    }
}

thread_local! {
    static WORKER: Cell<*const Worker> = const { Cell::new(std::ptr::null()) };
}

/// The worker running the caller, or `None` outside the runtime. (A
/// thread-local read is safe to inline: goroutines never change thread.)
#[inline]
pub(crate) fn worker() -> Option<&'static Worker> {
    let p = WORKER.with(|w| w.get());
    // SAFETY: set by the worker's loop to its own Worker, which outlives
    // every goroutine it runs (the loop returns only at shutdown, and a
    // goroutine never leaves its worker's thread).
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

/// A worker thread's body. `ready` hears whether it could attach (the
/// runtime's constructor waits for every worker's answer).
pub(crate) fn worker_main(
    index: usize,
    shared: Arc<Shared>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    /// Counts the worker out however it ends (dropped last).
    struct Ended(Arc<Shared>);
    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.worker_ended();
        }
    }
    let _ended = Ended(shared.clone());
    let holder = match &shared.registry {
        Some(r) => match Holder::attach(r, shared.config.attach.as_ref(), index) {
            Ok(h) => Some(h),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        },
        None => None,
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    let own_stack = holder.as_ref().map_or((0, 0), |h| h.get().stack_bounds());
    let me = Worker {
        index,
        proc_: &shared.procs[index],
        shared,
        sched: UnsafeCell::new(Context::empty()),
        current: UnsafeCell::new(None),
        next: UnsafeCell::new(None),
        free: UnsafeCell::new(Fifo::new()),
        stacks: UnsafeCell::new(Vec::with_capacity(STACK_CACHE)),
        holder,
        own_stack,
    };
    WORKER.with(|w| w.set(&me));
    me.raise();
    let shared = &me.shared;
    let p = me.proc_();
    loop {
        if shared.shutdown.load(SeqCst) {
            break;
        }
        // SAFETY: this thread's own slot, at depth 1 (see `next`).
        if let Some(t) = unsafe { (*me.next.get()).take() } {
            run(&me, t, true);
            continue;
        }
        let seen = p.idle.seq.load(SeqCst);
        let found = match shared
            .find(index, STEAL_BATCH)
            .or_else(|| spin_for_work(&me))
        {
            Some(t) => Some(t),
            None => {
                // Said to sleep before looking again, so an enqueue after
                // this look kicks us (see `queue`). Nothing runs while
                // asleep: `sysmon` may sleep long.
                p.running.store(0, Release);
                p.idle.chosen.store(0, SeqCst);
                p.idle.sleeping.store(1, SeqCst);
                let again = shared.find(index, 1);
                if again.is_none() && !shared.shutdown.load(SeqCst) {
                    idle_wait(&me, seen);
                    // Idle: whatever runs next begins a slice of its own.
                    end_slice(p);
                }
                p.idle.sleeping.store(0, SeqCst);
                again
            }
        };
        if let Some((t, inherit)) = found {
            run(&me, t, inherit);
        }
    }
    // A goroutine woken here and not run goes where the runtime's drop
    // finds the queued ones.
    // SAFETY: this thread's own slot, at depth 1 (see `next`).
    if let Some(t) = unsafe { (*me.next.get()).take() } {
        p.lock_local().queue.push_back(t);
    }
    me.lower();
    WORKER.with(|w| w.set(std::ptr::null()));
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

/// The fewest goroutines a worker that has just run out of work steals
/// from another's queue, until the last quarter of its spin: a steal takes
/// half, and a worker that kept up with a spawning goroutine a few at a
/// time contended for the spawner's queue at nearly every spawn, which
/// slowed both (an instrumented `goroutines --mode spawn-wg`: 300,000-
/// 400,000 steals of 2-3 goroutines in the runs at 450-500 ns a spawn,
/// 40,000-100,000 of 10-25 in those at 290-340). A goroutine queued
/// behind a busy worker so waits up to about 10 µs for an idle one that
/// spins; a sleeping one is woken at once and steals whatever it finds.
const STEAL_BATCH: usize = 16;

/// Rounds of looking for work an idle worker makes before it sleeps.
const SPIN_ROUNDS: u32 = 16;
/// Spin-loop hints between two looks (a few hundred nanoseconds).
const SPIN_PAUSES: u32 = 32;

/// Looks for work a little longer before the worker sleeps, as Go's
/// *spinning* M does: a goroutine spawned or woken in the next few
/// microseconds is found here, and whoever queued it paid no system call
/// (an enqueue wakes only workers that said they sleep) and neither side
/// a context switch. Bounded (`SPIN_ROUNDS` rounds of `SPIN_PAUSES`
/// hints): an idle runtime does not burn its cores. Each round leaves the
/// scheduler's no-preempt region for a moment, so a stop waits for no
/// spin (it parks the worker there).
///
/// Measured (`goroutines --mode spawn`, one goroutine spawning a million
/// and one worker running them, `perf stat`): without it, 22,000 context
/// switches a run, the running worker emptying its queue, sleeping and
/// being woken by a futex system call of the spawner's; with it, 2,800.
/// (The spawn's time did not change measurably by this alone: other
/// costs dominated then.)
fn spin_for_work(me: &Worker) -> Option<(TaskRef, bool)> {
    for round in 0..SPIN_ROUNDS {
        for _ in 0..SPIN_PAUSES {
            std::hint::spin_loop();
        }
        me.lower();
        me.raise();
        if me.shared.shutdown.load(Relaxed) {
            return None;
        }
        // SAFETY: this thread's own slot, at depth 1 (see `next`).
        if let Some(t) = unsafe { (*me.next.get()).take() } {
            return Some((t, true));
        }
        // For the first three quarters of the spin (up to about 10 µs), only
        // a queue of `STEAL_BATCH` or more is worth a steal.
        let at_least = if round < SPIN_ROUNDS * 3 / 4 {
            STEAL_BATCH
        } else {
            1
        };
        if me.shared.may_have_work(me.index, at_least) {
            if let Some(found) = me.shared.find(me.index, at_least) {
                return Some(found);
            }
        }
    }
    None
}

/// Sleeps until the worker's futex word moves from `seen`. In signal mode
/// the worker sleeps in a safe region, at depth 0: asleep it counts as
/// stopped, so a stop (a fork's, a collector's) does not wait for it. A
/// yield request that lands between the depth and the region finds no
/// goroutine running, and the hook returns.
fn idle_wait(me: &Worker, seen: u32) {
    let word = &me.proc_().idle.seq;
    match me.attached() {
        Some(a) => {
            a.exit_no_preempt();
            {
                let _asleep = a.enter_safe_region();
                pardon_preempt::futex::wait(word, seen, None);
            }
            a.enter_no_preempt();
        }
        None => pardon_preempt::futex::wait(word, seen, None),
    }
}

/// Runs `t` until it yields, is preempted, parks or ends, then does what
/// it asked. `inherit`: it runs in what is left of the current slice.
fn run(me: &Worker, t: TaskRef, inherit: bool) {
    let shared = &me.shared;
    let p = me.proc_();
    // Release: only the worker that dequeued it writes it now (wakers act
    // only on WAITING).
    t.state.store(RUNNING, Release);
    if t.home.load(Relaxed) == NO_HOME {
        // Its first run: on the stack it kept from its last life (a task
        // reused from this worker's free list), or one from the pool.
        // SAFETY: only the worker running a task touches its cells.
        let kept = unsafe { (*t.stack.get()).take() };
        // SAFETY: this thread's own cache, at depth 1 (see `stacks`).
        let cached = || unsafe { (*me.stacks.get()).pop() };
        match kept.or_else(cached).map_or_else(|| shared.stacks.get(), Ok) {
            Ok(stack) => {
                t.home.store(me.index, SeqCst);
                if shared.track_tasks {
                    // Only this worker adds to its list: room made here
                    // stays until the add.
                    window(me, || crate::room::grow(&p.tasks, |l| l));
                    // A new stack owes no deferred scan (set before the
                    // list shows the goroutine to a coordinator's pass).
                    t.scanned.store(shared.deferral.epoch(), Relaxed);
                    let i = p.tasks.lock().add(t.clone());
                    // SAFETY: only the worker running a task touches it.
                    unsafe { *t.slot.get() = i };
                }
                let arg = Arc::as_ptr(&t) as usize;
                // SAFETY: the stack is the task's alone until it is dead;
                // `arg` is kept alive by `me.current` while it runs.
                unsafe { *t.ctx.get() = Context::new(&stack, task_entry, arg) };
                // SAFETY: as above.
                unsafe { *t.stack.get() = Some(stack) };
            }
            Err(e) => {
                // It cannot start: its join reports why (waiting for
                // another goroutine's stack could wait for ever, and a
                // retry loop did: every stack was held by a goroutine
                // parked until this one ran).
                t.state.store(DEAD, SeqCst);
                // The report allocates (the message), drops the closure
                // (the user's code), and dropping the task may free it.
                window(me, move || {
                    // SAFETY: only the worker running a task touches its
                    // body, and this one never runs.
                    unsafe {
                        t.body.refuse(format!(
                            "pardon-sched: the goroutine could not start: no stack ({e})"
                        ))
                    };
                    drop(t);
                });
                return;
            }
        }
    }
    prepare_switch_in(me, &t);
    if !inherit {
        end_slice(p);
    }
    // `running` stays 1 from here until the worker goes idle (a store
    // every switch was a locked instruction each).
    if p.running.load(Relaxed) == 0 {
        // SeqCst: ordered before the load below, against sysmon's store
        // of `sysmon_idle` and its load of `running` (a Dekker pair).
        p.running.store(1, SeqCst);
        if shared.sysmon_idle.load(SeqCst) != 0 && shared.sysmon_idle.swap(0, SeqCst) != 0 {
            // sysmon sleeps long while nothing runs: it must watch this
            // slice.
            shared.sysmon_seq.fetch_add(1, SeqCst);
            pardon_preempt::futex::wake(&shared.sysmon_seq, 1);
        }
    }
    // The task moves into `current` for the run and back out after it
    // (no reference count traffic).
    let ctx = t.ctx.get();
    // SAFETY: depth 1; no other access to `current` is live.
    unsafe { *me.current.get() = Some(t) };
    // SAFETY: the task's context was made above or saved by its last
    // switch away, and no other worker runs it (the state protocol); the
    // task, in `current`, outlives the switch.
    unsafe { switch(&mut *me.sched.get(), &*ctx) };
    if let Some(a) = me.attached() {
        p.refused.store(a.yields_refused(), Relaxed);
        // SAFETY: depth 1, back on the thread's own stack.
        unsafe { a.set_stack_bounds(me.own_stack.0, me.own_stack.1) };
    }
    crate::overflow::set_guard(0, 0);
    // The goroutine that switched back: the one switched into above, or
    // one that a hand-off from it (and from others after it) ran.
    // SAFETY: depth 1; no other access to `current` is live.
    let t = unsafe { (*me.current.get()).take() }.expect("the task that ran");
    save_word(me, &t);
    match t.state.load(SeqCst) {
        RUNNING => {
            if shared.track_tasks && shared.deferral.on() {
                // Perhaps taken by the signal inside a collector's
                // barrier: scanned as it stopped (see `deferred`).
                shared.deferral.after_yield(&t);
            }
            // Yielded or preempted: the slice is over (a goroutine woken
            // into `next` does not inherit it), and this one goes to the
            // back of the worker's queue, so the others here run first.
            end_slice(p);
            t.state.store(RUNNABLE, SeqCst);
            shared.enqueue(t, Place::Back(me.index));
        }
        // Parked: its waker queues it. Or woken already, even before
        // the switch above saved it: queued by its waker, on this worker.
        // Either way the reference is the waker's now (see `park`).
        WAITING | RUNNABLE => std::mem::forget(t),
        DEAD => {
            let listed = if shared.track_tasks {
                // SAFETY: only the worker running a task touches its cells.
                p.tasks.lock().remove(unsafe { *t.slot.get() })
            } else {
                None
            };
            // The list's reference is never the last (we hold one).
            drop(listed);
            // Kept for reuse with its stack (it has left the task list, so
            // no stopped world reads the stack any more); or, if something
            // else holds it still or the free lists are full, its stack to
            // the pool and the task dropped (freeing is for a window).
            if let Some(t) = me.recycle(t) {
                // SAFETY: the task will never run again.
                if let Some(stack) = unsafe { (*t.stack.get()).take() } {
                    // SAFETY: this thread's own cache, at depth 1.
                    let cache = unsafe { &mut *me.stacks.get() };
                    if let Some(stack) = cache_stack(cache, stack) {
                        shared.stacks.put(stack);
                    }
                }
                window(me, move || drop(t));
            }
        }
        s => unreachable!("a task switched away in state {s}"),
    }
}

/// What every switch into a goroutine that has a stack does first, at
/// depth 1: marks it running, pays the scan a deferral may want of it,
/// and tells the overflow handler and the preempt record which stack the
/// thread is about to run on and which task word is the goroutine's.
fn prepare_switch_in(me: &Worker, t: &TaskRef) {
    let shared = &me.shared;
    let p = me.proc_();
    // Release: only the worker that dequeued it writes it now (wakers act
    // only on WAITING).
    t.state.store(RUNNING, Release);
    // SAFETY: read-only: the stack stays with the task while it runs.
    let (lo, hi) = match unsafe { (*t.stack.get()).as_ref() } {
        Some(s) => (s.bottom(), s.top()),
        None => unreachable!("a task runs with a stack"),
    };
    if shared.track_tasks {
        // Before the deferral check: a stop that begins a deferral after
        // this store sees this goroutine as running (both at depth 1).
        p.current.store(Arc::as_ptr(t) as usize, Relaxed);
        if shared.deferral.on() {
            shared.deferral.before_resume(t);
        }
    }
    crate::overflow::set_guard(lo - crate::stack::GUARD, lo);
    if let Some(a) = me.attached() {
        // SAFETY: depth 1; the goroutine lowers it only once it runs on
        // this stack, and it stays on it until it raises it again.
        unsafe { a.set_stack_bounds(lo, hi) };
        // SAFETY: the goroutine's own word, saved when it was last
        // switched out (0 before its first run), as the cell requires.
        unsafe { a.task_word_cell().store(*t.word.get(), Relaxed) };
    }
}

/// What every switch out of a goroutine does, at depth 1: its task word
/// goes with it (a stop sees it in the task source's report), and the
/// record holds none until the next goroutine's is put back.
fn save_word(me: &Worker, t: &TaskRef) {
    if let Some(a) = me.attached() {
        // Only this thread writes the cell (load and store, not a swap: a
        // locked instruction a switch). SAFETY: the cell's contract: 0,
        // or a goroutine's own saved word.
        let cell = unsafe { a.task_word_cell() };
        let w = cell.load(Relaxed);
        cell.store(0, Relaxed);
        // SAFETY: only the worker that ran a task touches its cells.
        unsafe { *t.word.get() = w };
    }
    if me.shared.track_tasks {
        me.proc_().current.store(0, Relaxed);
    }
}

/// `save_word` for `from` and `prepare_switch_in` for `to` at once, for a
/// hand-off from one goroutine straight to the other, at depth 1: the
/// record and the flags are looked up once, and the task word and
/// `Proc::current` go from one goroutine's to the other's without the
/// empty value between (nothing reads either until the thread is at depth
/// 0 again, on `to`'s stack). Its parts keep `prepare_switch_in`'s order.
#[inline]
fn pass_over(me: &Worker, from: &TaskRef, to: &TaskRef) {
    let shared = &me.shared;
    // Release: as in `prepare_switch_in`.
    to.state.store(RUNNING, Release);
    // SAFETY: read-only: the stack stays with the task while it runs.
    let (lo, hi) = match unsafe { (*to.stack.get()).as_ref() } {
        Some(s) => (s.bottom(), s.top()),
        None => unreachable!("a task runs with a stack"),
    };
    if shared.track_tasks {
        me.proc_().current.store(Arc::as_ptr(to) as usize, Relaxed);
        if shared.deferral.on() {
            shared.deferral.before_resume(to);
        }
    }
    crate::overflow::set_guard(lo - crate::stack::GUARD, lo);
    if let Some(a) = me.attached() {
        // SAFETY: the cell's contract: only this thread writes it, 0 or a
        // goroutine's own saved word; only the worker that runs a task
        // touches its cells.
        unsafe {
            let cell = a.task_word_cell();
            *from.word.get() = cell.load(Relaxed);
            cell.store(*to.word.get(), Relaxed);
        }
        // SAFETY: as in `prepare_switch_in`.
        unsafe { a.set_stack_bounds(lo, hi) };
    }
}

/// Runs `f` in the scheduler at no-preempt depth 0, where it may call the
/// allocator: a stop may then park the worker here, as anywhere in a
/// goroutine's code. Called only where the scheduler holds no lock and runs
/// no goroutine (`current` empty), on its own stack with its own stack
/// bounds set, so a stop or a yield request finds nothing half-done: the
/// yield hook sees no goroutine and returns. (The scheduler's region is
/// otherwise kept from the allocator: a worker blocked there on a lock
/// that a stopped thread holds, `malloc`'s, would hold a stop off for
/// ever; see `linked`.)
fn window<R>(me: &Worker, f: impl FnOnce() -> R) -> R {
    debug_assert!(me.current().is_none());
    me.lower();
    let r = f();
    me.raise();
    r
}

/// Ends the worker's current slice: the next goroutine it runs begins a
/// new one (`sysmon` and the yield hook compare slices by this counter).
/// A slice passes from a goroutine to the one it woke only when the first
/// parks or ends; a yield, a preemption or going idle ends it.
fn end_slice(p: &Proc) {
    p.tick.store(p.tick.load(Relaxed) + 1, Release);
}

extern "C" fn task_entry(arg: usize) -> ! {
    let me = worker().expect("a goroutine runs on a worker");
    // Switched into at depth 1: this is goroutine code now.
    me.lower();
    // SAFETY: `arg` is the Task the worker keeps alive while it runs.
    let t = unsafe { &*(arg as *const Task) };
    // A panic of the closure is caught by the body; this is only a guard
    // against unwinding off the stack's top (a panicking destructor of a
    // result nobody took, say).
    // SAFETY: the worker running the task, once (its first run).
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe { t.body.run() }));
    me.raise();
    t.state.store(DEAD, SeqCst);
    // SAFETY: back to the scheduler for good: it frees the stack only
    // after this switch has saved our (never resumed) context.
    unsafe { switch(&mut *t.ctx.get(), &*me.sched.get()) };
    unreachable!("a dead goroutine was resumed");
}

/// Switches the running goroutine to its scheduler, at depth 1.
fn switch_out(me: &Worker) {
    let ctx = me.current().expect("a running goroutine").ctx.get();
    // SAFETY: saves this goroutine's context, resumes the scheduler's; the
    // task stays alive in the scheduler's hands meanwhile.
    unsafe { switch(&mut *ctx, &*me.sched.get()) };
}

/// Switches the calling goroutine back to its worker's scheduler, having
/// set its state (`RUNNING` to yield, `WAITING` to park). `prepare` runs
/// first, at depth 1, with the goroutine (a park registers its waker
/// there); if it returns false nothing is switched. A park whose worker
/// has a goroutine in its `next` slot switches straight into it
/// (`hand_off`) rather than through the scheduler.
pub(crate) fn to_scheduler(prepare: impl FnOnce(&Worker, &TaskRef) -> bool) -> bool {
    to_scheduler_on(worker().expect("a goroutine runs on a worker"), prepare)
}

/// [`to_scheduler`] for a caller that has looked its worker up already
/// (`me` must be the calling thread's).
#[inline]
pub(crate) fn to_scheduler_on(
    me: &'static Worker,
    prepare: impl FnOnce(&Worker, &TaskRef) -> bool,
) -> bool {
    if let Some(a) = me.attached() {
        if !a.may_switch_task(0) || pardon_preempt::holds_stopped_world() {
            refuse_switch(a);
        }
    }
    me.raise();
    let go = prepare(me, me.current().expect("a running goroutine"));
    if go && !hand_off(me) {
        switch_out(me);
    }
    // Switched back into (by the scheduler, or by another goroutine's
    // hand-off), or not switched.
    me.lower();
    go
}

/// Why the running goroutine cannot be switched out here (see
/// `to_scheduler`), as a panic.
#[cold]
#[inline(never)]
fn refuse_switch(a: &pardon_preempt::Attached) -> ! {
    if pardon_preempt::holds_stopped_world() {
        // Its worker would run other goroutines in the stopped world.
        panic!("a goroutine cannot wait or yield while it holds a stopped world");
    }
    if !a.is_running() {
        // In a safe region (a heap mutator's `blocking`): the other
        // goroutines would run while stops count the thread stopped.
        panic!(
            "a goroutine cannot wait or yield inside a safe region \
             (use pardon_sched::blocking for blocking calls)"
        );
    }
    // Inside a region whose state the other goroutines of this worker
    // share (a heap mutator's handle table, say).
    panic!("a goroutine cannot wait or yield inside a no-preempt or no-yield region");
}

/// Parks the running goroutine by switching straight into the goroutine
/// in the worker's `next` slot, which the scheduler would run next anyway
/// (in the rest of the same slice): one switch instead of two, and none
/// of the scheduler's loop (Go's `park_m` goes through `schedule` on g0
/// every time). At depth 1, with the running goroutine `WAITING` (or
/// already woken: see `task`).
///
/// Returns false, having changed nothing, when the scheduler must look
/// first: a yield (the goroutine goes to the back of the queue), an empty
/// `next`, a shutdown, or a goroutine in `next` that owes a collector's
/// deferral a scan of its stack (made on the scheduler's stack, not on a
/// goroutine's, whose room may be short). Returns true once the goroutine
/// is running again.
///
/// A waker may queue the goroutine before this switch has saved it; it
/// cannot run until then: a goroutine never leaves its worker, and this
/// thread switches into it only after this switch (see `task`). No stop
/// reads it meanwhile (the worker is at depth 1 until the goroutine
/// switched into lowers it), and no deferred scan is owed by a goroutine
/// that was running.
fn hand_off(me: &Worker) -> bool {
    let shared = &me.shared;
    let cur = me.current().expect("a running goroutine");
    // SAFETY: this thread's own slot, at depth 1 (see `next`).
    let next = unsafe { &mut *me.next.get() };
    let Some(to) = next.as_ref() else {
        return false;
    };
    if !shared.config.hand_off
        || cur.state.load(Relaxed) == RUNNING
        // Woken by its own park's closure (on this thread, so into
        // `next`): the scheduler switches back into it once it is saved.
        || Arc::ptr_eq(to, cur)
        || shared.shutdown.load(SeqCst)
        || (shared.track_tasks && !shared.deferral.settled(to))
    {
        return false;
    }
    let t = next.take().expect("looked at above");
    let p = me.proc_();
    p.hand_offs.store(p.hand_offs.load(Relaxed) + 1, Relaxed);
    pass_over(me, cur, &t);
    let to = t.ctx.get();
    // SAFETY: depth 1; no other access to `current` is live.
    let from = unsafe { (*me.current.get()).replace(t) }.expect("a running goroutine");
    let save = from.ctx.get();
    // The reference is the park's first waker's now (see `park`); the
    // task stays alive until this switch has saved it (it can only be
    // queued on this worker meanwhile).
    std::mem::forget(from);
    // SAFETY: `to` was saved by the goroutine's last switch away (it has
    // run: it was woken) and no other worker runs it; `save` is this
    // goroutine's context, alive until the switch has saved it (above).
    unsafe { switch(&mut *save, &*to) };
    true
}

/// The preempt registry's yield hook (signal mode): called in the
/// injected call, at depth 1, with every register of the interrupted
/// goroutine saved on its stack. Switches the goroutine out if `token` is
/// still its slice (`sysmon` asks with the slice's tick; a goroutine that
/// has given up the worker since is left alone).
pub(crate) fn on_yield(token: u64) {
    let Some(me) = worker() else { return };
    let p = me.proc_();
    if p.tick.load(Acquire) != token || p.running.load(Relaxed) == 0 || me.current().is_none() {
        return;
    }
    p.preemptions.fetch_add(1, Relaxed);
    switch_out(me);
}

/// The slow path of a poll: ends the slice `sysmon` asked to end, if it
/// is still the running one.
#[cold]
#[inline(never)]
pub(crate) fn poll_slow(me: &Worker, wanted: u64) {
    let p = me.proc_();
    p.want_yield.store(0, Relaxed);
    if p.tick.load(Relaxed) == wanted {
        p.preemptions.fetch_add(1, Relaxed);
        to_scheduler(|_, _| true);
    }
}
