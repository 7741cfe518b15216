//! The runtime: starting workers and `sysmon`, spawning, joining
//! and yielding.
//!
//! By default a goroutine never leaves the worker it first ran on (its
//! *home*): it is requeued there after a yield, a preemption, a park or a
//! wake-up. Go migrates goroutines freely, but Rust code may keep a
//! thread-local's address across any call (the compiler takes the thread
//! to be fixed within a function), and some values are tied to the thread
//! that made them (a `std` `MutexGuard`, which is `!Send`), so a goroutine
//! that resumed on another thread could reach another thread's data from
//! safe code. Load is balanced when goroutines start, by stealing those
//! that have not.
//!
//! A runtime made by the `unsafe` [`Runtime::with_migration`] moves them as
//! Go does: a goroutine that yields or whose slice ends goes to the global
//! queue, which a worker with work of its own leaves to workers without
//! (`queue`), and its home becomes whichever worker runs it next. A parked
//! goroutine wakes at home, as elsewhere, and a worker without work may
//! steal it from there once its worker has let go of it (`Task::released`,
//! set after the switch away, which the park protocol's reasoning in `task`
//! needs); so may one that `sysmon` woke because the worker has not
//! switched for 20 µs, blocked in a system call made directly, say
//! (`Proc::stuck`). This crate's own code finds the running worker afresh
//! at every lookup (`sys::tls`) and after every switch that may have moved
//! the goroutine; one preempted by the signal while it holds a pointer
//! into its worker's state stays home that time
//! (`worker::switching::holds_its_worker`).
//!
//! Goroutines of one worker share its thread-locals. At the cooperative
//! switch points (a channel operation, a join, a lock, a sleep, a yield, a
//! poll) that is what safe Rust already allows — any call may run other
//! code that uses the same thread-locals — so polls-only and cooperative
//! runtimes are safe to make. A signal-preempted goroutine is switched
//! out between two arbitrary instructions, which safe Rust assumes cannot
//! happen; hence [`Runtime::with_signal_preemption`] is `unsafe`, with the
//! contract written there.

use std::any::Any;
use std::fmt;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle as ThreadHandle;

use crate::config::{Config, Preemption, RuntimeError};
use crate::join::JoinHandle;
use crate::queue::{Place, Shared};
use crate::stack::StackPool;
use crate::task::Task;
use crate::worker::{goroutine, to_scheduler, worker, worker_main};

/// A runtime: its workers run goroutines until it is dropped.
pub struct Runtime {
    shared: Arc<Shared>,
    threads: Vec<ThreadHandle<()>>,
    /// The task source added to a shared registry, removed on drop.
    source: Option<pardon_preempt::TaskSourceId>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("procs", &self.shared.procs.len())
            .field("preemption", &self.shared.config.preemption)
            .finish()
    }
}

/// Counters of a runtime, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Goroutines switched out at the end of their time slice (by the
    /// signal's injected call, or at a poll).
    pub preemptions: u64,
    /// Times `sysmon` asked a worker to end a slice (a refused or late
    /// request is asked again, so this is at least `preemptions`, apart
    /// from polls that found the flag of a slice that had ended).
    pub asks: u64,
    /// Yield signals that found a goroutine where it could not be switched
    /// (a no-preempt region, a shared library, short of stack).
    pub refused: u64,
    /// Parks that switched straight into the goroutine they woke
    /// ([`Config::hand_off`]).
    pub hand_offs: u64,
    /// Times a goroutine that had run on one worker resumed on another
    /// (only in a runtime made by [`Runtime::with_migration`]).
    pub migrations: u64,
    /// Preemptions by the signal in a migrating runtime that kept the
    /// goroutine on its worker, because its registers or stack pointed
    /// into the worker's own state (it was in this crate's code between a
    /// lookup of its worker and the use of it).
    pub stays: u64,
    /// Times `sysmon` found a worker of a migrating runtime that had not
    /// switched goroutines for 20 µs with goroutines queued behind it (one
    /// running long, or blocked in a system call it made directly) and
    /// woke an idle worker to take them (`Runtime::with_migration`).
    pub retakes: u64,
    /// Goroutine stacks mapped now: on goroutines (running or parked), on
    /// finished ones each worker keeps for its next spawns (at most 64 a
    /// worker), kept by each worker for goroutines that start without one
    /// (at most 32 a worker), and in the pool ([`Config::stack_pool`]).
    pub stacks_mapped: u64,
}

