//! Heap configuration, validated with messages that name the field.

use std::fmt;

/// Heap settings. `Config::default()` reserves 64 GiB of address space
/// (nothing is committed until used) with no heap limit below that.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bytes of address space to reserve for the arena (a multiple of 8 KiB).
    pub arena_size: usize,
    /// Most bytes of spans in use at once; allocation beyond it fails with
    /// [`AllocError::HeapExhausted`](crate::AllocError) after a collection.
    /// Capped at `arena_size`.
    pub heap_limit: usize,
    /// Collect when the heap reaches live × (1 + gc_percent/100); `None`
    /// turns pacing off (collections only on demand or at the limit).
    pub gc_percent: Option<u32>,
    /// Never trigger a paced collection below this many bytes.
    pub min_heap: usize,
    /// Verification: poison freed slots, check zombies, re-mark and compare.
    pub verify: bool,
    /// Gray-stack capacity in entries; overflow is handled by rescanning the
    /// heap, so a small value is slow but correct.
    pub gray_capacity: usize,
    /// Threads that mark while the world is stopped, the coordinator
    /// included (1 = serial marking). Helpers are spawned with the heap.
    /// Default: the available cores, at most 8 (also `PARDON_MARK_WORKERS`).
    pub mark_workers: usize,
    /// Free pages are decommitted after staying free this many collections.
    pub scavenge_after: u64,
    /// How the collector stops mutators.
    pub preemption: crate::Preemption,
    /// A stop that does not complete in this time is abandoned with a report.
    pub stop_timeout: std::time::Duration,
    /// How the collecting thread waits for the others to stop: on a futex
    /// (the default), or spinning and yielding like Go's `suspendG` (a
    /// baseline for measurements).
    pub stop_wait: pardon_preempt::AckWait,
    /// Print one line per collection on stderr (also `PARDON_GCTRACE=1`).
    pub trace: bool,
    /// Generational collection with sticky mark bits (also
    /// `PARDON_GENERATIONAL=1`): objects that survive a collection stay
    /// marked, and a *minor* collection marks only from the roots and from
    /// old objects on cards the write barrier dirtied, so it costs what
    /// survives rather than the whole live heap. Every store of a reference
    /// into a heap object must then go through the write barrier
    /// ([`Mutator::write_barrier`](crate::Mutator::write_barrier); the typed
    /// layer's [`Member::set`](crate::Member::set) does it). Off by default.
    pub generational: bool,
    /// Run finalizers on a thread of the heap's own, started with the first
    /// [`Mutator::set_finalizer`](crate::Mutator::set_finalizer) (the
    /// default). Off: they wait for
    /// [`Mutator::run_finalizers`](crate::Mutator::run_finalizers).
    pub finalizer_thread: bool,
    /// Concurrent marking (also `PARDON_CONCURRENT=1`; see `concurrent`):
    /// a collection stops the world twice, briefly (to take the roots, and
    /// to finish), and marks in between while mutators run, behind a
    /// snapshot-at-the-beginning deletion barrier. Every store of a
    /// reference into a heap object that may overwrite another reference
    /// must then go through [`Member::set`](crate::Member::set) or
    /// [`Mutator::store_word`](crate::Mutator::store_word), which run the
    /// barrier ([`Mutator::write_barrier`](crate::Mutator::write_barrier)
    /// alone is not enough). Not with `generational` (yet). Off by default.
    pub concurrent: bool,
    /// Concurrent marking: the share of the machine's cores, in percent,
    /// that marking may take while the mutators run (Go's 25 %; also
    /// `PARDON_MARK_PERCENT`). Below one core's worth the coordinator
    /// marks duty-cycled; a mutator that allocates while a cycle marks
    /// assists in proportion (see `assist`). 100: every marking thread
    /// flat out. Stops mark with every `mark_workers` thread regardless.
    pub background_mark_percent: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            arena_size: 64 << 30,
            heap_limit: usize::MAX,
            gc_percent: Some(100),
            min_heap: 4 << 20,
            verify: false,
            gray_capacity: 1 << 26,
            mark_workers: default_mark_workers(),
            scavenge_after: 2,
            preemption: crate::Preemption::Signal,
            stop_timeout: crate::collector::DEFAULT_STOP_TIMEOUT,
            stop_wait: pardon_preempt::AckWait::Futex,
            trace: false,
            generational: false,
            finalizer_thread: true,
            concurrent: false,
            background_mark_percent: 25,
        }
    }
}

/// The largest [`Config::gray_capacity`]: 64 TiB of 8-byte entries.
pub const MAX_GRAY_CAPACITY: usize = 1 << 43;

/// The available cores, at most 8.
pub fn default_mark_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// A `Config` field holds a value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid heap config: {}", self.0)
    }
}
impl std::error::Error for ConfigError {}

impl Config {
    /// The heap limit in force: `heap_limit` capped at `arena_size`.
    pub fn effective_heap_limit(&self) -> usize {
        self.heap_limit.min(self.arena_size)
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use crate::sizeclass::PAGE_SIZE;
        let e = |s: String| Err(ConfigError(s));
        if self.arena_size == 0 || !self.arena_size.is_multiple_of(PAGE_SIZE) {
            return e(format!(
                "arena_size: {} is not a positive multiple of the 8 KiB page",
                self.arena_size
            ));
        }
        if self.arena_size > 1 << 46 {
            return e(format!("arena_size: {} exceeds 64 TiB", self.arena_size));
        }
        if self.heap_limit < PAGE_SIZE {
            return e(format!("heap_limit: {} is below one page", self.heap_limit));
        }
        if self.gray_capacity < 16 {
            return e(format!(
                "gray_capacity: {} is below 16 entries",
                self.gray_capacity
            ));
        }
        // Each entry is an 8-byte word of address space reserved per marking
        // thread: past 2^43 entries (64 TiB, the largest arena) the
        // reservation cannot be made, and its byte size soon overflows.
        if self.gray_capacity > MAX_GRAY_CAPACITY {
            return e(format!(
                "gray_capacity: {} entries exceed the most that can be reserved ({})",
                self.gray_capacity, MAX_GRAY_CAPACITY
            ));
        }
        if self.concurrent && self.generational {
            return e(
                "concurrent: concurrent marking and generational (sticky-mark) \
                 collection cannot be combined yet; choose one"
                    .into(),
            );
        }
        if self.background_mark_percent == 0 || self.background_mark_percent > 100 {
            return e(format!(
                "background_mark_percent: {} is not between 1 and 100",
                self.background_mark_percent
            ));
        }
        if self.mark_workers == 0 || self.mark_workers > 256 {
            return e(format!(
                "mark_workers: {} is not between 1 and 256",
                self.mark_workers
            ));
        }
        Ok(())
    }
}
