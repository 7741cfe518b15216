//! The collector: a heap shared by attached mutator threads, collected by
//! stopping them (by signal, or at polls) and marking from their roots.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use pardon_preempt::{Attached, Registry, StopError, StopKind, StoppedWorld};
use pardon_stackscan::{FrameChain, RootKind, Scanner};

use crate::alloc_error::AllocError;
use crate::cache::ThreadCache;
use crate::config::{Config, ConfigError};
use crate::heap::{lock, RawHeap};
use crate::mark::CollectionKind;
use crate::mutators::{Entries, MutatorState, MutatorTable};
use crate::roots::GlobalRoots;
use crate::stats::{CycleStats, GcStats, StatsRecorder};
use crate::types::{Type, TypeDesc, TypeError};

/// How the collector stops mutator threads; chosen when the heap is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preemption {
    /// A signal, handled by injecting a call that saves every register and
    /// parks (the default; Go's `asyncPreempt`).
    Signal,
    /// A signal, parking inside the handler.
    SignalInHandler,
    /// No signals: threads stop only at polls, allocation and safe regions.
    PollOnly,
}

impl Preemption {
    fn mode(self) -> pardon_preempt::Mode {
        use pardon_preempt::{Mode, Strategy};
        match self {
            Preemption::Signal => Mode::Signal(Strategy::Inject),
            Preemption::SignalInHandler => Mode::Signal(Strategy::InHandler),
            Preemption::PollOnly => Mode::PollOnly,
        }
    }
}

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

pub(crate) struct Shared {
    pub raw: RawHeap,
    pub registry: Registry,
    pub globals: GlobalRoots,
    next_gc: AtomicUsize,
    gc_percent: Option<u32>,
    trace: bool,
    verify: bool,
    pub stats: Mutex<StatsRecorder>,
    cycles: AtomicU64,
    /// The roots of the collection in progress.
    roots: Mutex<RootBuf>,
    /// Generational: the live estimate at which the next paced collection
    /// is full (live after the last full one × (1 + gc_percent/100)).
    full_goal: AtomicUsize,
    /// Live bytes after the last full collection.
    live_full: AtomicUsize,
    /// Every mutator's cache, handles and frame chain (see `mutators`).
    pub mutators: MutatorTable,
}

/// A garbage-collected heap that threads attach to. Cheap to clone; all
/// clones are the same heap.
#[derive(Clone)]
pub struct Heap {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Heap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heap")
            .field("stats", &self.shared.raw.stats())
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
    /// barrier), `PARDON_MARK_WORKERS` (marking threads).
    pub fn new(config: Config) -> Result<Heap, HeapError> {
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
        if let Ok(v) = std::env::var("PARDON_MARK_WORKERS") {
            config.mark_workers = v.parse::<usize>().map_err(|_| {
                HeapError::Config(ConfigError(format!(
                    "PARDON_MARK_WORKERS: {v:?} is not a number of threads"
                )))
            })?;
        }
        let registry = Registry::new(pardon_preempt::Config {
            mode: config.preemption.mode(),
            stop_timeout: config.stop_timeout,
            wait: config.stop_wait,
            ..pardon_preempt::Config::default()
        })
        .map_err(HeapError::Preempt)?;
        let trace = flag("PARDON_GCTRACE")?.unwrap_or(config.trace);
        let verify = config.verify;
        let min_heap = config.min_heap;
        let raw = RawHeap::new(config).map_err(HeapError::Config)?;
        Ok(Heap {
            shared: Arc::new(Shared {
                raw,
                registry,
                globals: GlobalRoots::new(),
                next_gc: AtomicUsize::new(if gc_percent.is_some() {
                    min_heap
                } else {
                    usize::MAX
                }),
                gc_percent,
                trace,
                verify,
                stats: Mutex::new(StatsRecorder::new()),
                cycles: AtomicU64::new(0),
                roots: Mutex::new(RootBuf::new().map_err(|e| {
                    HeapError::Config(ConfigError(format!("cannot reserve the root buffer: {e}")))
                })?),
                full_goal: AtomicUsize::new(0),
                live_full: AtomicUsize::new(0),
                mutators: MutatorTable::new(),
            }),
        })
    }

    /// The raw heap underneath (lookup, statistics).
    pub fn raw(&self) -> &RawHeap {
        &self.shared.raw
    }

    /// The thread registry (for polls-only loops and the benchmark suite).
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Registers a type for the raw layer.
    pub fn register_type(&self, desc: &TypeDesc<'_>) -> Result<Type, TypeError> {
        self.shared.raw.register_type(desc)
    }