impl Runtime {
    /// Starts `config.procs` workers (`PARDON_PROCS` overrides `procs`)
    /// and, unless the runtime is cooperative (and does not migrate),
    /// `sysmon`. Refuses [`Preemption::Signal`], which only
    /// [`Runtime::with_signal_preemption`] may start.
    pub fn new(config: Config) -> Result<Runtime, RuntimeError> {
        if config.migrate {
            return Err(refuse_migration("Runtime::new"));
        }
        if config.preemption == Preemption::Signal {
            return Err(RuntimeError::Config(
                "preemption: signal preemption switches goroutines between arbitrary \
                 instructions, which safe Rust assumes cannot happen on a thread: start it \
                 with the unsafe Runtime::with_signal_preemption, whose contract says what \
                 goroutine code must not do"
                    .into(),
            ));
        }
        Runtime::start(config, None)
    }

    /// Starts a runtime whose goroutines are preempted by signal at the end
    /// of their time slice, wherever they are in the program's own code
    /// (loops without calls included): `config` with
    /// [`Preemption::Signal`].
    ///
    /// # Safety
    /// A preempted goroutine is switched out between two instructions, and
    /// the goroutines that run on its worker until it resumes share its
    /// thread, so they can observe the thread's thread-local state half-way
    /// through an update that safe Rust takes to be indivisible (a
    /// `RefCell` in a `thread_local!` between the check and the setting of
    /// its borrow flag, say, which would hand out two `&mut`). The caller
    /// promises that no two goroutines of this runtime use the same
    /// thread-local state, except through this crate (whose own is
    /// per-worker and used only where no preemption is taken). In
    /// practice, in goroutine code:
    ///
    /// - no `thread_local!` of the program's own that two goroutines may
    ///   touch;
    /// - no use of std's process-wide handles that keep per-thread state
    ///   (`print!`, `println!`, `eprintln!`, locked `stdout`/`stderr`):
    ///   print from threads outside the runtime, or pass messages to one;
    /// - a global allocator without per-thread caches in the program's own
    ///   code, such as the system allocator (no goroutine is preempted
    ///   inside a shared library like libc, where `malloc` lives);
    /// - no panics in two goroutines of one worker at once (std counts
    ///   panics per thread; the process aborts, which is safe but fatal).
    ///
    /// Not unsafe but worth knowing: a `std::sync::Mutex` held by a
    /// preempted goroutine blocks the worker's thread when another of its
    /// goroutines locks it, for ever (the holder can only resume on that
    /// thread); use [`crate::Mutex`], which parks goroutines instead.
    pub unsafe fn with_signal_preemption(config: Config) -> Result<Runtime, RuntimeError> {
        if config.migrate {
            return Err(refuse_migration("Runtime::with_signal_preemption"));
        }
        Runtime::start(
            Config {
                preemption: Preemption::Signal,
                ..config
            },
            None,
        )
    }

