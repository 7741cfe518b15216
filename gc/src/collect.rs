//! A collection of the raw heap, for embedders that own every mutator (or
//! one thread): preparing the mark bits, flipping the sweep generation. The
//! threaded collector (`cycle`) runs the same steps around a stopped world.

use std::sync::atomic::Ordering::{Relaxed, Release};

use crate::cache::ThreadCache;
use crate::heap::{lock, RawHeap};
use crate::mark::{CollectionKind, MarkStats, Marker};
use crate::verify::VerifyError;

impl RawHeap {
    /// Generational mode: clears every in-use span's mark bits, which
    /// sweeping leaves set, before a full mark. Stopped world only.
    pub(crate) fn clear_marks(&self) {
        self.pages.for_each_in_use(&self.arena, |span| {
            for w in &span.mark_bits[..span.nelems().div_ceil(64)] {
                w.store(0, Relaxed);
            }
        });
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
        match self.mark_cycle(kind, &roots, true) {
            Ok((_, st, _)) => st,
            Err(e) => panic!("pardon verify: {e}"),
        }
    }

    /// The heart of every collection, the one both drivers run (this
    /// file's, and the threaded collector's `cycle` around a stopped world),
    /// with every cache flushed and every span swept: prepares the marks for
    /// a collection of `want`, marks from `roots`, verifies in verify mode
    /// (every marked object's heap bits against its recorded type; and, if
    /// `roots` can be replayed, a full re-mark from them compared with the
    /// mark), and flips the sweep generation. Returns the kind that ran, the
    /// mark's figures and the live estimate. A verification failure returns
    /// before the flip, as a `Copy` value: allocation-free, for the stopped
    /// world.
    // A large error on purpose: it is built with the world stopped, where
    // boxing it would call the system allocator (see `missed_path`).
    #[allow(clippy::result_large_err)]
    pub(crate) fn mark_cycle(
        &self,
        want: CollectionKind,
        roots: &impl Fn(&mut Marker<'_>),
        replayable: bool,
    ) -> Result<(CollectionKind, MarkStats, usize), VerifyError> {
        let kind = self.begin_mark(want);
        let mut m = self.marker_for(kind);
        roots(&mut m);
        // Only coordinators (world stopped) and mutators outside stops take
        // this lock (see `finalizer`).
        let mut finalizers = lock(&self.finalizers);
        finalizers.offer_roots(&mut m);
        m.complete();
        // Weak references first, then resurrection (see `weak`).
        let weak_cleared = self.clear_dead_weaks(&m);
        let finalizers_queued = finalizers.queue_unreachable(&mut m);
        let mut st = m.finish();
        st.weak_cleared = weak_cleared;
        st.finalizers_queued = finalizers_queued;
        if self.config.verify {
            // Heap bits against the independent type record first: a lost
            // reference bit makes both marks agree on the wrong answer.
            self.check_layouts().map_err(VerifyError::Layout)?;
            if replayable {
                self.remark_and_compare(roots, &finalizers, kind)
                    .map_err(VerifyError::Remark)?;
            }
            // Every weak word still set must name an object the sweep keeps
            // (after a full collection, as found by the re-mark).
            if let Some(addr) = self.find_dangling_weak() {
                return Err(VerifyError::DanglingWeak(addr));
            }
        }
        drop(finalizers);
        let live = self.flip_sweepgen(kind, st.bytes);
        Ok((kind, st, live))
    }
}
