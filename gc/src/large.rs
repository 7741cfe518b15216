//! Large objects: one span each, straight from the page heap.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::alloc_error::AllocError;
use crate::central::push;
use crate::heap::{lock, span_ref, RawHeap};
use crate::pageheap::Exhausted;
use crate::sizeclass::{span_class, PAGE_SIZE};
use crate::span::IN_USE;
use crate::types::Type;

impl RawHeap {
    pub(crate) fn alloc_large(&self, size: usize, ty: Type) -> Result<usize, AllocError> {
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
        let span = span_ref(s);
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
        if self.phase.load(Relaxed) != crate::mark::barrier::OFF {
            // Allocated black while a cycle marks (see `barrier`).
            span.try_mark(0);
            self.shaded_bytes.fetch_add(npages * PAGE_SIZE, Relaxed);
        }
        span.state.store(IN_USE, Release);
        push(&mut lock(&self.large)[Self::swept_index(sg)], s);
        Ok(base)
    }
}