    /// Starts a signal-preempted runtime whose workers attach to
    /// `registry`, a preempt registry made with [`crate::registry_config`]
    /// and shared with other code — a heap whose collections must stop
    /// the goroutines and scan their stacks. Every worker attaches through
    /// `config.attach` if set (a heap's mutator per worker), and the
    /// runtime adds a task source to the registry, through which a stopped
    /// world reports every goroutine that is not running: its stack, its
    /// saved stack pointer and its task word (removed when the runtime is
    /// dropped). Each worker's task word is switched with its goroutines.
    ///
    /// # Safety
    /// As for [`Runtime::with_signal_preemption`].
    pub unsafe fn with_registry(
        config: Config,
        registry: pardon_preempt::Registry,
    ) -> Result<Runtime, RuntimeError> {
        if config.migrate {
            return Err(RuntimeError::Config(
                "migrate: the goroutines of a runtime sharing a registry stay on their \
                 worker (an embedder's per-worker state, a heap's mutator, is theirs)"
                    .into(),
            ));
        }
        if !crate::attach::has_our_hook(&registry) {
            return Err(RuntimeError::Config(
                "registry: not made with pardon_sched::registry_config (a signal strategy \
                 and the scheduler's yield hook)"
                    .into(),
            ));
        }
        Runtime::start(
            Config {
                preemption: Preemption::Signal,
                ..config
            },
            Some(registry),
        )
    }

    /// Starts a runtime whose goroutines move between workers
    /// ([`Config::migrate`], set here): one that yields or whose time
    /// slice ends goes to the global queue and resumes on whichever worker
    /// takes it, so a worker left without work takes goroutines that have
    /// run from the others, as in Go. Any preemption mode. With
    /// [`Preemption::Signal`], a goroutine preempted while its registers
    /// or stack point into its worker's own state (stopped in this crate's
    /// code between a lookup of its worker and the use of it) stays on its
    /// worker that time ([`RuntimeStats::stays`]); the others go to the
    /// global queue.
    ///
    /// # Safety
    /// A goroutine that yields (`yield_now`, a poll at the end of its
    /// slice), or in signal mode is preempted anywhere, may resume on
    /// another thread, which safe Rust assumes cannot happen within a
    /// call. The caller promises that goroutine code, the libraries it
    /// calls included:
    ///
    /// - uses no thread-local state at all: the compiler may compute a
    ///   thread-local's address once in a function and keep it across a
    ///   call, so after a move the function would use the first thread's
    ///   (std's own uses count: `HashMap::new`'s random keys, `print!`,
    ///   `std::thread::current`). This crate's own lookups of the running
    ///   worker are read afresh each time;
    /// - holds no value bound to its thread across a yield, a poll or (in
    ///   signal mode) anywhere: a `std` `MutexGuard` (unlocked on another
    ///   thread), an `Rc` another thread's code may also hold, a `RefCell`
    ///   borrow of thread-local data;
    /// - does not rely on the thread's identity (thread ids, per-thread
    ///   signal masks, scheduler affinity) staying the same;
    /// - with [`Preemption::Signal`], keeps the contract of
    ///   [`Runtime::with_signal_preemption`] too. (`errno` is kept across
    ///   a preemption, on the thread the goroutine resumes on.)
    ///
    /// A goroutine that parks (a channel, a join, a lock, a sleep) is woken
    /// on the worker it parked on and may be taken from there by a worker
    /// without work: parks move goroutines too. None moves while its
    /// thread is unwinding a panic (std counts a panic per thread). A
    /// worker blocked in a system call made directly (not through
    /// [`crate::blocking`]) gives up the goroutines queued behind it once
    /// `sysmon` finds it 20 µs without a switch ([`RuntimeStats::retakes`]:
    /// within a round of its, an eighth of the time slice, 20-500 µs, and
    /// every 20 µs for a while after a retake), as Go's `retake` hands off
    /// a P stuck in a system call.
    /// A runtime sharing a registry ([`Runtime::with_registry`]) does not
    /// migrate.
    pub unsafe fn with_migration(config: Config) -> Result<Runtime, RuntimeError> {
        Runtime::start(
            Config {
                migrate: true,
                ..config
            },
            None,
        )
    }

