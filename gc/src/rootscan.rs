//! Gathering a stopped world's roots into a reserved buffer: global roots,
//! every handle table, and each stopped thread's frames (precisely), stack
//! and registers (conservatively); then marking from them.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use pardon_preempt::{StopKind, StoppedWorld, SuspendedTask, TaskScanner};
use pardon_stackscan::{ObjectFinder, RootKind, Scanner};

use crate::collector::Collector;
use crate::stats::CycleStats;

impl Collector {
    /// Gathers every root — global roots, then each stopped thread's handle
    /// table, frames, conservative stack range and registers — into the
    /// root buffer: conservative hits as the bases of the objects they keep
    /// alive, precise slots as their values (the marker resolves every root
    /// word exactly, so the scanner does not look slots up a second time).
    ///
    /// Roots are gathered once and then marked from the buffer (twice in
    /// verification mode), because a thread held in a safe region keeps
    /// running: its blocking call, or its return into the code that waits for
    /// the restart, writes stack words inside its scanned range. Those words
    /// are never its live references (those sit in its callers' frames and
    /// its saved registers, which do not change), but a stale address they
    /// overwrite would make two scans of the same stopped world disagree.
    pub(crate) fn gather_roots(
        &self,
        world: &StoppedWorld<'_>,
        entry_sp: usize,
        suspended: Suspended<'_>,
        cycle: &mut CycleStats,
        sink: &mut impl FnMut(usize),
    ) {
        let raw = &self.raw;
        self.globals.for_each(|v| {
            if let Some(b) = raw.find_object(v) {
                sink(b);
            }
        });
        self.mutators.with(|table| {
            // Every handle table, whatever became of its thread: a `Root`
            // may outlive its thread's attachment (a thread-local
            // destructor that runs after the exit guard).
            for ms in table.all() {
                ms.handles.for_each(|v| {
                    if let Some(b) = raw.find_object(v) {
                        sink(b);
                    }
                });
            }
        });
        self.gather_threads(world, entry_sp, suspended, cycle, sink);
    }

    /// Offers the roots gathered into `roots` to `m`: the buffer, or, if it
    /// overflowed (sixteen million root hits), the roots gathered again and
    /// marked as they are found (which verification cannot replay), with
    /// the same `suspended` as the buffer was gathered with.
    pub(crate) fn offer_roots(
        &self,
        world: &StoppedWorld<'_>,
        entry_sp: usize,
        suspended: Suspended<'_>,
        roots: &RootBuf,
        m: &mut crate::mark::Marker<'_>,
    ) {
        if roots.overflowed() {
            let mut again = CycleStats::default();
            self.gather_roots(world, entry_sp, suspended, &mut again, &mut |b| {
                m.mark_word(b);
            });
        } else {
            for &b in roots.words() {
                m.mark_word(b);
            }
        }
    }

    /// The stack, frames and registers of every stopped thread, then of
    /// the suspended tasks (parked goroutines) the world reports that
    /// `suspended` asks for.
    pub(crate) fn gather_threads(
        &self,
        world: &StoppedWorld<'_>,
        entry_sp: usize,
        suspended: Suspended<'_>,
        cycle: &mut CycleStats,
        sink: &mut impl FnMut(usize),
    ) {
        let finder = HeapFinder(&self.raw);
        for t in world.threads() {
            let (lo, hi) = t.stack_bounds();
            // The thread's task word is the head of its frame chain (see
            // `Mutator::frames`): 0 for a thread that declared none.
            let head = t.task_word();
            let mut hits: usize = 0;
            let mut sc = Scanner::new(&finder, lo, hi, |base, kind| {
                if kind != RootKind::Precise {
                    hits += 1;
                }
                sink(base);
            });
            let scan_lo = if t.kind() == StopKind::Coordinator {
                entry_sp
            } else {
                t.scan_lo()
            };
            // SAFETY: the thread is stopped, or is this coordinator, whose
            // frames above its entry point do not change while it marks, or
            // is held in a safe region, whose scanned range stays readable
            // (it is its own live stack); its frames are linked (the task
            // word is written only by frame links and by a scheduler
            // restoring a task's own word, as `task_word_cell` requires).
            unsafe { sc.thread(scan_lo, head, t.gprs()) };
            t.for_each_vector_word(|v| sc.word(v as usize, RootKind::Register));
            cycle.words_scanned += sc.stats.words_examined;
            cycle.precise_roots += sc.stats.precise_roots;
            cycle.conservative_roots += hits;
        }
        let raw = &self.raw;
        let before = cycle.suspended_tasks;
        let mut task = |task: &SuspendedTask<'_>| {
            // SAFETY: the source promises `[sp, hi)` readable and unchanged
            // until the restart, and the word the task's own chain head,
            // saved when it was switched out (`TaskSource`'s contract).
            unsafe { scan_task(raw, task, cycle, sink) };
            cycle.suspended_tasks += 1;
        };
        match suspended {
            Suspended::All => {
                if let Some(parts) = self.gather_parked_in_parallel(world) {
                    parts.hand_over(cycle, sink);
                } else {
                    world.for_each_suspended(&mut task);
                }
                self.suspended_seen
                    .store(cycle.suspended_tasks - before, Relaxed);
            }
            Suspended::Defer(scanner) => world.defer_suspended(scanner, &mut task),
            Suspended::EndDeferral(scanner) => world.end_deferred(scanner, &mut task),
        }
    }
}

