//! A goroutine (Go's `g`): its stack, its saved context, the closure it
//! runs and its state word.
//!
//! The state word is how a goroutine parks without being resumed twice
//! nor lost: a goroutine that is about to wait sets `WAITING` under the
//! lock that publishes its waker, then switches away. A waker moves the
//! word from `WAITING` to `RUNNABLE` and queues the goroutine; only whoever
//! makes that move may queue it, so it is on at most one queue. A park
//! has one waker, which therefore moves the word with a plain store (no
//! other thread writes it until the goroutine runs again: a locked
//! instruction a switch, 3 ns of 55, until the thirteenth session), except
//! a timed wait's, which has two (its wait list's and its alarm's) and
//! says so with `WAITING_TWICE`: the first of them to move the word, by
//! compare-and-swap, queues it; the other finds it moved. (A waker never
//! outlives the park it was made for: a timed wait's second waker is
//! taken back or seen done, under the lock that holds it, before the
//! goroutine parks again.) A waker
//! may come before the switch has saved the goroutine's context: it is
//! queued then all the same, and still never resumed before the save,
//! because a parked goroutine is woken onto its home worker and that
//! worker is the thread still switching it out, which looks at its
//! queues only afterwards. In a migrating runtime another worker may take
//! a woken goroutine from there (a steal), but only once its worker has
//! said it let go of it (`released`, set after the switch). (Go needs an
//! intermediate state for this window too; so did this runtime, a
//! `PARKING` state the switch committed with a compare-and-swap, one
//! locked instruction a park, until the ninth session; a migrating
//! runtime's release is a plain store after the switch.)

use std::cell::UnsafeCell;
use std::sync::atomic::Ordering::{Acquire, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};

use std::sync::Arc;

use crate::context::Context;
use crate::join::Body;
use crate::queue::Shared;
use crate::stack::Stack;

/// On a run queue, or about to be.
pub(crate) const RUNNABLE: u32 = 0;
/// Running on a worker.
pub(crate) const RUNNING: u32 = 1;
/// Parked, or switching away to park: its one waker must queue it.
pub(crate) const WAITING: u32 = 2;
/// As `WAITING`, with two wakers (a timed wait): the one whose
/// compare-and-swap moves the word must queue it.
pub(crate) const WAITING_TWICE: u32 = 4;
/// Finished: its stack goes back to the pool, or stays with it on its
/// worker's free list.
pub(crate) const DEAD: u32 = 3;

/// `Task::home` of a goroutine that has not run yet.
pub(crate) const NO_HOME: usize = usize::MAX;

/// One goroutine. `repr(C)`, the fields a stopped world's report reads
/// for every parked goroutine first (`state`, `scanned`, `ctx`, `stack`,
/// `word`): in one or two cache lines, which the report prefetches.
#[repr(C)]
pub(crate) struct Task {
    /// See the module comment.
    pub state: AtomicU32,
    /// The number of the last deferral (see `deferred`) whose scan of its
    /// stack it does not owe, with `deferred::SCANNING` set while a claim
    /// scans it. Set by its worker when it first gets a stack; claimed by
    /// compare-and-swap.
    pub scanned: AtomicU64,
    /// Its context while not running. Written by the switch away from it
    /// (on whichever worker ran it), read by the switch into it; never
    /// both at once, by the state protocol.
    pub ctx: UnsafeCell<Context>,
    /// Its stack, from its first run; once it is `DEAD`, kept while the
    /// task waits on its worker's free list, and otherwise given back to
    /// the pool.
    pub stack: UnsafeCell<Option<Stack>>,
    /// Its task word while it is switched out (see
    /// `pardon_preempt::Attached::task_word_cell`): 0 until it first runs,
    /// then saved by its worker after each switch away from it and put
    /// back before each switch into it. Read by a stopped world's
    /// coordinator through the task source.
    pub word: UnsafeCell<usize>,
    /// The worker it runs on (`NO_HOME` until its first run): set by that
    /// worker before the first switch into it, and in a migrating runtime
    /// by the worker that takes it from the global queue after a yield,
    /// before switching into it (it is on no wait list then, so no waker
    /// reads it meanwhile). Wakers queue it here. See `runtime`.
    pub home: AtomicUsize,
    /// Its runtime, which a waker queues it on. (Queued goroutines keep
    /// their runtime's shared state alive: `Runtime::drop` empties the
    /// queues once the workers are gone.)
    pub shared: Arc<Shared>,
    /// Its index in its worker's task list (`suspended`), in runtimes
    /// that keep one. Set by its worker at its first run.
    pub slot: UnsafeCell<usize>,
    /// The next goroutine on the run queue it is on (see `linked`):
    /// guarded by that queue's lock.
    pub run_link: UnsafeCell<*const Task>,
    /// The next goroutine on the wait list it is on (see `linked`):
    /// guarded by that list's lock.
    pub wait_link: UnsafeCell<*const Task>,
    /// A word the wait list it is on keeps for it (a parked receiver's
    /// slot): guarded by that list's lock.
    pub wait_data: UnsafeCell<usize>,
    /// Set by the yield hook of a migrating runtime when the preempted
    /// goroutine's registers or stack point into its worker's own state
    /// (it was stopped between a lookup of its worker and the use it made
    /// of it): its scheduler then requeues it at home, not on the global
    /// queue, and clears it. Only the worker running the task touches it.
    pub stay: UnsafeCell<bool>,
    /// In a migrating runtime: its last worker has let go of it (switched
    /// it out, saved its context, and will not touch it again), so another
    /// worker may take it from that worker's queue (`Shared::find`'s
    /// steal) though it has run. Set (Release) by that worker once done
    /// with it after the switch away: the scheduler for a goroutine that
    /// parked, the goroutine a hand-off switched into for the one that
    /// handed off (`worker::Worker::handed`); never for one that must stay
    /// (`stay`, or switched out while its thread unwinds). Cleared by the
    /// worker that switches into it. Read (Acquire) by thieves under the
    /// victim's queue lock. A waker may queue a goroutine before its switch
    /// away is over; until this flag, only its own worker (the thread
    /// switching it out) may take it from there (see the module comment).
    pub released: AtomicBool,
    /// Its closure, then its result, and its join state (see `join`).
    pub body: Body,
}

