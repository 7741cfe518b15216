//! One concurrent collection (`Config::concurrent`): two short stops with
//! the marking between them done while the mutators run.
//!
//! 1. **Off.** Sweep what the last cycle left, world running.
//! 2. **First stop** (the *start*): flush every cache (every span is then
//!    on a central list, and a cache that takes one while marking records
//!    it: see `barrier`), raise the phase to `MARK` (the deletion barrier
//!    and allocating black begin), take every root — global roots, handle
//!    tables, every thread's frames, stack and registers, the finalizer
//!    table's roots — into the gray stack, and restart the world. Parked
//!    goroutines of a task source that can defer are not read here: the
//!    stop begins a deferral (see `stacks`). The pacer asks for no
//!    collection until the cycle ends.
//! 3. **Concurrent mark.** First the coordinator scans the parked
//!    goroutines still owed a scan (their workers scan the others before
//!    switching them in). Then it (with helpers, as the
//!    background share allows: see `assist`) drains the gray objects, every
//!    mark bit set atomically, while mutators run; mutators that allocate
//!    meanwhile assist. Between rounds the coordinator takes the objects
//!    the barrier shaded and the assists left; it stops once a round ends
//!    with nothing queued meanwhile and no assist under way.
//! 4. **Second stop** (*termination*): flush the caches again, take what
//!    the barrier shaded since, mark every object allocated while marking
//!    (black, unscanned), take every root again (threads' registers and
//!    stacks are not covered by the barrier: see `barrier` for why this
//!    makes the store sequence safe to interrupt; a deferring source's
//!    parked goroutines are not read again, see `stacks`), and drain what that
//!    finds — usually little, as nearly everything it reaches is marked.
//!    Then as in a stop-the-world collection: weak references, finalizers,
//!    verification (a full re-mark from the same roots must mark nothing
//!    the concurrent mark left unmarked), the flip of the sweep generation,
//!    the pacer's next goal; the phase falls to `OFF`; restart.
//!
//! If the second stop cannot be made (a thread that never reaches a stop
//! point, past `stop_timeout`), the cycle is abandoned: the phase falls to
//! `OFF` and every mark bit is cleared (the next cycle must start from clear
//! marks: an object marked but never scanned would hide what it references).
//!
//! Paced cycles begin at 70 % of the way from the live heap to the goal and
//! run on the heap's background collector thread (`background`), so the
//! mutator that reached the trigger goes on allocating, assisting in
//! proportion (`assist`); a mutator that reaches the goal while the cycle
//! is under way waits (in a safe region) for it to end: the brake.
//! `collect()` runs a cycle on its caller.
//!
//! Not done yet: composition with generational mode (refused by
//! `Config::validate`).

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Instant;

use pardon_preempt::{StopError, StoppedWorld};

use crate::collector::{CollectError, Collector};
use crate::cycle::NoPreemptScope;
use crate::heap::lock;
use crate::mark::barrier::{MARK, OFF};
use crate::mark::{CollectionKind, Marker};
use crate::rootscan::{scan_task, Suspended};
use crate::stats::CycleStats;
use crate::verify::VerifyError;

