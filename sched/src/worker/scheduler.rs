//! A worker's scheduler: the loop its thread runs between goroutines
//! (`worker_main`), which takes the goroutine its last one woke, then its
//! own queue, the global queue and other workers' queues (`Shared::find`),
//! spins a little for work before it sleeps, and runs each goroutine
//! (`run`) until it yields, is preempted, parks or ends; then requeues it,
//! leaves it to its waker, or keeps the finished task for reuse. It runs
//! at no-preempt depth 1 on the thread's own stack, except in `window`s.

use std::cell::UnsafeCell;
use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};
use std::sync::Arc;

use super::switching::{prepare_switch_in, save_word, task_entry};
use super::{cache_stack, set_worker, Worker, STACK_CACHE};
use crate::attach::Holder;
use crate::context::{switch, Context};
use crate::linked::Fifo;
use crate::queue::{Place, Proc, Shared, TaskRef};
use crate::task::{DEAD, NO_HOME, RUNNABLE, RUNNING, WAITING, WAITING_TWICE};

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
    let migrate = shared.config.migrate;
    let me = Worker {
        index,
        proc_: &shared.procs[index],
        shared,
        sched: UnsafeCell::new(Context::empty()),
        current: UnsafeCell::new(None),
        next: UnsafeCell::new(None),
        handed: UnsafeCell::new(std::ptr::null()),
        free: UnsafeCell::new(Fifo::new()),
        stacks: UnsafeCell::new(Vec::with_capacity(STACK_CACHE)),
        holder,
        own_stack,
        migrate,
    };
    set_worker(&me);
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
    set_worker(std::ptr::null());
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
    } else if me.migrate && t.home.load(Relaxed) != me.index {
        // Moved here (from the global queue, where its last worker put it
        // after a yield or a preemption, fully switched out): its wakers
        // queue it here from now on. It is runnable and on no wait list,
        // so no waker reads `home` meanwhile.
        t.home.store(me.index, SeqCst);
        p.migrations.store(p.migrations.load(Relaxed) + 1, Relaxed);
    }
    prepare_switch_in(me, &t);
    if me.migrate {
        p.count_switch();
    }
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
            // back of the worker's queue, so the others here run first;
            // in a migrating runtime to the global queue, as in Go, for
            // any worker to take (it is switched out completely by now),
            // unless the signal stopped it holding its worker (`stay`).
            end_slice(p);
            t.state.store(RUNNABLE, SeqCst);
            // SAFETY: only the worker that ran a task touches its cells.
            let stay = unsafe { std::mem::take(&mut *t.stay.get()) };
            // Nor does one that unwinds move (it yielded in a destructor):
            // std counts a panic on the thread it began on and uncounts it
            // on the thread that catches it, so a move would leave this
            // thread counted as panicking and the other's count below
            // zero. (The count is the thread's: another goroutine of this
            // worker that unwinds keeps this one home too, for that long.)
            let stay = stay || (me.migrate && std::thread::panicking());
            let place = if me.migrate && !stay {
                Place::Global
            } else {
                Place::Back(me.index)
            };
            shared.enqueue(t, place);
        }
        // Parked: its waker queues it. Or woken already, even before
        // the switch above saved it: queued by its waker, on this worker.
        // Either way the reference is the waker's now (see `park`). In a
        // migrating runtime another worker may take it from here on.
        WAITING | WAITING_TWICE | RUNNABLE => {
            let t = Arc::into_raw(t);
            if me.migrate {
                // SAFETY: alive until released (the waker's reference, and
                // no other thread may run it before); not touched after.
                super::release(unsafe { &*t });
            }
        }
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
