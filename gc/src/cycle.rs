//! One collection, end to end, coordinated by the calling thread: sweep
//! what is left, stop the world, flush every cache, gather the roots and
//! mark, verify (in verify mode), flip the sweep generation, set the pacer's
//! goals, restart the world. The steps are listed in `lib.rs`'s essay.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use pardon_preempt::{Registry, StopError, StopKind, StoppedWorld};

use crate::collector::{CollectError, Collector};
use crate::heap::lock;
use crate::mark::CollectionKind;
use crate::rootscan::Suspended;
use crate::stats::CycleStats;

impl Collector {
    /// A whole collection, coordinated by the calling thread. `entry_sp` is
    /// the stack position of the public entry point: if the caller is an
    /// attached thread, its conservative range starts there, above the
    /// collector's own frames (which change while it marks, and would make a
    /// verification re-mark disagree).
    ///
    /// Never inlined: its locals, and those of the marking it calls (gray
    /// objects, scan positions), must live in frames below `entry_sp`, or a
    /// coordinator's conservative scan would find the first mark's leftovers
    /// and the verification re-mark would disagree (it did).
    ///
    /// `want` is `Minor` for paced collections: on a generational heap that
    /// runs a minor collection unless the live estimate (old objects
    /// included) has reached `full_goal`.
    #[inline(never)]
    pub(crate) fn collect(
        &self,
        entry_sp: usize,
        want: CollectionKind,
    ) -> Result<CycleStats, CollectError> {
        if self.registry.world_held_by_me() {
            // Sweeping below would wait for the coordinator lock we hold.
            return Err(CollectError::Stop(StopError::Reentrant));
        }
        if self.raw.config.concurrent {
            let _ = want;
            let mut cycle = self.collect_concurrent(entry_sp)?;
            // Someone waits for this collection (`collect`): it sweeps too
            // before it returns, as Go's `runtime.GC` does (see
            // `CycleStats::sweep_after`); paced cycles (the background
            // collector's) leave the sweeping to allocation and to the next
            // cycle's start. Outside the cycle's lock: a paced cycle may
            // start meanwhile (each sweep step rereads the generation), and
            // mutators braking for one are not held up by this sweep.
            let scope = NoPreemptScope(&self.registry);
            let sweep_at = Instant::now();
            cycle.spans_swept_after = self.raw.finish_sweep_in(&scope);
            cycle.sweep_after = sweep_at.elapsed();
            return Ok(cycle);
        }
        let cycles_before = self.cycles.load(Relaxed);
        let t0 = Instant::now();
        // Sweep what is left while the world runs, to keep the pause short.
        let scope = NoPreemptScope(&self.registry);
        self.raw.finish_sweep_in(&scope);
        let heap_before = self.raw.stats().span_bytes;
        // SAFETY: the stopped-world path of a collection allocates nothing
        // and takes no lock a mutator may hold (the crate documentation;
        // `missed_path`'s reserved buffers, `RootBuf`), so threads may be
        // parked inside libc: a careful stop would wait for a thread in a
        // long library call.
        let world = match unsafe { self.registry.stop_the_world_anywhere() } {
            Ok(w) => w,
            Err(e) => {
                let e = CollectError::Stop(e);
                self.registry
                    .outside_stops(|| lock(&self.stats).abandoned += 1);
                if self.trace {
                    eprintln!("gc abandoned: {e}");
                }
                return Err(e);
            }
        };
        if self.cycles.load(Relaxed) != cycles_before {
            // Another thread collected while we waited for the world. (The
            // stats lock is not taken here: the world is stopped.)
            return Ok(CycleStats {
                number: self.cycles.load(Relaxed),
                ..CycleStats::default()
            });
        }
        let stopped_at = Instant::now();
        let mut cycle = CycleStats {
            ttsp: world.stats().ttsp,
            signals: world.stats().signals,
            held: world.stats().held,
            moved: world.stats().moved,
            heap_before,
            ..CycleStats::default()
        };
        self.flush_caches();
        self.count_stopped(&world, &mut cycle);
        self.raw.finish_sweep();
        let mark_start = Instant::now();
        let want = self
            .pacer
            .kind(want, self.raw.live_after_last.load(Relaxed));
        // Only a coordinator (holding the stopped world) takes this lock, and
        // it must let go before the world restarts: once running again, this
        // thread may be stopped by the next coordinator, who needs it.
        let mut guard = lock(&self.roots);
        guard.clear();
        let roots_start = Instant::now();
        self.gather_roots(&world, entry_sp, Suspended::All, &mut cycle, &mut |b| {
            guard.push(b)
        });
        cycle.roots = roots_start.elapsed();
        let overflowed = guard.overflowed();
        let roots = &*guard;
        // The roots, as a source the mark (and verification's re-mark) can
        // replay (see `offer_roots`). Verification's re-mark (every call
        // after the first) also reads every parked goroutine's stack again,
        // on this thread alone: an oracle for the gathering, which may
        // have read them in parts on several threads.
        let calls = std::cell::Cell::new(0u32);
        let source = |m: &mut crate::mark::Marker<'_>| {
            self.offer_roots(&world, entry_sp, Suspended::All, roots, m);
            if calls.replace(calls.get() + 1) > 0 {
                self.rescan_suspended(&world, m);
            }
        };
        let marked = self.raw.mark_cycle(want, &source, !overflowed);
        drop(guard);
        let (kind, mark, live) = match marked {
            Ok(r) => r,
            Err(e) => {
                // Report with the world running again: formatting allocates,
                // and a panic in the stopped world could wait forever on a
                // lock a stopped thread holds.
                drop(world);
                panic!("pardon verify: {e}");
            }
        };
        cycle.verified = self.verify && !overflowed;
        cycle.mark = mark_start.elapsed();
        cycle.marked_objects = mark.objects;
        cycle.mark_workers = mark.workers;
        cycle.kind = kind;
        cycle.cards = mark.cards;
        cycle.live = live;
        cycle.weak_cleared = mark.weak_cleared;
        cycle.finalizers_queued = mark.finalizers_queued;
        self.pacer.after_cycle(kind, live);
        self.cycles.fetch_add(1, Relaxed);
        cycle.pause = stopped_at.elapsed() + cycle.ttsp;
        drop(world);
        cycle.total = t0.elapsed();
        cycle.heap_after = self.raw.stats().span_bytes;
        cycle.number = self.cycles.load(Relaxed);
        self.raw.scavenge_in(&scope);
        if mark.finalizers_queued > 0 && self.raw.config.finalizer_thread {
            self.finalizer_thread.notify();
        }
        self.registry
            .outside_stops(|| lock(&self.stats).record(&cycle));
        if self.trace {
            eprintln!("{}", cycle.trace_line());
        }
        Ok(cycle)
    }
}

