//! `Mutator`: a thread's attachment to a heap, and its allocation paths
//! (the inlined fast path, the slow path, arrays, the typed path's rooting).

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use pardon_preempt::Attached;
use pardon_stackscan::FrameChain;

use crate::alloc_error::AllocError;
use crate::cache::ThreadCache;
use crate::collector::{CollectError, Heap};
use crate::cycle::with_entry;
use crate::heap::RawHeap;
use crate::mark::CollectionKind;
use crate::mutators::MutatorState;
use crate::roots::HandleFree;
use crate::stats::CycleStats;
use crate::types::Type;

/// A thread's attachment to a heap: allocates, polls, enters safe regions and
/// declares frames. Not `Send`; detaches on drop.
pub struct Mutator {
    pub(crate) heap: Heap,
    pub(crate) attached: Attached,
    pub(crate) state: Arc<MutatorState>,
    /// This mutator's entry in the heap's table: its index there, plus one.
    pub(crate) slot: usize,
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

    /// The frame chain to link [`pardon_stackscan`] frames into: the
    /// thread's task word, which a coordinator reads for the stopped thread
    /// (and which a goroutine scheduler saves and restores per goroutine,
    /// so each goroutine has a chain of its own).
    pub fn frames(&self) -> FrameChain<'_> {
        // SAFETY: the word is handed out only inside a `FrameChain`, whose
        // links store nothing but frames kept linked until they restore the
        // previous head: the chain the coordinator walks.
        FrameChain::new(unsafe { self.attached.task_word_cell() })
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
    pub(crate) fn as_running<R>(&self, f: impl FnOnce() -> R) -> R {
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
    pub(crate) fn excluding_stops<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.attached.is_running() {
            f()
        } else if !self.attached.is_attached() {
            self.heap.collector.registry.outside_stops(f)
        } else {
            self.attached.as_running(f)
        }
    }

    /// Runs `f` with the handle table's free list borrowed mutably, in a
    /// no-yield region: on a goroutine worker, whose goroutines share this
    /// mutator, no other goroutine runs on the thread until `f` returns
    /// (a stop may still be taken there; it reads only the atomic slots).
    #[inline(always)]
    fn with_handle_free<R>(&self, f: impl FnOnce(&mut HandleFree) -> R) -> R {
        self.attached.no_yield(|| {
            // SAFETY: owner thread (`Mutator` is neither Send nor Sync), and
            // no other borrow is live: every one is made here, in a region
            // no goroutine switch can interrupt, and `f` does not re-enter.
            f(unsafe { &mut *self.state.handle_free.get() })
        })
    }

    /// Collects now, with this thread as the coordinator. If another
    /// thread's collection completes while this one waits to stop the world,
    /// it returns at once, with only `number` set in the figures.
    #[inline(never)]
    pub fn collect(&self) -> Result<CycleStats, CollectError> {
        self.as_running(|| with_entry(|sp| self.heap.collector.collect(sp, CollectionKind::Full)))
    }

    /// [`Heap::collect_minor`] with this thread as the coordinator.
    #[inline(never)]
    pub fn collect_minor(&self) -> Result<CycleStats, CollectError> {
        self.as_running(|| with_entry(|sp| self.heap.collector.collect(sp, CollectionKind::Minor)))
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
        self.heap.collector.raw.write_barrier(slot);
    }