// SAFETY: the cells are used by one thread at a time: the worker running
// the task, or the scheduler that switched away from it, as the state word
// orders (SeqCst transitions between them), and in a migrating runtime a
// thief only after the last worker's release (`released`, Release/Acquire);
// the link words and `wait_data` by the holder of the lock of the queue
// the task is on.
unsafe impl Sync for Task {}
// SAFETY: as above.
unsafe impl Send for Task {}

impl Task {
    /// A task with nothing to run yet (see `Body::hold`).
    pub(crate) fn new(shared: Arc<Shared>) -> Task {
        Task {
            shared,
            ctx: UnsafeCell::new(Context::empty()),
            stack: UnsafeCell::new(None),
            state: AtomicU32::new(RUNNABLE),
            scanned: AtomicU64::new(0),
            home: AtomicUsize::new(NO_HOME),
            word: UnsafeCell::new(0),
            slot: UnsafeCell::new(usize::MAX),
            run_link: UnsafeCell::new(std::ptr::null()),
            wait_link: UnsafeCell::new(std::ptr::null()),
            wait_data: UnsafeCell::new(0),
            stay: UnsafeCell::new(false),
            released: AtomicBool::new(false),
            body: Body::new(),
        }
    }

    /// Makes a finished task, whose only reference the caller holds, a
    /// new one with nothing to run yet (Go reuses its `g`s from free lists, and
    /// so does a worker: see `worker::Worker::new_task`). Every field
    /// goes back to what `Task::new` gives, but `shared` (a task is reused
    /// only by its own runtime) and `stack`, which a task on a worker's
    /// free list keeps for its next life (its first run then makes a new
    /// context on it).
    pub(crate) fn reuse(&mut self) {
        debug_assert_eq!(*self.state.get_mut(), DEAD);
        *self.state.get_mut() = RUNNABLE;
        *self.scanned.get_mut() = 0;
        *self.ctx.get_mut() = Context::empty();
        *self.word.get_mut() = 0;
        *self.home.get_mut() = NO_HOME;
        *self.slot.get_mut() = usize::MAX;
        *self.stay.get_mut() = false;
        *self.released.get_mut() = false;
        *self.run_link.get_mut() = std::ptr::null();
        *self.wait_link.get_mut() = std::ptr::null();
        *self.wait_data.get_mut() = 0;
        self.body.reset();
    }

    /// A task that runs nothing, for unit tests of the queues.
    #[cfg(test)]
    pub(crate) fn for_tests(shared: &Arc<Shared>) -> Task {
        let mut t = Task::new(shared.clone());
        t.body.hold(|| ());
        t
    }