impl Collector {
    /// Marks from every suspended task's stack, read again on this thread
    /// alone (verification's independent view of what a gathering read,
    /// perhaps in parts).
    pub(crate) fn rescan_suspended(
        &self,
        world: &StoppedWorld<'_>,
        m: &mut crate::mark::Marker<'_>,
    ) {
        let mut ignored = CycleStats::default();
        world.for_each_suspended(|task| {
            // SAFETY: as in `gather_threads`.
            unsafe {
                scan_task(&self.raw, task, &mut ignored, &mut |b| {
                    m.mark_word(b);
                })
            };
        });
    }

    /// Reads the stacks of every suspended task (parked goroutines) on the
    /// marking threads at once, each a part of them into a root buffer of
    /// its own (`part_roots`). `None` where the caller must read them
    /// alone: one marking thread, no helpers (a forked child), no task
    /// source, or a part's buffer full.
    fn gather_parked_in_parallel(&self, world: &StoppedWorld<'_>) -> Option<GatheredParts<'_>> {
        let workers = self.part_roots.len();
        let team = self.raw.helpers.team()?;
        if workers < 2
            || world.task_sources() == 0
            || self.suspended_seen.load(Relaxed) < PARALLEL_FROM
        {
            return None;
        }
        let parts = world.suspended_parts();
        let raw = &self.raw;
        let job = |k: usize| {
            let mut g = crate::heap::lock(&self.part_roots[k]);
            let (buf, stats) = &mut *g;
            buf.clear();
            *stats = CycleStats::default();
            parts.for_each(k, workers, |task| {
                // SAFETY: as for the whole world's report (`gather_threads`):
                // the parts are that report, split.
                unsafe { scan_task(raw, task, stats, &mut |b| buf.push(b)) };
                stats.suspended_tasks += 1;
            });
        };
        team.gather_round(&job, workers);
        let full = self
            .part_roots
            .iter()
            .any(|p| crate::heap::lock(p).0.overflowed());
        (!full).then_some(GatheredParts(&self.part_roots))
    }
}

/// The suspended tasks the last gathering read from which the next reads
/// them in parallel: below, waking the helpers costs more than sharing
/// the reading saves (`goroutines --mode gc`: at 1,000 parked the parallel
/// reading took 180-238 µs against 162-175 alone; at 10,000 1.6-2.3 ms
/// against 2.1-2.7; at 100,000 13-19 ms against 20-26).
pub(crate) const PARALLEL_FROM: usize = 4096;

/// The parked goroutines' roots, read in parts (`gather_parked_in_parallel`).
struct GatheredParts<'a>(&'a [std::sync::Mutex<(RootBuf, CycleStats)>]);

impl GatheredParts<'_> {
    /// Hands every part's roots to `sink` and adds up the parts' figures.
    fn hand_over(self, cycle: &mut CycleStats, sink: &mut impl FnMut(usize)) {
        for p in self.0 {
            let g = crate::heap::lock(p);
            let (buf, stats) = &*g;
            for &w in buf.words() {
                sink(w);
            }
            cycle.words_scanned += stats.words_scanned;
            cycle.precise_roots += stats.precise_roots;
            cycle.conservative_roots += stats.conservative_roots;
            cycle.suspended_tasks += stats.suspended_tasks;
        }
    }
}

