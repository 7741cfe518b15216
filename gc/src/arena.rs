//! The arena: one reserved range of address space, cut into 8 KiB pages,
//! plus two side tables indexed by page and by word.
//!
//! The reservation is a memmap2 anonymous mapping with `MAP_NORESERVE`: on
//! Linux, untouched pages of such a mapping cost neither memory nor swap
//! reservation, so reserving tens of GiB is free and "committing" a page is
//! simply touching it. Decommitting is `MADV_DONTNEED`, after which the page
//! reads as zero again. memmap2 cannot reserve with `PROT_NONE`; a read-write
//! reservation is what Linux overcommit makes acceptable (mmtk-core #257).
//!
//! Side tables, reserved the same way:
//! - the *page table*: one span pointer per page, so any address finds its
//!   span in O(1) (`spans[(addr - base) >> 13]`);
//! - the *heap bits*: one bit per 8-byte word of the arena, set where a word
//!   of an allocated object holds a heap reference (Go's heap bitmap). 1/64 of
//!   the arena, touched only where objects with pointers live.
//! - the *card table*: one byte per 512-byte card of the arena, set by the
//!   write barrier when a reference is stored into the card (generational
//!   mode reads and clears it; see `mark/marker.rs`). 1/512 of the arena.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};

use memmap2::{MmapMut, MmapOptions};

use crate::sizeclass::{PAGE_SHIFT, PAGE_SIZE};
use crate::span::Span;

/// log2 of the card size: 512 bytes, 64 words, one heap-bits word.
pub(crate) const CARD_SHIFT: usize = 9;

/// Reserved memory for the heap and its side tables.
pub(crate) struct Arena {
    _map: MmapMut,
    _page_table: MmapMut,
    _heap_bits: MmapMut,
    cards: MmapMut,
    /// Room for every span structure the page heap can ever need (each one
    /// covers at least one page of its own), reserved like the rest so that
    /// making a span never calls the system allocator.
    span_structs: MmapMut,
    /// First byte of the first page (8 KiB aligned).
    pub base: usize,
    /// Number of pages.
    pub npages: usize,
    spans: *const AtomicPtr<Span>,
    bits: *const AtomicU64,
}

// SAFETY: the raw pointers point into the mappings this struct owns, which
// live as long as it does; all access through them is atomic.
unsafe impl Send for Arena {}
// SAFETY: as above.
unsafe impl Sync for Arena {}

fn reserve(bytes: usize) -> std::io::Result<MmapMut> {
    MmapOptions::new().len(bytes).no_reserve_swap().map_anon()
}

impl Arena {
    /// Reserves `bytes` (a multiple of the page size).
    pub fn new(bytes: usize) -> std::io::Result<Arena> {
        let npages = bytes / PAGE_SIZE;
        let map = reserve(bytes + PAGE_SIZE)?;
        let base = (map.as_ptr() as usize).next_multiple_of(PAGE_SIZE);
        let page_table = reserve(npages * std::mem::size_of::<AtomicPtr<Span>>())?;
        let heap_bits = reserve((bytes / 8).div_ceil(64) * 8)?;
        let span_structs = reserve((npages + 1) * std::mem::size_of::<Span>())?;
        let cards = reserve((bytes >> CARD_SHIFT).next_multiple_of(8))?;
        Ok(Arena {
            cards,
            spans: page_table.as_ptr() as *const AtomicPtr<Span>,
            bits: heap_bits.as_ptr() as *const AtomicU64,
            _map: map,
            _page_table: page_table,
            _heap_bits: heap_bits,
            span_structs,
            base,
            npages,
        })
    }

    /// The reserved span structures: their start and how many fit. Untouched
    /// slots are zero pages; the page heap writes each before first use.
    pub fn span_struct_region(&self) -> (*mut Span, usize) {
        (self.span_structs.as_ptr() as *mut Span, self.npages + 1)
    }

    /// One past the last byte.
    #[inline(always)]
    pub fn end(&self) -> usize {
        self.base + (self.npages << PAGE_SHIFT)
    }

