//! The marker a collection drives: roots offered one word at a time, the
//! remembered set of a minor collection, draining (alone or with the
//! helper team) and the recovery from gray-stack overflow.

use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::gray::GrayStack;
use super::team::MarkTeam;
use super::tracer::Tracer;
use super::{CollectionKind, MarkStats};
use crate::arena::CARD_SHIFT;
use crate::heap::{lock, RawHeap};
use crate::span::IN_USE;

/// Marks from roots. Obtain one with [`RawHeap::marker`]; offer root words,
/// then [`Marker::finish`].
pub struct Marker<'h> {
    heap: &'h RawHeap,
    gray: crate::heap::Locked<'h, GrayStack>,
    stats: MarkStats,
    /// A concurrent mark: mutators set mark bits too (the deletion
    /// barrier), so every mark bit is set with an atomic read-modify-write,
    /// even by a lone marker.
    concurrent: bool,
    /// Verify mode's root probe (see `missed_path`): when non-zero, this
    /// marker marks nothing; it only records, in `probe_hit`, whether a
    /// root word offered to it names the object at this base.
    probe: usize,
    /// Set when a root names `probe`.
    probe_hit: bool,
}

impl RawHeap {
    /// Starts a mark. The caller must have stopped every mutator (or own the
    /// heap alone), flushed their caches and finished sweeping.
    pub fn marker(&self) -> Marker<'_> {
        let mut gray = lock(&self.gray);
        gray.len = 0;
        gray.overflowed = false;
        Marker {
            heap: self,
            gray,
            stats: MarkStats::default(),
            concurrent: false,
            probe: 0,
            probe_hit: false,
        }
    }

    /// A marker that marks nothing and only watches the roots offered to
    /// it for the object at `base` (see [`Marker::probe_hit`]). World
    /// stopped; allocates nothing.
    pub(crate) fn root_probe(&self, base: usize) -> Marker<'_> {
        let mut m = self.marker();
        m.probe = base;
        m
    }

    /// Starts a concurrent mark (see `concurrent`): as [`RawHeap::marker`],
    /// with every mark bit set atomically, since mutators shade objects
    /// while it runs.
    pub(crate) fn marker_concurrent(&self) -> Marker<'_> {
        let mut m = self.marker();
        m.concurrent = true;
        m
    }

    /// Starts a mark of `kind` (see [`CollectionKind`]): for `Minor`, first
    /// scans the old objects on dirty cards, clearing the cards. The caller
    /// must have stopped every mutator (or own the heap alone), flushed their
    /// caches and finished sweeping, and, for a full collection of a
    /// generational heap, cleared the sticky marks
    /// ([`RawHeap::collect_kind_with`] does all of it).
    pub fn marker_for(&self, kind: CollectionKind) -> Marker<'_> {
        let mut m = self.marker();
        if kind == CollectionKind::Minor && self.config.generational {
            m.scan_dirty_cards();
        }
        m
    }

    /// Threads that drain the gray objects (the coordinator included).
    pub fn mark_workers(&self) -> usize {
        self.helpers.workers()
    }
}