    /// Attaches the calling thread as a mutator.
    pub fn attach(&self) -> Result<Mutator, pardon_preempt::AttachError> {
        if pardon_preempt::is_attached() {
            return Err(pardon_preempt::AttachError::AlreadyAttached);
        }
        if self.shared.registry.world_held_by_me() {
            return Err(pardon_preempt::AttachError::WorldHeld);
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let state = Arc::new(MutatorState::new(tid));
        // Unattached here, so this holds the coordinator lock: the table's
        // lock is then never held by a thread a stop (or a fork, see
        // `pardon_preempt`'s fork handling) could catch holding it.
        let ctx = self
            .shared
            .registry
            .outside_stops(|| self.shared.mutators.insert(state.clone()));
        // SAFETY: the context word of this heap's registry is always an index
        // into `mutators` plus one, which every coordinator validates against
        // the thread's tid before use.
        match unsafe { self.shared.registry.attach_with_context(ctx) } {
            Ok(attached) => Ok(Mutator {
                heap: self.clone(),
                attached,
                state,
                ctx,
            }),
            Err(e) => {
                drop(self.shared.mutators.remove(ctx));
                Err(e)
            }
        }
    }

    /// Adds a global root: `addr` keeps its object alive until the returned
    /// id is removed. Fails only past about a million global roots.
    pub fn add_root(&self, addr: usize) -> Result<GlobalRootId, String> {
        self.shared.globals.insert(addr).map(GlobalRootId)
    }

    /// Changes a global root's value.
    pub fn set_root(&self, id: GlobalRootId, addr: usize) {
        self.shared.globals.set(id.0, addr);
    }

    /// The value of a global root.
    pub fn root_value(&self, id: GlobalRootId) -> usize {
        self.shared.globals.get(id.0)
    }

    /// Removes a global root.
    pub fn remove_root(&self, id: GlobalRootId) {
        self.shared.globals.remove(id.0);
    }

    /// Collects now, fully (on a generational heap too: old garbage is
    /// freed). From an attached thread, prefer [`Mutator::collect`] (this
    /// works too: the calling thread is stopped like any other).
    #[inline(never)]
    pub fn collect(&self) -> Result<CycleStats, CollectError> {
        with_entry(|sp| self.shared.collect(sp, CollectionKind::Full))
    }

    /// Collects now as the pacer would: a minor collection on a generational
    /// heap, unless the old objects have grown enough since the last full
    /// one (then full); a full collection on any other heap.
    #[inline(never)]
    pub fn collect_minor(&self) -> Result<CycleStats, CollectError> {
        with_entry(|sp| self.shared.collect(sp, CollectionKind::Minor))
    }

    /// Statistics so far.
    pub fn stats(&self) -> GcStats {
        // A coordinator records into the recorder outside stops (a no-preempt
        // region, or the coordinator lock on an unattached thread), so no
        // thread may be stopped or forked while holding its lock: copy that
        // way too, into histograms made beforehand
        // (allocating inside the region could wait on a malloc lock held by
        // a stopped thread).
        let sh = &self.shared;
        let mut copy = StatsRecorder::new();
        sh.registry
            .outside_stops(|| lock(&sh.stats).copy_into(&mut copy));
        copy.into_snapshot(sh.raw.stats())
    }

    /// Completed collections.
    pub fn collections(&self) -> u64 {
        self.shared.cycles.load(Relaxed)
    }
}

/// Runs heap-maintenance steps in a no-preempt region when the caller is an
/// attached thread (see [`crate::sweep::LockScope`]).
struct NoPreemptScope<'a>(&'a Registry);

impl crate::sweep::LockScope for NoPreemptScope<'_> {
    fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        // An attached thread: a no-preempt region. An unattached one (a
        // `Heap::collect` caller that never attached) is never stopped, so
        // it must not sweep while another thread's collection has the world
        // stopped: that sweep would take a span off its list behind the
        // coordinator's back and rewrite its mark bits mid-mark (verify
        // failures, a span swept out of turn, live objects freed).
        self.0.outside_stops(f)
    }
}

/// Identifies a global root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalRootId(usize);

impl Shared {
    #[inline(always)]
    fn pacer_due(&self) -> bool {
        self.raw.allocated.load(Relaxed) >= self.next_gc.load(Relaxed)
    }

