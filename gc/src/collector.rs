//! The collector: a heap shared by attached mutator threads, collected by
//! stopping them (by signal, or at polls) and marking from their roots.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use pardon_preempt::{Registry, StopError};

use crate::config::{Config, ConfigError};
use crate::cycle::with_entry;
use crate::heap::{lock, RawHeap};
use crate::mark::CollectionKind;
use crate::mutator::Mutator;
use crate::mutators::{MutatorState, MutatorTable};
use crate::pacer::Pacer;
use crate::roots::WordTable;
use crate::rootscan::RootBuf;
use crate::stats::{CycleStats, GcStats, StatsRecorder};
use crate::types::{Type, TypeDesc, TypeError};
use crate::view::RawView;

/// Everything `Heap::new` can reject.
#[derive(Debug)]
pub enum HeapError {
    /// A heap setting is invalid.
    Config(ConfigError),
    /// A preemption setting is invalid.
    Preempt(pardon_preempt::ConfigError),
}

impl fmt::Display for HeapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeapError::Config(e) => e.fmt(f),
            HeapError::Preempt(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for HeapError {}

/// Why a collection did not happen.
#[derive(Debug, Clone)]
pub enum CollectError {
    /// The world could not be stopped (a timeout, a replaced signal
    /// handler, or this thread already holds it).
    Stop(StopError),
}

impl fmt::Display for CollectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectError::Stop(e) => write!(f, "collection abandoned: {e}"),
        }
    }
}

impl std::error::Error for CollectError {}

/// What every handle of one heap shares: the raw heap, the thread registry,
/// the roots, the pacer and the statistics. `Heap` is an `Arc` of it.
pub(crate) struct Collector {
    /// The heap proper.
    pub raw: RawHeap,
    /// The attached threads; its coordinator lock serialises collections.
    pub registry: Registry,
    /// Global roots: changed by any thread, read by coordinators.
    pub globals: WordTable,
    /// When the next collection is due, and of which kind.
    pub pacer: Pacer,
    /// Print a line per collection (`PARDON_GCTRACE`). Immutable.
    pub trace: bool,
    /// Verify mode. Immutable.
    pub verify: bool,
    /// Histograms of every cycle: written by coordinators, copied by
    /// `Heap::stats`, both outside stops.
    pub stats: Mutex<StatsRecorder>,
    /// Completed collections: advanced by a coordinator, world stopped.
    pub cycles: AtomicU64,
    /// The roots of the collection in progress: only a coordinator
    /// (holding the stopped world) takes this lock.
    pub roots: Mutex<RootBuf>,
    /// One root buffer per marking thread, for the parked goroutines'
    /// stacks read in parallel in a stop-the-world collection
    /// (`rootscan`), with the figures of each part: each locked by the
    /// thread reading its part, inside the coordinator's stopped world.
    pub part_roots: Vec<Mutex<(RootBuf, CycleStats)>>,
    /// How many suspended tasks the last stop-the-world gathering read:
    /// below `rootscan::PARALLEL_FROM` the next reads them on the
    /// coordinator alone (waking the helpers costs more than it saves).
    pub suspended_seen: AtomicUsize,
    /// Every mutator's cache, handles and frame chain (see `mutators`).
    pub mutators: MutatorTable,
    /// The finalizer thread, once started (see `finalizer`).
    pub finalizer_thread: crate::finalizer::FinalizerThread,
    /// Held for the whole of a concurrent cycle (see `concurrent`), so
    /// cycles do not overlap; waited for in a safe region.
    pub cycle: Mutex<()>,
    /// The background collector of a concurrent heap (see `background`).
    pub background: crate::background::Background,
    /// This collector, for what must hold it (a concurrent cycle's
    /// scanner of parked goroutines: `mark::stacks`). Immutable.
    pub me: std::sync::Weak<Collector>,
}

/// A garbage-collected heap that threads attach to. Cheap to clone; all
/// clones are the same heap.
#[derive(Clone)]
pub struct Heap {
    pub(crate) collector: Arc<Collector>,
}

