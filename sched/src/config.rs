//! Runtime settings ([`Config`]), how goroutines are made to give up their
//! worker ([`Preemption`]), and the errors of [`Runtime::new`](crate::Runtime::new).

use std::fmt;
use std::time::Duration;

use crate::stack::StackError;

/// How a goroutine that has used up its time slice is made to give up
/// its worker. Stops of the world (a collector's) are `pardon-preempt`'s
/// business and have their own strategy, [`pardon_preempt::Preemption`];
/// this is the scheduler's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preemption {
    /// `sysmon` signals the goroutine's worker (SIGURG, through
    /// `pardon-preempt`), whose handler injects a call that switches the
    /// goroutine out wherever it is in the program's own code, loops
    /// without calls included (Go since 1.14). Needs
    /// [`Runtime::with_signal_preemption`](crate::Runtime::with_signal_preemption),
    /// which is `unsafe`: see there.
    Signal,
    /// `sysmon` raises a flag that [`poll`](crate::poll) reads: a goroutine
    /// gives up its worker at a poll once its slice has run out (loop back
    /// edges the program polls at), besides the cooperative points. The
    /// default.
    Poll,
    /// No `sysmon`: a goroutine gives up its worker only when it waits
    /// (channels, joins, locks, sleeps) or yields (Go up to 1.13, without
    /// even its function-entry checks). A loop without such calls keeps its
    /// worker for as long as it runs.
    Cooperative,
}

impl Preemption {
    /// Every mode, in report order.
    pub const ALL: [Preemption; 3] = [
        Preemption::Signal,
        Preemption::Poll,
        Preemption::Cooperative,
    ];

    /// The name tools use: `signal`, `poll` or `coop`.
    pub fn name(self) -> &'static str {
        match self {
            Preemption::Signal => "signal",
            Preemption::Poll => "poll",
            Preemption::Cooperative => "coop",
        }
    }
}

impl fmt::Display for Preemption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Preemption {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self, RuntimeError> {
        Preemption::ALL
            .into_iter()
            .find(|p| p.name() == s || (s == "cooperative" && *p == Preemption::Cooperative))
            .ok_or_else(|| {
                RuntimeError::Config(format!(
                    "preemption: unknown mode {s:?} (expected signal, poll or coop)"
                ))
            })
    }
}

/// Runtime settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Worker threads (Go's `GOMAXPROCS`); default: the available cores
    /// (also `PARDON_PROCS`).
    pub procs: usize,
    /// Bytes of address space per goroutine stack, guard page included
    /// (committed only as touched). Default 256 KiB.
    pub stack_size: usize,
    /// Dead goroutines' stacks kept for reuse in the runtime's pool
    /// (default 256). Each worker also keeps up to 64 finished goroutines
    /// with their stacks for its next spawns (Go keeps a dead `g`'s stack
    /// with it on its P's free list) and up to 32 more stacks for the
    /// goroutines that start on it without one, so at most `stack_pool +
    /// 96 × procs` stacks outlive their goroutines; the rest are unmapped.
    pub stack_pool: usize,
    /// How a goroutine is made to give up its worker when its slice is
    /// over. Default [`Preemption::Poll`].
    pub preemption: Preemption,
    /// How long a goroutine may keep its worker while others wait (Go's
    /// `forcePreemptNS`, 10 ms, the default). Between 50 µs and 10 s. A
    /// goroutine woken by another (a channel, a lock) runs in what is left
    /// of its waker's slice, as in Go, so a pair that hands work back and
    /// forth shares one slice.
    pub time_slice: Duration,
    /// How each worker attaches to the preempt registry, for a runtime
    /// made with [`Runtime::with_registry`](crate::Runtime::with_registry)
    /// whose embedder keeps per-worker state in the attachment (a heap's
    /// mutator: `pardon`'s `Heap::worker_attacher`). `None`: the worker
    /// attaches itself. Ignored without a registry.
    pub attach: Option<crate::attach::Attacher>,
    /// Whether a goroutine that parks switches straight into the
    /// goroutine it woke on its worker (the *hand-off*), rather than
    /// through the scheduler; what runs next is the same either way.
    /// Default true; false is for comparison and diagnosis.
    pub hand_off: bool,
    /// Whether goroutines may move between workers, as Go's do: one that
    /// yields or whose slice ends goes to the runtime's global queue, from
    /// which any worker may take it, and so resumes on whichever worker
    /// runs it next; a parked goroutine wakes where it parked, and a
    /// worker without work may take it from there (so may one woken for a
    /// worker stuck in a system call made directly). Load then evens out
    /// after goroutines start, not only when they start.
    /// Default false; only [`Runtime::with_migration`](crate::Runtime::with_migration),
    /// which is `unsafe`, starts a runtime with it (see there why).
    pub migrate: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            procs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            stack_size: 256 * 1024,
            stack_pool: 256,
            preemption: Preemption::Poll,
            time_slice: Duration::from_millis(10),
            attach: None,
            hand_off: true,
            migrate: false,
        }
    }
}

impl Config {
    /// Checks the settings, naming the one at fault.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        if self.procs == 0 || self.procs > 1024 {
            return Err(RuntimeError::Config(format!(
                "procs: {} is not between 1 and 1024",
                self.procs
            )));
        }
        if self.time_slice < Duration::from_micros(50) || self.time_slice > Duration::from_secs(10)
        {
            return Err(RuntimeError::Config(format!(
                "time_slice: {:?} is not between 50 µs and 10 s",
                self.time_slice
            )));
        }
        Ok(())
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
    /// The preemption signal could not be set up.
    Preempt(String),
    /// A worker could not attach to the preempt registry (its attach
    /// hook failed or returned something unusable); the message says why.
    Attach(String),
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Config(m) => f.write_str(m),
            RuntimeError::Stack(e) => write!(f, "stack_size: {e}"),
            RuntimeError::Spawn(e) => write!(f, "cannot start a worker thread: {e}"),
            RuntimeError::Preempt(m) => write!(f, "preemption: {m}"),
            RuntimeError::Attach(m) => write!(f, "attach: {m}"),
        }
    }
}

impl std::error::Error for RuntimeError {}