impl Collector {
    /// Flushes every mutator's cache, so that every span is on a central
    /// list: those of stopped threads, and those of mutators whose thread
    /// is gone or detached (a leaked or thread-local `Mutator`). World
    /// stopped.
    pub(crate) fn flush_caches(&self) {
        self.mutators.with(|table| {
            for ms in table.all() {
                // SAFETY: no owner is inside an allocation: attached owners
                // are stopped outside no-preempt regions, and detached ones
                // use their cache only holding the coordinator lock, which
                // this stop holds. Restart is ordered after this by the
                // world's handshake.
                unsafe { (*ms.cache.get()).flush(&self.raw) };
            }
        });
    }

    /// Counts how each thread stopped.
    pub(crate) fn count_stopped(&self, world: &StoppedWorld<'_>, cycle: &mut CycleStats) {
        for t in world.threads() {
            match t.kind() {
                StopKind::Injected => cycle.stopped_injected += 1,
                StopKind::InHandler => cycle.stopped_in_handler += 1,
                StopKind::Poll => cycle.stopped_poll += 1,
                StopKind::SafeRegion => cycle.stopped_safe += 1,
                StopKind::Coordinator => {}
            }
        }
    }
}

/// Runs heap-maintenance steps in a no-preempt region when the caller is an
/// attached thread (see [`crate::sweep::LockScope`]).
pub(crate) struct NoPreemptScope<'a>(pub(crate) &'a Registry);

impl crate::sweep::LockScope for NoPreemptScope<'_> {
    fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        // An attached thread: a no-preempt region. An unattached one (a
        // `Heap::collect` caller that never attached) is never stopped, so
        // it must not sweep while another thread's collection has the world
        // stopped: that sweep would take a span off its list behind the
        // coordinator's back and rewrite its mark bits mid-mark (verify
        // failures, a span swept out of turn, live objects freed).
        self.0.outside_stops(f)
    }
}

/// Runs a collection from a public entry point. The callee-saved registers
/// are stored into an array in the entry point's own frame first, and the
/// coordinator's conservative range starts at that array: a caller's pointer
/// held only in rbx or r12-r15 is then on the scanned stack, even though the
/// collector's deeper frames push it below the range while it marks. (The
/// range must stop above those deeper frames: they change during marking and
/// would make a verification re-mark disagree.)
#[inline(always)]
pub(crate) fn with_entry<R>(f: impl FnOnce(usize) -> R) -> R {
    let mut regs = [0u64; pardon_preempt::NGPRS];
    pardon_preempt::spill_callee_saved(&mut regs);
    let at = std::hint::black_box(&regs).as_ptr() as usize;
    let r = f(at);
    std::hint::black_box(&regs);
    r
}
