//! Thread caches: one current span per span class, no lock on the fast
//! path (Go's `mcache`), and the inlined allocation fast path.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::Relaxed;

use crate::alloc_error::AllocError;
use crate::heap::{span_ref, RawHeap};
use crate::heapbits::set_bits;
use crate::sizeclass::{size_to_class, span_class, CLASSES, MAX_SMALL_SIZE, NUM_SPAN_CLASSES};
use crate::span::Span;
use crate::types::Type;

static EMPTY_SPAN: Span = Span::empty();

/// Zeroes a slot of at most 64 bytes with word stores (no `memset` call).
///
/// # Safety
/// `addr..addr + size` must be a writable slot, `size <= 64` and a
/// multiple of 8.
#[inline(always)]
pub(crate) unsafe fn zero_small(addr: usize, size: usize) {
    let p = addr as *mut u64;
    for i in 0..8 {
        if i * 8 < size {
            // SAFETY: word `i` lies inside the slot (caller contract).
            unsafe { p.add(i).write(0) };
        }
    }
}

/// Zeroes a slot. Small slots get word stores (a `write_bytes` of a size
/// unknown at compile time is a `memset` call).
///
/// # Safety
/// `[addr, addr + size)` must be writable and `addr` 8-byte aligned, `size`
/// a multiple of 8.
#[inline(always)]
pub(crate) unsafe fn zero_slot(addr: usize, size: usize) {
    if size <= 64 {
        // SAFETY: caller contract.
        unsafe { zero_small(addr, size) };
    } else {
        // SAFETY: caller contract.
        unsafe { std::ptr::write_bytes(addr as *mut u8, 0, size) };
    }
}

/// A per-thread allocation cache: one current span per span class, no lock on
/// the fast path. Not `Send`-restricted itself, but each cache must be used
/// by one thread at a time; flush it into the heap before dropping.
///
/// A cache holds one heap's spans at a time: from its first allocation
/// until it is flushed, it is bound to that heap, and using it with
/// another panics, naming the mistake (spans of one heap in another's
/// lists would be handed out as that heap's objects).
pub struct ThreadCache {
    spans: [*mut Span; NUM_SPAN_CLASSES],
    /// The `RawHeap::id` of the heap whose spans it holds, or 0 when it
    /// holds none (new, or flushed).
    owner: u64,
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
            owner: 0,
        }
    }

    /// Binds the cache to `heap` if it holds no spans; panics if it holds
    /// another heap's.
    #[inline(always)]
    fn bind(&mut self, heap: &RawHeap) {
        if self.owner != heap.id {
            self.bind_slow(heap.id);
        }
    }

    #[cold]
    #[inline(never)]
    fn bind_slow(&mut self, id: u64) {
        if self.owner != 0 {
            panic!(
                "ThreadCache used with another heap than the one whose spans it holds \
                 (flush it into that heap first)"
            );
        }
        self.owner = id;
    }

    /// Allocates one zeroed object of type `ty`. Panics if the cache holds
    /// another heap's spans.
    #[inline(always)]
    pub fn alloc(&mut self, heap: &RawHeap, ty: Type) -> Result<NonNull<u8>, AllocError> {
        self.bind(heap);
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
        let s = span_ref(unsafe { *self.spans.get_unchecked(spc) });
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

    /// Allocates a zeroed array of `n` objects of type `ty`. Panics if the
    /// cache holds another heap's spans.
    pub fn alloc_array(
        &mut self,
        heap: &RawHeap,
        ty: Type,
        n: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        self.bind(heap);
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
        let mut s = span_ref(self.spans[spc]);
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
            if let Some(i) = span_ref(cur).next_free() {
                return Ok((span_ref(cur), i));
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
        let span = span_ref(s);
        heap.allocated.fetch_add(
            (span.nelems() - span.alloc_count.load(Relaxed) as usize) * span.elemsize(),
            Relaxed,
        );
        self.spans[spc] = s;
        let i = span.next_free().expect("a cached span has a free slot");
        if heap.phase.load(Relaxed) != crate::mark::barrier::OFF {
            heap.note_new_span(span, i);
        }
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
    /// and when the cache's thread detaches), unbinding the cache. Allocates
    /// nothing. Panics if the cache holds another heap's spans.
    pub fn flush(&mut self, heap: &RawHeap) {
        self.bind(heap);
        for slot in self.spans.iter_mut() {
            if !std::ptr::eq(*slot, &EMPTY_SPAN) {
                heap.uncache_span(*slot);
                *slot = &EMPTY_SPAN as *const Span as *mut Span;
            }
        }
        self.owner = 0;
    }
}