impl Collector {
    /// A whole concurrent collection, coordinated by the calling thread
    /// (see the module comment). `entry_sp` as for `Collector::collect`.
    #[inline(never)]
    pub(crate) fn collect_concurrent(&self, entry_sp: usize) -> Result<CycleStats, CollectError> {
        if self.registry.world_held_by_me() {
            return Err(CollectError::Stop(StopError::Reentrant));
        }
        // One cycle at a time. A thread that waits for the running one
        // waits in a safe region: that cycle's second stop must not wait
        // for it.
        let cycles_before = self.cycles.load(Relaxed);
        let _cycle = self.registry.blocking(|| lock(&self.cycle));
        if self.cycles.load(Relaxed) != cycles_before {
            return Ok(CycleStats {
                number: self.cycles.load(Relaxed),
                ..CycleStats::default()
            });
        }
        let t0 = Instant::now();
        // Parked goroutines are scanned after the first stop, through
        // this (see `stacks`); made here, where allocating is allowed.
        let shader = self.stack_shader();
        let (first, second) = match &shader {
            Some(s) => (Suspended::Defer(s), Suspended::EndDeferral(s)),
            None => (Suspended::All, Suspended::All),
        };
        // However the cycle ends (an abandoned second stop, a panic), the
        // deferral its first stop begins does not outlive it.
        let _deferral = shader
            .as_ref()
            .map(|s| crate::mark::stacks::CancelOnDrop(&self.registry, s));
        let scope = NoPreemptScope(&self.registry);
        self.raw.finish_sweep_in(&scope);
        let heap_before = self.raw.stats().span_bytes;
        let mut cycle = CycleStats {
            heap_before,
            ..CycleStats::default()
        };

        // The first stop.
        let world = self.stop_or_abandon()?;
        let start_at = Instant::now();
        cycle.ttsp = world.stats().ttsp;
        cycle.signals = world.stats().signals;
        cycle.held = world.stats().held;
        cycle.moved = world.stats().moved;
        self.count_stopped(&world, &mut cycle);
        self.flush_caches();
        self.raw.finish_sweep();
        if self.raw.marks_stale.swap(false, SeqCst) {
            // An abandoned cycle's marks and queues (see `abandon_marking`).
            self.raw.clear_marks();
            lock(&self.raw.shaded).clear();
            lock(&self.raw.new_spans).clear();
        }
        self.raw.mark_epoch.fetch_add(1, Relaxed);
        self.raw.shaded_bytes.store(0, Relaxed);
        self.raw.phase.store(MARK, SeqCst);
        self.pacer.suspend(self.raw.allocated.load(Relaxed));
        let expected = match self.raw.live_after_last.load(Relaxed) {
            0 => heap_before,
            live => live,
        };
        self.begin_assists(expected);
        let mut m = self.raw.marker_concurrent();
        self.mark_roots(&world, entry_sp, first, &mut cycle, &mut m);
        lock(&self.raw.finalizers).offer_roots(&mut m);
        // As in a stop-the-world cycle, a stop lasts until the restart
        // begins: once the restart has woken the mutators, the coordinator
        // may wait for a CPU before it returns (milliseconds on a busy
        // machine), which they do not.
        cycle.pause_start = start_at.elapsed() + cycle.ttsp;
        drop(world);

        // The concurrent mark.
        let mark_at = Instant::now();
        if let Some(s) = &shader {
            self.scan_deferred_stacks(s, &mut m, &mut cycle);
        }
        let mut new_bytes = 0;
        // Ends: every entry taken is an object marked this cycle and not
        // yet scanned, and each round scans what it takes, so the rounds
        // scan each object of the heap at most once between them.
        loop {
            self.mark_in_background(&mut m);
            new_bytes += self.raw.mark_new_objects_early(&self.registry);
            if self.take_queued_or_close(&mut m) == 0 {
                break;
            }
        }
        // What the mutators allocated in full spans meanwhile, so that the
        // second stop has only the spans in their caches.
        new_bytes += self.raw.mark_new_objects_early(&self.registry);
        cycle.concurrent_mark = mark_at.elapsed();

        // The second stop.
        let world = match self.stop_or_abandon() {
            Ok(w) => w,
            Err(e) => {
                drop(m);
                self.abandon_marking();
                // (The deferral, with no stop to end it in, is cancelled
                // as `_deferral` drops.)
                return Err(e);
            }
        };
        let end_at = Instant::now();
        let ttsp_end = world.stats().ttsp;
        cycle.ttsp_end = ttsp_end;
        cycle.signals += world.stats().signals;
        cycle.held += world.stats().held;
        cycle.moved += world.stats().moved;
        self.flush_caches();
        m.take_shaded(&self.raw);
        let assists = self.end_assists(&mut m);
        new_bytes += self.raw.mark_new_objects();
        let t_new = end_at.elapsed();
        let mut roots = lock(&self.roots);
        roots.clear();
        let mut again = CycleStats::default();
        self.gather_roots(&world, entry_sp, second, &mut again, &mut |b| roots.push(b));
        cycle.suspended_tasks += again.suspended_tasks;
        let overflowed = roots.overflowed();
        let root_words = |m: &mut Marker<'_>| self.offer_roots(&world, entry_sp, second, &roots, m);
        root_words(&mut m);
        let t_roots = end_at.elapsed();
        let mut finalizers = lock(&self.raw.finalizers);
        finalizers.offer_roots(&mut m);
        m.complete();
        let t_drain = end_at.elapsed();
        let weak_cleared = self.raw.clear_dead_weaks(&m);
        let finalizers_queued = finalizers.queue_unreachable(&mut m);
        let mut st = m.finish();
        let t_finish = end_at.elapsed();
        st.bytes += new_bytes + self.raw.shaded_bytes.load(Relaxed) + assists.bytes;
        // Verification re-marks from every root: with the parked
        // goroutines' stacks, which the second stop's roots leave out when
        // they were scanned after the first (so a scan that missed one is
        // caught).
        let every_root = |m: &mut Marker<'_>| {
            root_words(m);
            if shader.is_some() {
                let mut unused = CycleStats::default();
                world.for_each_suspended(|task| {
                    // SAFETY: the world is stopped: the source's reports
                    // stay as its contract says until the restart.
                    unsafe {
                        scan_task(&self.raw, task, &mut unused, &mut |v| {
                            m.mark_word(v);
                        })
                    };
                });
            }
        };
        let verified = if self.verify && !overflowed {
            self.verify_concurrent(&every_root, &finalizers)
        } else {
            Ok(())
        };
        drop(finalizers);
        drop(roots);
        if let Err(e) = verified {
            self.raw.phase.store(OFF, SeqCst);
            drop(world);
            panic!("pardon verify: {e}");
        }
        self.raw.phase.store(OFF, SeqCst);
        let live = self.raw.flip_sweepgen(CollectionKind::Full, st.bytes);
        self.pacer.after_cycle(CollectionKind::Full, live);
        self.cycles.fetch_add(1, Relaxed);
        let t_flip = end_at.elapsed();
        cycle.pause_end = t_flip + ttsp_end;
        drop(world);
        let restart = end_at.elapsed() - t_flip;
        cycle.pause = cycle.pause_start + cycle.pause_end;
        cycle.mark = cycle.concurrent_mark;
        cycle.verified = self.verify && !overflowed;
        cycle.marked_objects = st.objects;
        cycle.mark_workers = st.workers;
        cycle.kind = CollectionKind::Full;
        cycle.live = live;
        cycle.weak_cleared = weak_cleared;
        cycle.finalizers_queued = finalizers_queued;
        cycle.assist_bytes = assists.bytes;
        cycle.assist_units = assists.units;
        cycle.brake_waits = assists.brake_waits;
        cycle.total = t0.elapsed();
        cycle.heap_after = self.raw.stats().span_bytes;
        cycle.number = self.cycles.load(Relaxed);
        self.raw.scavenge_in(&scope);
        if finalizers_queued > 0 && self.raw.config.finalizer_thread {
            self.finalizer_thread.notify();
        }
        self.registry
            .outside_stops(|| lock(&self.stats).record(&cycle));
        if self.trace {
            eprintln!(
                "{} [second stop: caches, shaded and new objects {:.1} µs; roots {:.1}; drain {:.1}; weak and finalizers {:.1}; verify and flip {:.1}; then the restart call took {:.1}]",
                cycle.trace_line(),
                t_new.as_secs_f64() * 1e6,
                (t_roots - t_new).as_secs_f64() * 1e6,
                (t_drain - t_roots).as_secs_f64() * 1e6,
                (t_finish - t_drain).as_secs_f64() * 1e6,
                (t_flip - t_finish).as_secs_f64() * 1e6,
                restart.as_secs_f64() * 1e6,
            );
        }
        Ok(cycle)
    }

    /// Stops the world, or counts and reports why not.
    fn stop_or_abandon(&self) -> Result<StoppedWorld<'_>, CollectError> {
        // SAFETY: as in `Collector::collect` (`cycle`): neither stop of a
        // concurrent cycle allocates or takes a lock a mutator may hold.
        unsafe { self.registry.stop_the_world_anywhere() }.map_err(|e| {
            let e = CollectError::Stop(e);
            self.registry
                .outside_stops(|| lock(&self.stats).abandoned += 1);
            if self.trace {
                eprintln!("gc abandoned: {e}");
            }
            e
        })
    }

    /// A cycle whose second stop failed: the barrier stops. Its marks are
    /// cleared at the next cycle's first stop, not here: a mutator that read
    /// the phase as `MARK` just before may still be shading (inside a
    /// no-preempt region), and a mark it set after a clear made now would
    /// survive into the next cycle, whose marker would then take the object
    /// for scanned already. With the world stopped, no shading is in flight.
    /// Meanwhile nothing is swept (the sweep generation did not move), so
    /// the stale marks free nothing and keep nothing.
    fn abandon_marking(&self) {
        self.raw.phase.store(OFF, SeqCst);
        self.raw.marks_stale.store(true, SeqCst);
        self.pacer.back_off(self.raw.allocated.load(Relaxed));
    }

    /// Gathers the roots of `world` and offers them to `m`.
    fn mark_roots(
        &self,
        world: &StoppedWorld<'_>,
        entry_sp: usize,
        suspended: Suspended<'_>,
        cycle: &mut CycleStats,
        m: &mut Marker<'_>,
    ) {
        let mut roots = lock(&self.roots);
        roots.clear();
        let roots_start = std::time::Instant::now();
        self.gather_roots(world, entry_sp, suspended, cycle, &mut |b| roots.push(b));
        cycle.roots = roots_start.elapsed();
        self.offer_roots(world, entry_sp, suspended, &roots, m);
    }

    /// Verify mode, at the second stop: a full re-mark from the same roots
    /// (the second stop's, and the finalizer table's) must mark nothing the
    /// concurrent mark left unmarked (it may mark less: the concurrent mark
    /// keeps what died during the cycle, and everything allocated in it);
    /// no weak reference may name an unmarked object. Allocation-free.
    // A large error on purpose: it is built with the world stopped, where
    // boxing it would call the system allocator (see `missed_path`).
    #[allow(clippy::result_large_err)]
    fn verify_concurrent(
        &self,
        roots: &impl Fn(&mut Marker<'_>),
        finalizers: &crate::finalizer::FinalizerTable,
    ) -> Result<(), VerifyError> {
        let raw = &self.raw;
        raw.check_layouts().map_err(VerifyError::Layout)?;
        // `Minor`: the subset comparison, which puts the concurrent marks
        // back afterwards.
        raw.remark_and_compare(roots, finalizers, CollectionKind::Minor)
            .map_err(VerifyError::Concurrent)?;
        if let Some(addr) = raw.find_dangling_weak() {
            return Err(VerifyError::DanglingWeak(addr));
        }
        Ok(())
    }
}

impl Marker<'_> {
    /// The second stop, world stopped: moves the objects the barrier
    /// shaded and the assists left onto the gray stack.
    pub(crate) fn take_shaded(&mut self, raw: &crate::heap::RawHeap) {
        let mut shaded = lock(&raw.shaded);
        self.take_all(&mut shaded);
        if std::mem::take(&mut shaded.overflowed) {
            // Objects shaded while the queue was full: marked, not queued.
            self.note_overflow();
        }
    }
}
