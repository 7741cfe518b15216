//! The runtime: worker threads, run queues, spawning, yielding and
//! parking. Cooperative for now: a goroutine leaves its worker only when it
//! yields, parks (a join) or ends; preemption by signal comes next.
//!
//! Each of the `procs` workers (Go's M bound to a P, for now) owns a local
//! run queue; new goroutines go to the spawning worker's queue, or to the
//! global queue when spawned from outside; a worker with nothing local
//! takes from the global queue, then steals half of the goroutines another
//! worker has queued *that have not run yet*. An idle worker sleeps on a
//! futex word that every enqueue raises: it reads the word before it looks
//! at the queues and sleeps only if the word has not moved since, so no
//! wake-up is lost.
//!
//! A goroutine never leaves the worker it first ran on (its *home*): it is
//! requeued there after a yield, a park or a wake-up. Go migrates
//! goroutines freely, but Rust code may keep a thread-local's address
//! across any call (the compiler takes the thread to be fixed within a
//! function), and some values are tied to the thread that made them (a
//! `std` `MutexGuard`, which is `!Send`), so a goroutine that resumed on
//! another thread could reach another thread's data from safe code. Load
//! is balanced when goroutines start, by stealing those that have not.

use std::any::Any;
use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle as ThreadHandle;
use std::time::Duration;

use crate::context::{switch, Context};
use crate::stack::{StackError, StackPool};
use crate::task::{Task, DEAD, NO_HOME, PARKING, RUNNABLE, RUNNING, WAITING, WAKE_PENDING};

/// Runtime settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Worker threads (Go's `GOMAXPROCS`); default: the available cores
    /// (also `PARDON_PROCS`).
    pub procs: usize,
    /// Bytes of address space per goroutine stack, guard page included
    /// (committed only as touched). Default 256 KiB.
    pub stack_size: usize,
    /// Dead goroutines' stacks kept for reuse.
    pub stack_pool: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            procs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            stack_size: 256 * 1024,
            stack_pool: 256,
        }
    }
}

/// Why a runtime could not be made.
#[derive(Debug)]
pub enum RuntimeError {
    /// A setting is out of range; the message names it.
    Config(String),
    /// The stack settings were refused.
    Stack(StackError),
    /// A worker thread could not be started.
    Spawn(std::io::Error),
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Config(m) => f.write_str(m),
            RuntimeError::Stack(e) => write!(f, "stack_size: {e}"),
            RuntimeError::Spawn(e) => write!(f, "cannot start a worker thread: {e}"),
        }
    }
}

impl std::error::Error for RuntimeError {}

type TaskRef = Arc<Task>;

/// What the workers share.
struct Shared {
    /// Per-worker run queues (locked by their owner to push and pop, by
    /// thieves to steal half).
    locals: Vec<Mutex<VecDeque<TaskRef>>>,
    /// Goroutines spawned from outside the runtime, and overflow.
    global: Mutex<VecDeque<TaskRef>>,
    /// Futex word raised by every enqueue; idle workers sleep on it.
    work_seq: AtomicU32,
    /// Workers asleep (or about to be) on `work_seq`.
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    stacks: StackPool,
}

impl Shared {
    /// Queues a runnable task on worker `w`'s queue (or the global one)
    /// and wakes a sleeping worker.
    fn enqueue(&self, t: TaskRef, w: Option<usize>) {
        match w {
            Some(w) => lock(&self.locals[w]).push_back(t),
            None => lock(&self.global).push_back(t),
        }
        self.work_seq.fetch_add(1, SeqCst);
        if self.sleepers.load(SeqCst) > 0 {
            pardon_preempt::futex::wake(&self.work_seq, 1);
        }
    }

