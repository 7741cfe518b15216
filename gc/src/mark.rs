//! Marking: a gray stack in its own mapping, precise scanning of heap objects
//! from their heap bits, and overflow handled by rescanning the heap.
//!
//! A root word — precise or conservative — goes through the exact lookup
//! ([`RawHeap::find`]): only the base of an allocated object is ever marked,
//! so a stale or random word can neither mark a free slot (a zombie) nor crash.
//! Precise roots are checked the same way: it costs a few nanoseconds and
//! makes a wrong map a leak instead of a corruption.
//!
//! The gray stack lives in a `MAP_NORESERVE` mapping, so marking never calls
//! the system allocator (a mutator may be stopped inside malloc). If it fills,
//! the object is still marked but not pushed, and the stack records the
//! overflow; after draining, the marker walks every in-use scan span and
//! rescans its marked objects, pushing whatever they reach that is unmarked,
//! until a pass ends without overflow. Slow, but no work is lost.

use std::sync::MutexGuard;

use memmap2::{MmapMut, MmapOptions};

use crate::heap::RawHeap;
use crate::span::Span;

pub(crate) struct GrayStack {
    map: MmapMut,
    cap: usize,
    len: usize,
    overflowed: bool,
}

impl GrayStack {
    pub fn new(cap: usize) -> std::io::Result<GrayStack> {
        let map = MmapOptions::new()
            .len(cap * 8)
            .no_reserve_swap()
            .map_anon()?;
        Ok(GrayStack {
            map,
            cap,
            len: 0,
            overflowed: false,
        })
    }

    #[inline(always)]
    fn slots(&mut self) -> *mut usize {
        self.map.as_mut_ptr() as *mut usize
    }

    #[inline(always)]
    fn push(&mut self, v: usize) {
        if self.len == self.cap {
            self.overflowed = true;
            return;
        }
        // SAFETY: `len < cap` and the mapping holds `cap` words.
        unsafe { *self.slots().add(self.len) = v };
        self.len += 1;
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: `len < cap` after the decrement.
        Some(unsafe { *self.slots().add(self.len) })
    }
}

/// Figures from one mark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MarkStats {
    /// Objects marked.
    pub objects: usize,
    /// Bytes of marked objects (slot sizes).
    pub bytes: usize,
    /// Root words that hit an object (of those offered).
    pub root_hits: usize,
    /// Root words offered.
    pub root_words: usize,
    /// Heap rescans caused by gray-stack overflow.
    pub overflow_rescans: usize,
}

/// Marks from roots. Obtain one with [`RawHeap::marker`]; offer root words,
/// then [`Marker::finish`].
pub struct Marker<'h> {
    heap: &'h RawHeap,
    gray: MutexGuard<'h, GrayStack>,
    stats: MarkStats,
}

impl RawHeap {
    /// Starts a mark. The caller must have stopped every mutator (or own the
    /// heap alone), flushed their caches and finished sweeping.
    pub fn marker(&self) -> Marker<'_> {
        let mut gray = crate::heap::lock(&self.gray);
        gray.len = 0;
        gray.overflowed = false;
        Marker {
            heap: self,
            gray,
            stats: MarkStats::default(),
        }
    }
}

impl Marker<'_> {
    /// Offers one root word (precise or conservative). Returns the base of the
    /// object it keeps alive, if any.
    #[inline]
    pub fn mark_word(&mut self, word: usize) -> Option<usize> {
        self.stats.root_words += 1;
        let hit = self.mark_ref(word);
        if hit.is_some() {
            self.stats.root_hits += 1;
        }
        hit
    }

    /// Marks the object `word` points into; pushes it if it needs scanning.
    #[inline(always)]
    fn mark_ref(&mut self, word: usize) -> Option<usize> {
        let (base, span, idx) = self.heap.find(word)?;
        // One marker at a time (the gray stack's lock makes it so).
        if span.try_mark_single(idx) {
            self.stats.objects += 1;
            self.stats.bytes += span.elemsize();
            if !span.noscan() {
                self.gray.push(base);
            }
        }
        Some(base)
    }

    /// Offers every aligned word of `[lo, hi)` conservatively.
    ///
    /// # Safety
    /// `[lo, hi)` must be readable memory that does not change during the call.
    pub unsafe fn mark_range(&mut self, lo: usize, hi: usize) {
        let mut p = lo.next_multiple_of(8);
        while p + 8 <= hi {
            // SAFETY: caller contract; `p` is aligned and inside the range.
            let w = unsafe { std::ptr::read(p as *const usize) };
            self.mark_word(w);
            p += 8;
        }
    }

    /// Scans one object's reference words.
    #[inline]
    fn scan_object(&mut self, base: usize, span: &Span) {
        let heap = self.heap;
        let nwords = span.elemsize() / 8;
        let w0 = (base - heap.arena.base) / 8;
        let mut i = 0;
        while i < nwords {
            let w = w0 + i;
            let off = w % 64;
            let take = (64 - off).min(nwords - i);
            let mut bits = heap
                .arena
                .bits_word(w)
                .load(std::sync::atomic::Ordering::Relaxed)
                >> off;
            if take < 64 {
                bits &= (1u64 << take) - 1;
            }
            while bits != 0 {
                let k = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                // SAFETY: word `i + k` of an allocated object in our arena.
                let v = unsafe { std::ptr::read((base + (i + k) * 8) as *const usize) };
                self.mark_ref(v);
            }
            i += take;
        }
    }

    /// Scans everything reachable from the gray stack.
    ///
    /// Objects pass through a small FIFO between the gray stack and the
    /// scan, and are prefetched on entering it, so the cache miss on each
    /// object's memory overlaps the scanning of the ones before it (the
    /// prefetch-on-grey scheme of Cher, Hosking and Vijaykumar, ASPLOS 2004).
    pub fn drain(&mut self) {
        const AHEAD: usize = 8;
        let mut ring = [0usize; AHEAD];
        let (mut head, mut len) = (0usize, 0usize);
        loop {
            while len < AHEAD {
                let Some(base) = self.gray.pop() else { break };
                prefetch(base);
                ring[(head + len) % AHEAD] = base;
                len += 1;
            }
            if len == 0 {
                return;
            }
            let base = ring[head];
            head = (head + 1) % AHEAD;
            len -= 1;
            let span = crate::heap::sp(self.heap.arena.span_of(base));
            self.scan_object(base, span);
        }
    }

    /// Drains, recovers from overflow, and returns the figures.
    pub fn finish(mut self) -> MarkStats {
        self.drain();
        while self.gray.overflowed {
            self.gray.overflowed = false;
            self.stats.overflow_rescans += 1;
            let heap = self.heap;
            heap.pages.for_each_in_use(&heap.arena, |span| {
                if span.noscan() {
                    return;
                }
                for idx in 0..span.nelems() {
                    if span.is_marked(idx) {
                        let base = span.base() + idx * span.elemsize();
                        self.scan_object(base, span);
                        self.drain();
                    }
                }
            });
        }
        self.stats
    }
}

/// Hints that the object at `addr` will be read soon.
#[inline(always)]
fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}
