//! Collection statistics and the gctrace line.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::heap::HeapStats;
use crate::mark::CollectionKind;

/// Figures for one collection.
#[derive(Clone, Copy, Debug, Default)]
pub struct CycleStats {
    /// Collection number (1-based).
    pub number: u64,
    /// Time to safepoint: request to every thread stopped (a concurrent
    /// cycle's first stop; its second is `ttsp_end`).
    pub ttsp: Duration,
    /// Concurrent cycles: the second stop's time to safepoint (part of
    /// `pause_end`).
    pub ttsp_end: Duration,
    /// Stop-to-restart: time to safepoint plus the stopped-world work.
    pub pause: Duration,
    /// Marking (and verification) time inside the pause.
    pub mark: Duration,
    /// Gathering the roots inside the pause: global roots, handle tables,
    /// every stopped thread's frames, stack and registers, and every
    /// suspended task's (parked goroutines').
    pub roots: Duration,
    /// Whole collection, including the sweep before stopping.
    pub total: Duration,
    /// Span bytes in use before and after.
    pub heap_before: usize,
    /// See `heap_before`.
    pub heap_after: usize,
    /// Bytes marked (live).
    pub live: usize,
    /// Objects marked.
    pub marked_objects: usize,
    /// Threads that marked objects (the coordinator included).
    pub mark_workers: usize,
    /// Conservative roots found (stack and register words that hit objects).
    pub conservative_roots: usize,
    /// Precise frame-slot roots found.
    pub precise_roots: usize,
    /// Words examined conservatively.
    pub words_scanned: usize,
    /// Suspended tasks (parked goroutines) whose stacks were scanned in a
    /// stop (either stop of a concurrent cycle), as the stopped world's
    /// task sources reported them.
    pub suspended_tasks: usize,
    /// Concurrent cycles: parked goroutines whose stacks the coordinator
    /// scanned after the first stop rather than in it (their workers scan
    /// others before switching them in; see `mark::stacks`).
    pub deferred_tasks: usize,
    /// Concurrent cycles: how long the coordinator's deferred scan of
    /// parked goroutines took, world running.
    pub deferred_scan: Duration,
    /// Explicit concurrent collections (`collect`, not the background
    /// collector's paced cycles): the sweep of every span the cycle left
    /// unswept, right after it, world running, as Go's `runtime.GC` sweeps
    /// before it returns. The next cycle then finds little to sweep just
    /// before its first stop, where a sweep of the whole heap had cost its
    /// time to safepoint (cold caches: 35-38 against 26-27 µs at 1 GiB).
    /// Paced cycles do not: sweeping eagerly on the background thread cost
    /// GCBench 12 % and binary-trees 4 % (the mutators sweep a span just
    /// before they use it, with its lines in cache). Set in the figures
    /// `collect` returns (the sweep follows the cycle's own record, which
    /// keeps 0 here), and made outside the cycle's lock.
    pub sweep_after: Duration,
    /// Spans that sweep swept (see `sweep_after`).
    pub spans_swept_after: usize,
    /// Signals sent for the stop (for both stops of a concurrent cycle).
    pub signals: u32,
    /// Threads the stop found still parked from the stop before, and held
    /// without a signal (both stops of a concurrent cycle; see
    /// `pardon_preempt::StopStats::held`).
    pub held: u32,
    /// Threads that kept a stop waiting and were moved to the coordinator's
    /// CPU (both stops of a concurrent cycle; see
    /// `pardon_preempt::StopStats::moved`).
    pub moved: u32,
    /// Threads stopped by each route.
    pub stopped_injected: u32,
    /// See `stopped_injected`.
    pub stopped_in_handler: u32,
    /// See `stopped_injected`.
    pub stopped_poll: u32,
    /// See `stopped_injected`.
    pub stopped_safe: u32,
    /// Verification re-marked and agreed.
    pub verified: bool,
    /// Full, or minor (generational heaps).
    pub kind: CollectionKind,
    /// Dirty cards scanned (minor collections).
    pub cards: usize,
    /// Weak references cleared because their object died.
    pub weak_cleared: usize,
    /// Concurrent cycles: the first stop (to take the roots), time to
    /// safepoint included; `pause` is the two stops' sum.
    pub pause_start: Duration,
    /// Concurrent cycles: the second stop (to finish the mark).
    pub pause_end: Duration,
    /// Concurrent cycles: the marking done between the stops, while
    /// mutators ran.
    pub concurrent_mark: Duration,
    /// Finalizable objects found dead and queued (see
    /// [`Mutator::set_finalizer`](crate::Mutator::set_finalizer)).
    pub finalizers_queued: usize,
    /// Concurrent cycles: bytes mutator assists marked.
    pub assist_bytes: usize,
    /// Concurrent cycles: assist units run (each a short no-preempt
    /// region of marking).
    pub assist_units: usize,
    /// Concurrent cycles: allocations that waited at the brake (the goal,
    /// reached before the cycle ended).
    pub brake_waits: usize,
}

fn mb(b: usize) -> f64 {
    b as f64 / (1 << 20) as f64
}