    /// After an abandoned paced collection: the next is due once another
    /// budget (the bytes allocated so far, at least `min_heap`) is allocated.
    fn pacer_backoff(&self) {
        let a = self.raw.allocated.load(Relaxed);
        let next = a.saturating_add(a.max(self.raw.config.min_heap));
        self.next_gc.fetch_max(next, Relaxed);
    }

    /// A whole collection, coordinated by the calling thread. `entry_sp` is
    /// the stack position of the public entry point: if the caller is an
    /// attached thread, its conservative range starts there, above the
    /// collector's own frames (which change while it marks, and would make a
    /// verification re-mark disagree).
    ///
    /// Never inlined: its locals, and those of the marking it calls (gray
    /// objects, scan positions), must live in frames below `entry_sp`, or a
    /// coordinator's conservative scan would find the first mark's leftovers
    /// and the verification re-mark would disagree (it did).
    ///
    /// `want` is `Minor` for paced collections: on a generational heap that
    /// runs a minor collection unless the live estimate (old objects
    /// included) has reached `full_goal`.
    #[inline(never)]
    pub(crate) fn collect(
        &self,
        entry_sp: usize,
        want: CollectionKind,
    ) -> Result<CycleStats, CollectError> {
        if self.registry.world_held_by_me() {
            // Sweeping below would wait for the coordinator lock we hold.
            return Err(CollectError::Stop(StopError::Reentrant));
        }
        let cycles_before = self.cycles.load(Relaxed);
        let t0 = Instant::now();
        // Sweep what is left while the world runs, to keep the pause short.
        let scope = NoPreemptScope(&self.registry);
        self.raw.finish_sweep_in(&scope);
        let heap_before = self.raw.stats().span_bytes;
        let world = match self.registry.stop_the_world() {
            Ok(w) => w,
            Err(e) => {
                let e = CollectError::Stop(e);
                self.registry
                    .outside_stops(|| lock(&self.stats).abandoned += 1);
                if self.trace {
                    eprintln!("gc abandoned: {e}");
                }
                return Err(e);
            }
        };
        if self.cycles.load(Relaxed) != cycles_before {
            // Another thread collected while we waited for the world. (The
            // stats lock is not taken here: the world is stopped.)
            return Ok(CycleStats {
                number: self.cycles.load(Relaxed),
                ..CycleStats::default()
            });
        }
        let stopped_at = Instant::now();
        let mut cycle = CycleStats {
            ttsp: world.stats().ttsp,
            signals: world.stats().signals,
            heap_before,
            ..CycleStats::default()
        };
        // Every cache is flushed, so that every span is on a central list:
        // those of stopped threads, and those of mutators whose thread is
        // gone or detached (a leaked or thread-local `Mutator`).
        self.mutators.with(|table| {
            for ms in table.all() {
                // SAFETY: no owner is inside an allocation: attached owners
                // are stopped outside no-preempt regions, and detached ones
                // use their cache only holding the coordinator lock, which
                // this stop holds. Restart is ordered after this by the
                // world's handshake.
                unsafe { (*ms.cache.get()).flush(&self.raw) };
            }
        });
        for t in world.threads() {
            match t.kind() {
                StopKind::Injected => cycle.stopped_injected += 1,
                StopKind::InHandler => cycle.stopped_in_handler += 1,
                StopKind::Poll => cycle.stopped_poll += 1,
                StopKind::SafeRegion => cycle.stopped_safe += 1,
                StopKind::Coordinator => {}
            }
        }
        self.raw.finish_sweep();
        let mark_start = Instant::now();
        let want = if want == CollectionKind::Minor
            && self.raw.stats().live_after_last >= self.full_goal.load(Relaxed)
        {
            CollectionKind::Full
        } else {
            want
        };
        let kind = self.raw.begin_mark(want);
        // Only a coordinator (holding the stopped world) takes this lock.
        let mut roots = lock(&self.roots);
        let mark = self.mark_all(&world, entry_sp, kind, &mut cycle, &mut roots);
        if self.verify {
            if let Err(e) = self.verify_mark(&roots, kind, &mut cycle) {
                // Report with the world running again: formatting allocates,
                // and a panic in the stopped world could wait forever on a
                // lock a stopped thread holds.
                drop(roots);
                drop(world);
                panic!("pardon verify: {e}");
            }
        }
        drop(roots);
        cycle.mark = mark_start.elapsed();
        cycle.marked_objects = mark.objects;
        cycle.mark_workers = mark.workers;
        cycle.kind = kind;
        cycle.cards = mark.cards;
        let live = self.raw.flip_sweepgen(kind, mark.bytes);
        cycle.live = live;
        // The pacer. Full collections: Go's goal, live × (1 + p/100). On a
        // generational heap the budget for young objects stays what the
        // last full collection's live size allows (live_full × p/100) after
        // minor ones too, rather than growing with the old garbage that the
        // live estimate carries; and a full collection comes once that
        // estimate passes the last full goal. So the heap peaks near
        // live_full × (1 + 2p/100), not at twice a live estimate that may
        // itself be twice live_full.
        let pct = self.gc_percent.unwrap_or(100) as u128;
        let min_heap = self.raw.config.min_heap;
        if kind == CollectionKind::Full {
            let goal = ((live as u128 * (100 + pct) / 100) as usize).max(min_heap);
            self.full_goal.store(goal, Relaxed);
            self.live_full.store(live, Relaxed);
        }
        let budget = (self.live_full.load(Relaxed) as u128 * pct / 100) as usize;
        if self.gc_percent.is_some() {
            self.next_gc.store((live + budget).max(min_heap), Relaxed);
        }
        self.cycles.fetch_add(1, Relaxed);
        cycle.pause = stopped_at.elapsed() + cycle.ttsp;
        drop(world);
        cycle.total = t0.elapsed();
        cycle.heap_after = self.raw.stats().span_bytes;
        cycle.number = self.cycles.load(Relaxed);
        self.raw.scavenge_in(&scope);
        self.registry
            .outside_stops(|| lock(&self.stats).record(&cycle));
        if self.trace {
            eprintln!("{}", cycle.trace_line());
        }
        Ok(cycle)
    }

