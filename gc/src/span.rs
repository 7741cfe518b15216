//! Spans: runs of pages holding objects of one span class.
//!
//! Per span (Go's `mspan`):
//! - `alloc_bits`: one bit per object, set if the object survived the last
//!   sweep. An object is *allocated* iff its index is below `freeindex` or its
//!   alloc bit is set: allocation never writes alloc bits, it only advances
//!   `freeindex`.
//! - `alloc_cache`: 64 inverted alloc bits starting at `freeindex`'s word, so
//!   the next free slot is a trailing-zeros count away.
//! - `mark_bits`: set by marking (atomic fetch-or, so parallel markers may
//!   race). Sweeping makes the mark bits the new alloc bits and clears the
//!   mark bits.
//! - `sweepgen` relative to the heap's `sweepgen` `h`: `h - 2` needs sweeping,
//!   `h - 1` is being swept, `h` is swept. Caches are flushed at every
//!   collection, so Go's "+1/+3: cached" states are not needed here.
//! - `state`: `FREE` (in the page heap), `MANUAL` (being set up or torn down:
//!   the lookup must not trust it), `IN_USE`.
//!
//! Every field a conservative lookup reads is atomic, so a lookup that races
//! with allocation returns a possibly stale answer but never reads a torn or
//! uninitialised value. During a collection the world is stopped and no span
//! is in a transitional state (span setup and sweeping run in no-preempt
//! regions), so the lookup is exact then.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::sizeclass::{MAX_OBJS_PER_SPAN, PAGE_SHIFT};

pub(crate) const BITMAP_WORDS: usize = MAX_OBJS_PER_SPAN / 64;

/// In the page heap.
pub(crate) const FREE: u32 = 0;
/// Being set up or torn down.
pub(crate) const MANUAL: u32 = 1;
/// Holding objects.
pub(crate) const IN_USE: u32 = 2;

/// Span metadata. Lives in a pool owned by the page heap and is never freed
/// while the heap lives, so a stale page-table pointer always points at a
/// valid `Span` (whose `state` and range then reject the address).
pub(crate) struct Span {
    // Who writes each field, and when. A span has one owner at a time: the
    // page heap (under its lock) while `FREE` or being carved (`MANUAL`);
    // then, while `IN_USE`, whichever central list holds it (under that
    // list's lock), the one thread cache it is cached in, or the one sweeper
    // that claimed it by the `sweepgen` CAS. Only the owner writes the
    // fields marked "owner". Anyone may read any field at any time (the
    // conservative lookup does), and trusts what it reads only after an
    // acquire load of `state` finds `IN_USE` and the address in range.
    /// First byte of the span's pages. Page heap, while not `IN_USE`.
    pub base: AtomicUsize,
    /// Number of pages. Page heap, while not `IN_USE`.
    pub npages: AtomicUsize,
    /// `FREE`, `MANUAL` or `IN_USE`. Every change to or from `IN_USE` is a
    /// release store by the owner, after (to) or before (from) the fields
    /// it publishes.
    pub state: AtomicU32,
    /// Span class (size class << 1 | noscan); 0 or 1 for large objects.
    /// Set by the central list (or large-object path) before `IN_USE`,
    /// constant while `IN_USE`; so are `elemsize`, `nelems` and `div_mul`.
    pub spc: AtomicU32,
    /// Bytes per object (the whole span for a large object).
    pub elemsize: AtomicUsize,
    /// Objects the span holds.
    pub nelems: AtomicU32,
    /// The multiplier that turns an offset into an object index
    /// (`sizeclass::div_mul`).
    pub div_mul: AtomicU32,
    /// Owner: the index allocation goes on from; every slot below it is
    /// allocated. Advanced by the thread cache holding the span, reset to 0
    /// by its sweeper.
    pub freeindex: AtomicU32,
    /// Owner: 64 inverted alloc bits from `freeindex`'s word (see the
    /// module comment). Written with `freeindex`.
    pub alloc_cache: AtomicU64,
    /// Owner: objects allocated (alloc bits set plus slots taken since the
    /// sweep). Written with `freeindex`.
    pub alloc_count: AtomicU32,
    /// Sweep state relative to the heap's `sweepgen` (module comment):
    /// raised from `h - 2` to `h - 1` by the CAS that claims the span for
    /// sweeping; stored `h` (release) by the sweeper or by the central list
    /// that sets the span up.
    pub sweepgen: AtomicU32,
    /// Whether the span's memory may hold old data and must be zeroed
    /// before reuse. Page heap and sweeper; read by the allocator.
    pub needzero: AtomicBool,
    /// Generational heaps: parked on an old list, exempt from sweeping until
    /// the next full collection (its `sweepgen` is left behind meanwhile).
    /// Written under the central list's lock, or with the world stopped.
    pub old: AtomicBool,
    /// Objects that survived the last sweep. Written only by the span's
    /// sweeper (it stores the mark bits here) and by the span's setup.
    pub alloc_bits: [AtomicU64; BITMAP_WORDS],
    /// Set by markers with the world stopped (atomic fetch-or: parallel
    /// markers race for a bit, and exactly one wins it); cleared by the
    /// sweeper, or, on a generational heap, left set (sticky) until a full
    /// collection clears them with the world stopped.
    pub mark_bits: [AtomicU64; BITMAP_WORDS],
    /// Page heap, under its lock, while `FREE`: whether the pages are
    /// backed by memory (not returned to the OS by the scavenger).
    pub committed: AtomicBool,
    /// Page heap, under its lock, while `FREE`: the collection count when the
    /// span was freed, for the scavenger's age rule.
    pub free_since_gc: AtomicU64,
    /// Concurrent marking: the slot index a cache resumed allocation from
    /// when it took the span during cycle `mark_epoch`; every slot from
    /// there to `freeindex` is new (allocated black). Written by the cache
    /// that takes the span (the first take of a cycle), read by the
    /// coordinator at the second stop.
    pub mark_start: AtomicU32,
    /// See `mark_start`.
    pub mark_epoch: AtomicU64,
    /// Intrusive list links, owned by whichever list holds the span (under
    /// that list's lock) or by the span pool.
    pub link: UnsafeCell<Links>,
}