impl CycleStats {
    /// One line in the spirit of Go's `GODEBUG=gctrace=1`.
    pub fn trace_line(&self) -> String {
        let concurrent = if self.concurrent_mark.is_zero() && self.pause_end.is_zero() {
            String::new()
        } else {
            format!(
                " [concurrent: stops {:.1} + {:.1} µs (time to safepoint {:.1} + {:.1}), marking {:.1} µs between ({} parked stacks scanned in {:.1} µs); assists {:.1} MB in {} units, {} brake waits; {} spans swept after in {:.1} µs]",
                self.pause_start.as_secs_f64() * 1e6,
                self.pause_end.as_secs_f64() * 1e6,
                self.ttsp.as_secs_f64() * 1e6,
                self.ttsp_end.as_secs_f64() * 1e6,
                self.concurrent_mark.as_secs_f64() * 1e6,
                self.deferred_tasks,
                self.deferred_scan.as_secs_f64() * 1e6,
                mb(self.assist_bytes),
                self.assist_units,
                self.brake_waits,
                self.spans_swept_after,
                self.sweep_after.as_secs_f64() * 1e6,
            )
        };
        format!(
            "pardon gc {}{}: ttsp {:.1} µs, pause {:.1} µs (mark {:.1} µs by {} thread(s)), {:.1}->{:.1} MB heap, {:.1} MB live, {} objects marked, {} conservative roots, {} precise ({} suspended tasks, roots {:.1} µs), stopped: {} injected, {} in-handler, {} poll, {} safe-region{}{}",
            self.number,
            match self.kind {
                CollectionKind::Full => String::new(),
                CollectionKind::Minor => format!(" (minor, {} dirty cards)", self.cards),
            },
            self.ttsp.as_secs_f64() * 1e6,
            self.pause.as_secs_f64() * 1e6,
            self.mark.as_secs_f64() * 1e6,
            self.mark_workers,
            mb(self.heap_before),
            mb(self.heap_after),
            mb(self.live),
            self.marked_objects,
            self.conservative_roots,
            self.precise_roots,
            self.suspended_tasks,
            self.roots.as_secs_f64() * 1e6,
            self.stopped_injected,
            self.stopped_in_handler,
            self.stopped_poll,
            self.stopped_safe,
            if self.moved > 0 {
                format!(", {} moved to the coordinator's CPU", self.moved)
            } else {
                String::new()
            },
            if self.verified { ", verified" } else { "" },
        ) + &concurrent
    }
}

/// Accumulated statistics.
#[derive(Clone, Debug)]
pub struct GcStats {
    /// Completed collections.
    pub collections: u64,
    /// Of which minor (generational heaps).
    pub minor_collections: u64,
    /// Time to safepoint of every stop, nanoseconds: one a stop-the-world
    /// collection, two a concurrent one (`CycleStats::ttsp` and
    /// `ttsp_end`), so its count is the number of stops.
    pub ttsp_ns: Histogram<u64>,
    /// Pauses (stop to restart), nanoseconds.
    pub pause_ns: Histogram<u64>,
    /// The last collection.
    pub last: CycleStats,
    /// Heap figures now.
    pub heap: HeapStats,
    /// Collections abandoned because the world could not be stopped (a stop
    /// timed out, or the preemption signal's handler was replaced). Paced
    /// ones are retried only after the heap has grown by another budget.
    pub abandoned: u64,
    /// Threads moved to the coordinator's CPU, over every stop (see
    /// `CycleStats::moved`).
    pub moved: u64,
}

pub(crate) struct StatsRecorder {
    pub collections: u64,
    pub minor: u64,
    pub ttsp: Histogram<u64>,
    pub pause: Histogram<u64>,
    pub last: CycleStats,
    pub abandoned: u64,
    pub moved: u64,
}

impl StatsRecorder {
    pub fn new() -> StatsRecorder {
        let h = || Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds");
        StatsRecorder {
            abandoned: 0,
            moved: 0,
            collections: 0,
            minor: 0,
            ttsp: h(),
            pause: h(),
            last: CycleStats::default(),
        }
    }

    pub fn record(&mut self, c: &CycleStats) {
        self.collections += 1;
        self.minor += u64::from(c.kind == CollectionKind::Minor);
        self.moved += u64::from(c.moved);
        self.ttsp.saturating_record(c.ttsp.as_nanos().max(1) as u64);
        if !c.ttsp_end.is_zero() {
            // A concurrent cycle's second stop.
            self.ttsp.saturating_record(c.ttsp_end.as_nanos() as u64);
        }
        self.pause
            .saturating_record(c.pause.as_nanos().max(1) as u64);
        self.last = *c;
    }

    /// Copies everything into `out`, whose histograms have the same bounds;
    /// allocates nothing.
    pub fn copy_into(&self, out: &mut StatsRecorder) {
        out.collections = self.collections;
        out.minor = self.minor;
        out.last = self.last;
        out.abandoned = self.abandoned;
        out.moved = self.moved;
        out.ttsp.reset();
        out.pause.reset();
        // Same bounds, no auto-resize: adding cannot fail or allocate.
        let _ = out.ttsp.add(&self.ttsp);
        let _ = out.pause.add(&self.pause);
    }

    pub fn into_snapshot(self, heap: HeapStats) -> GcStats {
        GcStats {
            collections: self.collections,
            minor_collections: self.minor,
            ttsp_ns: self.ttsp,
            pause_ns: self.pause,
            last: self.last,
            heap,
            abandoned: self.abandoned,
            moved: self.moved,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stop-the-world cycle adds one time to safepoint, a concurrent
    /// one both of its stops', and the pause once either way.
    #[test]
    fn every_stop_s_time_to_safepoint_is_recorded() {
        let us = Duration::from_micros;
        let mut r = StatsRecorder::new();
        r.record(&CycleStats {
            ttsp: us(10),
            pause: us(100),
            ..CycleStats::default()
        });
        r.record(&CycleStats {
            ttsp: us(20),
            ttsp_end: us(4000),
            pause: us(4100),
            ..CycleStats::default()
        });
        assert_eq!(r.collections, 2);
        assert_eq!(r.ttsp.len(), 3);
        assert_eq!(r.pause.len(), 2);
        let max = r.ttsp.max();
        assert!((3_990_000..=4_010_000).contains(&max), "{max}");
        let min = r.ttsp.min();
        assert!((9_990..=10_010).contains(&min), "{min}");
    }
}