    /// Allocates a zeroed object of raw type `ty` and returns its address.
    /// Nothing roots it: keep it in a frame slot, a handle, a global root or
    /// another reachable object before the next safepoint the caller cannot
    /// see conservatively. Collects first when the pacer says so, and once
    /// more before reporting exhaustion.
    ///
    /// On a thread detached at exit (a `Mutator` used from a thread-local
    /// destructor that runs after pardon's), nothing of the thread is
    /// scanned, so an address returned here is unprotected until stored in
    /// a global root: use the typed [`Mutator::alloc`] there, which roots
    /// the object before any collection can begin.
    #[inline(always)]
    pub fn alloc_raw(&self, ty: Type) -> Result<usize, AllocError> {
        // The fast path, inlined into the caller: objects of at most 64
        // bytes from the current span's cache word, no pacing due. It makes
        // no call but tail calls, so it costs the caller no frame: a poll a
        // stop asked for meanwhile, and every other case, go to cold
        // functions.
        let spc = ty.0.tiny_spc;
        let col = &*self.heap.collector;
        if spc != crate::types::NOT_SMALL && !col.pacer_due() && self.attached.is_running() {
            let np = self.attached.no_preempt();
            // SAFETY: owner thread inside a no-preempt region: no
            // coordinator touches the cache until the region ends.
            let got = unsafe { &mut *self.state.cache.get() }.alloc_tiny(&col.raw, spc, ty);
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
    pub(crate) fn alloc_raw_slow(&self, ty: Type) -> Result<usize, AllocError> {
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
    pub(crate) fn poll_then(&self, addr: usize) -> Result<usize, AllocError> {
        let addr = std::hint::black_box(addr);
        self.attached.poll();
        Ok(std::hint::black_box(addr))
    }

    /// Allocates a zeroed array of `n` objects of raw type `ty`.
    pub fn alloc_raw_array(&self, ty: Type, n: usize) -> Result<usize, AllocError> {
        self.as_running(|| self.alloc_with(|c, raw| c.alloc_array(raw, ty, n)))
    }

    #[inline(always)]
    pub(crate) fn alloc_with(
        &self,
        f: impl Fn(&mut ThreadCache, &RawHeap) -> Result<std::ptr::NonNull<u8>, AllocError>,
    ) -> Result<usize, AllocError> {
        let col = &*self.heap.collector;
        if col.pacer_due() {
            self.paced_collect();
        }
        // One call site for `f`, so that the allocation fast path inlines.
        let mut retried = false;
        loop {
            // A no-preempt region, or on a thread detached at exit the
            // coordinator lock: no stop overlaps the cache's use.
            let r = col.registry.outside_stops(|| {
                // SAFETY: owner thread, and no coordinator touches the cache
                // until this ends (see above).
                f(unsafe { &mut *self.state.cache.get() }, &col.raw)
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
    pub(crate) fn exhausted_collect(&self, requested: usize) -> Result<(), AllocError> {
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
    pub(crate) fn paced_collect(&self) {
        if self.heap.collector.raw.config.concurrent {
            // On the background collector (see `background`).
            return self.heap.collector.paced_concurrent();
        }
        if self.collect_minor().is_err() {
            let col = &*self.heap.collector;
            col.pacer.back_off(col.raw.allocated.load(Relaxed));
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
    /// Makes sure the next `insert_handle` allocates nothing (see
    /// `HandleTable::reserve`). Outside any no-preempt region.
    pub(crate) fn reserve_handle(&self) {
        if let Err(e) = self.with_handle_free(|own| self.state.handles.reserve(own)) {
            panic!("pardon: {e}");
        }
    }

    pub(crate) fn insert_handle(&self, addr: usize) -> usize {
        match self.with_handle_free(|own| self.state.handles.insert(own, addr)) {
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
    pub(crate) fn alloc_rooted_slow(&self, ty: Type) -> Result<(usize, usize), AllocError> {
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
        let col = &*self.heap.collector;
        let mut retried = false;
        loop {
            let r = col.registry.outside_stops(|| {
                // SAFETY: owner thread holding the coordinator lock: no
                // coordinator touches the cache meanwhile.
                let cache = unsafe { &mut *self.state.cache.get() };
                let addr = cache.alloc(&col.raw, ty)?.as_ptr() as usize;
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
            self.with_handle_free(|own| self.state.handles.remove(own, slot));
        })
    }

    /// Live handles in this thread's table.
    pub fn handle_count(&self) -> usize {
        self.with_handle_free(|own| own.live())
    }
}

impl Drop for Mutator {
    fn drop(&mut self) {
        let col = &*self.heap.collector;
        let entry = self.as_running(|| {
            col.registry.outside_stops(|| {
                // SAFETY: owner thread, no stop overlapping (see alloc_with).
                unsafe { (*self.state.cache.get()).flush(&col.raw) };
                col.mutators.remove(self.slot)
            })
        });
        // Our own `Arc` still holds the state, which is freed (with its
        // handle table) after `attached` detaches, outside any region.
        drop(entry);
    }
}