impl fmt::Debug for Heap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heap")
            .field("stats", &self.collector.raw.stats())
            .finish()
    }
}

/// A boolean environment setting: unset is `None`; `1`, `true`, `yes`, `on`
/// and `0`, `false`, `no`, `off` (any case) are accepted; anything else is an
/// error naming the variable, rather than silently ignored.
pub(crate) fn env_flag(name: &str) -> Result<Option<bool>, ConfigError> {
    let Ok(v) = std::env::var(name) else {
        return Ok(None);
    };
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(Some(true)),
        "0" | "false" | "no" | "off" | "" => Ok(Some(false)),
        _ => Err(ConfigError(format!(
            "{name}: {v:?} is not a yes/no setting (use 1, true, yes, on or 0, false, no, off)"
        ))),
    }
}

impl Heap {
    /// Creates a heap. Environment overrides: `PARDON_GOGC` (a percentage, or
    /// `off`), `PARDON_GCTRACE=1` (one line per collection on stderr),
    /// `PARDON_VERIFY=1` (verification mode), `PARDON_GENERATIONAL=1`
    /// (generational mode: every reference store must then use the write
    /// barrier), `PARDON_CONCURRENT=1` (concurrent marking),
    /// `PARDON_MARK_PERCENT` (its background share of the cores),
    /// `PARDON_MARK_WORKERS` (marking threads).
    pub fn new(config: Config) -> Result<Heap, HeapError> {
        Heap::build(config, None)
    }

    /// Creates a heap whose mutators attach to `registry`, an existing
    /// preempt registry shared with other code: a goroutine runtime's
    /// (`pardon-sched`'s `Runtime::with_registry`), so that a collection's
    /// stop stops its workers and its task source reports its parked
    /// goroutines (see the `goroutines` module). The registry's own
    /// settings decide how threads are stopped: `config.preemption`,
    /// `stop_timeout` and `stop_wait` are not used.
    pub fn with_registry(config: Config, registry: Registry) -> Result<Heap, HeapError> {
        Heap::build(config, Some(registry))
    }