    /// Gathers every root — global roots, then each stopped thread's handle
    /// table, frames, conservative stack range and registers — into the
    /// root buffer: conservative hits as the bases of the objects they keep
    /// alive, precise slots as their values (the marker resolves every root
    /// word exactly, so the scanner does not look slots up a second time).
    ///
    /// Roots are gathered once and then marked from the buffer (twice in
    /// verification mode), because a thread held in a safe region keeps
    /// running: its blocking call, or its return into the code that waits for
    /// the restart, writes stack words inside its scanned range. Those words
    /// are never its live references (those sit in its callers' frames and
    /// its saved registers, which do not change), but a stale address they
    /// overwrite would make two scans of the same stopped world disagree.
    fn gather_roots(
        &self,
        world: &StoppedWorld<'_>,
        entry_sp: usize,
        cycle: &mut CycleStats,
        sink: &mut impl FnMut(usize),
    ) {
        let raw = &self.raw;
        self.globals.for_each(|v| {
            if let Some(b) = raw.find_object(v) {
                sink(b);
            }
        });
        self.mutators.with(|table| {
            // Every handle table, whatever became of its thread: a `Root`
            // may outlive its thread's attachment (a thread-local
            // destructor that runs after the exit guard).
            for ms in table.all() {
                ms.handles.for_each(|v| {
                    if let Some(b) = raw.find_object(v) {
                        sink(b);
                    }
                });
            }
            self.gather_threads(world, entry_sp, cycle, table, sink);
        });
    }

    /// The stack, frames and registers of every stopped thread.
    fn gather_threads(
        &self,
        world: &StoppedWorld<'_>,
        entry_sp: usize,
        cycle: &mut CycleStats,
        table: &Entries<'_>,
        sink: &mut impl FnMut(usize),
    ) {
        let raw = &self.raw;
        for t in world.threads() {
            let (lo, hi) = t.stack_bounds();
            let ms = table.of(t.context(), t.tid());
            let head = ms.map_or(0, |ms| ms.chain.load(std::sync::atomic::Ordering::Acquire));
            let finder = |a: usize| raw.find_object(a);
            let mut hits: usize = 0;
            let mut sc = Scanner::new(&finder, lo, hi, |base, kind| {
                if kind != RootKind::Precise {
                    hits += 1;
                }
                sink(base);
            });
            let scan_lo = if t.kind() == StopKind::Coordinator {
                entry_sp
            } else {
                t.scan_lo()
            };
            // SAFETY: the thread is stopped, or is this coordinator, whose
            // frames above its entry point do not change while it marks, or
            // is held in a safe region, whose scanned range stays readable
            // (it is its own live stack); its frames are linked.
            unsafe { sc.thread(scan_lo, head, t.gprs()) };
            t.for_each_vector_word(|v| sc.word(v as usize, RootKind::Register));
            cycle.words_scanned += sc.stats.words_examined;
            cycle.precise_roots += sc.stats.precise_roots;
            cycle.conservative_roots += hits;
        }
    }

