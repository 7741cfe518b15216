//! The raw heap: allocation through thread caches, central lists and the page
//! heap; exact object lookup; sweeping. Marking is in `mark`.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize};
use std::sync::Mutex;

use crate::arena::Arena;
use crate::config::{Config, ConfigError};
use crate::mark::{CollectionKind, MarkStats, Marker};
use crate::pageheap::{Exhausted, PageHeap};
use crate::sizeclass::{
    size_to_class, span_class, CLASSES, MAX_SMALL_SIZE, NUM_SPAN_CLASSES, PAGE_SIZE,
};
use crate::span::{Span, BITMAP_WORDS, FREE, IN_USE, MANUAL};
use crate::types::{Type, TypeDesc, TypeError};

/// Byte written over freed slots in verify mode.
pub const POISON: u8 = 0xDB;

/// Allocation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// The heap limit (or the arena) has no room, even after collecting.
    HeapExhausted {
        /// Bytes requested.
        requested: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The request cannot be represented (its size overflows).
    TooLarge {
        /// The element count or size that overflowed.
        requested: usize,
    },
    /// The heap limit has no room, and the collection that could have made
    /// some was abandoned: the world could not be stopped.
    CollectionAbandoned {
        /// Bytes requested.
        requested: usize,
        /// Why the stop failed ([`CollectError`](crate::CollectError)'s
        /// message).
        reason: String,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::HeapExhausted { requested, limit } => write!(
                f,
                "heap exhausted: cannot allocate {requested} bytes within the {limit}-byte limit"
            ),
            AllocError::TooLarge { requested } => {
                write!(f, "allocation of {requested} elements/bytes overflows")
            }
            AllocError::CollectionAbandoned { requested, reason } => write!(
                f,
                "heap exhausted: cannot allocate {requested} bytes, and the collection that \
                 could have freed memory was abandoned: {reason}"
            ),
        }
    }
}
impl std::error::Error for AllocError {}

/// Verify mode: a full re-mark from the same roots disagreed with the
/// collection's mark. A `Copy` value, built with the world stopped (no
/// allocation), formatted once it restarts.
#[derive(Clone, Copy, Debug)]
pub struct MarkMismatch {
    /// Base of the span whose mark bits disagree.
    pub span: usize,
    /// Its size class.
    pub class: usize,
    /// The mark-bit word that disagrees.
    pub word: usize,
    /// That word after the collection's mark.
    pub mark: u64,
    /// That word after the re-mark.
    pub remark: u64,
    /// The collection's kind.
    pub kind: CollectionKind,
}

impl fmt::Display for MarkMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "span {:#x} (class {}): mark word {} was {:#018x}, re-mark gives {:#018x}",
            self.span, self.class, self.word, self.mark, self.remark
        )?;
        if self.kind == CollectionKind::Minor {
            f.write_str(
                " (the minor mark missed reachable objects: a reference stored into an old \
                 object without the write barrier?)",
            )?;
        }
        Ok(())
    }
}

/// Central lists of one span class: partial and full, swept and unswept.
/// Which index is "swept" flips every collection (`sweepgen / 2 % 2`).
struct Central {
    partial: [*mut Span; 2],
    full: [*mut Span; 2],
    /// Generational heaps: swept spans whose every slot holds an old object.
    /// Nothing can be allocated in them and a minor collection frees nothing
    /// in them, so they skip sweeping until the next full collection, which
    /// puts them back on `full` (see [`RawHeap::unpark_old`]).
    old: *mut Span,
}

// SAFETY: span pointers point into the page heap's pool (live as long as the
// heap) and are only followed under the owning mutex.
unsafe impl Send for Central {}

fn link_next(s: *mut Span) -> &'static mut *mut Span {
    // SAFETY: the caller holds the lock of the list `s` is (being put) on,
    // which owns its links.
    unsafe { &mut (*(*s).link.get()).next }
}

fn push(head: &mut *mut Span, s: *mut Span) {
    *link_next(s) = *head;
    *head = s;
}

fn pop(head: &mut *mut Span) -> Option<*mut Span> {
    let s = *head;
    if s.is_null() {
        return None;
    }
    *head = *link_next(s);
    Some(s)
}

pub(crate) fn sp<'a>(s: *mut Span) -> &'a Span {
    // SAFETY: every span pointer handled here came from the page heap's pool,
    // which lives as long as the heap.
    unsafe { &*s }
}

/// The outcome of sweeping one span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Swept {
    pub freed_objects: usize,
    pub freed_bytes: usize,
    pub span_freed: bool,
}

/// Heap statistics.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapStats {
    /// Bytes in spans that are in use (objects, free slots and tail waste).
    pub span_bytes: usize,
    /// Bytes of free spans still committed.
    pub free_committed: usize,
    /// Bytes live at the last collection plus bytes handed to allocation
    /// since (cached spans count whole), what the pacer compares to its goal.
    pub allocated: usize,
    /// Bytes marked by the last collection.
    pub live_after_last: usize,
    /// Completed collections.
    pub collections: u64,
}

/// The heap, without threads: allocation through [`ThreadCache`]s, lookup,
/// marking from a root set and lazy sweeping. The collector (`Heap`) adds the
/// stop-the-world and per-thread roots on top.
pub struct RawHeap {
    pub(crate) arena: Arena,
    pub(crate) pages: PageHeap,
    central: Box<[Mutex<Central>]>,
    /// Large-object spans: [swept, unswept] by the same flip as `central`,
    /// and (generational heaps) old ones, as `Central::old`.
    large: Mutex<[*mut Span; 3]>,
    pub(crate) sweepgen: AtomicU32,
    pub(crate) gc_count: AtomicU64,
    pub(crate) config: Config,
    /// Bytes given out to caches (a span's free slots are charged when a
    /// cache takes it and refunded when it gives it back) and large objects
    /// since the last collection, plus what that collection marked.
    pub(crate) allocated: AtomicUsize,
    pub(crate) live_after_last: AtomicUsize,
    pub(crate) gray: Mutex<crate::mark::GrayStack>,
    /// Helper threads for parallel marking (none when `mark_workers` is 1).
    pub(crate) helpers: crate::mark::MarkHelpers,
    /// Verify mode: room for one copy of every span's mark bits.
    snapshot: Option<memmap2::MmapMut>,
    /// Verify mode: the type and count each object was allocated with, the
    /// independent record its heap bits are checked against (see `verify`).
    /// Written by the allocating thread for a slot it owns; read by a
    /// coordinator with the world stopped.
    pub(crate) type_record: Option<crate::verify::TypeRecord>,
}