    fn build(config: Config, registry: Option<Registry>) -> Result<Heap, HeapError> {
        let mut config = config;
        let flag = |name| env_flag(name).map_err(HeapError::Config);
        if let Some(v) = flag("PARDON_VERIFY")? {
            config.verify = v;
        }
        let gc_percent = match std::env::var("PARDON_GOGC") {
            Ok(v) if v.eq_ignore_ascii_case("off") => None,
            Ok(v) => Some(v.parse::<u32>().map_err(|_| {
                HeapError::Config(ConfigError(format!(
                    "PARDON_GOGC: {v:?} is neither a percentage nor \"off\""
                )))
            })?),
            Err(_) => config.gc_percent,
        };
        if let Some(v) = flag("PARDON_GENERATIONAL")? {
            config.generational = v;
        }
        if let Some(v) = flag("PARDON_CONCURRENT")? {
            config.concurrent = v;
        }
        if let Ok(v) = std::env::var("PARDON_MARK_PERCENT") {
            config.background_mark_percent = v.parse::<u32>().map_err(|_| {
                HeapError::Config(ConfigError(format!(
                    "PARDON_MARK_PERCENT: {v:?} is not a percentage"
                )))
            })?;
        }
        if let Ok(v) = std::env::var("PARDON_MARK_WORKERS") {
            config.mark_workers = v.parse::<usize>().map_err(|_| {
                HeapError::Config(ConfigError(format!(
                    "PARDON_MARK_WORKERS: {v:?} is not a number of threads"
                )))
            })?;
        }
        let registry = match registry {
            Some(r) => r,
            None => Registry::new(pardon_preempt::Config {
                preemption: config.preemption,
                stop_timeout: config.stop_timeout,
                wait: config.stop_wait,
                ..pardon_preempt::Config::default()
            })
            .map_err(HeapError::Preempt)?,
        };
        let trace = flag("PARDON_GCTRACE")?.unwrap_or(config.trace);
        let verify = config.verify;
        let min_heap = config.min_heap;
        let concurrent = config.concurrent;
        let raw = RawHeap::new(config).map_err(HeapError::Config)?;
        let roots = RootBuf::new().map_err(|e| {
            HeapError::Config(ConfigError(format!("cannot reserve the root buffer: {e}")))
        })?;
        let parts = if raw.config.mark_workers > 1 {
            raw.config.mark_workers
        } else {
            0
        };
        let part_roots = (0..parts)
            .map(|_| RootBuf::new().map(|b| Mutex::new((b, CycleStats::default()))))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| {
                HeapError::Config(ConfigError(format!(
                    "cannot reserve the marking threads' root buffers: {e}"
                )))
            })?;
        let heap = Heap {
            collector: Arc::new_cyclic(|me| Collector {
                raw,
                registry,
                globals: WordTable::new(),
                pacer: Pacer::new(gc_percent, min_heap, concurrent),
                trace,
                verify,
                stats: Mutex::new(StatsRecorder::new()),
                cycles: AtomicU64::new(0),
                roots: Mutex::new(roots),
                part_roots,
                suspended_seen: AtomicUsize::new(0),
                mutators: MutatorTable::new(),
                finalizer_thread: Default::default(),
                cycle: Mutex::new(()),
                background: Default::default(),
                me: me.clone(),
            }),
        };
        if heap.collector.raw.config.concurrent {
            crate::mark::barrier::register(&heap.collector);
        }
        Ok(heap)
    }

    /// What the raw heap underneath shows while this heap's threads run:
    /// lookups, statistics, sweeping that excludes stops (see [`RawView`];
    /// the raw heap itself, whose collection and allocation entry points
    /// know nothing of this heap's threads and roots, is not lent out).
    pub fn raw(&self) -> RawView<'_> {
        RawView::new(self)
    }

    /// The thread registry (for polls-only loops and the benchmark suite).
    pub fn registry(&self) -> &Registry {
        &self.collector.registry
    }

    /// Registers a type for the raw layer.
    pub fn register_type(&self, desc: &TypeDesc<'_>) -> Result<Type, TypeError> {
        self.collector.raw.register_type(desc)
    }

    /// Attaches the calling thread as a mutator.
    pub fn attach(&self) -> Result<Mutator, pardon_preempt::AttachError> {
        self.attach_as(0)
    }

    /// Attaches the calling thread with preempt context word `context`,
    /// which the heap does not interpret (a goroutine scheduler sharing
    /// the registry addresses its workers' yields by it).
    pub(crate) fn attach_as(&self, context: usize) -> Result<Mutator, pardon_preempt::AttachError> {
        if pardon_preempt::is_attached() {
            return Err(pardon_preempt::AttachError::AlreadyAttached);
        }
        if self.collector.registry.world_held_by_me() {
            return Err(pardon_preempt::AttachError::WorldHeld);
        }
        let state = Arc::new(MutatorState::new());
        // Unattached here, so this holds the coordinator lock: the table's
        // lock is then never held by a thread a stop (or a fork, see
        // `pardon_preempt`'s fork handling) could catch holding it.
        let slot = self
            .collector
            .registry
            .outside_stops(|| self.collector.mutators.insert(state.clone()));
        // SAFETY: the heap gives context words no meaning (it finds a
        // thread's frames through its task word, its cache and handles
        // through the table); a scheduler that shares the registry uses
        // them only to address yields, whose hook ignores threads that are
        // not its workers.
        match unsafe { self.collector.registry.attach_with_context(context) } {
            Ok(attached) => Ok(Mutator {
                heap: self.clone(),
                attached,
                state,
                slot,
            }),
            Err(e) => {
                drop(self.collector.mutators.remove(slot));
                Err(e)
            }
        }
    }

    /// Adds a global root: `addr` keeps its object alive until the returned
    /// id is removed. Fails only past about a million global roots.
    ///
    /// The id owns its slot: [`Heap::remove_root`] takes it, so a slot is
    /// removed once, and an id dropped unremoved only leaks its slot (and
    /// keeps its object). Removing a slot twice, or another heap's slot
    /// with the same number, let a later [`Global`](crate::Global) share
    /// its slot with another and read that one's object as its own type.
    pub fn add_root(&self, addr: usize) -> Result<GlobalRootId, crate::RootTableFull> {
        let index = self.collector.globals.insert(addr)?;
        Ok(GlobalRootId {
            heap: self.collector.raw.id,
            index,
        })
    }

    /// Changes a global root's value.
    ///
    /// # Panics
    /// If `id` is another heap's.
    pub fn set_root(&self, id: &GlobalRootId, addr: usize) {
        self.collector.globals.set(self.own_root(id), addr);
    }

    /// The value of a global root.
    ///
    /// # Panics
    /// If `id` is another heap's.
    pub fn root_value(&self, id: &GlobalRootId) -> usize {
        self.collector.globals.get(self.own_root(id))
    }

    /// Removes a global root.
    ///
    /// # Panics
    /// If `id` is another heap's.
    pub fn remove_root(&self, id: GlobalRootId) {
        self.collector.globals.remove(self.own_root(&id));
    }

    /// [`Heap::remove_root`] for an id its owner is dropping in place (a
    /// [`Global`](crate::Global)'s): the caller never uses `id` again.
    pub(crate) fn remove_root_of_dropped(&self, id: &GlobalRootId) {
        self.collector.globals.remove(self.own_root(id));
    }

    /// `id`'s slot number, checked to be this heap's.
    fn own_root(&self, id: &GlobalRootId) -> usize {
        assert!(
            id.heap == self.collector.raw.id,
            "a GlobalRootId used with another heap than the one that made it"
        );
        id.index
    }

    /// Collects now, fully (on a generational heap too: old garbage is
    /// freed). From an attached thread, prefer [`Mutator::collect`] (this
    /// works too: the calling thread is stopped like any other).
    #[inline(never)]
    pub fn collect(&self) -> Result<CycleStats, CollectError> {
        with_entry(|sp| self.collector.collect(sp, CollectionKind::Full))
    }

    /// Collects now as the pacer would: a minor collection on a generational
    /// heap, unless the old objects have grown enough since the last full
    /// one (then full); a full collection on any other heap.
    #[inline(never)]
    pub fn collect_minor(&self) -> Result<CycleStats, CollectError> {
        with_entry(|sp| self.collector.collect(sp, CollectionKind::Minor))
    }

    /// Statistics so far.
    pub fn stats(&self) -> GcStats {
        // A coordinator records into the recorder outside stops (a no-preempt
        // region, or the coordinator lock on an unattached thread), so no
        // thread may be stopped or forked while holding its lock: copy that
        // way too, into histograms made beforehand
        // (allocating inside the region could wait on a malloc lock held by
        // a stopped thread).
        let sh = &self.collector;
        let mut copy = StatsRecorder::new();
        sh.registry
            .outside_stops(|| lock(&sh.stats).copy_into(&mut copy));
        copy.into_snapshot(sh.raw.stats())
    }

    /// Completed collections.
    pub fn collections(&self) -> u64 {
        self.collector.cycles.load(Relaxed)
    }
}

/// Owns a global root of one heap ([`Heap::add_root`]): neither `Clone`
/// nor `Copy`, so the slot it names is removed at most once, and only by
/// its heap.
///
/// ```compile_fail
/// let heap = pardon::Heap::new(pardon::Config::default()).unwrap();
/// let id = heap.add_root(0).unwrap();
/// heap.remove_root(id);
/// heap.remove_root(id); // a second removal would free a slot in use
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct GlobalRootId {
    /// The `RawHeap::id` of the heap whose table holds the slot.
    heap: u64,
    /// The slot in that heap's global-root table.
    index: usize,
}

/// How long a collection may wait for mutators by default.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

impl Collector {
    /// Whether the pacer wants a collection now.
    #[inline(always)]
    pub(crate) fn pacer_due(&self) -> bool {
        self.pacer.due(self.raw.allocated.load(Relaxed))
    }
}
