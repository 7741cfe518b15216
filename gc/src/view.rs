//! What a [`Heap`] shows of its raw layer: lookups, layouts, statistics
//! and maintenance that is safe while its threads run ([`RawView`]).
//!
//! A `Heap`'s [`RawHeap`] is never lent out as such. Its public entry
//! points are for a heap one thread owns, or whose mutators the caller has
//! stopped: [`RawHeap::collect_with`] marks from the roots it is offered
//! and nothing else, a [`ThreadCache`](crate::ThreadCache) allocates from
//! spans the collector does not know are taken, a [`RawHeap::marker`] sets
//! mark bits outside any collection, and [`RawHeap::finish_sweep`] sweeps
//! without excluding stops. On the raw layer of a heap whose threads run
//! and collect, each of them freed live objects or broke the heap's
//! invariants from safe code (a collection with no roots freed a rooted
//! object; a standalone cache on another thread made the collector find
//! spans swept out of turn). So `Heap::raw` returns this view, which has
//! only what is sound there, and sweeps and scavenges the way the
//! collector's own steps do: each step where no stop can come.

use crate::collector::Heap;
use crate::config::Config;
use crate::cycle::NoPreemptScope;
use crate::heap::{HeapStats, RawHeap};

/// A read-only look at a [`Heap`]'s raw layer (see the module
/// documentation): the exact lookup, object sizes and reference words,
/// the configuration and statistics, and sweeping and scavenging that
/// exclude stops. Got from [`Heap::raw`].
///
/// It lends no `&RawHeap`: a collection that knows nothing of the heap's
/// threads and roots does not compile,
///
/// ```compile_fail
/// let heap = pardon::Heap::new(pardon::Config::default()).unwrap();
/// heap.raw().collect_with(&mut [], |_| {}); // would free every rooted object
/// ```
///
/// nor does a cache allocating behind the collector's back:
///
/// ```compile_fail
/// let heap = pardon::Heap::new(pardon::Config::default()).unwrap();
/// let ty = heap.register_type(&pardon::TypeDesc {
///     name: "leaf", size: 16, align: 8, pointer_words: &[] }).unwrap();
/// let mut cache = pardon::ThreadCache::new();
/// cache.alloc(heap.raw(), ty).unwrap(); // spans the collector would sweep under it
/// ```
#[derive(Clone, Copy)]
pub struct RawView<'h> {
    heap: &'h Heap,
}

impl std::fmt::Debug for RawView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (lo, hi) = self.arena_range();
        write!(f, "RawView({lo:#x}..{hi:#x})")
    }
}

impl<'h> RawView<'h> {
    pub(crate) fn new(heap: &'h Heap) -> RawView<'h> {
        RawView { heap }
    }

    fn raw(&self) -> &'h RawHeap {
        &self.heap.collector.raw
    }

    /// The heap's configuration.
    pub fn config(&self) -> &'h Config {
        self.raw().config()
    }

    /// Statistics of the raw layer (see [`RawHeap::stats`]).
    pub fn stats(&self) -> HeapStats {
        self.raw().stats()
    }

    /// The arena's address range `[lo, hi)`.
    pub fn arena_range(&self) -> (usize, usize) {
        self.raw().arena_range()
    }

    /// The exact lookup (see [`RawHeap::find_object`]): the base of the
    /// allocated object containing `addr`, or `None`. While threads
    /// allocate and sweep, an answer may be stale, never unsafe.
    pub fn find_object(&self, addr: usize) -> Option<usize> {
        self.raw().find_object(addr)
    }

    /// The slot size of the allocated object at `base` (see
    /// [`RawHeap::object_size`]).
    pub fn object_size(&self, base: usize) -> Option<usize> {
        self.raw().object_size(base)
    }

    /// The words of the object at `base` that marking treats as references
    /// (see [`RawHeap::reference_words`]).
    pub fn reference_words(&self, base: usize) -> Option<Vec<usize>> {
        self.raw().reference_words(base)
    }

    /// Threads that drain the gray objects (the coordinator included).
    pub fn mark_workers(&self) -> usize {
        self.raw().mark_workers()
    }

    /// Dirties the card of `slot` (see [`RawHeap::write_barrier`]); an
    /// address outside the arena is ignored.
    pub fn write_barrier(&self, slot: usize) {
        self.raw().write_barrier(slot)
    }

    /// Sweeps every span that needs it, each step where no stop can come
    /// (as the collector's own sweeping: a thread that is never stopped
    /// would otherwise sweep under a collection's coordinator). Returns the
    /// spans swept.
    pub fn finish_sweep(&self) -> usize {
        self.raw()
            .finish_sweep_in(&NoPreemptScope(&self.heap.collector.registry))
    }

    /// Decommits free spans that stayed free for `scavenge_after`
    /// collections, each step where no stop can come. Returns the spans
    /// decommitted.
    pub fn scavenge(&self) -> usize {
        self.raw()
            .scavenge_in(&NoPreemptScope(&self.heap.collector.registry))
    }

    /// Checks the heap's invariants (see [`RawHeap::check_integrity`]).
    /// For tests and debugging: it only reads (atomically), but with other
    /// threads allocating or collecting meanwhile it may report a
    /// transient state as an error.
    pub fn check_integrity(&self) -> Result<(), String> {
        self.raw().check_integrity()
    }
}
