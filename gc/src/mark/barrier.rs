//! The deletion barrier of concurrent marking (Yuasa's snapshot at the
//! beginning), and allocating black.
//!
//! While a cycle marks concurrently (`RawHeap::phase` is `MARK`), every
//! store of a reference into a heap object *shades* the reference it
//! overwrites: marks it and queues it for scanning. Every object reachable
//! when the cycle took its roots is then marked, however the mutators
//! rewire the heap meanwhile: a path to it can only be cut by overwriting
//! one of its references, which shades the object behind it. Objects
//! allocated while marking are live (*black*): a cache that takes a span
//! records where allocation resumed (`Span::mark_start`), and the second
//! stop marks every slot allocated since, without scanning it; large
//! objects are marked as they are made. Stacks and registers are not
//! covered by the barrier: they are scanned at the first stop, and again
//! at the second (see below).
//!
//! ## The store sequence, and preemption
//!
//! A store runs `old = slot.swap(new)`, then (after a compiler fence) reads
//! the phase, and shades `old` if marking. The swap, rather than a load and
//! a store, matters when several threads store into one field at once:
//! each then shades exactly the value its own store replaced, so the value
//! that was there when the roots were taken is shaded by whichever store
//! replaced it (with a load and a store, two threads can both read `x`,
//! both shade `x`, and the `y` the first stored, which may be the
//! snapshot's value, is lost unshaded).
//!
//! The sequence may be interrupted anywhere by the preemption signal, and
//! is still sound, without a no-preempt region on the fast path:
//!
//! - stopped by the cycle's *first* stop after the swap and before the
//!   phase check (so it will read the phase as marking, or as off if it
//!   read it before): `old` is live in its registers or its frame, which
//!   that stop scans conservatively, so `old` is marked anyway;
//! - stopped by the *second* stop at the same place: `old` is in its
//!   registers, and the second stop scans every thread's roots again (its
//!   registers, stack and handles; a stop's cost, not a mark's) before it
//!   finishes the mark; a goroutine the signal *switched out* at that
//!   place (its time slice over) is parked, and a parked goroutine's stack
//!   is not read again by the second stop when its scheduler defers: the
//!   scheduler scans it as it switches it out instead (see `stacks`);
//! - the shading itself (mark the object, queue it) runs in a no-preempt
//!   region (the thread's own, entered through its mutator's attachment),
//!   so no stop sees an object marked but not yet queued, whose references
//!   would then never be scanned.
//!
//! A thread that is not plainly running on this heap's registry (not
//! attached to it, or inside a safe region) is not stopped by it and its
//! registers are not scanned: its whole store runs under `outside_stops`.
//! `Member::set(None)` has no mutator to say which heap the field is in, so
//! it finds the heap by address among the concurrent heaps, and takes that
//! path too.
//!
//! When no heap has concurrent marking, a store is a plain release store
//! after one load and branch on `CONCURRENT_HEAPS`.

use std::sync::atomic::Ordering::{AcqRel, Relaxed, Release, SeqCst};
use std::sync::atomic::{compiler_fence, AtomicUsize};
use std::sync::{Arc, Mutex};

use pardon_preempt::Attached;

use crate::collector::Collector;
use crate::heap::{lock, RawHeap};

/// Entries of `RawHeap::new_spans` the early pass looks at under one hold
/// of the list's lock (`RawHeap::mark_new_objects_early`).
const EARLY_BATCH: usize = 64;

/// `RawHeap::phase`: no cycle is marking.
pub(crate) const OFF: u32 = 0;
/// `RawHeap::phase`: a cycle is marking concurrently; barriers shade and
/// caches record new spans.
pub(crate) const MARK: u32 = 1;

/// Heaps with concurrent marking ever created in this process (never
/// lowered): zero keeps every store plain.
static CONCURRENT_HEAPS: AtomicUsize = AtomicUsize::new(0);

/// The concurrent heaps, by arena range, for stores that have no mutator
/// at hand. Pruned of dropped heaps as it is searched.
static HEAPS: Mutex<Vec<(usize, usize, std::sync::Weak<Collector>)>> = Mutex::new(Vec::new());

/// Records a new heap with concurrent marking.
pub(crate) fn register(col: &Arc<Collector>) {
    let a = &col.raw.arena;
    let size = a.npages << crate::sizeclass::PAGE_SHIFT;
    lock(&HEAPS).push((a.base, a.base + size, Arc::downgrade(col)));
    CONCURRENT_HEAPS.fetch_add(1, SeqCst);
}