    /// The next task for worker `w`: its own queue, the global queue, or
    /// half of another worker's.
    fn find(&self, w: usize) -> Option<TaskRef> {
        if let Some(t) = lock(&self.locals[w]).pop_front() {
            return Some(t);
        }
        if let Some(t) = lock(&self.global).pop_front() {
            return Some(t);
        }
        let n = self.locals.len();
        for k in 1..n {
            let victim = (w + k) % n;
            let mut v = lock(&self.locals[victim]);
            // Only goroutines that have not run: the others stay home.
            let fresh = v.iter().filter(|t| t.home.load(SeqCst) == NO_HOME).count();
            let take = fresh.div_ceil(2);
            if take == 0 {
                continue;
            }
            let mut stolen = VecDeque::with_capacity(take);
            let mut kept = VecDeque::with_capacity(v.len() - take);
            for t in v.drain(..) {
                if stolen.len() < take && t.home.load(SeqCst) == NO_HOME {
                    stolen.push_back(t);
                } else {
                    kept.push_back(t);
                }
            }
            *v = kept;
            drop(v);
            let first = stolen.pop_front();
            if !stolen.is_empty() {
                lock(&self.locals[w]).extend(stolen);
            }
            return first;
        }
        None
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running worker's state, reached through a thread-local pointer.
struct Worker {
    index: usize,
    shared: Arc<Shared>,
    /// The scheduler's own context, which goroutines switch back to.
    sched: std::cell::UnsafeCell<Context>,
    /// The goroutine running now.
    current: std::cell::RefCell<Option<TaskRef>>,
}

thread_local! {
    static WORKER: Cell<*const Worker> = const { Cell::new(std::ptr::null()) };
}

/// The worker running the calling goroutine, or `None` outside the
/// runtime. Never inlined: a goroutine may resume on another thread after
/// a switch, so no thread-local address may be kept across one.
#[inline(never)]
fn worker() -> Option<&'static Worker> {
    let p = WORKER.with(|w| w.get());
    // SAFETY: set by the worker's loop to its own Worker, which outlives
    // every goroutine it runs (the loop returns only at shutdown).
    (!p.is_null()).then(|| unsafe { &*p })
}

fn worker_main(index: usize, shared: Arc<Shared>) {
    let me = Worker {
        index,
        shared,
        sched: std::cell::UnsafeCell::new(Context::empty()),
        current: std::cell::RefCell::new(None),
    };
    WORKER.with(|w| w.set(&me));
    let shared = &me.shared;
    loop {
        if shared.shutdown.load(SeqCst) {
            break;
        }
        let seen = shared.work_seq.load(SeqCst);
        let t = match shared.find(index) {
            Some(t) => t,
            None => {
                // Counted as a sleeper before looking again, so an enqueue
                // after this look wakes us (or moves `work_seq` first).
                shared.sleepers.fetch_add(1, SeqCst);
                let again = shared.find(index);
                if again.is_none() && !shared.shutdown.load(SeqCst) {
                    pardon_preempt::futex::wait(
                        &shared.work_seq,
                        seen,
                        Some(Duration::from_millis(50)),
                    );
                }
                shared.sleepers.fetch_sub(1, SeqCst);
                // What the second look found is run, not dropped (it was:
                // a lost goroutine, and a join that never returned).
                match again {
                    Some(t) => t,
                    None => continue,
                }
            }
        };
        run(&me, t);
    }
    WORKER.with(|w| w.set(std::ptr::null()));
}

/// The calling worker's index if it is a worker of `shared`'s runtime
/// (its local queue is then the one to use), `None` otherwise.
fn local_index(shared: &Arc<Shared>) -> Option<usize> {
    worker()
        .filter(|m| Arc::ptr_eq(&m.shared, shared))
        .map(|m| m.index)
}

/// Runs `t` until it yields, parks or ends, then does what it asked.
fn run(me: &Worker, t: TaskRef) {
    let shared = &me.shared;
    t.state.store(RUNNING, SeqCst);
    // SAFETY: only the worker running a task touches its cells.
    if unsafe { (*t.stack.get()).is_none() } {
        match shared.stacks.get() {
            Ok(stack) => {
                t.home.store(me.index, SeqCst);
                let arg = Arc::as_ptr(&t) as usize;
                // SAFETY: the stack is the task's alone until it is dead;
                // `arg` is kept alive by `me.current` while it runs.
                unsafe { *t.ctx.get() = Context::new(&stack, task_entry, arg) };
                // SAFETY: as above.
                unsafe { *t.stack.get() = Some(stack) };
            }
            Err(e) => {
                eprintln!("pardon-sched: no stack for a goroutine ({e}); retrying later");
                t.state.store(RUNNABLE, SeqCst);
                shared.enqueue(t, None);
                std::thread::sleep(Duration::from_millis(1));
                return;
            }
        }
    }
    *me.current.borrow_mut() = Some(t.clone());
    // SAFETY: read-only: the stack stays with the task while it runs.
    if let Some(stack) = unsafe { (*t.stack.get()).as_ref() } {
        crate::overflow::set_guard(stack.bottom() - crate::stack::GUARD, stack.bottom());
    }
    // SAFETY: the task's context was made above or saved by its last
    // switch away, and no other worker runs it (the state protocol).
    unsafe { switch(&mut *me.sched.get(), &*t.ctx.get()) };
    crate::overflow::set_guard(0, 0);
    *me.current.borrow_mut() = None;
    match t.state.load(SeqCst) {
        RUNNING => {
            // Yielded: to the back of this worker's queue, so the others
            // here run first.
            t.state.store(RUNNABLE, SeqCst);
            shared.enqueue(t, Some(me.index));
        }
        PARKING => {
            if t.state
                .compare_exchange(PARKING, WAITING, SeqCst, SeqCst)
                .is_err()
            {
                // Woken before the park was committed.
                t.state.store(RUNNABLE, SeqCst);
                shared.enqueue(t, Some(me.index));
            }
        }
        WAKE_PENDING => {
            t.state.store(RUNNABLE, SeqCst);
            shared.enqueue(t, Some(me.index));
        }
        DEAD => {
            // SAFETY: the task will never run again.
            if let Some(stack) = unsafe { (*t.stack.get()).take() } {
                shared.stacks.put(stack);
            }
        }
        s => unreachable!("a task switched away in state {s}"),
    }
}

extern "C" fn task_entry(arg: usize) -> ! {
    // SAFETY: `arg` is the Task the worker keeps alive while it runs.
    let t = unsafe { &*(arg as *const Task) };
    // SAFETY: only the running task takes its work, once.
    if let Some(work) = unsafe { (*t.work.get()).take() } {
        // A panic is caught where the closure was wrapped (`go`); this one
        // is only a guard against unwinding off the stack's top.
        let _ = catch_unwind(AssertUnwindSafe(work));
    }
    t.state.store(DEAD, SeqCst);
    let me = worker().expect("a goroutine runs on a worker");
    // SAFETY: back to the scheduler for good: it frees the stack only
    // after this switch has saved our (never resumed) context.
    unsafe { switch(&mut *t.ctx.get(), &*me.sched.get()) };
    unreachable!("a dead goroutine was resumed");
}

/// Switches the calling goroutine back to its worker's scheduler, having
/// set its state (`RUNNING` to yield, `PARKING` to park).
fn to_scheduler() {
    let me = worker().expect("a goroutine runs on a worker");
    let t = me.current.borrow().clone().expect("a running goroutine");
    let ctx = t.ctx.get();
    drop(t);
    // SAFETY: saves this goroutine's context, resumes the scheduler's; the
    // task stays alive in the scheduler's hands meanwhile.
    unsafe { switch(&mut *ctx, &*me.sched.get()) };
}

/// A runtime: its workers run goroutines until it is dropped.
pub struct Runtime {
    shared: Arc<Shared>,
    threads: Vec<ThreadHandle<()>>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("procs", &self.shared.locals.len())
            .finish()
    }
}

