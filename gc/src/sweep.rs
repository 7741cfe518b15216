//! Sweeping: a span's alloc bits take its mark bits after a collection,
//! lazily, span by span (Go's `mgcsweep.go`), under the sweepgen protocol;
//! and scavenging free pages.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::central::{pop, push};
use crate::heap::{lock, span_ref, RawHeap, POISON};
use crate::sizeclass::NUM_SPAN_CLASSES;
use crate::span::{Span, MANUAL};

/// The outcome of sweeping one span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Swept {
    pub freed_objects: usize,
    pub freed_bytes: usize,
    pub span_freed: bool,
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

impl RawHeap {
    /// Sweeps span `s`, which the caller has taken off an unswept list. The
    /// alloc bits take the mark bits; a marked object in a free slot (a
    /// zombie) panics with a diagnostic; in verify mode freed slots are
    /// poisoned; a span left empty goes back to the page heap. Allocates
    /// nothing.
    ///
    /// (Tried, thirteenth session: a refill keeping an empty span of its
    /// class rather than freeing it and allocating another. Mutators slept
    /// on the page heap's lock 20 times less and churned 8-13 % faster,
    /// but `pause --churn` runs had a pause p99 over 1.5 ms in 7 of 7
    /// against 3 of 7: see docs/STATUS.md.)
    pub(crate) fn sweep_span(&self, s: *mut Span, sg: u32) -> Swept {
        let span = span_ref(s);
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
                    if span_ref(s).has_free() {
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
                    span_ref(s).old.store(true, Relaxed);
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
}
