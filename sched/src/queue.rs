//! The run queues (Go's `runq`, `runnext` and global run queue) and the
//! state every worker shares with the others and with `sysmon`.
//!
//! Each worker (for now an M bound to its P for life) has a local queue
//! and a `next` slot. A goroutine woken by another (a channel send, an
//! unlock, a timer) goes into its home worker's `next` slot (the worker's
//! private one when the waker runs on that worker: `worker::Worker::next`),
//! pushing what was there to the back of the queue, and runs as soon as the goroutine
//! running there gives up the worker — in what is left of the running
//! goroutine's slice (Go's `inheritTime`), so a pair of goroutines handing
//! work to each other cannot keep the others waiting longer than a slice.
//! New goroutines go to the back of the spawning worker's queue (or the
//! global queue when spawned from outside); a goroutine that yields or is
//! preempted goes to the back of its home queue (Go sends it to the global
//! queue, from which any P may take it; ours do too in a migrating runtime,
//! and otherwise may not migrate: see `runtime`). A migrating runtime's
//! workers take from the global queue only when their own is empty, or
//! once in `GLOBAL_EVERY` slices (Go's `schedule`), so that a goroutine
//! put there waits for a worker without work rather than going back to
//! the one that put it there.
//!
//! A worker with nothing local takes from the global queue, then steals
//! half of the goroutines another has queued *that have not run yet* (in
//! a migrating runtime also those that have, once their worker has let go
//! of them: `Task::released`; and the `next` slot of a worker `sysmon`
//! found stuck in one slice: `Proc::stuck`). An
//! idle worker sleeps on its own futex word, which an enqueue for it
//! raises; an enqueue that any worker could take (the global queue, a
//! goroutine that has not run) also wakes one sleeping worker. A worker
//! reads its word before it looks at the queues, says it sleeps, looks
//! again, and sleeps only if the word has not moved; an enqueuer pushes,
//! then looks for sleepers: either it sees the sleeper, or the sleeper's
//! second look sees the goroutine (every step `SeqCst`). So no wake-up is
//! lost. Before it says it sleeps, an idle worker looks for work a few
//! more times, for a few microseconds (Go's `spinning` Ms, see
//! `worker::spin_for_work`).

use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed,
    Ordering::SeqCst,
};
use std::sync::Arc;

use crate::config::Config;
use crate::linked::{Fifo, RunLink};
use crate::lock::{Lock, LockGuard};
use crate::region::{lock, Locked};
use crate::stack::StackPool;
use crate::task::{Task, NO_HOME};

pub(crate) type TaskRef = Arc<Task>;

/// A worker's queue: `next`, then `queue` in order.
#[derive(Default)]
pub(crate) struct Local {
    /// The goroutine to run next, in the current slice. In a migrating
    /// runtime every wake-up for this worker comes here, its own too (not
    /// into `worker::Worker::next`), so a thief may take it from a worker
    /// stuck in a slice (`Proc::stuck`).
    pub(crate) next: Option<TaskRef>,
    /// Linked through the goroutines (`linked`): pushing never allocates.
    pub(crate) queue: Fifo<RunLink>,
}