/// Stores `new` into the reference field `slot` of an object of an unknown
/// heap (`Member::set(None)`), running the barrier if the heap marks
/// concurrently.
#[inline(always)]
pub(crate) fn store_anywhere(slot: &AtomicUsize, new: usize) {
    if CONCURRENT_HEAPS.load(Relaxed) == 0 {
        slot.store(new, Release);
    } else {
        store_anywhere_slow(slot, new);
    }
}

#[cold]
#[inline(never)]
fn store_anywhere_slow(slot: &AtomicUsize, new: usize) {
    let at = slot as *const AtomicUsize as usize;
    let col = {
        let mut heaps = lock(&HEAPS);
        heaps.retain(|(_, _, w)| w.strong_count() > 0);
        heaps
            .iter()
            .find(|(lo, hi, _)| (*lo..*hi).contains(&at))
            .and_then(|(_, _, w)| w.upgrade())
    };
    match col {
        Some(col) => col.store_ref_excluding_stops(slot, new),
        None => slot.store(new, Release),
    }
}

impl Collector {
    /// Stores `new` into `slot`, a reference field of an object of this
    /// heap, with the barrier when it marks concurrently (see the module
    /// comment). `here` is the calling thread's attachment to this heap's
    /// registry (its mutator's): asked, on a concurrent heap only, whether
    /// the thread is plainly running (not in a safe region).
    #[inline(always)]
    pub(crate) fn store_ref(&self, here: &Attached, slot: &AtomicUsize, new: usize) {
        if !self.raw.config.concurrent {
            slot.store(new, Release);
            return;
        }
        if !here.is_running() {
            return self.store_ref_excluding_stops(slot, new);
        }
        let old = slot.swap(new, AcqRel);
        // The phase is read after the swap, in program order (see the
        // module comment: `old` must be in hand whenever a stop can see
        // the phase change).
        compiler_fence(SeqCst);
        if self.raw.phase.load(Relaxed) != OFF {
            self.shade_running(here, old);
        }
    }

    /// Shades `v` for a running thread of this heap, `here` its
    /// attachment, with no stop in the middle: in a no-preempt region of
    /// its own record, entered directly (what `outside_stops` does for
    /// such a thread, once it has looked the thread up: over a third of
    /// the shading's time went to that look-up).
    #[cold]
    #[inline(never)]
    fn shade_running(&self, here: &Attached, v: usize) {
        /// Leaves the region however the shading ends (it does not
        /// unwind, but the region must not outlive it if it did).
        struct Region<'a>(&'a Attached);
        impl Drop for Region<'_> {
            fn drop(&mut self) {
                // At the outermost, parks here if a stop asked meanwhile.
                self.0.exit_no_preempt();
            }
        }
        here.enter_no_preempt();
        let _region = Region(here);
        if self.raw.phase.load(Relaxed) != OFF {
            self.raw.shade(v);
        }
    }

    /// The whole store sequence with no stop overlapping it: for threads
    /// the stops do not see.
    #[cold]
    #[inline(never)]
    pub(crate) fn store_ref_excluding_stops(&self, slot: &AtomicUsize, new: usize) {
        self.registry.outside_stops(|| {
            let old = slot.swap(new, AcqRel);
            if self.raw.phase.load(Relaxed) != OFF {
                self.raw.shade(old);
            }
        })
    }

    /// Shades `v` (see [`RawHeap::shade`]) with no stop in the middle.
    #[cold]
    #[inline(never)]
    pub(crate) fn shade_excluding_stops(&self, v: usize) {
        self.registry.outside_stops(|| {
            if self.raw.phase.load(Relaxed) != OFF {
                self.raw.shade(v);
            }
        })
    }
}

impl RawHeap {
    /// Marks the object `v` points into, if any, and queues it for
    /// scanning unless it holds no references. Mutators, while marking,
    /// with no stop overlapping (the marking coordinator takes the queue
    /// at the second stop).
    pub(crate) fn shade(&self, v: usize) {
        let Some((base, span, idx)) = self.find(v) else {
            return;
        };
        if span.try_mark(idx) {
            self.shaded_bytes.fetch_add(span.elemsize(), Relaxed);
            if !span.noscan() {
                lock(&self.shaded).push(base);
            }
        }
    }