#[derive(Clone, Copy)]
pub(crate) struct Links {
    pub next: *mut Span,
    pub prev: *mut Span,
}

// SAFETY: all shared fields are atomics; `link` is only touched by the holder
// of the lock that owns the list the span is on.
unsafe impl Sync for Span {}
// SAFETY: as above.
unsafe impl Send for Span {}

impl Default for Span {
    fn default() -> Self {
        Span::empty()
    }
}

impl Span {
    /// A span with no pages and no objects; also the sentinel every empty
    /// thread-cache slot points at, so the fast path needs no null check.
    pub const fn empty() -> Span {
        Span {
            base: AtomicUsize::new(0),
            npages: AtomicUsize::new(0),
            state: AtomicU32::new(FREE),
            spc: AtomicU32::new(0),
            elemsize: AtomicUsize::new(0),
            nelems: AtomicU32::new(0),
            div_mul: AtomicU32::new(0),
            freeindex: AtomicU32::new(0),
            alloc_cache: AtomicU64::new(0),
            alloc_count: AtomicU32::new(0),
            sweepgen: AtomicU32::new(0),
            needzero: AtomicBool::new(false),
            old: AtomicBool::new(false),
            alloc_bits: [const { AtomicU64::new(0) }; BITMAP_WORDS],
            mark_bits: [const { AtomicU64::new(0) }; BITMAP_WORDS],
            committed: AtomicBool::new(false),
            free_since_gc: AtomicU64::new(0),
            mark_start: AtomicU32::new(0),
            mark_epoch: AtomicU64::new(0),
            link: UnsafeCell::new(Links {
                next: std::ptr::null_mut(),
                prev: std::ptr::null_mut(),
            }),
        }
    }

    #[inline(always)]
    pub fn base(&self) -> usize {
        self.base.load(Relaxed)
    }
    #[inline(always)]
    pub fn npages(&self) -> usize {
        self.npages.load(Relaxed)
    }
    #[inline(always)]
    pub fn bytes(&self) -> usize {
        self.npages() << PAGE_SHIFT
    }
    #[inline(always)]
    pub fn elemsize(&self) -> usize {
        self.elemsize.load(Relaxed)
    }
    #[inline(always)]
    pub fn nelems(&self) -> usize {
        self.nelems.load(Relaxed) as usize
    }
    #[inline(always)]
    pub fn noscan(&self) -> bool {
        self.spc.load(Relaxed) & 1 != 0
    }
    #[inline(always)]
    pub fn is_large(&self) -> bool {
        self.spc.load(Relaxed) >> 1 == 0
    }