/// What a worker shares (Go's P, for now one per M).
#[derive(Default)]
pub(crate) struct Proc {
    /// Its run queue. Locked by the owner to push and pop, by other
    /// workers to push wake-ups and steal, always inside a no-preempt
    /// region (`region::lock`).
    pub local: Lock<Local>,
    /// How many goroutines `local` held when its lock was last let go
    /// (`Proc::lock_local` keeps it): a hint for idle workers, which look
    /// at it before they take the lock (see `Shared::may_have_work`).
    queued: AtomicUsize,
    /// Slices begun: raised by the owner (only) when a slice ends (a
    /// yield, a preemption, going idle) and before it runs a goroutine
    /// that does not inherit the slice (one not from `next`); read by
    /// `sysmon` and by the yield hook, which compare it with the slice
    /// they meant to end.
    pub tick: AtomicU64,
    /// 1 from when the owner starts a goroutine until it next goes idle
    /// (so also in its scheduler between two goroutines: storing it twice
    /// a switch cost two locked instructions), 0 while it is idle. `sysmon`
    /// watches only busy workers; a request it makes while the owner is in
    /// its scheduler is refused there (depth 1) or finds no goroutine, and
    /// is made again. Owner writes; `sysmon` reads.
    pub running: AtomicU32,
    /// In poll mode, the slice (`tick`) `sysmon` wants ended, or 0: set by
    /// `sysmon`, cleared by the owner's poll that acts on it.
    pub want_yield: AtomicU64,
    /// Goroutines switched out at the end of their slice (by a yield hook
    /// or a poll). Owner writes; anyone reads.
    pub preemptions: AtomicU64,
    /// Requests `sysmon` made of this worker. `sysmon` writes.
    pub asks: AtomicU64,
    /// Parks that handed off (`worker::hand_off`). Owner writes (a load
    /// and a store: no locked instruction a switch); anyone reads.
    pub hand_offs: AtomicU64,
    /// Goroutines that had run on another worker and resumed on this one
    /// (a migrating runtime only). Owner writes; anyone reads.
    pub migrations: AtomicU64,
    /// Preemptions of a migrating runtime that kept the goroutine on this
    /// worker because it held the worker's state (`Task::stay`). Owner
    /// writes; anyone reads.
    pub stays: AtomicU64,
    /// Switches into goroutines, in a migrating runtime (by the scheduler
    /// or a hand-off): how `sysmon` tells a stuck worker from a busy one.
    /// Owner writes (a load and a store); anyone reads.
    pub switches: AtomicU64,
    /// In a migrating runtime, 1 + the switch count (`switches`) at which
    /// `sysmon` found the worker with goroutines queued and no switch for a
    /// while, or 0: while the count has not moved since, the worker is
    /// stuck (a goroutine running long, or blocked in a system call made
    /// directly), and a thief may take the `next` slot as well as the
    /// queue (Go's `retake`, and `runqsteal`'s `runnext`). `sysmon`
    /// writes; thieves read.
    pub stuck: AtomicU64,
    /// Times `sysmon` found the worker stuck and woke an idle one to take
    /// its goroutines (not counted when none slept). `sysmon` writes;
    /// anyone reads.
    pub retakes: AtomicU64,
    /// Yield signals refused on this worker, as its preempt record counts
    /// them; copied by the owner each time a goroutine switches back to
    /// its scheduler (not at hand-offs: a chain of them updates it when
    /// it ends).
    pub refused: AtomicU64,
    /// The words that put the owner to sleep and wake it: see [`Idle`].
    pub idle: Idle,
    /// Its goroutines that have a stack, in runtimes that report them to
    /// a shared registry's stops (`Shared::track_tasks`). Changed by the
    /// owner at depth 1; read by a stopped world's coordinator.
    pub tasks: Lock<crate::suspended::TaskList>,
    /// The goroutine the owner runs (a `*const Task`), or 0, in runtimes
    /// that keep task lists: set before each switch in and cleared after
    /// the switch out, at depth 1; read by a stopped world's coordinator
    /// (`deferred`).
    pub current: AtomicUsize,
}

/// A worker's sleep words, on cache lines of their own: every spawn and
/// every enqueue that any worker may take reads `sleeping` of every
/// worker, and beside the fields an owner writes at each switch (`tick`,
/// `current`) that read missed every time (perf: 86 % of `enqueue`'s
/// samples, 9 % of a spawn-heavy run's).
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Idle {
    /// Futex word the owner sleeps on when idle; raised by every enqueue
    /// meant for it, and to wake it for other work.
    pub seq: AtomicU32,
    /// 1 while the owner sleeps on `seq` (or is about to). Owner writes.
    pub sleeping: AtomicU32,
    /// 1 once an enqueue that any worker may take has chosen to wake this
    /// one while it sleeps; cleared by the owner before it says it sleeps.
    /// So the next such enqueue wakes another sleeper rather than the same
    /// one again (two goroutines spawned from outside used to wake one
    /// worker twice, which took both, and the other slept on: half the
    /// parallelism until something else woke it).
    pub chosen: AtomicU32,
}

