//! The pacer: when the next collection is due, and whether a paced
//! collection of a generational heap is minor or full (Go's `mgcpacer.go`;
//! the assist ratio of concurrent marking is in `assist`).
//!
//! Full collections follow Go's goal: the next is due when the bytes handed
//! to allocation since reach live × (1 + p/100), p being `gc_percent`. On a
//! generational heap the young budget stays what the last *full*
//! collection's live size allows (live_full × p/100) after minor ones too,
//! rather than growing with the old garbage a minor collection's live
//! estimate carries; and a full collection comes once that estimate passes
//! the last full goal. So the heap peaks near live_full × (1 + 2p/100), not
//! at twice a live estimate that may itself be twice live_full.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

use crate::mark::CollectionKind;

/// See the module documentation. The atomics are written by a coordinator
/// at the end of a cycle (or by a mutator backing off after an abandoned
/// one, with `fetch_max`) and read by every allocation's slow path.
pub(crate) struct Pacer {
    /// `None`: pacing off (collections only on demand or at the limit).
    gc_percent: Option<u32>,
    /// No paced collection below this many bytes.
    min_heap: usize,
    /// Bytes allocated at which the next paced collection is due.
    next_gc: AtomicUsize,
    /// Generational: the live estimate at which a paced collection is full.
    full_goal: AtomicUsize,
    /// Live bytes after the last full collection.
    live_full: AtomicUsize,
    /// Concurrent marking: paced cycles begin at 70 % of the way from the
    /// live heap to the goal, so that they end near it.
    concurrent: bool,
    /// The goal of the current budget (live + budget).
    goal: AtomicUsize,
    /// Concurrent marking: where a mutator waits for the running cycle to
    /// end (the goal, or further if the cycle began past it; see
    /// `suspend`).
    brake: AtomicUsize,
}

impl Pacer {
    pub(crate) fn new(gc_percent: Option<u32>, min_heap: usize, concurrent: bool) -> Pacer {
        Pacer {
            gc_percent,
            min_heap,
            next_gc: AtomicUsize::new(if gc_percent.is_some() {
                min_heap
            } else {
                usize::MAX
            }),
            full_goal: AtomicUsize::new(0),
            live_full: AtomicUsize::new(0),
            concurrent,
            goal: AtomicUsize::new(min_heap),
            brake: AtomicUsize::new(min_heap),
        }
    }

    /// Whether `allocated` bytes make a paced collection due.
    #[inline(always)]
    pub(crate) fn due(&self, allocated: usize) -> bool {
        allocated >= self.next_gc.load(Relaxed)
    }

    /// After an abandoned paced collection: the next is due once another
    /// budget (the bytes allocated so far, at least `min_heap`) is allocated,
    /// not at the next allocation.
    pub(crate) fn back_off(&self, allocated: usize) {
        let next = allocated.saturating_add(allocated.max(self.min_heap));
        self.next_gc.fetch_max(next, Relaxed);
    }

    /// A concurrent cycle has begun with `allocated` bytes allocated: the
    /// brake is at the goal (or `min_heap` beyond `allocated`, if that is
    /// further: a cycle asked for past the goal), and the next paced check
    /// is the first assist check (see `assist`). A mutator that reaches
    /// the brake waits for the running cycle to end: the bound on the
    /// heap's growth while marking, should assists not keep up.
    /// `after_cycle` sets the next trigger.
    pub(crate) fn suspend(&self, allocated: usize) {
        if self.gc_percent.is_some() {
            let brake = self
                .goal
                .load(Relaxed)
                .max(allocated.saturating_add(self.min_heap));
            self.brake.store(brake, Relaxed);
            self.rearm_assist(allocated);
        }
    }

    /// While a concurrent cycle marks: the next paced check comes after
    /// another assist step of allocation, or at the brake. The caller
    /// excludes stops and has seen the cycle marking (so `after_cycle`,
    /// which runs at a stop, comes after this, never before).
    pub(crate) fn rearm_assist(&self, allocated: usize) {
        if self.gc_percent.is_some() {
            let next = allocated
                .saturating_add(crate::mark::assist::ASSIST_STEP)
                .min(self.brake.load(Relaxed));
            self.next_gc.store(next, Relaxed);
        }
    }

    /// The goal of the current budget.
    pub(crate) fn goal(&self) -> usize {
        self.goal.load(Relaxed)
    }

    /// A background cycle was asked for: the next paced collection (which
    /// waits for it) is due at the brake, the goal.
    pub(crate) fn await_cycle(&self) {
        if self.gc_percent.is_some() {
            self.next_gc.fetch_max(self.goal.load(Relaxed), Relaxed);
        }
    }

    /// Whether `allocated` bytes have reached the brake of a concurrent
    /// cycle under way (or asked for).
    pub(crate) fn at_brake(&self, allocated: usize) -> bool {
        self.gc_percent.is_some() && allocated >= self.brake.load(Relaxed)
    }

    /// The kind a collection asked for as `want` runs as: a `Minor` one is
    /// full once the live estimate `live` has reached the full goal.
    pub(crate) fn kind(&self, want: CollectionKind, live: usize) -> CollectionKind {
        if want == CollectionKind::Minor && live >= self.full_goal.load(Relaxed) {
            CollectionKind::Full
        } else {
            want
        }
    }

    /// Sets the next goals after a collection of `kind` that left `live`
    /// bytes live (by the collection's estimate).
    pub(crate) fn after_cycle(&self, kind: CollectionKind, live: usize) {
        let pct = self.gc_percent.unwrap_or(100) as u128;
        if kind == CollectionKind::Full {
            let goal = ((live as u128 * (100 + pct) / 100) as usize).max(self.min_heap);
            self.full_goal.store(goal, Relaxed);
            self.live_full.store(live, Relaxed);
        }
        let budget = (self.live_full.load(Relaxed) as u128 * pct / 100) as usize;
        if self.gc_percent.is_some() {
            let goal = (live + budget).max(self.min_heap);
            self.goal.store(goal, Relaxed);
            self.brake.store(goal, Relaxed);
            let trigger = if self.concurrent {
                (live + budget * 7 / 10).max(self.min_heap)
            } else {
                goal
            };
            self.next_gc.store(trigger, Relaxed);
        }
    }
}