    /// Object index of an offset into the span (exact: see `sizeclass`).
    #[inline(always)]
    pub fn obj_index(&self, off: usize) -> usize {
        if self.is_large() {
            0
        } else {
            ((off as u64 * self.div_mul.load(Relaxed) as u64) >> 32) as usize
        }
    }

    /// Whether object `idx` is allocated.
    #[inline(always)]
    pub fn is_allocated(&self, idx: usize) -> bool {
        idx < self.freeindex.load(Relaxed) as usize
            || self.alloc_bits[idx / 64].load(Relaxed) & (1 << (idx % 64)) != 0
    }

    /// Whether object `idx` is marked.
    #[inline(always)]
    pub fn is_marked(&self, idx: usize) -> bool {
        self.mark_bits[idx / 64].load(Relaxed) & (1 << (idx % 64)) != 0
    }

    /// Sets the mark bit of object `idx`; returns whether it was clear. For
    /// the only marking thread: a plain load and store instead of a locked
    /// read-modify-write. Only for marking that runs on one thread
    /// (roots, serial drains, overflow rescans), when no other thread writes
    /// mark bits.
    #[inline(always)]
    pub fn try_mark_single(&self, idx: usize) -> bool {
        let bit = 1u64 << (idx % 64);
        let w = &self.mark_bits[idx / 64];
        let old = w.load(Relaxed);
        if old & bit != 0 {
            return false;
        }
        w.store(old | bit, Relaxed);
        true
    }

    /// Sets the mark bit of object `idx`; returns whether this call set it.
    /// Safe against other markers racing for the same word: a plain load
    /// first (most objects reached again are already marked), then an atomic
    /// fetch-or, so exactly one of two racing markers wins.
    #[inline(always)]
    pub fn try_mark(&self, idx: usize) -> bool {
        let bit = 1u64 << (idx % 64);
        let w = &self.mark_bits[idx / 64];
        if w.load(Relaxed) & bit != 0 {
            return false;
        }
        w.fetch_or(bit, Relaxed) & bit == 0
    }

    /// Refills `alloc_cache` for the 64 objects starting at `whole` (a
    /// multiple of 64).
    #[inline]
    pub fn refill_alloc_cache(&self, whole: usize) {
        let w = if whole / 64 < BITMAP_WORDS {
            self.alloc_bits[whole / 64].load(Relaxed)
        } else {
            u64::MAX
        };
        self.alloc_cache.store(!w, Relaxed);
    }

    /// Go's `nextFreeFast`: the next free slot from the cache word, if the
    /// answer is in it. Owner-only.
    #[inline(always)]
    pub fn next_free_fast(&self) -> Option<usize> {
        let cache = self.alloc_cache.load(Relaxed);
        let bit = cache.trailing_zeros() as usize;
        if bit < 64 {
            let fi = self.freeindex.load(Relaxed) as usize;
            let result = fi + bit;
            if result < self.nelems() {
                let next = result + 1;
                if next.is_multiple_of(64) && next != self.nelems() {
                    return None; // crosses a cache word: slow path refills
                }
                // Two shifts: `bit + 1` is 64 when the last object of a
                // span whose size is a multiple of 64 is taken, and a
                // single shift by 64 overflows.
                self.alloc_cache.store((cache >> bit) >> 1, Relaxed);
                self.freeindex.store(next as u32, Relaxed);
                self.bump_alloc_count();
                return Some(result);
            }
        }
        None
    }