/// A worker's locked queue; letting it go updates `Proc::queued`.
/// (`G`: the lock's guard, with a region of its own or inside the
/// caller's.)
pub(crate) struct LocalGuard<'a, G: std::ops::DerefMut<Target = Local> = Locked<'a, Lock<Local>>> {
    locked: G,
    queued: &'a AtomicUsize,
}

impl<G: std::ops::DerefMut<Target = Local>> std::ops::Deref for LocalGuard<'_, G> {
    type Target = Local;
    fn deref(&self) -> &Local {
        &self.locked
    }
}

impl<G: std::ops::DerefMut<Target = Local>> std::ops::DerefMut for LocalGuard<'_, G> {
    fn deref_mut(&mut self) -> &mut Local {
        &mut self.locked
    }
}

impl<G: std::ops::DerefMut<Target = Local>> Drop for LocalGuard<'_, G> {
    fn drop(&mut self) {
        let n = self.locked.queue.len() + usize::from(self.locked.next.is_some());
        self.queued.store(n, Relaxed);
    }
}

impl Proc {
    /// Locks its queue (inside a no-preempt region, as `region::lock`).
    pub(crate) fn lock_local(&self) -> LocalGuard<'_> {
        LocalGuard {
            locked: lock(&self.local),
            queued: &self.queued,
        }
    }

    /// Locks its queue for a caller already inside a no-preempt region of
    /// its own worker's (depth 1: a park, a hand-off, the scheduler; this
    /// worker's queue or another's), which a region of the lock's own
    /// would only look up again.
    pub(crate) fn lock_local_raised(&self) -> LocalGuard<'_, LockGuard<'_, Local>> {
        LocalGuard {
            locked: self.local.lock(),
            queued: &self.queued,
        }
    }

    /// How many goroutines its queue held when last let go (a hint).
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Relaxed)
    }

    /// Whether `sysmon` found the worker stuck and it has not switched
    /// since (see `stuck`). Read by a thief holding the queue's lock.
    fn is_stuck(&self) -> bool {
        let stuck = self.stuck.load(Acquire);
        stuck != 0 && stuck == self.switches.load(Acquire).wrapping_add(1)
    }

    /// Counts a switch into a goroutine (see `switches`). Owner only.
    #[inline]
    pub(crate) fn count_switch(&self) {
        self.switches
            .store(self.switches.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// Makes the owner look at the queues again, waking it if it sleeps.
    /// Returns whether it was asleep.
    pub(crate) fn kick(&self) -> bool {
        let idle = &self.idle;
        idle.seq.fetch_add(1, SeqCst);
        if idle.sleeping.load(SeqCst) != 0 {
            pardon_preempt::futex::wake(&idle.seq, 1);
            return true;
        }
        false
    }
}

/// The most finished goroutines a worker keeps for reuse (Go's per-P
/// `gFree` moves half to the global list past 64).
pub(crate) const FREE_LOCAL_MAX: usize = 64;

/// The most the runtime's shared free list keeps (a burst of a million
/// goroutines should not keep a million tasks once it is over).
pub(crate) const FREE_GLOBAL_MAX: usize = 4096;

/// The most goroutines one steal takes (Go's `runqsteal` takes half of a
/// 256-slot queue).
const STEAL_MAX: usize = 64;

/// How far into a victim's queue a steal looks.
const WINDOW: usize = 2 * STEAL_MAX;

/// Where `enqueue` puts a goroutine.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Place {
    /// The worker's `next` slot (a wake-up).
    Next(usize),
    /// The back of the worker's queue, by that worker itself (a spawn,
    /// a yield): it is awake, so nothing kicks it (a locked instruction
    /// of every spawn and yield until the eleventh session).
    Back(usize),
    /// The global queue.
    Global,
}

