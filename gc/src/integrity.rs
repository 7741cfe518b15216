//! The heap's integrity walk: every invariant of spans, pages and bitmaps,
//! checked from scratch (tests and debugging).

use std::sync::atomic::Ordering::{Acquire, Relaxed};

use crate::heap::{span_ref, RawHeap};
use crate::span::{FREE, IN_USE};

impl RawHeap {
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
            let span = span_ref(s);
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
                        let next = span_ref(self.arena.span_slot(p + n).load(Acquire));
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
}