    /// Gathers the roots and marks from them. If the root buffer
    /// overflows, the roots are gathered again and marked as they are found
    /// (and verification has no fixed root set to re-mark from).
    fn mark_all(
        &self,
        world: &StoppedWorld<'_>,
        entry_sp: usize,
        kind: CollectionKind,
        cycle: &mut CycleStats,
        roots: &mut RootBuf,
    ) -> crate::mark::MarkStats {
        roots.clear();
        self.gather_roots(world, entry_sp, cycle, &mut |b| roots.push(b));
        if !roots.overflowed() {
            return self.mark_roots(roots, kind);
        }
        let mut m = self.raw.marker_for(kind);
        let mut again = CycleStats::default();
        self.gather_roots(world, entry_sp, &mut again, &mut |b| {
            m.mark_word(b);
        });
        m.finish()
    }

    /// Marks from the gathered roots (and, for a minor collection, the
    /// dirty cards).
    fn mark_roots(&self, roots: &RootBuf, kind: CollectionKind) -> crate::mark::MarkStats {
        let mut m = self.raw.marker_for(kind);
        for &b in roots.words() {
            m.mark_word(b);
        }
        m.finish()
    }

    /// Verification: snapshot the marks, clear them, mark again from the same
    /// roots, fully, and require the two marks to agree (after a minor
    /// collection: the full re-mark must be a subset of the minor mark,
    /// whose marks are then restored).
    fn verify_mark(
        &self,
        roots: &RootBuf,
        kind: CollectionKind,
        cycle: &mut CycleStats,
    ) -> Result<(), VerifyError> {
        // Heap bits against the independent type record first: a lost
        // reference bit makes both marks agree on the wrong answer.
        self.raw.check_layouts().map_err(VerifyError::Layout)?;
        if roots.overflowed() {
            // The roots were marked as found, with no fixed set to re-mark
            // from (this needs sixteen million root hits).
            return Ok(());
        }
        let first = self.raw.take_mark_snapshot();
        self.mark_roots(roots, CollectionKind::Full);
        self.raw
            .compare_mark_snapshot(&first, kind)
            .map_err(VerifyError::Remark)?;
        cycle.verified = true;
        Ok(())
    }
}

/// What verification found wrong, as `Copy` values built with the world
/// stopped.
enum VerifyError {
    Layout(crate::verify::LayoutError),
    Remark(crate::verify::MarkMismatch),
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Layout(e) => e.fmt(f),
            VerifyError::Remark(e) => {
                write!(f, "re-marking from scratch disagrees with the mark: {e}")
            }
        }
    }
}

/// The roots of one collection, as root words, in a `MAP_NORESERVE`
/// mapping: gathering them never calls the system allocator. Used only by the
/// coordinator, inside a stopped world.
pub(crate) struct RootBuf {
    map: memmap2::MmapMut,
    len: usize,
    overflow: bool,
}

impl RootBuf {
    /// Room for 2^24 roots (128 MiB of address space, committed as used).
    const CAP: usize = 1 << 24;

    fn new() -> std::io::Result<RootBuf> {
        Ok(RootBuf {
            map: memmap2::MmapOptions::new()
                .len(Self::CAP * 8)
                .no_reserve_swap()
                .map_anon()?,
            len: 0,
            overflow: false,
        })
    }

    fn clear(&mut self) {
        self.len = 0;
        self.overflow = false;
    }

    #[inline]
    fn push(&mut self, base: usize) {
        if self.len == Self::CAP {
            // Full: the collector gathers again, marking as it goes.
            self.overflow = true;
            return;
        }
        self.len += 1;
        let i = self.len - 1;
        self.words_mut()[i] = base;
    }

    fn words_mut(&mut self) -> &mut [usize] {
        // SAFETY: the mapping holds CAP aligned words and lives as long as
        // `self`; `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr() as *mut usize, Self::CAP) }
    }

    fn words(&self) -> &[usize] {
        // SAFETY: the first `len` words were written by `push`.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr() as *const usize, self.len) }
    }

    fn overflowed(&self) -> bool {
        self.overflow
    }
}