// SAFETY: the large lists' span pointers follow the same rules as Central's.
unsafe impl Send for RawHeap {}
// SAFETY: all shared state is atomics or behind mutexes; see each field.
unsafe impl Sync for RawHeap {}

impl fmt::Debug for RawHeap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawHeap")
            .field("stats", &self.stats())
            .finish()
    }
}

static EMPTY_SPAN: Span = Span::empty();

impl RawHeap {
    /// Reserves the arena and side tables.
    pub fn new(config: Config) -> Result<RawHeap, ConfigError> {
        config.validate()?;
        let arena = Arena::new(config.arena_size).map_err(|e| {
            ConfigError(format!(
                "arena_size: cannot reserve {} bytes: {e}",
                config.arena_size
            ))
        })?;
        let gray = crate::mark::GrayStack::new(config.gray_capacity).map_err(|e| {
            ConfigError(format!("gray_capacity: cannot reserve the gray stack: {e}"))
        })?;
        let helpers = crate::mark::MarkHelpers::new(config.mark_workers, config.gray_capacity)
            .map_err(|e| {
                ConfigError(format!(
                    "mark_workers: cannot start {} marking helpers: {e}",
                    config.mark_workers - 1
                ))
            })?;
        let pages = PageHeap::new(&arena);
        Ok(RawHeap {
            helpers,
            arena,
            pages,
            central: (0..NUM_SPAN_CLASSES)
                .map(|_| {
                    Mutex::new(Central {
                        partial: [std::ptr::null_mut(); 2],
                        full: [std::ptr::null_mut(); 2],
                        old: std::ptr::null_mut(),
                    })
                })
                .collect(),
            large: Mutex::new([std::ptr::null_mut(); 3]),
            sweepgen: AtomicU32::new(2),
            gc_count: AtomicU64::new(0),
            allocated: AtomicUsize::new(0),
            live_after_last: AtomicUsize::new(0),
            gray: Mutex::new(gray),
            snapshot: if config.verify {
                Some(
                    memmap2::MmapOptions::new()
                        .len(config.arena_size / PAGE_SIZE * BITMAP_WORDS * 8)
                        .no_reserve_swap()
                        .map_anon()
                        .map_err(|e| {
                            ConfigError(format!("verify: cannot reserve the mark snapshot: {e}"))
                        })?,
                )
            } else {
                None
            },
            type_record: if config.verify {
                Some(
                    crate::verify::TypeRecord::new(config.arena_size).map_err(|e| {
                        ConfigError(format!("verify: cannot reserve the type record: {e}"))
                    })?,
                )
            } else {
                None
            },
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Registers a type.
    pub fn register_type(&self, desc: &TypeDesc<'_>) -> Result<Type, TypeError> {
        crate::types::register(desc)
    }

    /// Statistics.
    pub fn stats(&self) -> HeapStats {
        let p = self.pages.stats();
        HeapStats {
            span_bytes: p.in_use,
            free_committed: p.free_committed,
            allocated: self.allocated.load(Relaxed),
            live_after_last: self.live_after_last.load(Relaxed),
            collections: self.gc_count.load(Relaxed),
        }
    }

    /// The arena's address range `[lo, hi)`.
    pub fn arena_range(&self) -> (usize, usize) {
        (self.arena.base, self.arena.end())
    }

    /// The exact lookup: the base of the allocated object containing `addr`
    /// (interior pointers and the last byte included), or `None` for anything
    /// else — outside the arena, free pages, spans being set up, tail waste,
    /// free slots and slots freed by the last sweep. Never faults on any
    /// input. Exact while no thread allocates or sweeps concurrently (during a
    /// collection); otherwise a racing answer may be stale, never unsafe.
    #[inline]
    pub fn find_object(&self, addr: usize) -> Option<usize> {
        self.find(addr).map(|(base, _, _)| base)
    }

    /// As [`RawHeap::find_object`], also returning the span and index.
    #[inline(always)]
    pub(crate) fn find(&self, addr: usize) -> Option<(usize, &Span, usize)> {
        let s = self.arena.span_of(addr);
        if s.is_null() {
            return None;
        }
        let s = sp(s);
        if s.state.load(Acquire) != IN_USE {
            return None;
        }
        let base = s.base();
        let off = addr.wrapping_sub(base);
        if off >= s.bytes() {
            return None;
        }
        let idx = s.obj_index(off);
        if idx >= s.nelems() || !s.is_allocated(idx) {
            return None;
        }
        Some((base + idx * s.elemsize(), s, idx))
    }

    /// The size of the slot of the allocated object at `base` (its class size,
    /// or the span size for a large object), or `None` if `base` is not the
    /// base of an allocated object.
    pub fn object_size(&self, base: usize) -> Option<usize> {
        match self.find(base) {
            Some((b, s, _)) if b == base => Some(s.elemsize()),
            _ => None,
        }
    }

    pub(crate) fn swept_index(sg: u32) -> usize {
        (sg / 2 % 2) as usize
    }

    /// Takes a span with free slots for span class `spc`: from the swept
    /// partial list, else by sweeping unswept spans, else a new span.
    fn cache_span(&self, spc: usize) -> Result<*mut Span, Exhausted> {
        let sg = self.sweepgen.load(Acquire);
        let (sw, unsw) = (Self::swept_index(sg), 1 - Self::swept_index(sg));
        let mut budget = 100;
        loop {
            let mut c = lock(&self.central[spc]);
            if let Some(s) = pop(&mut c.partial[sw]) {
                return Ok(s);
            }
            if budget == 0 {
                break;
            }
            let Some(s) = pop(&mut c.partial[unsw]).or_else(|| pop(&mut c.full[unsw])) else {
                break;
            };
            drop(c);
            budget -= 1;
            let r = self.sweep_span(s, sg);
            if r.span_freed {
                continue;
            }
            if sp(s).has_free() {
                return Ok(s);
            }
            self.put_full(&mut lock(&self.central[spc]), s, sw);
        }
        let class = CLASSES[spc >> 1];
        let limit = self.config.effective_heap_limit();
        let s = match self.pages.alloc(&self.arena, class.npages as usize, limit) {
            Ok(s) => s,
            Err(Exhausted) => {
                // Before reporting exhaustion, reclaim: spans of any class
                // still waiting for the lazy sweep may be free (Go's mheap
                // reclaims the same way before growing).
                if self.finish_sweep() == 0 {
                    return Err(Exhausted);
                }
                return self.cache_span(spc);
            }
        };
        let span = sp(s);
        span.spc.store(spc as u32, Relaxed);
        span.elemsize.store(class.size as usize, Relaxed);
        span.nelems.store(class.nelems, Relaxed);
        span.div_mul.store(class.div_mul, Relaxed);
        self.init_span_bits(span, 0);
        span.sweepgen.store(sg, Relaxed);
        span.state.store(IN_USE, Release);
        Ok(s)
    }

    fn init_span_bits(&self, span: &Span, freeindex: u32) {
        for w in 0..BITMAP_WORDS {
            span.alloc_bits[w].store(0, Relaxed);
            span.mark_bits[w].store(0, Relaxed);
        }
        span.freeindex.store(freeindex, Relaxed);
        span.alloc_count.store(freeindex, Relaxed);
        span.refill_alloc_cache(0);
    }

    /// Puts a swept span with no free slot on its list `c`: the swept full
    /// list, or on a generational heap the old list (every slot holds an
    /// object that was marked, so is old now).
    fn put_full(&self, c: &mut Central, s: *mut Span, sw: usize) {
        if self.config.generational {
            sp(s).old.store(true, Relaxed);
            push(&mut c.old, s);
        } else {
            push(&mut c.full[sw], s);
        }
    }

    /// Before a full collection of a generational heap (sweeping finished,
    /// world stopped): puts every span parked on an old list back on the
    /// swept full lists, marked swept at the current generation, so the flip
    /// at the end of the collection queues it for sweeping like any other.
    fn unpark_old(&self) {
        let sg = self.sweepgen.load(Acquire);
        let sw = Self::swept_index(sg);
        let unpark = |s: *mut Span| {
            let span = sp(s);
            span.old.store(false, Relaxed);
            span.sweepgen.store(sg, Release);
        };
        for c in self.central.iter() {
            let mut c = lock(c);
            while let Some(s) = pop(&mut c.old) {
                unpark(s);
                push(&mut c.full[sw], s);
            }
        }
        let mut l = lock(&self.large);
        while let Some(s) = pop(&mut l[2]) {
            unpark(s);
            push(&mut l[sw], s);
        }
    }

    /// Gives a cached span back to its central list.
    fn uncache_span(&self, s: *mut Span) {
        let span = sp(s);
        let spc = span.spc.load(Relaxed) as usize;
        // The cache was charged for every free slot when it took the span;
        // refund the ones it did not use.
        let unused = (span.nelems() - span.alloc_count.load(Relaxed) as usize) * span.elemsize();
        let _ = self
            .allocated
            .fetch_update(Relaxed, Relaxed, |a| Some(a.saturating_sub(unused)));
        let sw = Self::swept_index(self.sweepgen.load(Acquire));
        let mut c = lock(&self.central[spc]);
        if span.has_free() {
            push(&mut c.partial[sw], s);
        } else {
            push(&mut c.full[sw], s);
        }
    }

    /// Sweeps span `s`, which the caller has taken off an unswept list. The
    /// alloc bits take the mark bits; a marked object in a free slot (a
    /// zombie) panics with a diagnostic; in verify mode freed slots are
    /// poisoned; a span left empty goes back to the page heap. Allocates
    /// nothing.
    pub(crate) fn sweep_span(&self, s: *mut Span, sg: u32) -> Swept {
        let span = sp(s);
        // Go's sweepgen protocol: sg-2 needs sweeping, sg-1 is being swept,
        // sg is swept. Anything else is a double sweep, which would free live
        // objects against consumed mark bits: stop here instead.
        let old = span.sweepgen.swap(sg.wrapping_sub(1), AcqRel);
        assert_eq!(
            old,
            sg.wrapping_sub(2),
            "pardon: span at {:#x} swept twice or out of turn (sweepgen {old}, heap {sg})",
            span.base()
        );
        let nelems = span.nelems();
        let elemsize = span.elemsize();
        let words = nelems.div_ceil(64);
        let fi = span.freeindex.load(Relaxed) as usize;
        let mut live = 0usize;
        let mut freed = 0usize;
        for w in 0..words {
            let lo = w * 64;
            let valid = if nelems - lo >= 64 {
                u64::MAX
            } else {
                (1u64 << (nelems - lo)) - 1
            };
            // Objects allocated: below freeindex, or alloc bit set.
            let below_fi = if fi >= lo + 64 {
                u64::MAX
            } else if fi > lo {
                (1u64 << (fi - lo)) - 1
            } else {
                0
            };
            let alloc = (span.alloc_bits[w].load(Relaxed) | below_fi) & valid;
            let mark = span.mark_bits[w].load(Relaxed) & valid;
            let zombies = mark & !alloc;
            if zombies != 0 {
                let idx = lo + zombies.trailing_zeros() as usize;
                panic!(
                    "pardon: found a pointer to a free object (zombie): object {idx} at {:#x} \
                     in span {:#x} (class {}, {} bytes per object); heap corruption or a \
                     reference kept outside the collector's view",
                    span.base() + idx * elemsize,
                    span.base(),
                    span.spc.load(Relaxed) >> 1,
                    elemsize
                );
            }
            let dead = alloc & !mark;
            freed += dead.count_ones() as usize;
            live += mark.count_ones() as usize;
            if self.config.verify && dead != 0 {
                let mut d = dead;
                while d != 0 {
                    let idx = lo + d.trailing_zeros() as usize;
                    d &= d - 1;
                    // SAFETY: `idx < nelems`, so the slot lies inside this
                    // span's committed pages, and it is free: no reference to
                    // it may be used any more.
                    unsafe {
                        std::ptr::write_bytes(
                            (span.base() + idx * elemsize) as *mut u8,
                            POISON,
                            elemsize,
                        )
                    };
                }
            }
            span.alloc_bits[w].store(mark, Relaxed);
            if !self.config.generational {
                span.mark_bits[w].store(0, Relaxed);
            }
            // Generational: the mark bits stay set (sticky). Survivors are
            // now old, and a minor collection treats them as marked; new
            // objects take free slots, whose mark bits are clear (they equal
            // the alloc bits just stored).
        }
        span.freeindex.store(0, Relaxed);
        span.alloc_count.store(live as u32, Relaxed);
        span.refill_alloc_cache(0);
        span.needzero.store(true, Relaxed);
        // `allocated` is not reduced here: the collection that made these
        // objects garbage already reset it to the bytes it marked.
        let freed_bytes = freed * elemsize;
        let span_freed = live == 0;
        if span_freed {
            span.state.store(MANUAL, Release);
            self.pages.free(&self.arena, s, self.gc_count.load(Relaxed));
        } else {
            span.sweepgen.store(sg, Release);
        }
        Swept {
            freed_objects: freed,
            freed_bytes,
            span_freed,
        }
    }

    /// Sweeps every unswept span (all of them are swept before the next mark).
    /// Returns the spans swept.
    ///
    /// For heaps used on their own. On the heap of a [`Heap`](crate::Heap),
    /// do not call this while a collection may be in progress: a thread that
    /// is not stopped would sweep under the coordinator (the collector's own
    /// sweeping excludes stops).
    pub fn finish_sweep(&self) -> usize {
        self.finish_sweep_in(&())
    }

    /// [`RawHeap::finish_sweep`], with each span's sweep (and the locks it
    /// takes) inside `scope`.
    pub(crate) fn finish_sweep_in(&self, scope: &impl LockScope) -> usize {
        // Each step reads the sweep generation afresh: between steps this
        // thread may be stopped for a collection that flips it, and sweeping
        // with a stale generation would take spans off the wrong list and
        // sweep them against mark bits that were already consumed.
        let mut n = 0;
        for spc in 0..NUM_SPAN_CLASSES {
            while scope.run(|| {
                let sg = self.sweepgen.load(Acquire);
                let (sw, unsw) = (Self::swept_index(sg), 1 - Self::swept_index(sg));
                let mut c = lock(&self.central[spc]);
                let Some(s) = pop(&mut c.partial[unsw]).or_else(|| pop(&mut c.full[unsw])) else {
                    return false;
                };
                drop(c);
                if !self.sweep_span(s, sg).span_freed {
                    let mut c = lock(&self.central[spc]);
                    if sp(s).has_free() {
                        push(&mut c.partial[sw], s);
                    } else {
                        self.put_full(&mut c, s, sw);
                    }
                }
                true
            }) {
                n += 1;
            }
        }
        while scope.run(|| {
            let sg = self.sweepgen.load(Acquire);
            let (sw, unsw) = (Self::swept_index(sg), 1 - Self::swept_index(sg));
            let mut l = lock(&self.large);
            let Some(s) = pop(&mut l[unsw]) else {
                return false;
            };
            drop(l);
            if !self.sweep_span(s, sg).span_freed {
                // A large span that survives sweeping holds a marked object:
                // on a generational heap, an old one.
                let i = if self.config.generational {
                    sp(s).old.store(true, Relaxed);
                    2
                } else {
                    sw
                };
                push(&mut lock(&self.large)[i], s);
            }
            true
        }) {
            n += 1;
        }
        n
    }

    /// The write barrier of generational mode: call it with the address of a
    /// heap word *before* storing a reference into it (or with any address in
    /// the same 512-byte card). It marks the card dirty, so the next minor
    /// collection rescans the old objects on it. Two instructions and a
    /// store; addresses outside the arena are ignored. A no-op in effect when
    /// the heap is not generational.
    ///
    /// Why before: a thread may be stopped between the two stores. Barrier
    /// first, and a collection in between finds the reference still in the
    /// storing thread's registers or stack (it is about to be stored), marks
    /// it, and leaves an old-to-old edge. Store first, and the reference may
    /// already be gone from the thread's registers when the collection finds
    /// a clean card.
    #[inline(always)]
    pub fn write_barrier(&self, slot: usize) {
        self.arena.dirty_card(slot);
    }

    /// Generational mode: clears every in-use span's mark bits, which
    /// sweeping leaves set, before a full mark. Stopped world only.
    fn clear_marks(&self) {
        self.pages.for_each_in_use(&self.arena, |span| {
            for w in &span.mark_bits[..span.nelems().div_ceil(64)] {
                w.store(0, Relaxed);
            }
        });
    }

    /// Clears the card table over the used part of the arena. Stopped world
    /// only.
    pub(crate) fn clear_cards(&self) {
        for w in self.arena.card_words(self.pages.stats().used_pages) {
            if w.load(Relaxed) != 0 {
                w.store(0, Relaxed);
            }
        }
    }

    /// Prepares the mark bits and cards for a collection of `kind`, with the
    /// world stopped and sweeping finished: a full collection of a
    /// generational heap clears the sticky marks and the cards. Returns the
    /// kind that will run (`Minor` only on a generational heap).
    pub(crate) fn begin_mark(&self, kind: CollectionKind) -> CollectionKind {
        if !self.config.generational {
            return CollectionKind::Full;
        }
        if kind == CollectionKind::Full {
            self.unpark_old();
            self.clear_marks();
            self.clear_cards();
        }
        kind
    }

    /// Ends a collection: every span now needs sweeping again. Call with the
    /// world stopped, after marking. `marked` is what this mark newly marked;
    /// after a minor collection the live estimate adds it to the old bytes
    /// (everything live after the last collection, which a minor one never
    /// frees). Returns the live estimate.
    pub(crate) fn flip_sweepgen(&self, kind: CollectionKind, marked: usize) -> usize {
        let live_bytes = match kind {
            CollectionKind::Full => marked,
            CollectionKind::Minor => self.live_after_last.load(Relaxed) + marked,
        };
        self.sweepgen.fetch_add(2, Release);
        self.gc_count.fetch_add(1, Relaxed);
        self.live_after_last.store(live_bytes, Relaxed);
        // Every cache is flushed: what is allocated now is what was marked
        // (Go's heapLive = heapMarked at mark termination).
        self.allocated.store(live_bytes, Relaxed);
        live_bytes
    }

    /// A whole collection for a heap whose mutators are all stopped or which
    /// one thread owns: flushes `caches`, finishes sweeping, marks from the
    /// words `roots` offers, and starts a new sweep cycle. Objects only
    /// referenced from words not offered are freed by the next sweep.
    pub fn collect_with(
        &self,
        caches: &mut [&mut ThreadCache],
        roots: impl Fn(&mut Marker<'_>),
    ) -> MarkStats {
        self.collect_kind_with(CollectionKind::Full, caches, roots)
    }

    /// As [`RawHeap::collect_with`], for a collection of `kind`: on a
    /// generational heap, `Minor` marks from the roots and the dirty cards
    /// only, treating every object that survived an earlier collection as
    /// live. The returned `bytes` and `objects` count what this mark newly
    /// marked. In verify mode, the mark is checked against a full re-mark
    /// from the same roots (which must mark a subset of it; equal for a full
    /// collection).
    pub fn collect_kind_with(
        &self,
        kind: CollectionKind,
        caches: &mut [&mut ThreadCache],
        roots: impl Fn(&mut Marker<'_>),
    ) -> MarkStats {
        for c in caches.iter_mut() {
            c.flush(self);
        }
        self.finish_sweep();
        let kind = self.begin_mark(kind);
        let mut m = self.marker_for(kind);
        roots(&mut m);
        let st = m.finish();
        if self.config.verify {
            if let Err(e) = self.check_layouts() {
                panic!("pardon verify: {e}");
            }
            let snap = self.take_mark_snapshot();
            let mut again = self.marker();
            roots(&mut again);
            again.finish();
            if let Err(e) = self.compare_mark_snapshot(&snap, kind) {
                panic!("pardon verify: re-marking from scratch disagrees with the mark: {e}");
            }
        }
        self.flip_sweepgen(kind, st.bytes);
        st
    }

    /// Verify mode: copies every in-use span's mark bits aside and clears
    /// them, ready for a second mark. Allocates nothing. Returns a token for
    /// [`RawHeap::compare_mark_snapshot`].
    pub(crate) fn take_mark_snapshot(&self) -> usize {
        let Some(snap) = &self.snapshot else { return 0 };
        let base = snap.as_ptr() as *mut u64;
        let mut n = 0;
        self.pages.for_each_in_use(&self.arena, |span| {
            let p = self.arena.page_of(span.base());
            for w in 0..BITMAP_WORDS {
                // SAFETY: the snapshot has BITMAP_WORDS words per arena page.
                unsafe { *base.add(p * BITMAP_WORDS + w) = span.mark_bits[w].swap(0, Relaxed) };
            }
            n += 1;
        });
        n
    }

    /// Verify mode: checks the current mark bits (a full re-mark) against
    /// the snapshot (the collection's mark). After a full collection they
    /// must be equal. After a minor one the re-mark must be a subset (the
    /// minor mark keeps old garbage until the next full collection; a
    /// reachable object it missed means a missing write barrier), and the
    /// snapshot's marks are put back, so the heap goes on as it would have
    /// without verification.
    pub(crate) fn compare_mark_snapshot(
        &self,
        _token: &usize,
        kind: CollectionKind,
    ) -> Result<(), MarkMismatch> {
        let Some(snap) = &self.snapshot else {
            return Ok(());
        };
        let base = snap.as_ptr() as *const u64;
        let mut err = None;
        self.pages.for_each_in_use(&self.arena, |span| {
            let p = self.arena.page_of(span.base());
            for w in 0..BITMAP_WORDS {
                // SAFETY: as in take_mark_snapshot.
                let before = unsafe { *base.add(p * BITMAP_WORDS + w) };
                let now = span.mark_bits[w].load(Relaxed);
                let bad = match kind {
                    CollectionKind::Full => before != now,
                    CollectionKind::Minor => now & !before != 0,
                };
                if bad && err.is_none() {
                    // No formatting here: the world is stopped.
                    err = Some(MarkMismatch {
                        span: span.base(),
                        class: span.spc.load(Relaxed) as usize >> 1,
                        word: w,
                        mark: before,
                        remark: now,
                        kind,
                    });
                }
                if kind == CollectionKind::Minor {
                    span.mark_bits[w].store(before, Relaxed);
                }
            }
        });
        err.map_or(Ok(()), Err)
    }

    /// Walks every span and checks the heap's invariants: page-table entries,
    /// span states and ranges, object counts against the bitmaps, sweep
    /// generations, free-list adjacency. For tests and debugging; run it only
    /// while no other thread uses the heap.
    pub fn check_integrity(&self) -> Result<(), String> {
        let sg = self.sweepgen.load(Acquire);
        let used = self.pages.stats().used_pages;
        let mut p = 0;
        let mut in_use_bytes = 0;
        while p < used {
            let s = self.arena.span_slot(p).load(Acquire);
            if s.is_null() {
                return Err(format!("page {p} has no span"));
            }
            let span = sp(s);
            if span.base() != self.arena.page_addr(p) || span.npages() == 0 {
                return Err(format!(
                    "page {p} starts no span (span base {:#x})",
                    span.base()
                ));
            }
            let n = span.npages();
            let st = span.state.load(Acquire);
            match st {
                IN_USE => {
                    in_use_bytes += span.bytes();
                    for q in p..p + n {
                        if self.arena.span_slot(q).load(Acquire) != s {
                            return Err(format!(
                                "page {q} of in-use span at page {p} maps elsewhere"
                            ));
                        }
                    }
                    let nelems = span.nelems();
                    if nelems == 0 || nelems * span.elemsize() > span.bytes() {
                        return Err(format!(
                            "span at page {p}: {nelems} x {} bytes overflow",
                            span.elemsize()
                        ));
                    }
                    let fi = span.freeindex.load(Relaxed) as usize;
                    if fi > nelems {
                        return Err(format!(
                            "span at page {p}: freeindex {fi} > nelems {nelems}"
                        ));
                    }
                    let count = (0..nelems).filter(|&i| span.is_allocated(i)).count();
                    if count != span.alloc_count.load(Relaxed) as usize {
                        return Err(format!(
                            "span at page {p}: alloc_count {} but {count} allocated",
                            span.alloc_count.load(Relaxed)
                        ));
                    }
                    let g = span.sweepgen.load(Relaxed);
                    // An old span parked off the sweep lists keeps the
                    // generation it was last swept at.
                    let parked = span.old.load(Relaxed);
                    if parked && self.config.generational {
                        if span.alloc_count.load(Relaxed) as usize != nelems {
                            return Err(format!("span at page {p}: parked old but not full"));
                        }
                    } else if g != sg && g != sg.wrapping_sub(2) {
                        return Err(format!("span at page {p}: sweepgen {g} with heap at {sg}"));
                    }
                    if self.config.generational {
                        // Sticky marks: every marked object is allocated, and
                        // a swept span's marks are exactly its survivors.
                        if let Some(i) =
                            (0..nelems).find(|&i| span.is_marked(i) && !span.is_allocated(i))
                        {
                            return Err(format!("span at page {p}: free object {i} is marked"));
                        }
                        let words = nelems.div_ceil(64);
                        if (g == sg || parked)
                            && (0..words).any(|w| {
                                span.mark_bits[w].load(Relaxed) != span.alloc_bits[w].load(Relaxed)
                            })
                        {
                            return Err(format!(
                                "span at page {p}: swept, but its marks are not its survivors"
                            ));
                        }
                    } else if g == sg && span.count_marked() != 0 {
                        // (A span still waiting for the lazy sweep holds the
                        // last mark's bits until it is swept.)
                        return Err(format!(
                            "span at page {p}: swept, but mark bits are set outside a collection"
                        ));
                    }
                }
                FREE => {
                    let last = self.arena.span_slot(p + n - 1).load(Acquire);
                    if last != s {
                        return Err(format!("free run at page {p}: last page does not map back"));
                    }
                    if p + n < used {
                        let next = sp(self.arena.span_slot(p + n).load(Acquire));
                        if next.state.load(Acquire) == FREE
                            && next.base() == span.base() + span.bytes()
                        {
                            return Err(format!(
                                "free runs at pages {p} and {} were not coalesced",
                                p + n
                            ));
                        }
                    }
                }
                _ => return Err(format!("span at page {p} left in state {st}")),
            }
            p += n;
        }
        let ph = self.pages.stats().in_use;
        if ph != in_use_bytes {
            return Err(format!(
                "page heap counts {ph} in-use bytes, walk found {in_use_bytes}"
            ));
        }
        Ok(())
    }

    /// Decommits free spans that stayed free for `scavenge_after` collections.
    /// The same caution as [`RawHeap::finish_sweep`] applies.
    pub fn scavenge(&self) -> usize {
        self.scavenge_in(&())
    }

    /// [`RawHeap::scavenge`], holding the page-heap lock only inside `scope`.
    pub(crate) fn scavenge_in(&self, scope: &impl LockScope) -> usize {
        let gc = self.gc_count.load(Relaxed);
        if gc < self.config.scavenge_after {
            return 0;
        }
        self.pages
            .scavenge(&self.arena, gc + 1 - self.config.scavenge_after, scope)
    }

    fn alloc_large(&self, size: usize, ty: Type) -> Result<usize, AllocError> {
        let npages = size.div_ceil(PAGE_SIZE).max(1);
        let limit = self.config.effective_heap_limit();
        let exhausted = AllocError::HeapExhausted {
            requested: size,
            limit,
        };
        let s = match self.pages.alloc(&self.arena, npages, limit) {
            Ok(s) => s,
            // Reclaim what the lazy sweep has not reached yet, then retry.
            Err(Exhausted) if self.finish_sweep() > 0 => self
                .pages
                .alloc(&self.arena, npages, limit)
                .map_err(|_| exhausted)?,
            Err(Exhausted) => return Err(exhausted),
        };
        let span = sp(s);
        span.spc
            .store(span_class(0, ty.is_noscan()) as u32, Relaxed);
        span.elemsize.store(npages * PAGE_SIZE, Relaxed);
        span.nelems.store(1, Relaxed);
        span.div_mul.store(0, Relaxed);
        self.init_span_bits(span, 1);
        let sg = self.sweepgen.load(Acquire);
        span.sweepgen.store(sg, Relaxed);
        let base = span.base();
        if span.needzero.load(Relaxed) {
            // SAFETY: the span's pages are ours and not yet visible as IN_USE.
            unsafe { std::ptr::write_bytes(base as *mut u8, 0, npages * PAGE_SIZE) };
        }
        if !ty.is_noscan() {
            let count = size / ty.size().max(1);
            self.write_heap_bits(base, npages * PAGE_SIZE, ty, count);
            if self.type_record.is_some() {
                self.record_type(base, ty, count);
            }
        }
        self.allocated.fetch_add(npages * PAGE_SIZE, Relaxed);
        span.state.store(IN_USE, Release);
        push(&mut lock(&self.large)[Self::swept_index(sg)], s);
        Ok(base)
    }

    /// Writes the heap bits of a slot: `count` copies of the type's pointer
    /// bitmap, then zeros to the end of the slot.
    #[inline]
    pub(crate) fn write_heap_bits(&self, addr: usize, slot: usize, ty: Type, count: usize) {
        let w0 = (addr - self.arena.base) / 8;
        let tw = ty.size() / 8;
        let nwords = slot / 8;
        let off = w0 % 64;
        if count == 1 && off + nwords <= 64 && tw <= 64 {
            // The common case: one object whose slot lies in one bitmap word.
            // (Slots of sizes that do not divide 512 may straddle a 512-byte
            // boundary however small they are: those take the slow path.)
            set_bits(self.arena.bits_word(w0), off, nwords, ty.0.bits0);
            return;
        }
        self.write_heap_bits_slow(w0, nwords, ty, tw, count);
    }

    #[cold]
    fn write_heap_bits_slow(&self, w0: usize, nwords: usize, ty: Type, tw: usize, count: usize) {
        let bits = &ty.0.ptr_bits;
        let mut i = 0;
        while i < nwords {
            let w = w0 + i;
            let off = w % 64;
            // Within one element of the pattern, take at most up to its end.
            let (elem, in_elem) = i.checked_div(tw).map_or((usize::MAX, 0), |e| (e, i % tw));
            let mut take = (64 - off).min(nwords - i);
            let src = if elem < count {
                take = take.min(tw - in_elem);
                extract_bits(bits, in_elem, take)
            } else {
                0
            };
            let mask = if take == 64 {
                u64::MAX
            } else {
                ((1u64 << take) - 1) << off
            };
            let word = self.arena.bits_word(w);
            word.store((word.load(Relaxed) & !mask) | (src << off), Relaxed);
            i += take;
        }
    }
}

fn extract_bits(bits: &[u64], i: usize, take: usize) -> u64 {
    let lo = bits.get(i / 64).copied().unwrap_or(0) >> (i % 64);
    let hi = if i % 64 != 0 {
        bits.get(i / 64 + 1).copied().unwrap_or(0) << (64 - i % 64)
    } else {
        0
    };
    let v = lo | hi;
    if take >= 64 {
        v
    } else {
        v & ((1u64 << take) - 1)
    }
}

/// Brackets each short step of heap maintenance that holds a heap lock. The
/// collector's stopped-world path takes those locks too, so an attached
/// thread must never be stopped while holding one: the collector runs each
/// step in a no-preempt region. `()` runs steps plainly (unattached use).
pub(crate) trait LockScope {
    /// Runs one step.
    fn run<R>(&self, f: impl FnOnce() -> R) -> R;
}

impl LockScope for () {
    fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// Replaces the `nwords` bits at `off` in one heap-bits word with the low
/// bits of `src`.
#[inline(always)]
fn set_bits(word: &AtomicU64, off: usize, nwords: usize, src: u64) {
    let mask = low_bits(nwords) << off;
    word.store((word.load(Relaxed) & !mask) | (src << off), Relaxed);
}

/// Zeroes a slot of at most 64 bytes with word stores (no `memset` call).
///
/// # Safety
/// `addr..addr + size` must be a writable slot, `size <= 64` and a
/// multiple of 8.
#[inline(always)]
unsafe fn zero_small(addr: usize, size: usize) {
    let p = addr as *mut u64;
    for i in 0..8 {
        if i * 8 < size {
            // SAFETY: word `i` lies inside the slot (caller contract).
            unsafe { p.add(i).write(0) };
        }
    }
}

/// The low `n` bits set (`n` up to 64).
#[inline(always)]
fn low_bits(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// Zeroes a slot. Small slots get word stores (a `write_bytes` of a size
/// unknown at compile time is a `memset` call).
///
/// # Safety
/// `[addr, addr + size)` must be writable and `addr` 8-byte aligned, `size`
/// a multiple of 8.
#[inline(always)]
unsafe fn zero_slot(addr: usize, size: usize) {
    if size <= 64 {
        // SAFETY: caller contract.
        unsafe { zero_small(addr, size) };
    } else {
        // SAFETY: caller contract.
        unsafe { std::ptr::write_bytes(addr as *mut u8, 0, size) };
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A per-thread allocation cache: one current span per span class, no lock on
/// the fast path. Not `Send`-restricted itself, but each cache must be used
/// by one thread at a time; flush it into the heap before dropping.
pub struct ThreadCache {
    spans: [*mut Span; NUM_SPAN_CLASSES],
}

// SAFETY: the cache only holds spans it owns exclusively (taken from central
// lists under their locks); moving it to another thread moves that ownership.
unsafe impl Send for ThreadCache {}

impl Default for ThreadCache {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ThreadCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self
            .spans
            .iter()
            .filter(|&&s| !std::ptr::eq(s, &EMPTY_SPAN))
            .count();
        write!(f, "ThreadCache({n} spans)")
    }
}

impl ThreadCache {
    /// An empty cache.
    pub fn new() -> ThreadCache {
        ThreadCache {
            spans: [&EMPTY_SPAN as *const Span as *mut Span; NUM_SPAN_CLASSES],
        }
    }

    /// Allocates one zeroed object of type `ty`.
    #[inline(always)]
    pub fn alloc(&mut self, heap: &RawHeap, ty: Type) -> Result<NonNull<u8>, AllocError> {
        let spc = ty.0.small_spc;
        if spc != crate::types::NOT_SMALL {
            self.alloc_small(heap, spc, ty, 1)
        } else {
            self.alloc_large_or_aligned(heap, ty.size(), ty, 1)
        }
    }

    /// The inlined fast path: one object of a type of at most 64 bytes (its
    /// `tiny_spc`), taken from the current span's allocation cache, or
    /// `None`, having changed nothing, if that cache word is empty. Makes no
    /// call, so its caller needs no stack frame of its own.
    #[inline(always)]
    pub(crate) fn alloc_tiny(&mut self, heap: &RawHeap, spc: usize, ty: Type) -> Option<usize> {
        debug_assert!(spc < NUM_SPAN_CLASSES && CLASSES[spc >> 1].size <= 64);
        // SAFETY: `spc` is a type's `tiny_spc`, made by `span_class`, so
        // below NUM_SPAN_CLASSES.
        let s = sp(unsafe { *self.spans.get_unchecked(spc) });
        let idx = s.next_free_fast()?;
        let elemsize = s.elemsize();
        let addr = s.base() + idx * elemsize;
        if s.needzero.load(Relaxed) {
            // SAFETY: slot `idx` (at most 64 bytes) of a span this cache
            // owns, free until now.
            unsafe { zero_small(addr, elemsize) };
        }
        if spc & 1 == 0 {
            // A slot of at most 64 bytes covers at most 8 heap words, so its
            // bits lie in one bitmap word or straddle two: a 24-byte slot at
            // span offset 504 starts at bit 63 of one word and ends in the
            // next (slots are packed from the span base, and only sizes that
            // divide 512 keep clear of the boundaries).
            let w0 = (addr - heap.arena.base) / 8;
            let off = w0 % 64;
            let n = elemsize / 8;
            // SAFETY: `addr` is a slot of a span in the arena's committed
            // pages, so its word index is in range.
            let word = unsafe { heap.arena.bits_word_unchecked(w0) };
            set_bits(word, off, n, ty.0.bits0);
            if off + n > 64 {
                let first = 64 - off;
                // SAFETY: the slot's last word, `w0 + n - 1`, is in range as
                // above, and `w0 + first` lies between it and `w0`.
                let next = unsafe { heap.arena.bits_word_unchecked(w0 + first) };
                set_bits(next, 0, n - first, ty.0.bits0 >> first);
            }
            if heap.type_record.is_some() {
                heap.record_type(addr, ty, 1);
            }
        }
        Some(addr)
    }

    /// Allocates a zeroed array of `n` objects of type `ty`.
    pub fn alloc_array(
        &mut self,
        heap: &RawHeap,
        ty: Type,
        n: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        let size = ty
            .size()
            .checked_mul(n)
            .filter(|&s| s <= heap.config.arena_size)
            .ok_or(AllocError::TooLarge { requested: n })?;
        if size <= MAX_SMALL_SIZE && ty.align() <= 16 {
            let rounded = if ty.align() == 16 {
                size.next_multiple_of(16)
            } else {
                size
            };
            let spc = span_class(size_to_class(rounded), ty.is_noscan());
            self.alloc_small(heap, spc, ty, n)
        } else {
            self.alloc_large_or_aligned(heap, size, ty, n)
        }
    }

    #[inline(always)]
    fn alloc_small(
        &mut self,
        heap: &RawHeap,
        spc: usize,
        ty: Type,
        count: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        let mut s = sp(self.spans[spc]);
        let idx = match s.next_free_fast() {
            Some(i) => i,
            None => {
                let (ns, i) = self.refill(heap, spc)?;
                s = ns;
                i
            }
        };
        let elemsize = s.elemsize();
        let addr = s.base() + idx * elemsize;
        if s.needzero.load(Relaxed) {
            // SAFETY: slot `idx` of a span this cache owns, free until now.
            unsafe { zero_slot(addr, elemsize) };
        }
        if spc & 1 == 0 {
            heap.write_heap_bits(addr, elemsize, ty, count);
            if heap.type_record.is_some() {
                heap.record_type(addr, ty, count);
            }
        }
        // SAFETY: span bases are non-zero arena addresses.
        Ok(unsafe { NonNull::new_unchecked(addr as *mut u8) })
    }

    #[cold]
    fn refill(&mut self, heap: &RawHeap, spc: usize) -> Result<(&'static Span, usize), AllocError> {
        let cur = self.spans[spc];
        if !std::ptr::eq(cur, &EMPTY_SPAN) {
            if let Some(i) = sp(cur).next_free() {
                return Ok((sp(cur), i));
            }
            heap.uncache_span(cur);
            self.spans[spc] = &EMPTY_SPAN as *const Span as *mut Span;
        }
        let s = heap
            .cache_span(spc)
            .map_err(|_| AllocError::HeapExhausted {
                requested: CLASSES[spc >> 1].size as usize,
                limit: heap.config.effective_heap_limit(),
            })?;
        let span = sp(s);
        heap.allocated.fetch_add(
            (span.nelems() - span.alloc_count.load(Relaxed) as usize) * span.elemsize(),
            Relaxed,
        );
        self.spans[spc] = s;
        let i = span.next_free().expect("a cached span has a free slot");
        Ok((span, i))
    }

    #[cold]
    fn alloc_large_or_aligned(
        &mut self,
        heap: &RawHeap,
        size: usize,
        ty: Type,
        count: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        let _ = count;
        let base = heap.alloc_large(size.max(1), ty)?;
        // SAFETY: span bases are non-zero arena addresses.
        Ok(unsafe { NonNull::new_unchecked(base as *mut u8) })
    }

    /// Returns every cached span to the central lists (before a collection,
    /// and when the cache's thread detaches). Allocates nothing.
    pub fn flush(&mut self, heap: &RawHeap) {
        for slot in self.spans.iter_mut() {
            if !std::ptr::eq(*slot, &EMPTY_SPAN) {
                heap.uncache_span(*slot);
                *slot = &EMPTY_SPAN as *const Span as *mut Span;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_bits_across_words() {
        let b = [0xF000_0000_0000_000Fu64, 0x3];
        assert_eq!(extract_bits(&b, 0, 4), 0xF);
        assert_eq!(extract_bits(&b, 60, 6), 0b11_1111);
        assert_eq!(extract_bits(&b, 62, 4), 0b1111);
        assert_eq!(extract_bits(&b, 64, 64), 0x3);
        assert_eq!(extract_bits(&b, 200, 10), 0);
    }
}