    fn start(
        mut config: Config,
        shared_registry: Option<pardon_preempt::Registry>,
    ) -> Result<Runtime, RuntimeError> {
        if let Ok(v) = std::env::var("PARDON_PROCS") {
            config.procs = v.trim().parse().map_err(|_| {
                RuntimeError::Config(format!("PARDON_PROCS: {v:?} is not a number of workers"))
            })?;
        }
        config.validate()?;
        let stacks =
            StackPool::new(config.stack_size, config.stack_pool).map_err(RuntimeError::Stack)?;
        crate::overflow::install();
        crate::fork::install();
        let track_tasks = shared_registry.is_some();
        // Task lists and deferred scans are per worker (`suspended`).
        assert!(!(track_tasks && config.migrate), "checked by with_registry");
        let registry = match (config.preemption, shared_registry) {
            (_, Some(r)) => Some(r),
            (Preemption::Signal, None) => Some(
                pardon_preempt::Registry::new(crate::attach::registry_config(Default::default()))
                    .map_err(|e| RuntimeError::Preempt(e.to_string()))?,
            ),
            _ => None,
        };
        let procs = config.procs;
        // A cooperative runtime needs no slices ended, but a migrating one
        // needs its stuck workers noticed (`sysmon`).
        let sysmon = config.preemption != Preemption::Cooperative || config.migrate;
        let shared = Arc::new(Shared::new(config, stacks, registry, track_tasks));
        let mut rt = Runtime {
            shared: shared.clone(),
            threads: Vec::new(),
            source: None,
        };
        if let (true, Some(r)) = (track_tasks, &shared.registry) {
            rt.source = Some(r.add_task_source(Arc::new(crate::suspended::Source(shared.clone()))));
        }
        let (ready_tx, ready) = std::sync::mpsc::channel();
        for i in 0..procs {
            let s = shared.clone();
            let tx = ready_tx.clone();
            let h = std::thread::Builder::new()
                .name(format!("pardon-m{i}"))
                .spawn(move || worker_main(i, s, tx))
                .map_err(RuntimeError::Spawn)?;
            rt.threads.push(h);
        }
        drop(ready_tx);
        // Every worker says whether it could attach; the first refusal is
        // the error (dropping `rt` stops the others).
        for _ in 0..procs {
            match ready.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(RuntimeError::Attach(e)),
                Err(_) => {
                    return Err(RuntimeError::Attach(
                        "a worker ended before it attached".into(),
                    ))
                }
            }
        }
        if sysmon {
            let s = shared.clone();
            let h = std::thread::Builder::new()
                .name("pardon-sysmon".into())
                .spawn(move || crate::sysmon::sysmon_main(s))
                .map_err(RuntimeError::Spawn)?;
            rt.threads.push(h);
        }
        Ok(rt)
    }

    /// The settings the runtime runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The runtime's counters so far.
    pub fn stats(&self) -> RuntimeStats {
        let mut s = RuntimeStats::default();
        for p in &self.shared.procs {
            s.preemptions += p.preemptions.load(Relaxed);
            s.asks += p.asks.load(Relaxed);
            s.refused += p.refused.load(Relaxed);
            s.hand_offs += p.hand_offs.load(Relaxed);
            s.migrations += p.migrations.load(Relaxed);
            s.stays += p.stays.load(Relaxed);
            s.retakes += p.retakes.load(Relaxed);
        }
        s.stacks_mapped = self.shared.stacks.mapped() as u64;
        s
    }

    /// Starts a goroutine running `f`.
    pub fn go<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        spawn_on(&self.shared, f)
    }

    /// Stops every worker of a signal-preempted runtime, by the same signal
    /// that ends time slices: a goroutine running on a worker is stopped
    /// where it is (the trampoline saves every register on its stack),
    /// idle workers count as stopped, and parked goroutines are on no
    /// thread, so their number does not matter. The returned guard
    /// restarts them when dropped. The world a collector over goroutines
    /// needs (issue 21); the `goroutines` tool's `stw` mode measures it.
    /// Callable from any thread, a goroutine of this runtime included (its
    /// worker is the coordinator then). Fails for other modes (their
    /// workers are not attached to a registry yet) and if a worker does
    /// not answer within the preempt registry's timeout. It is the preempt
    /// registry's safe stop ([`pardon_preempt::Registry::stop_the_world`]):
    /// no worker is parked inside libc, so the holder may allocate; it must
    /// not wait for a lock a goroutine or worker may hold.
    pub fn stop_the_world(&self) -> Result<pardon_preempt::StoppedWorld<'_>, RuntimeError> {
        let Some(reg) = &self.shared.registry else {
            return Err(RuntimeError::Config(format!(
                "stop_the_world: only a signal-preempted runtime can stop its workers \
                 (this one is {})",
                self.shared.config.preemption
            )));
        };
        reg.stop_the_world()
            .map_err(|e| RuntimeError::Preempt(e.to_string()))
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