/// Runs a collection from a public entry point. The callee-saved registers
/// are stored into an array in the entry point's own frame first, and the
/// coordinator's conservative range starts at that array: a caller's pointer
/// held only in rbx or r12-r15 is then on the scanned stack, even though the
/// collector's deeper frames push it below the range while it marks. (The
/// range must stop above those deeper frames: they change during marking and
/// would make a verification re-mark disagree.)
#[inline(always)]
fn with_entry<R>(f: impl FnOnce(usize) -> R) -> R {
    let mut regs = [0u64; pardon_preempt::NGPRS];
    pardon_preempt::spill_callee_saved(&mut regs);
    let at = std::hint::black_box(&regs).as_ptr() as usize;
    let r = f(at);
    std::hint::black_box(&regs);
    r
}

/// A thread's attachment to a heap: allocates, polls, enters safe regions and
/// declares frames. Not `Send`; detaches on drop.
pub struct Mutator {
    pub(crate) heap: Heap,
    pub(crate) attached: Attached,
    pub(crate) state: Arc<MutatorState>,
    /// This mutator's context word: its index in the heap's table, plus one.
    ctx: usize,
}

impl fmt::Debug for Mutator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutator")
            .field("tid", &self.attached.tid())
            .finish()
    }
}

impl Mutator {
    /// The heap.
    pub fn heap(&self) -> &Heap {
        &self.heap
    }

    /// The preempt attachment (polls, no-preempt regions, counters).
    pub fn attached(&self) -> &Attached {
        &self.attached
    }