    /// Makes a parked (or parking) task runnable. Returns whether the
    /// caller must queue it (it was `WAITING`); running, runnable, already
    /// woken or dead, it is left alone.
    #[inline]
    pub(crate) fn wake(&self) -> bool {
        let s = self.state.load(Acquire);
        if s == WAITING {
            // The park's only waker is the caller: nothing else writes
            // the word before the goroutine runs again (module comment).
            self.state.store(RUNNABLE, Release);
            return true;
        }
        s == WAITING_TWICE
            && self
                .state
                .compare_exchange(WAITING_TWICE, RUNNABLE, SeqCst, SeqCst)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wake moves a parked task to `RUNNABLE` once and says so; a task
    /// in any other state is left alone. With two wakers (`WAITING_TWICE`)
    /// racing on two threads, exactly one of them wins, every round.
    #[test]
    fn a_wake_moves_a_parked_task_once() {
        let shared = Shared::for_tests();
        let t = Arc::new(Task::new(shared));
        for parked in [WAITING, WAITING_TWICE] {
            t.state.store(parked, SeqCst);
            assert!(t.wake(), "the first wake of a task parked as {parked}");
            assert_eq!(t.state.load(SeqCst), RUNNABLE);
            assert!(!t.wake(), "a second wake of a task parked as {parked}");
        }
        for other in [RUNNABLE, RUNNING, DEAD] {
            t.state.store(other, SeqCst);
            assert!(!t.wake(), "a wake of a task in state {other}");
            assert_eq!(t.state.load(SeqCst), other);
        }
        let rounds = if cfg!(miri) { 20 } else { 20_000 };
        // Spins that yield now and then: the two threads may share a CPU.
        let until = |f: &dyn Fn() -> bool| {
            let mut n = 0u32;
            while !f() {
                n += 1;
                if n.is_multiple_of(256) {
                    std::thread::yield_now();
                }
                std::hint::spin_loop();
            }
        };
        let (go, done) = (AtomicU32::new(0), AtomicU32::new(0));
        std::thread::scope(|s| {
            // The other waker: released by the store that releases this
            // thread's own wake just below, so the two race closely.
            let other = s.spawn(|| {
                let mut won = 0;
                for r in 1..=rounds {
                    until(&|| go.load(SeqCst) == r);
                    won += u32::from(t.wake());
                    done.store(r, SeqCst);
                }
                won
            });
            let mut both = 0;
            for r in 1..=rounds {
                t.state.store(WAITING_TWICE, SeqCst);
                go.store(r, SeqCst);
                let mine = t.wake();
                until(&|| done.load(SeqCst) == r);
                both += u32::from(mine);
                assert_eq!(t.state.load(SeqCst), RUNNABLE);
            }
            let theirs = other.join().unwrap();
            assert_eq!(both + theirs, rounds, "each round, exactly one waker wins");
        });
    }

    /// Every field a reused task has is the one a new task has, whatever
    /// the finished task left in them (its body a result nobody took).
    #[test]
    fn a_reused_task_is_a_new_task() {
        let shared = Shared::for_tests();
        let fresh = Arc::new(Task::new(shared.clone()));
        let mut t = Arc::new(Task::for_tests(&shared));
        extern "C" fn never(_: usize) -> ! {
            unreachable!()
        }
        let stack = shared.stacks.get().unwrap();
        {
            let m = Arc::get_mut(&mut t).unwrap();
            *m.state.get_mut() = DEAD;
            *m.scanned.get_mut() = 12 | crate::deferred::SCANNING;
            // SAFETY: never switched to.
            *m.ctx.get_mut() = unsafe { Context::new(&stack, never, 1) };
            *m.word.get_mut() = 77;
            // SAFETY: no other thread has this task.
            unsafe { m.body.run() };
            *m.home.get_mut() = 3;
            *m.slot.get_mut() = 9;
            *m.run_link.get_mut() = Arc::as_ptr(&fresh);
            *m.wait_link.get_mut() = Arc::as_ptr(&fresh);
            *m.wait_data.get_mut() = 5;
        }
        assert!(!t.body.is_empty(), "it ended");
        Arc::get_mut(&mut t).unwrap().reuse();
        assert_ne!(
            format!("{:?}", Context::empty()),
            // SAFETY: never switched to.
            format!("{:?}", unsafe { Context::new(&stack, never, 1) }),
            "a context made for a stack differs from an empty one"
        );
        let words = |t: &Task| {
            // SAFETY: no other thread has these tasks.
            unsafe {
                (
                    t.state.load(SeqCst),
                    t.scanned.load(SeqCst),
                    format!("{:?}", *t.ctx.get()),
                    (*t.stack.get()).is_none(),
                    *t.word.get(),
                    t.home.load(SeqCst),
                    *t.slot.get(),
                    *t.run_link.get(),
                    *t.wait_link.get(),
                    *t.wait_data.get(),
                )
            }
        };
        assert_eq!(words(&t), words(&fresh));
        assert!(Arc::ptr_eq(&t.shared, &fresh.shared));
        assert!(t.body.is_empty() && fresh.body.is_empty());
    }
}