impl Runtime {
    fn remove_source(&mut self) {
        if let (Some(id), Some(r)) = (self.source.take(), &self.shared.registry) {
            r.remove_task_source(id);
        }
    }

    /// The preempt registry the workers are attached to (signal mode).
    pub fn registry(&self) -> Option<&pardon_preempt::Registry> {
        self.shared.registry.as_ref()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.shared.generation != crate::fork::generation() {
            // A forked child: the threads are not here to join.
            self.threads.clear();
            return;
        }
        self.shared.shutdown.store(true, SeqCst);
        self.shared.kick_all();
        self.shared.sysmon_seq.fetch_add(1, SeqCst);
        pardon_preempt::futex::wake(&self.shared.sysmon_seq, 1);
        if local_index(&self.shared).is_some() {
            // Dropped by one of its own goroutines (the last `Arc` of it
            // was there): joining would wait for this very thread. The
            // threads end on their own once this goroutine returns.
            // Those that run meanwhile are scanned on their threads; the
            // others never run again.
            self.threads.clear();
            self.remove_source();
            return;
        }
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        // No goroutine runs any more: none needs its stack scanned.
        self.remove_source();
        // Goroutines still queued never run; they hold the shared state
        // (and it them): let them go.
        self.shared.clear_queues();
    }
}

/// Why a safe constructor refuses [`Config::migrate`].
fn refuse_migration(constructor: &str) -> RuntimeError {
    RuntimeError::Config(format!(
        "migrate: {constructor} does not move goroutines between threads, which safe Rust \
         assumes cannot happen within a call: start such a runtime with the unsafe \
         Runtime::with_migration, whose contract says what goroutine code must not do"
    ))
}

/// The calling worker's index if it is a worker of `shared`'s runtime
/// (its local queue is then the one to use), `None` otherwise.
fn local_index(shared: &Arc<Shared>) -> Option<usize> {
    worker()
        .filter(|m| Arc::ptr_eq(&m.shared, shared))
        .map(|m| m.index)
}

fn spawn_on<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    crate::fork::check(shared.generation, "spawning a goroutine");
    let place = local_index(shared).map_or(Place::Global, Place::Back);
    let mut t = match (place, worker()) {
        (Place::Back(_), Some(me)) => me.new_task(),
        _ => Arc::new(Task::new(shared.clone())),
    };
    Arc::get_mut(&mut t)
        .expect("a new task has no other reference")
        .body
        .hold(f);
    // SAFETY: the closure just held returns a `T`; the only handle.
    let handle = unsafe { JoinHandle::new(t.clone()) };
    shared.enqueue(t, place);
    handle
}

/// Starts a goroutine on the runtime the caller runs in (in a
/// [`blocking`](crate::blocking) call, the calling goroutine's). Panics
/// outside a runtime (use [`Runtime::go`] there).
pub fn go<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    if let Some(me) = worker() {
        return spawn_on(&me.shared, f);
    }
    let shared =
        crate::blocking::entered().expect("pardon_sched::go outside a runtime: use Runtime::go");
    spawn_on(&shared, f)
}

/// Lets the other goroutines run: the caller goes to the back of its
/// worker's queue (of the global queue in a migrating runtime, so it may
/// resume on another worker). Outside a goroutine, yields the thread.
pub fn yield_now() {
    if goroutine().is_none() {
        std::thread::yield_now();
        return;
    }
    to_scheduler(|_, _| true);
}