impl Runtime {
    /// Starts `config.procs` workers. `PARDON_PROCS` overrides `procs`.
    pub fn new(config: Config) -> Result<Runtime, RuntimeError> {
        let mut config = config;
        if let Ok(v) = std::env::var("PARDON_PROCS") {
            config.procs = v.trim().parse().map_err(|_| {
                RuntimeError::Config(format!("PARDON_PROCS: {v:?} is not a number of workers"))
            })?;
        }
        if config.procs == 0 || config.procs > 1024 {
            return Err(RuntimeError::Config(format!(
                "procs: {} is not between 1 and 1024",
                config.procs
            )));
        }
        let stacks =
            StackPool::new(config.stack_size, config.stack_pool).map_err(RuntimeError::Stack)?;
        crate::overflow::install();
        let shared = Arc::new(Shared {
            locals: (0..config.procs)
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
            global: Mutex::new(VecDeque::new()),
            work_seq: AtomicU32::new(0),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            stacks,
        });
        let mut rt = Runtime {
            shared: shared.clone(),
            threads: Vec::new(),
        };
        for i in 0..config.procs {
            let s = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("pardon-m{i}"))
                .spawn(move || worker_main(i, s))
                .map_err(RuntimeError::Spawn)?;
            rt.threads.push(h);
        }
        Ok(rt)
    }

    /// Starts a goroutine running `f`.
    pub fn go<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        spawn_on(&self.shared, f)
    }

    /// Runs `f` as a goroutine and waits, on this thread, for its result
    /// (a panic in it is returned as the error).
    pub fn block_on<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Box<dyn Any + Send>> {
        self.go(f).join()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        self.shared.work_seq.fetch_add(1, SeqCst);
        pardon_preempt::futex::wake(&self.shared.work_seq, i32::MAX);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

/// The result slot of a goroutine, and who waits for it.
struct JoinState<T> {
    result: Mutex<Option<Result<T, Box<dyn Any + Send>>>>,
    /// Goroutines parked in `join`.
    waiters: Mutex<Vec<Waker>>,
    /// Threads (outside the runtime) waiting in `join`.
    done: Condvar,
}

/// A goroutine's result: [`JoinHandle::join`] waits for it.
pub struct JoinHandle<T> {
    state: Arc<JoinState<T>>,
}

fn spawn_on<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let state = Arc::new(JoinState {
        result: Mutex::new(None),
        waiters: Mutex::new(Vec::new()),
        done: Condvar::new(),
    });
    let s2 = state.clone();
    let work = Box::new(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        // Waiters are taken under the result's lock, so a joiner that
        // finds no result has registered before this runs.
        let mut slot = lock(&s2.result);
        *slot = Some(r);
        let waiters = std::mem::take(&mut *lock(&s2.waiters));
        drop(slot);
        s2.done.notify_all();
        for w in waiters {
            w.wake();
        }
    });
    let t = Arc::new(Task::new(work));
    shared.enqueue(t, local_index(shared));
    JoinHandle { state }
}