/// What the workers and `sysmon` share.
pub(crate) struct Shared {
    pub config: Config,
    pub procs: Vec<Proc>,
    /// Goroutines spawned from outside the runtime.
    global: Lock<Fifo<RunLink>>,
    /// How many goroutines `global` holds: a worker looks at it before
    /// every choice, without the lock.
    global_len: AtomicUsize,
    pub shutdown: AtomicBool,
    pub stacks: StackPool,
    /// The fork generation the runtime was made in (`fork`).
    pub generation: u64,
    /// The preempt registry the workers attach to, in signal mode.
    pub registry: Option<pardon_preempt::Registry>,
    /// Whether the workers keep lists of their goroutines for a task
    /// source (a registry shared through `Runtime::with_registry`, which
    /// someone else may stop). Set at creation.
    pub track_tasks: bool,
    /// A collector's deferred scans of the parked goroutines (see
    /// `deferred`), in runtimes that keep task lists.
    pub deferral: crate::deferred::Deferral,
    /// Finished goroutines kept for reuse (Go's global `gFree`): workers
    /// move batches here when their own list is long and take batches when
    /// theirs is empty (see `worker::Worker::new_task`). At most
    /// `FREE_GLOBAL_MAX`. Each holds the runtime's shared state: emptied
    /// by `clear_queues`.
    pub free: Lock<Fifo<RunLink>>,
    /// Futex word `sysmon` sleeps on; raised to wake it early.
    pub sysmon_seq: AtomicU32,
    /// Non-zero while `sysmon` sleeps longer than its busy period (nothing
    /// was running): a worker that starts a goroutine then wakes it.
    pub sysmon_idle: AtomicU32,
    /// Workers whose thread has not ended: `procs` from the start, lowered
    /// by each as it ends (`worker_ended`). A join from outside the
    /// runtime that finds it zero and no end gives up with an error.
    live_workers: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        stacks: StackPool,
        registry: Option<pardon_preempt::Registry>,
        track_tasks: bool,
    ) -> Shared {
        let config_procs = config.procs;
        Shared {
            procs: (0..config.procs).map(|_| Proc::default()).collect(),
            config,
            global: Lock::new(Fifo::new()),
            global_len: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            stacks,
            generation: crate::fork::generation(),
            registry,
            track_tasks,
            deferral: Default::default(),
            free: Lock::new(Fifo::new()),
            sysmon_seq: AtomicU32::new(0),
            sysmon_idle: AtomicU32::new(0),
            live_workers: AtomicUsize::new(config_procs),
        }
    }

    /// Whether every worker has ended (the runtime was dropped): no
    /// goroutine runs any more, so one that has not ended never will.
    pub(crate) fn workers_gone(&self) -> bool {
        self.live_workers.load(SeqCst) == 0
    }

    /// Counts a worker out; its thread runs nothing afterwards.
    pub(crate) fn worker_ended(&self) {
        self.live_workers.fetch_sub(1, SeqCst);
    }

    /// A runtime's shared state with no workers, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Arc<Shared> {
        let config = Config::default();
        let stacks = StackPool::new(config.stack_size, 0).unwrap();
        Arc::new(Shared::new(config, stacks, None, false))
    }

    /// Queues a runnable goroutine and wakes the worker that must run it,
    /// or, if any may (the global queue, a goroutine that has not run),
    /// one that sleeps.
    pub(crate) fn enqueue(&self, t: TaskRef, place: Place) {
        let anyone = matches!(place, Place::Global) || t.home.load(SeqCst) == NO_HOME;
        let target = match place {
            Place::Next(w) => {
                let mut l = self.procs[w].lock_local();
                if let Some(old) = l.next.replace(t) {
                    l.queue.push_back(old);
                }
                Some(w)
            }
            Place::Back(w) => {
                debug_assert_eq!(
                    crate::worker::worker().map(|m| m.index),
                    Some(w),
                    "only a worker queues at the back of its own queue"
                );
                self.procs[w].lock_local().queue.push_back(t);
                if !anyone {
                    return;
                }
                None
            }
            Place::Global => {
                let mut g = lock(&self.global);
                g.push_back(t);
                self.global_len.store(g.len(), SeqCst);
                None
            }
        };
        if let Some(w) = target {
            if self.procs[w].kick() || !anyone {
                if self.config.migrate && self.procs[w].is_stuck() {
                    // Queued behind a worker `sysmon` found stuck, which
                    // will not run it soon: another may take it (see
                    // `Proc::stuck`), and one that sleeps is woken for it.
                    self.wake_a_sleeper();
                }
                return;
            }
        }
        // Anyone may take it: wake one sleeper (the target, if asleep, was
        // woken above; a worker queueing on its own queue is awake).
        self.wake_a_sleeper();
    }

    /// Wakes one sleeping worker that no other enqueue has chosen already
    /// (see `Idle::chosen`), if there is one. Returns whether it did.
    pub(crate) fn wake_a_sleeper(&self) -> bool {
        match self
            .procs
            .iter()
            .find(|p| p.idle.sleeping.load(SeqCst) != 0 && p.idle.chosen.swap(1, SeqCst) == 0)
        {
            Some(p) => {
                p.kick();
                true
            }
            None => false,
        }
    }

    /// Drops every queued goroutine (after shutdown, once no worker runs).
    ///
    /// Each queue is emptied under its lock but its goroutines are dropped
    /// after it is released: dropping one drops what its closure captured
    /// (a channel's last sender, say), which may wake a goroutine of this
    /// runtime and queue it again, taking the lock of the queue being
    /// emptied. (What is queued again that way stays, with the shared
    /// state it holds: memory, not a deadlock.)
    pub(crate) fn clear_queues(&self) {
        let mut dropped: Vec<TaskRef> = Vec::new();
        let mut queues: Vec<Fifo<RunLink>> = Vec::new();
        for p in &self.procs {
            let mut l = p.lock_local();
            dropped.extend(l.next.take());
            queues.push(std::mem::take(&mut l.queue));
        }
        {
            let mut g = lock(&self.global);
            queues.push(std::mem::take(&mut *g));
            self.global_len.store(0, SeqCst);
        }
        queues.push(std::mem::take(&mut *lock(&self.free)));
        for p in &self.procs {
            let mut list = lock(&p.tasks);
            dropped.extend(list.drain());
        }
        drop(queues);
        drop(dropped);
    }

    /// Wakes every worker (shutdown).
    pub(crate) fn kick_all(&self) {
        for p in &self.procs {
            p.kick();
        }
    }

    /// Whether worker `w` might find a goroutine (its own queue, the
    /// global queue, or another's queue held some when last let go):
    /// read without a lock, so only a hint, for a worker that spins
    /// before it sleeps (each `find` it made locked the spawner's queue,
    /// every few hundred nanoseconds). Never a reason to sleep: the
    /// sleep protocol's last look is a `find`.
    pub(crate) fn may_have_work(&self, w: usize, at_least: usize) -> bool {
        self.global_len.load(Relaxed) > 0
            || self.procs[w].queued.load(Relaxed) > 0
            || self
                .procs
                .iter()
                .any(|p| p.queued.load(Relaxed) >= at_least)
    }

    /// The next goroutine for worker `w`, and whether it inherits the
    /// running slice: its `next` slot, then its queue, after moving a
    /// batch of the global queue to the back of it (so goroutines spawned
    /// from outside wait their turn behind those already here, never for
    /// ever: a worker whose goroutines yield or are preempted always has
    /// some queued); failing all that, half of the goroutines that have
    /// not run from another's queue, if it holds `at_least` (a worker that
    /// has just run out of work waits for a batch: see
    /// `worker::STEAL_BATCH`). Called only by worker `w`'s scheduler,
    /// inside its no-preempt region (depth 1), so its locks enter no region
    /// of their own.
    pub(crate) fn find(&self, w: usize, at_least: usize) -> Option<(TaskRef, bool)> {
        /// In a migrating runtime, a worker with goroutines queued takes
        /// from the global queue once in this many slices (Go: 61).
        const GLOBAL_EVERY: u64 = 61;
        let mut l = self.procs[w].lock_local_raised();
        if let Some(t) = l.next.take() {
            return Some((t, true));
        }
        // A migrating runtime's global queue holds the goroutines that
        // yielded or were preempted: a worker with work of its own leaves
        // them there, for a worker without (or for itself once its queue
        // is empty, and every `GLOBAL_EVERY` slices so that none waits for
        // ever), as Go's `schedule` does; taking them back at once would
        // keep each on the worker that put it there.
        if self.global_len.load(SeqCst) > 0
            && (!self.config.migrate
                || l.queue.is_empty()
                || self.procs[w]
                    .tick
                    .load(Relaxed)
                    .is_multiple_of(GLOBAL_EVERY))
        {
            let mut g = self.global.lock();
            let batch = (g.len() / self.procs.len() + 1).min(g.len());
            let mut taken = g.split_front(batch);
            l.queue.append(&mut taken);
            self.global_len.store(g.len(), SeqCst);
        }
        if let Some(t) = l.queue.pop_front() {
            return Some((t, false));
        }
        drop(l);
        let n = self.procs.len();
        let migrate = self.config.migrate;
        for k in 1..n {
            let victim = (w + k) % n;
            let vp = &self.procs[victim];
            let mut v = vp.lock_local_raised();
            // A migrating runtime's worker stuck in one slice gives up its
            // `next` goroutine too, if nothing else is to be had.
            let stuck_next = migrate && v.next.is_some() && vp.is_stuck();
            // Only goroutines that may move: those that have not run, and
            // in a migrating runtime those their worker has let go of
            // (`Task::released`); as many as half the queue's length,
            // looked for only in the front WINDOW of it: a steal costs the
            // same however long the victim's queue is, and reads each task
            // it looks at once (counting the fresh ones first read them
            // twice: a steal was a tenth of a spawn's cost when one
            // goroutine spawned many).
            if v.queue.len() < at_least.max(1) && !stuck_next {
                continue;
            }
            let take = v.queue.len().div_ceil(2).min(STEAL_MAX);
            // Relinked, not copied: no allocation.
            let mut stolen: Fifo<RunLink> = Fifo::new();
            let mut kept: Fifo<RunLink> = Fifo::new();
            while stolen.len() < take && stolen.len() + kept.len() < WINDOW {
                let Some(t) = v.queue.pop_front() else { break };
                // Acquire: the worker's last writes to the task, before
                // its release, are seen by the thief that runs it.
                if t.home.load(SeqCst) == NO_HOME || (migrate && t.released.load(Acquire)) {
                    stolen.push_back(t);
                } else {
                    kept.push_back(t);
                }
            }
            // The ones passed over go back in front, in their order.
            kept.append(&mut v.queue);
            v.queue = kept;
            if stolen.is_empty() && stuck_next {
                if let Some(t) = v.next.take_if(|t| t.released.load(Acquire)) {
                    stolen.push_back(t);
                }
            }
            drop(v);
            let Some(first) = stolen.pop_front() else {
                continue;
            };
            if !stolen.is_empty() {
                self.procs[w].lock_local_raised().queue.append(&mut stolen);
            }
            return Some((first, false));
        }
        None
    }
}