impl Marker<'_> {
    fn tracer(&mut self) -> Tracer<'_> {
        Tracer {
            heap: self.heap,
            gray: &mut self.gray,
            objects: 0,
            bytes: 0,
        }
    }

    fn absorb(&mut self, objects: usize, bytes: usize) {
        self.stats.objects += objects;
        self.stats.bytes += bytes;
    }

    /// The remembered set of a minor collection: for every dirty card of an
    /// in-use span with pointers, scans the reference words inside the card
    /// of every old (marked) object overlapping it, and clears the card.
    /// Runs before any root is offered, so "marked" still means "old" (a
    /// young object marked by an earlier card is scanned twice, harmlessly).
    /// An old object that is garbage but shares a card with a written one is
    /// scanned too: what it reaches survives until the next full collection
    /// (a leak, never a corruption: every word goes through the exact lookup).
    fn scan_dirty_cards(&mut self) {
        let heap = self.heap;
        let arena = &heap.arena;
        let words = arena.card_words(heap.pages.stats().used_pages);
        let mut t = self.tracer();
        let mut cards = 0;
        for (wi, w) in words.iter().enumerate() {
            let mut bytes = w.load(Relaxed);
            if bytes == 0 {
                continue;
            }
            w.store(0, Relaxed);
            while bytes != 0 {
                let b = bytes.trailing_zeros() as usize / 8;
                bytes &= !(0xffu64 << (b * 8));
                cards += 1;
                let lo = arena.base + ((wi * 8 + b) << CARD_SHIFT);
                let hi = lo + (1 << CARD_SHIFT);
                let s = arena.span_of(lo);
                if s.is_null() {
                    continue;
                }
                let span = crate::heap::span_ref(s);
                if span.state.load(Acquire) != IN_USE || span.noscan() {
                    continue;
                }
                let (sbase, es) = (span.base(), span.elemsize());
                let end = sbase + span.nelems() * es;
                if lo < sbase || lo >= end {
                    continue;
                }
                let first = span.obj_index(lo - sbase);
                let last = span.obj_index(hi.min(end) - 1 - sbase);
                for idx in first..=last {
                    if !span.is_marked(idx) {
                        continue;
                    }
                    let obase = sbase + idx * es;
                    let from = obase.max(lo);
                    let to = (obase + es).min(hi);
                    t.scan_words::<false>(from, (to - from) / 8);
                }
            }
        }
        let (o, b) = (t.objects, t.bytes);
        self.absorb(o, b);
        self.stats.cards = cards;
    }

    /// Offers one root word (precise or conservative). Returns the base of the
    /// object it keeps alive, if any.
    #[inline]
    pub fn mark_word(&mut self, word: usize) -> Option<usize> {
        self.stats.root_words += 1;
        // Roots are offered by the coordinator alone, before helpers start.
        let (base, span, idx) = self.heap.find(word)?;
        if self.probe != 0 {
            self.probe_hit |= base == self.probe;
            return Some(base);
        }
        self.stats.root_hits += 1;
        let won = if self.concurrent {
            span.try_mark(idx)
        } else {
            span.try_mark_single(idx)
        };
        if won {
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

    /// Scans everything reachable from the gray stack, on this thread alone.
    pub fn drain(&mut self) {
        let concurrent = self.concurrent;
        let mut t = self.tracer();
        if concurrent {
            t.drain::<true>(None, |_| false);
        } else {
            t.drain::<false>(None, |_| false);
        }
        let (o, b) = (t.objects, t.bytes);
        self.absorb(o, b);
    }

    /// Concurrent marking, on this thread alone: drains until the gray
    /// stack is empty (true) or `stop` says so (asked every 64 objects
    /// with the bytes marked so far in this call; false). Leaves overflow
    /// to `complete`.
    pub(crate) fn drain_until(&mut self, mut stop: impl FnMut(usize) -> bool) -> bool {
        debug_assert!(self.concurrent);
        let mut t = self.tracer();
        let emptied = t.drain::<true>(None, |t| stop(t.bytes));
        let (o, b) = (t.objects, t.bytes);
        self.absorb(o, b);
        emptied
    }

    /// Bytes marked so far by this marker and its helpers.
    pub(crate) fn marked_bytes(&self) -> usize {
        self.stats.bytes
    }

    /// Gray entries on the coordinator's stack.
    pub(crate) fn gray_len(&self) -> usize {
        self.gray.len
    }

    /// Moves up to `k` gray entries, the oldest, to `to` (a share for
    /// mutator assists), as room allows; returns how many.
    pub(crate) fn give_gray(&mut self, to: &mut GrayStack, k: usize) -> usize {
        let k = k.min(self.gray.len).min(to.cap - to.len);
        self.gray.give_bottom(to, k);
        k
    }

    /// Moves every entry of `from` (the shaded queue) onto the gray stack.
    /// `from`'s overflow stays with it (the second stop takes it over).
    pub(crate) fn take_all(&mut self, from: &mut GrayStack) -> usize {
        let n = from.len;
        while let Some(b) = from.pop() {
            self.gray.push(b);
        }
        n
    }

    /// Records that gray objects were lost to an overflow elsewhere (an
    /// assist's stack): `complete` rescans the heap.
    pub(crate) fn note_overflow(&mut self) {
        self.gray.overflowed = true;
    }

    /// Drains with the helper threads, `workers` of the team in all (the
    /// coordinator included; at least 2).
    fn drain_parallel(&mut self, team: &MarkTeam, workers: usize) {
        let r = team.round(self.heap, &mut self.gray, workers);
        self.absorb(r.objects, r.bytes);
        self.stats.workers = r.workers.max(1);
        self.stats.shares = r.shares;
        if r.overflow {
            self.gray.overflowed = true;
        }
    }

    /// Drains (in parallel when the heap has helpers), recovers from
    /// overflow, and returns the figures.
    pub fn finish(mut self) -> MarkStats {
        self.complete();
        self.stats
    }

    /// Offers, as roots, the objects `base`'s object references, without
    /// marking the object itself (so it stays unmarked if nothing else
    /// reaches it): how a finalizable object keeps what its finalizer will
    /// read alive (see `finalizer`). Scanned here rather than pushed gray,
    /// since an unmarked gray entry lost to an overflow would not be found
    /// by the rescan, which scans marked objects.
    pub(crate) fn scan_children(&mut self, base: usize) {
        let Some((base, span, _)) = self.heap.find(base) else {
            return;
        };
        if span.noscan() {
            return;
        }
        if self.probe != 0 {
            let probe = self.probe;
            self.probe_hit |= self.heap.references_from(base, span, |_, to| to == probe);
            return;
        }
        let concurrent = self.concurrent;
        let mut t = self.tracer();
        if concurrent {
            t.scan_object::<true>(base, span);
        } else {
            t.scan_object::<false>(base, span);
        }
        let (o, b) = (t.objects, t.bytes);
        self.absorb(o, b);
    }

    /// A root probe's answer: whether a root offered so far names the
    /// probed object (see [`RawHeap::root_probe`]).
    pub(crate) fn probe_hit(&self) -> bool {
        self.probe_hit
    }

    /// Whether the object at `addr` is marked (false if `addr` is not in an
    /// allocated object).
    pub(crate) fn is_marked(&self, addr: usize) -> bool {
        self.heap
            .find(addr)
            .is_some_and(|(_, span, idx)| span.is_marked(idx))
    }

    /// Drains everything offered so far (in parallel when the heap has
    /// helpers) and recovers from overflow; the mark can go on afterwards.
    pub(crate) fn complete(&mut self) {
        self.complete_with(usize::MAX);
    }

    /// As `complete`, with at most `workers` marking threads (the
    /// coordinator included).
    pub(crate) fn complete_with(&mut self, workers: usize) {
        let heap = self.heap;
        let before = self.stats.workers.max(1);
        self.stats.workers = 1;
        match heap.helpers.team() {
            Some(team) if self.gray.len > 0 && workers >= 2 => {
                self.drain_parallel(team, workers.min(team.workers))
            }
            _ => self.drain(),
        }
        let workers = before;
        self.stats.workers = self.stats.workers.max(workers);
        while self.gray.overflowed {
            self.gray.overflowed = false;
            self.stats.overflow_rescans += 1;
            let concurrent = self.concurrent;
            let mut t = self.tracer();
            heap.pages.for_each_in_use(&heap.arena, |span| {
                if span.noscan() {
                    return;
                }
                for idx in 0..span.nelems() {
                    if span.is_marked(idx) {
                        let base = span.base() + idx * span.elemsize();
                        if concurrent {
                            t.scan_object::<true>(base, span);
                            t.drain::<true>(None, |_| false);
                        } else {
                            t.scan_object::<false>(base, span);
                            t.drain::<false>(None, |_| false);
                        }
                    }
                }
            });
            let (o, b) = (t.objects, t.bytes);
            self.absorb(o, b);
        }
    }
}