/// Starts a goroutine on the runtime the caller runs in. Panics outside a
/// runtime (use [`Runtime::go`] there).
pub fn go<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let me = worker().expect("pardon_sched::go outside a runtime: use Runtime::go");
    let shared = me.shared.clone();
    spawn_on(&shared, f)
}

/// What wakes one parked goroutine.
pub(crate) struct Waker {
    task: TaskRef,
    shared: Arc<Shared>,
}

impl Waker {
    /// Makes the goroutine runnable (queueing it on the calling worker, or
    /// the global queue from outside), unless it is no longer parked.
    pub(crate) fn wake(self) {
        if self.task.wake() {
            // Home: a parked goroutine has run (see the module comment).
            let home = self.task.home.load(SeqCst);
            self.shared.enqueue(self.task, Some(home));
        }
    }
}

/// Parks the calling goroutine until a [`Waker`] that `register` is given
/// wakes it. `register` runs with the goroutine already announced as
/// parking (so a wake that comes before the switch is not lost: see
/// `task`), and returns `false` if there is nothing to wait for after all
/// (the park is then cancelled, and the waker must not be kept). Returns
/// `false` outside a runtime, having called nothing.
pub(crate) fn park(register: impl FnOnce(Waker) -> bool) -> bool {
    let Some(m) = worker() else {
        return false;
    };
    let Some(task) = m.current.borrow().clone() else {
        return false;
    };
    let waker = Waker {
        task: task.clone(),
        shared: m.shared.clone(),
    };
    task.state.store(PARKING, SeqCst);
    if register(waker) {
        drop(task);
        to_scheduler();
    } else {
        task.state.store(RUNNING, SeqCst);
    }
    true
}

/// Lets the other goroutines run: the caller goes to the back of the
/// global queue. Outside a runtime, yields the thread.
pub fn yield_now() {
    if worker().is_none() {
        std::thread::yield_now();
        return;
    }
    to_scheduler();
}

impl<T> JoinHandle<T> {
    /// Waits for the goroutine and returns its value, or its panic as the
    /// error. A goroutine that joins is parked (its worker runs others);
    /// a thread outside the runtime blocks.
    pub fn join(self) -> Result<T, Box<dyn Any + Send>> {
        let st = &self.state;
        loop {
            let mut result = None;
            let parked = park(|w| {
                let mut slot = lock(&st.result);
                match slot.take() {
                    Some(r) => {
                        result = Some(r);
                        false
                    }
                    None => {
                        // Registered under the result's lock: the
                        // goroutine's end takes the waiters under it too.
                        lock(&st.waiters).push(w);
                        true
                    }
                }
            });
            if let Some(r) = result {
                return r;
            }
            if !parked {
                // A thread outside the runtime: block it.
                let mut slot = lock(&st.result);
                loop {
                    if let Some(r) = slot.take() {
                        return r;
                    }
                    slot = st.done.wait(slot).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    /// Whether the goroutine has finished.
    pub fn is_finished(&self) -> bool {
        lock(&self.state.result).is_some()
    }
}
