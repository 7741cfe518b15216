//! Central lists: per span class, the spans no thread cache holds, split
//! into partial and full, swept and unswept (Go's `mcentral`); how a cache
//! takes a span with free slots and gives it back.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::heap::{lock, span_ref, RawHeap};
use crate::pageheap::Exhausted;
use crate::sizeclass::CLASSES;
use crate::span::{Span, BITMAP_WORDS, IN_USE};

/// Central lists of one span class: partial and full, swept and unswept.
/// Which index is "swept" flips every collection (`sweepgen / 2 % 2`).
pub(crate) struct Central {
    pub(crate) partial: [*mut Span; 2],
    pub(crate) full: [*mut Span; 2],
    /// Generational heaps: swept spans whose every slot holds an old object.
    /// Nothing can be allocated in them and a minor collection frees nothing
    /// in them, so they skip sweeping until the next full collection, which
    /// puts them back on `full` (see [`RawHeap::unpark_old`]).
    pub(crate) old: *mut Span,
}

// SAFETY: span pointers point into the page heap's pool (live as long as the
// heap) and are only followed under the owning mutex.
unsafe impl Send for Central {}

pub(crate) fn link_next(s: *mut Span) -> &'static mut *mut Span {
    // SAFETY: the caller holds the lock of the list `s` is (being put) on,
    // which owns its links.
    unsafe { &mut (*(*s).link.get()).next }
}

pub(crate) fn push(head: &mut *mut Span, s: *mut Span) {
    *link_next(s) = *head;
    *head = s;
}

pub(crate) fn pop(head: &mut *mut Span) -> Option<*mut Span> {
    let s = *head;
    if s.is_null() {
        return None;
    }
    *head = *link_next(s);
    Some(s)
}

impl RawHeap {
    /// Takes a span with free slots for span class `spc`: from the swept
    /// partial list, else by sweeping unswept spans, else a new span.
    pub(crate) fn cache_span(&self, spc: usize) -> Result<*mut Span, Exhausted> {
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
            if span_ref(s).has_free() {
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
        let span = span_ref(s);
        span.spc.store(spc as u32, Relaxed);
        span.elemsize.store(class.size as usize, Relaxed);
        span.nelems.store(class.nelems, Relaxed);
        span.div_mul.store(class.div_mul, Relaxed);
        self.init_span_bits(span, 0);
        span.sweepgen.store(sg, Relaxed);
        span.state.store(IN_USE, Release);
        Ok(s)
    }

    pub(crate) fn init_span_bits(&self, span: &Span, freeindex: u32) {
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
    pub(crate) fn put_full(&self, c: &mut Central, s: *mut Span, sw: usize) {
        if self.config.generational {
            span_ref(s).old.store(true, Relaxed);
            push(&mut c.old, s);
        } else {
            push(&mut c.full[sw], s);
        }
    }

    /// Before a full collection of a generational heap (sweeping finished,
    /// world stopped): puts every span parked on an old list back on the
    /// swept full lists, marked swept at the current generation, so the flip
    /// at the end of the collection queues it for sweeping like any other.
    pub(crate) fn unpark_old(&self) {
        let sg = self.sweepgen.load(Acquire);
        let sw = Self::swept_index(sg);
        let unpark = |s: *mut Span| {
            let span = span_ref(s);
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
    pub(crate) fn uncache_span(&self, s: *mut Span) {
        let span = span_ref(s);
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
}