    /// A cache took `span` while marking, and allocates from slot `start`
    /// on: records the span once per cycle, so that the second stop marks
    /// what was allocated in it (allocating black). In the cache's refill,
    /// inside a no-preempt region.
    pub(crate) fn note_new_span(&self, span: &crate::span::Span, start: usize) {
        let epoch = self.mark_epoch.load(Relaxed);
        if span.mark_epoch.load(Relaxed) != epoch {
            span.mark_epoch.store(epoch, Relaxed);
            span.mark_start.store(start as u32, Relaxed);
            let mut spans = lock(&self.new_spans);
            // Room reserved for every span of the arena (see `new_spans`):
            // this push never reallocates.
            debug_assert!(spans.len() < spans.capacity());
            spans.push(span as *const crate::span::Span as usize);
        }
    }

    /// Marks, in a span a cache took while marking, every slot allocated
    /// since (from `mark_start` to `freeindex`) that was free when the
    /// cycle began; returns the bytes it marked. A word of 64 slots at a
    /// time: the pauses must not grow with what is allocated while marking
    /// (binary-trees allocates millions of objects). A slot with its alloc
    /// bit set holds an object that survived the last cycle (allocation
    /// stepped over it), which the mark must scan, so it is left alone.
    fn mark_new_in(span: &crate::span::Span) -> usize {
        let from = span.mark_start.load(Relaxed) as usize;
        let to = (span.freeindex.load(Relaxed) as usize).min(span.nelems());
        let mut bytes = 0;
        let mut idx = from;
        while idx < to {
            let w = idx / 64;
            let lo = idx % 64;
            let hi = (to - w * 64).min(64);
            let range = if hi - lo == 64 {
                u64::MAX
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            let new = range & !span.alloc_bits[w].load(Relaxed);
            let before = span.mark_bits[w].fetch_or(new, Relaxed);
            bytes += (new & !before).count_ones() as usize * span.elemsize();
            idx = (w + 1) * 64;
        }
        bytes
    }

    /// While marking, world running: marks the new objects of every
    /// recorded span that is full (no slot left to allocate from, so its
    /// `freeindex` is final for this cycle) and forgets it, so the second
    /// stop has only the spans still being allocated from. Returns the
    /// bytes marked. Takes the list's lock outside stops (see
    /// `RawHeap::new_spans`), for `EARLY_BATCH` entries at a time, and
    /// marks the full spans it took out of the list after letting the lock
    /// go: mutators push to the list inside no-preempt regions, and one
    /// that waits there holds off every stop until it has the lock and
    /// runs again. (With the whole pass under the lock, thousands of spans
    /// a pass while mutators allocate flat out, they slept on it 121 times
    /// in 8 s of `pause --churn` at 100 MiB, 2-4 times since; a thread
    /// woken onto an idle CPU of this VM sometimes runs only a scheduler
    /// tick later.) A full span taken out is this pass's alone: it is
    /// recorded once a cycle, and only the second stop reads the list
    /// otherwise.
    pub(crate) fn mark_new_objects_early(&self, registry: &pardon_preempt::Registry) -> usize {
        registry.outside_stops(|| {
            let mut bytes = 0;
            let mut next = 0;
            loop {
                let mut full = [0usize; EARLY_BATCH];
                let mut taken = 0;
                let more = {
                    let mut spans = lock(&self.new_spans);
                    let mut looked = 0;
                    while next < spans.len() && looked < EARLY_BATCH {
                        looked += 1;
                        let span = crate::heap::span_ref(spans[next] as *mut crate::span::Span);
                        if span.freeindex.load(Relaxed) as usize >= span.nelems() {
                            // The last entry moves to `next`: looked at next.
                            full[taken] = spans.swap_remove(next);
                            taken += 1;
                        } else {
                            next += 1;
                        }
                    }
                    next < spans.len()
                };
                for &s in &full[..taken] {
                    bytes += Self::mark_new_in(crate::heap::span_ref(s as *mut crate::span::Span));
                }
                if !more {
                    return bytes;
                }
            }
        })
    }

    /// The second stop: marks every slot allocated while marking in the
    /// spans caches took meanwhile and that `mark_new_objects_early` has not
    /// done (black: not scanned). Returns the bytes marked. World stopped,
    /// caches flushed.
    pub(crate) fn mark_new_objects(&self) -> usize {
        let mut spans = lock(&self.new_spans);
        let mut bytes = 0;
        for &s in spans.iter() {
            bytes += Self::mark_new_in(crate::heap::span_ref(s as *mut crate::span::Span));
        }
        spans.clear();
        bytes
    }
}