    /// Whether `addr` lies in the arena.
    #[inline(always)]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base) < self.npages << PAGE_SHIFT
    }

    /// Page index of an address inside the arena.
    #[inline(always)]
    pub fn page_of(&self, addr: usize) -> usize {
        (addr - self.base) >> PAGE_SHIFT
    }

    /// Address of page `p`.
    #[inline(always)]
    pub fn page_addr(&self, p: usize) -> usize {
        self.base + (p << PAGE_SHIFT)
    }

    /// The page-table entry for page `p` (`p < npages`).
    #[inline(always)]
    pub fn span_slot(&self, p: usize) -> &AtomicPtr<Span> {
        assert!(p < self.npages);
        // SAFETY: `p < npages` and the table holds `npages` entries; zeroed
        // memory is a valid null AtomicPtr.
        unsafe { &*self.spans.add(p) }
    }

    /// The span recorded for the page holding `addr`, or null. The caller
    /// validates the span (state, range) before trusting it.
    #[inline(always)]
    pub fn span_of(&self, addr: usize) -> *mut Span {
        if !self.contains(addr) {
            return std::ptr::null_mut();
        }
        // SAFETY: contains() bounds the page index.
        unsafe { &*self.spans.add(self.page_of(addr)) }.load(Ordering::Acquire)
    }

    /// The heap-bits word covering arena word index `w` (a word is 8 bytes).
    #[inline(always)]
    pub fn bits_word(&self, w: usize) -> &AtomicU64 {
        assert!(w < self.npages * (PAGE_SIZE / 8));
        // SAFETY: the bitmap has one bit per arena word, bounds checked above.
        unsafe { &*self.bits.add(w / 64) }
    }

    /// [`Arena::bits_word`] without the bounds check, for the allocation
    /// fast path (whose panic path would cost its caller a stack frame).
    ///
    /// # Safety
    /// `w` must be below `npages * PAGE_SIZE / 8`: the word index of an
    /// address inside the arena's committed pages.
    #[inline(always)]
    pub unsafe fn bits_word_unchecked(&self, w: usize) -> &AtomicU64 {
        debug_assert!(w < self.npages * (PAGE_SIZE / 8));
        // SAFETY: the bitmap has one bit per arena word; caller contract.
        unsafe { &*self.bits.add(w / 64) }
    }

    /// Marks the card holding `addr` dirty, if `addr` lies in the arena
    /// (the write barrier; anything else is ignored).
    #[inline(always)]
    pub fn dirty_card(&self, addr: usize) {
        let off = addr.wrapping_sub(self.base);
        if off < self.npages << PAGE_SHIFT {
            // SAFETY: `off` is inside the arena, and the card table has one
            // byte per card of it; zeroed memory is a valid AtomicU8.
            let card = unsafe { &*(self.cards.as_ptr() as *const AtomicU8).add(off >> CARD_SHIFT) };
            card.store(1, Ordering::Relaxed);
        }
    }

    /// The card table as words, each covering eight cards, for the first
    /// `pages` pages (`pages <= npages`).
    pub fn card_words(&self, pages: usize) -> &[AtomicU64] {
        assert!(pages <= self.npages);
        let n = (pages << PAGE_SHIFT >> CARD_SHIFT).div_ceil(8);
        // SAFETY: the table holds `npages << PAGE_SHIFT >> CARD_SHIFT` bytes
        // rounded up to whole words, and the mapping is page aligned; zeroed
        // memory is a valid AtomicU64. Byte and word accesses to the same
        // cards never race: the barrier writes bytes only while no collector
        // reads words (mutators are stopped or own the heap alone).
        unsafe { std::slice::from_raw_parts(self.cards.as_ptr() as *const AtomicU64, n) }
    }

    /// Decommits `[addr, addr + len)`: the pages read as zero afterwards and
    /// stop counting towards resident memory.
    pub fn decommit(&self, addr: usize, len: usize) {
        assert!(self.contains(addr) && addr + len <= self.end());
        let off = addr - self._map.as_ptr() as usize;
        // SAFETY: the range lies inside our own mapping (asserted above) and
        // holds no live objects: the caller decommits only free spans, and no
        // reference into a free span is ever handed out.
        let r = unsafe {
            self._map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, off, len)
        };
        debug_assert!(r.is_ok(), "madvise(DONTNEED) failed: {r:?}");
    }
}