    /// The frame chain to link [`pardon_stackscan`] frames into.
    pub fn frames(&self) -> FrameChain<'_> {
        FrameChain(&self.state.chain)
    }

    /// A safepoint poll.
    #[inline(always)]
    pub fn poll(&self) {
        self.attached.poll();
    }

    /// Runs `f` in a safe region, for blocking system calls: the thread
    /// counts as stopped while `f` runs, so a collection never waits for it
    /// and never signals it.
    ///
    /// Wrap every call that may block in it. Outside a safe region a stop
    /// signals the thread, and the calls SA_RESTART does not restart —
    /// `poll`, `epoll_wait`, `select`, `nanosleep`, `clock_nanosleep`,
    /// `sigtimedwait`, and any call with a timeout set by `setsockopt` —
    /// then fail with `EINTR` (Go 1.14's users met the same); inside one
    /// they are never interrupted by the collector, and stops are cheaper.
    ///
    /// `f` may still use this mutator (allocate, read members, make roots):
    /// each such call leaves the safe region for its duration, waiting for
    /// a collection in progress to end, and enters it again afterwards.
    /// Touching the heap through raw addresses inside `f` is the caller's
    /// responsibility: the collector may be marking meanwhile.
    pub fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        self.attached.safe_region(f)
    }

    /// Runs `f`, which changes what a stopped world relies on (the cache,
    /// the handle table), as a plainly running thread: see
    /// [`Attached::as_running`]. One load when the thread is running.
    #[inline(always)]
    fn as_running<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.attached.is_running() {
            f()
        } else {
            self.attached.as_running(f)
        }
    }

    /// As [`Mutator::as_running`], and on a thread detached at exit (whose
    /// `Mutator` outlived pardon's thread-exit destructor and which no stop
    /// waits for) holding the coordinator lock, so no collection overlaps
    /// `f`. For handle-table changes, which may allocate and so cannot use
    /// a no-preempt region.
    #[inline(always)]
    fn excluding_stops<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.attached.is_running() {
            f()
        } else if !self.attached.is_attached() {
            self.heap.shared.registry.outside_stops(f)
        } else {
            self.attached.as_running(f)
        }
    }

    /// Collects now, with this thread as the coordinator. If another
    /// thread's collection completes while this one waits to stop the world,
    /// it returns at once, with only `number` set in the figures.
    #[inline(never)]
    pub fn collect(&self) -> Result<CycleStats, CollectError> {
        self.as_running(|| with_entry(|sp| self.heap.shared.collect(sp, CollectionKind::Full)))
    }

    /// [`Heap::collect_minor`] with this thread as the coordinator.
    #[inline(never)]
    pub fn collect_minor(&self) -> Result<CycleStats, CollectError> {
        self.as_running(|| with_entry(|sp| self.heap.shared.collect(sp, CollectionKind::Minor)))
    }

    /// The write barrier, for generational heaps
    /// ([`Config::generational`](crate::Config::generational)): call it with
    /// the address of a heap word *before* storing a reference into it,
    /// while the reference is still held (a frame slot, a handle, a local).
    /// Needed for every reference store into an object that may have
    /// survived a collection since the stored object was allocated;
    /// initializing stores into an object allocated after the objects stored
    /// into it need none (they cannot make an old object point to a young
    /// one). Cheap: a range check and a byte store. See
    /// [`RawHeap::write_barrier`].
    #[inline(always)]
    pub fn write_barrier(&self, slot: usize) {
        self.heap.shared.raw.write_barrier(slot);
    }

    /// Allocates a zeroed object of raw type `ty` and returns its address.
    /// Nothing roots it: keep it in a frame slot, a handle, a global root or
    /// another reachable object before the next safepoint the caller cannot
    /// see conservatively. Collects first when the pacer says so, and once
    /// more before reporting exhaustion.
    #[inline(always)]
    pub fn alloc_raw(&self, ty: Type) -> Result<usize, AllocError> {
        // The fast path, inlined into the caller: objects of at most 64
        // bytes from the current span's cache word, no pacing due. It makes
        // no call but tail calls, so it costs the caller no frame: a poll a
        // stop asked for meanwhile, and every other case, go to cold
        // functions.
        let spc = ty.0.tiny_spc;
        let shared = &*self.heap.shared;
        if spc != crate::types::NOT_SMALL && !shared.pacer_due() && self.attached.is_running() {
            let np = self.attached.no_preempt();
            // SAFETY: owner thread inside a no-preempt region: no
            // coordinator touches the cache until the region ends.
            let got = unsafe { &mut *self.state.cache.get() }.alloc_tiny(&shared.raw, spc, ty);
            let must_poll = np.end_deferring_poll();
            if let Some(addr) = got {
                if must_poll {
                    return self.poll_then(addr);
                }
                return Ok(addr);
            }
        }
        self.alloc_raw_slow(ty)
    }

    #[cold]
    #[inline(never)]
    fn alloc_raw_slow(&self, ty: Type) -> Result<usize, AllocError> {
        // A stop may have asked while the fast path held its no-preempt
        // region and found the span's cache word empty.
        self.attached.poll();
        self.as_running(|| self.alloc_with(|c, raw| c.alloc(raw, ty)))
    }

    /// Parks for the stop that asked during a fast allocation, then returns
    /// the new object (live across the park in this frame, where the
    /// conservative scan finds it).
    #[cold]
    #[inline(never)]
    fn poll_then(&self, addr: usize) -> Result<usize, AllocError> {
        let addr = std::hint::black_box(addr);
        self.attached.poll();
        Ok(std::hint::black_box(addr))
    }

    /// Allocates a zeroed array of `n` objects of raw type `ty`.
    pub fn alloc_raw_array(&self, ty: Type, n: usize) -> Result<usize, AllocError> {
        self.as_running(|| self.alloc_with(|c, raw| c.alloc_array(raw, ty, n)))
    }

    #[inline(always)]
    fn alloc_with(
        &self,
        f: impl Fn(&mut ThreadCache, &RawHeap) -> Result<std::ptr::NonNull<u8>, AllocError>,
    ) -> Result<usize, AllocError> {
        let shared = &*self.heap.shared;
        if shared.pacer_due() {
            self.paced_collect();
        }
        // One call site for `f`, so that the allocation fast path inlines.
        let mut retried = false;
        loop {
            // A no-preempt region, or on a thread detached at exit the
            // coordinator lock: no stop overlaps the cache's use.
            let r = shared.registry.outside_stops(|| {
                // SAFETY: owner thread, and no coordinator touches the cache
                // until this ends (see above).
                f(unsafe { &mut *self.state.cache.get() }, &shared.raw)
            });
            match r {
                Ok(p) => return Ok(p.as_ptr() as usize),
                Err(AllocError::HeapExhausted { requested, .. }) if !retried => {
                    retried = true;
                    self.exhausted_collect(requested)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Collects once before reporting exhaustion. If the world cannot be
    /// stopped, the caller hears why, rather than a bare "exhausted".
    #[cold]
    #[inline(never)]
    fn exhausted_collect(&self, requested: usize) -> Result<(), AllocError> {
        self.collect()
            .map(|_| ())
            .map_err(|e| AllocError::CollectionAbandoned {
                requested,
                reason: e.to_string(),
            })
    }

    /// A collection the pacer asked for. If it is abandoned (the world
    /// could not be stopped: counted in [`GcStats::abandoned`](crate::GcStats),
    /// printed with `PARDON_GCTRACE`), allocation goes on, and the pacer
    /// asks again only after the heap has grown by another budget, so a
    /// thread that never reaches a stop point costs one stop timeout per
    /// budget, not one per allocation.
    #[cold]
    fn paced_collect(&self) {
        if self.collect_minor().is_err() {
            self.heap.shared.pacer_backoff();
        }
    }

    /// Adds `addr` to this thread's handle table (a precise root) and returns
    /// its slot. Not in a no-preempt region: it may call the system
    /// allocator (see `SlotTable::insert`).
    pub(crate) fn push_handle(&self, addr: usize) -> usize {
        self.excluding_stops(|| self.insert_handle(addr))
    }

    /// Adds `addr` to the handle table; the caller has excluded stops as
    /// `excluding_stops` would.
    fn insert_handle(&self, addr: usize) -> usize {
        // SAFETY: owner thread; `Mutator` is not Send or Sync, so no other
        // reference to the free list exists.
        let own = unsafe { &mut *self.state.handle_free.get() };
        match self.state.handles.insert(own, addr) {
            Ok(i) => i,
            Err(e) => panic!("pardon: {e}"),
        }
    }

    /// Roots the object whose address `find` reads (a member, a global
    /// root), returning the handle slot and the address, or `None` for 0.
    /// Finding and rooting happen with no stop between them that could miss
    /// the address: on a running thread a stop scans its registers and
    /// stack; inside a safe region the thread leaves it first (its deeper
    /// frames are not scanned there); on a thread detached at exit (not
    /// scanned at all) both happen under the coordinator lock.
    pub(crate) fn root_found(&self, find: impl FnOnce() -> usize) -> Option<(usize, usize)> {
        self.excluding_stops(|| {
            let v = find();
            (v != 0).then(|| (self.insert_handle(v), v))
        })
    }

    /// Allocates an object of `ty` and roots it: `(handle slot, address)`.
    #[inline(always)]
    pub(crate) fn alloc_rooted(&self, ty: Type) -> Result<(usize, usize), AllocError> {
        if self.attached.is_running() {
            let addr = self.alloc_raw(ty)?;
            return Ok((self.insert_handle(addr), addr));
        }
        self.alloc_rooted_slow(ty)
    }

    #[cold]
    #[inline(never)]
    fn alloc_rooted_slow(&self, ty: Type) -> Result<(usize, usize), AllocError> {
        if self.attached.is_attached() {
            // In a safe region: leave it, then the ordinary path.
            return self.attached.as_running(|| {
                let addr = self.alloc_raw(ty)?;
                Ok((self.insert_handle(addr), addr))
            });
        }
        // Detached at thread exit: nothing scans this thread, so the new
        // object is rooted before the coordinator lock is released. No
        // pacing here (a collection needs that lock); one collection, outside
        // it, before reporting exhaustion.
        let shared = &*self.heap.shared;
        let mut retried = false;
        loop {
            let r = shared.registry.outside_stops(|| {
                // SAFETY: owner thread holding the coordinator lock: no
                // coordinator touches the cache meanwhile.
                let cache = unsafe { &mut *self.state.cache.get() };
                let addr = cache.alloc(&shared.raw, ty)?.as_ptr() as usize;
                Ok((self.insert_handle(addr), addr))
            });
            match r {
                Err(AllocError::HeapExhausted { requested, .. }) if !retried => {
                    retried = true;
                    self.exhausted_collect(requested)?;
                }
                r => return r,
            }
        }
    }

    pub(crate) fn pop_handle(&self, slot: usize) {
        self.excluding_stops(|| {
            // SAFETY: as in `push_handle`.
            let own = unsafe { &mut *self.state.handle_free.get() };
            self.state.handles.remove(own, slot);
        })
    }

    /// Live handles in this thread's table.
    pub fn handle_count(&self) -> usize {
        // SAFETY: owner thread; read-only.
        unsafe { (*self.state.handle_free.get()).live() }
    }
}

impl Drop for Mutator {
    fn drop(&mut self) {
        let shared = &*self.heap.shared;
        let entry = self.as_running(|| {
            shared.registry.outside_stops(|| {
                // SAFETY: owner thread, no stop overlapping (see alloc_with).
                unsafe { (*self.state.cache.get()).flush(&shared.raw) };
                shared.mutators.remove(self.ctx)
            })
        });
        // Our own `Arc` still holds the state, which is freed (with its
        // handle table) after `attached` detaches, outside any region.
        drop(entry);
    }
}

/// How long a collection may wait for mutators by default.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