/// Which suspended tasks a stop's root gathering scans (see
/// `pardon_preempt`'s deferral, and `mark::stacks`).
#[derive(Clone, Copy)]
pub(crate) enum Suspended<'a> {
    /// Every one, in the stop.
    All,
    /// A concurrent cycle's first stop: begins a deferral with this
    /// scanner; scans now only the tasks of sources that cannot defer.
    Defer(&'a Arc<dyn TaskScanner>),
    /// Its second stop: ends the scanner's deferral; scans the tasks
    /// still owed a scan (those of sources that did not defer: all of
    /// theirs).
    EndDeferral(&'a Arc<dyn TaskScanner>),
}

/// Scans one suspended task by the hybrid rule (its frames precisely; its
/// saved registers and stack from its saved stack pointer up to its
/// second-innermost frame conservatively), passing each root to `sink`
/// (conservative hits as object bases, precise slots as their values).
/// Allocation-free.
///
/// # Safety
/// `[task.sp, task.stack.1)` is mapped, readable and not written while
/// this runs, and `task.word` is the head of the task's own frame chain
/// (or 0), as `TaskSource`'s contract promises its reports.
pub(crate) unsafe fn scan_task(
    raw: &crate::heap::RawHeap,
    task: &SuspendedTask<'_>,
    cycle: &mut CycleStats,
    sink: &mut impl FnMut(usize),
) {
    let finder = HeapFinder(raw);
    let mut hits: usize = 0;
    let (lo, hi) = task.stack;
    let mut sc = Scanner::new(&finder, lo, hi, |base, kind| {
        if kind != RootKind::Precise {
            hits += 1;
        }
        sink(base);
    });
    // SAFETY: the caller's promise.
    unsafe { sc.thread(task.sp, task.word, task.registers) };
    cycle.words_scanned += sc.stats.words_examined;
    cycle.precise_roots += sc.stats.precise_roots;
    cycle.conservative_roots += hits;
}

/// The heap as the stack scanner's oracle: exact lookups, and the arena as
/// the range outside which no word can name an object.
struct HeapFinder<'a>(&'a crate::heap::RawHeap);

impl ObjectFinder for HeapFinder<'_> {
    #[inline(always)]
    fn find_object(&self, addr: usize) -> Option<usize> {
        self.0.find_object(addr)
    }

    fn candidates(&self) -> Option<(usize, usize)> {
        // `find_object` answers `None` outside the arena (`span_of`).
        Some(self.0.arena_range())
    }
}

/// The roots of one collection, as root words, in a `MAP_NORESERVE`
/// mapping: gathering them never calls the system allocator. Used only by the
/// coordinator, inside a stopped world.
pub(crate) struct RootBuf {
    map: memmap2::MmapMut,
    len: usize,
    overflow: bool,
}

impl RootBuf {
    /// Room for 2^24 roots (128 MiB of address space, committed as used).
    pub(crate) const CAP: usize = 1 << 24;

    pub(crate) fn new() -> std::io::Result<RootBuf> {
        Ok(RootBuf {
            map: memmap2::MmapOptions::new()
                .len(Self::CAP * 8)
                .no_reserve_swap()
                .map_anon()?,
            len: 0,
            overflow: false,
        })
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.overflow = false;
    }

    #[inline]
    pub(crate) fn push(&mut self, base: usize) {
        if self.len == Self::CAP {
            // Full: the collector gathers again, marking as it goes.
            self.overflow = true;
            return;
        }
        self.len += 1;
        let i = self.len - 1;
        self.words_mut()[i] = base;
    }

    pub(crate) fn words_mut(&mut self) -> &mut [usize] {
        // SAFETY: the mapping holds CAP aligned words and lives as long as
        // `self`; `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr() as *mut usize, Self::CAP) }
    }

    pub(crate) fn words(&self) -> &[usize] {
        // SAFETY: the first `len` words were written by `push`.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr() as *const usize, self.len) }
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.overflow
    }
}