    /// Go's `nextFreeIndex`: the next free slot at or after `freeindex`,
    /// advancing `freeindex` past it, or `None` when the span is full.
    /// Owner-only.
    pub fn next_free(&self) -> Option<usize> {
        let nelems = self.nelems();
        let mut fi = self.freeindex.load(Relaxed) as usize;
        if fi >= nelems {
            return None;
        }
        let mut cache = self.alloc_cache.load(Relaxed);
        let mut bit = cache.trailing_zeros() as usize;
        while bit == 64 {
            // Move to the next cache word.
            fi = (fi + 64) & !63;
            if fi >= nelems {
                self.freeindex.store(nelems as u32, Relaxed);
                return None;
            }
            self.refill_alloc_cache(fi);
            cache = self.alloc_cache.load(Relaxed);
            bit = cache.trailing_zeros() as usize;
        }
        let result = fi + bit;
        if result >= nelems {
            self.freeindex.store(nelems as u32, Relaxed);
            return None;
        }
        let next = result + 1;
        if next.is_multiple_of(64) {
            self.refill_alloc_cache(next);
        } else {
            self.alloc_cache.store(cache >> (bit + 1), Relaxed);
        }
        self.freeindex.store(next as u32, Relaxed);
        self.bump_alloc_count();
        Some(result)
    }

    /// Counts one more allocated object. Only the span's owner (the cache
    /// holding it, or a thread holding its central list's lock) writes the
    /// count, so a plain load and store does: no locked read-modify-write on
    /// the allocation fast path.
    #[inline(always)]
    fn bump_alloc_count(&self) {
        let n = self.alloc_count.load(Relaxed);
        self.alloc_count.store(n + 1, Relaxed);
    }

    /// Whether a free slot remains.
    pub fn has_free(&self) -> bool {
        (self.alloc_count.load(Relaxed) as usize) < self.nelems()
    }

    /// Marked objects.
    pub fn count_marked(&self) -> usize {
        let words = self.nelems().div_ceil(64);
        self.mark_bits[..words]
            .iter()
            .map(|w| w.load(Relaxed).count_ones() as usize)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes every free slot the way the allocator does (fast path, then
    /// the slow one) and returns them in order.
    fn drain(span: &Span) -> Vec<usize> {
        let mut got = Vec::new();
        while let Some(i) = span.next_free_fast().or_else(|| span.next_free()) {
            got.push(i);
            assert!(got.len() <= span.nelems(), "more slots than objects");
        }
        got
    }

    fn span_with(nelems: usize, alloc: &[u64]) -> Span {
        let span = Span::empty();
        span.nelems.store(nelems as u32, Relaxed);
        for (w, &bits) in alloc.iter().enumerate() {
            span.alloc_bits[w].store(bits, Relaxed);
        }
        span.refill_alloc_cache(0);
        span
    }

    /// The free slots of `alloc`, computed the obvious way.
    fn expected(nelems: usize, alloc: &[u64]) -> Vec<usize> {
        (0..nelems)
            .filter(|&i| alloc.get(i / 64).is_none_or(|w| w & (1 << (i % 64)) == 0))
            .collect()
    }

    #[test]
    fn last_slot_when_the_object_count_is_a_multiple_of_64() {
        // Only the very last slot is free: the fast path takes it with
        // `freeindex` aligned and bit 63 set, the case that once shifted a
        // u64 by 64.
        for nelems in [64usize, 128, 512] {
            let mut alloc = vec![u64::MAX; nelems / 64];
            *alloc.last_mut().unwrap() = !(1u64 << 63);
            let span = span_with(nelems, &alloc);
            assert_eq!(drain(&span), vec![nelems - 1]);
        }
    }

    #[test]
    fn drains_exactly_the_free_slots() {
        // Deterministic pseudo-random patterns, dense and sparse, over
        // object counts that are and are not multiples of 64.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for nelems in [1usize, 2, 63, 64, 65, 127, 128, 170, 256, 511, 512, 1024] {
            for round in 0..64 {
                let words = nelems.div_ceil(64);
                let alloc: Vec<u64> = (0..words)
                    .map(|_| match round % 4 {
                        0 => next(),
                        1 => next() | next(),
                        2 => next() & next(),
                        _ => !(1u64 << (next() % 64)),
                    })
                    .collect();
                let span = span_with(nelems, &alloc);
                assert_eq!(
                    drain(&span),
                    expected(nelems, &alloc),
                    "nelems {nelems} alloc {alloc:x?}"
                );
            }
        }
    }
}
