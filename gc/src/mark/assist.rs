//! Who marks while the mutators run: the background marker's share of the
//! CPUs, and mutator assists (Go's `gcBackgroundUtilization` and
//! `gcAssistAlloc`, simplified).
//!
//! # The background share
//!
//! Between a concurrent cycle's two stops the coordinator (with helpers, if
//! the share allows) marks while the mutators run. It may use
//! `Config::background_mark_percent` of the machine's cores: 25 % by
//! default, Go's figure. A share of one core or more runs that many marking
//! threads flat out (parallel rounds limited to that many workers); a share
//! below one core (two cores at 25 %: half a core) runs the coordinator
//! alone, duty-cycled: it marks for a quantum, then sleeps long enough that
//! marking takes that fraction of its time (Go's *fractional* worker). It
//! does not sleep while fewer attached threads run than there are cores (a
//! CPU would idle: Go runs idle mark workers there), nor while an assist
//! is waiting for work.
//!
//! # Assists
//!
//! A mutator that allocates while the cycle marks owes marking work in
//! proportion: at the first stop the cycle takes the ratio of the marking
//! it expects (the bytes the last cycle left live) to the allocation it
//! can allow before the goal (`goal - allocated`). The debt is global (the
//! mutators' allocation since the first stop, times the ratio), and so is
//! the credit (the bytes marked by the background, by assists and by the
//! barrier's shading). Whenever allocation passes the next check point
//! (`ASSIST_STEP` bytes on; the pacer's trigger is re-armed to it) the
//! mutator on the slow path compares the two; while in debt, it marks: it
//! takes gray objects from the shaded queue (or the helpers' pool) onto a
//! gray stack of its own, drains up to `ASSIST_UNIT` bytes, and puts what
//! is left back on the shaded queue. A mutator that allocates fast crosses
//! more check points and pays more; one that does not allocate pays
//! nothing. With no gray object to take it says it is hungry (the
//! background marker then hands over part of its stack) and waits a few
//! microseconds; after `ASSIST_WAITS` fruitless tries it goes on. The
//! brake stays as the bound: at the goal a mutator waits for the cycle to
//! end.
//!
//! # Soundness
//!
//! A unit takes its gray objects from the shaded queue and counts itself
//! *active* under the queue's lock, and puts what is left back before it
//! stops counting; the coordinator closes the marking (after which no
//! unit starts) only under the same lock, with the queue empty and no unit
//! active. So when the second stop comes, every object marked but not yet
//! scanned is on the coordinator's stack or in the shaded queue, which
//! that stop takes; the invariant the deletion barrier keeps is unchanged.
//! The queue and stack-pool operations run in no-preempt regions (a stop
//! never finds their locks held); the marking between them does not, so a
//! stop other than the second (the next cycle's cannot come earlier) may
//! park a mutator mid-unit. A long no-preempt region would make every stop
//! wait for a mutator the kernel had descheduled inside it (three threads
//! on two CPUs: 1-4 ms stops, seen with the first version). An assist's
//! overflowed stack is recorded, and the second stop rescans the heap as
//! for any overflow.
//!
//! A `fork` in the middle of a unit leaves the child with a unit that
//! never ends; a concurrent cycle in flight at a fork does not finish in
//! the child in any case (its coordinator thread is not there).

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::collector::Collector;
use crate::heap::lock;
use crate::mark::barrier::MARK;
use crate::mark::{GrayStack, Marker};

/// Allocation between two assist checks while marking.
pub(crate) const ASSIST_STEP: usize = 64 << 10;
/// Most bytes of marking in one assist unit.
const ASSIST_UNIT: usize = 32 << 10;
/// Least bytes of marking an assist unit aims for.
const ASSIST_MIN: usize = 4 << 10;
/// Gray entries an assist takes at a time.
const ASSIST_TAKE: usize = 64;
/// Entries of an assist's gray stack.
const ASSIST_STACK: usize = 1 << 16;
/// Tries of an assist that finds no gray object, each after a short wait.
const ASSIST_WAITS: u32 = 2;
/// How long a hungry assist waits (spinning) before looking again.
const HUNGRY_WAIT: Duration = Duration::from_micros(20);
/// The duty-cycled background marker's quantum.
const QUANTUM: Duration = Duration::from_micros(500);
/// Most assist gray stacks a heap makes: more mutators than this assisting
/// at once leave the rest to skip (the brake still bounds their debt).
const ASSIST_STACKS: usize = 64;

/// Most gray entries handed to hungry assists at once.
const DONATE_MAX: usize = 1024;

/// The shared state of marking while the mutators run: one per heap.
pub(crate) struct Assist {
    /// The background share, in thousandths of a core (from
    /// `Config::background_mark_percent` and the machine's cores).
    /// Immutable.
    share_milli: usize,
    /// The machine's cores. Immutable.
    cores: usize,
    /// Bytes of marking owed per byte allocated, × 2^16: set by the
    /// coordinator at a cycle's first stop, read by assists.
    ratio: AtomicU64,
    /// `RawHeap::allocated` at the first stop (caches flushed).
    alloc_start: AtomicUsize,
    /// Bytes the background marker has marked this cycle: published by the
    /// coordinator after each quantum or round.
    background: AtomicUsize,
    /// Bytes assists marked this cycle: added to by assists, taken by the
    /// coordinator at the second stop.
    assisted: AtomicUsize,
    /// Assists waiting for gray objects: raised and lowered by each around
    /// its wait; read by background markers, which then hand work over.
    pub(crate) hungry: AtomicUsize,
    /// Hand-overs of gray objects to hungry assists so far (raised by the
    /// coordinator after each), which a waiting assist watches.
    donations: AtomicUsize,
    /// Assists inside a unit (they may hold gray objects): the coordinator
    /// waits for none before it decides the marking is done.
    active: AtomicUsize,
    /// The coordinator found nothing queued and no assist under way, and
    /// is on its way to the second stop: assists take no more work. Set
    /// under the shaded queue's lock (see `take_queued_or_close`), cleared
    /// at the first stop.
    closing: AtomicBool,
    /// An assist's gray stack overflowed this cycle: set by the assist,
    /// taken by the coordinator at the second stop (which rescans).
    overflowed: AtomicBool,
    /// Assist gray stacks not in use (each in its own mapping, made on
    /// first need and kept). Taken and given back inside no-preempt
    /// regions, so the vector has room for `ASSIST_STACKS` from the start
    /// and never grows (growing calls the system allocator, whose lock a
    /// stopped thread may hold).
    stacks: Mutex<Vec<GrayStack>>,
    /// Assist stacks made so far, at most `ASSIST_STACKS`. Under `stacks`'
    /// lock.
    stacks_made: AtomicUsize,
    /// Assist units run this cycle (a statistic).
    units: AtomicUsize,
    /// Mutators that waited at the brake this cycle (a statistic).
    pub(crate) brake_waits: AtomicUsize,
}

/// What assists did in one cycle.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AssistFigures {
    pub bytes: usize,
    pub units: usize,
    pub brake_waits: usize,
}

impl Assist {
    pub(crate) fn new(background_percent: u32) -> Assist {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Assist {
            share_milli: (background_percent as usize * cores * 10).max(1),
            cores,
            ratio: AtomicU64::new(0),
            alloc_start: AtomicUsize::new(0),
            background: AtomicUsize::new(0),
            assisted: AtomicUsize::new(0),
            hungry: AtomicUsize::new(0),
            donations: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            overflowed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            stacks: Mutex::new(Vec::with_capacity(ASSIST_STACKS)),
            stacks_made: AtomicUsize::new(0),
            units: AtomicUsize::new(0),
            brake_waits: AtomicUsize::new(0),
        }
    }

    /// Bytes of marking done this cycle that count against the debt: the
    /// background's, the assists' and the barrier's shading
    /// (`shaded_bytes`).
    fn credit(&self, shaded_bytes: usize) -> usize {
        self.background.load(Relaxed) + self.assisted.load(Relaxed) + shaded_bytes
    }

    /// Bytes of marking the mutators owe with `allocated` bytes allocated.
    fn owed(&self, allocated: usize) -> usize {
        let since = allocated.saturating_sub(self.alloc_start.load(Relaxed)) as u128;
        ((since * self.ratio.load(Relaxed) as u128) >> 16) as usize
    }
}

impl Collector {
    /// The first stop of a concurrent cycle, caches flushed: sets the
    /// assist ratio for a cycle expected to mark `expected` bytes.
    pub(crate) fn begin_assists(&self, expected: usize) {
        let a = &self.raw.assist;
        let allocated = self.raw.allocated.load(Relaxed);
        // Allow at least a step of allocation, so that a cycle asked for
        // at the goal does not make every allocation mark its fill.
        let room = self.pacer.goal().saturating_sub(allocated).max(ASSIST_STEP) as u128;
        let ratio = ((expected as u128) << 16) / room;
        a.ratio.store(ratio.min(u64::MAX as u128) as u64, Relaxed);
        a.alloc_start.store(allocated, Relaxed);
        a.background.store(0, Relaxed);
        a.assisted.store(0, Relaxed);
        a.units.store(0, Relaxed);
        a.brake_waits.store(0, Relaxed);
        a.overflowed.store(false, Relaxed);
        a.closing.store(false, Relaxed);
    }

    /// The second stop: what assists did, and whether the mark must rescan
    /// for an assist's overflow (then noted on `m`).
    pub(crate) fn end_assists(&self, m: &mut Marker<'_>) -> AssistFigures {
        let a = &self.raw.assist;
        if a.overflowed.swap(false, Relaxed) {
            m.note_overflow();
        }
        AssistFigures {
            bytes: a.assisted.swap(0, Relaxed),
            units: a.units.swap(0, Relaxed),
            brake_waits: a.brake_waits.swap(0, Relaxed),
        }
    }

    /// A mutator's allocation crossed an assist check point while the cycle
    /// marks: marks while the mutators' debt exceeds their credit (see the
    /// module comment). Outside any no-preempt region.
    pub(crate) fn assist(&self) {
        let a = &self.raw.assist;
        let mut fruitless = 0;
        while self.raw.phase.load(Relaxed) == MARK {
            let owed = a.owed(self.raw.allocated.load(Relaxed));
            let paid = a.credit(self.raw.shaded_bytes.load(Relaxed));
            if paid >= owed {
                return;
            }
            let budget = (owed - paid).clamp(ASSIST_MIN, ASSIST_UNIT);
            match self.assist_unit(budget) {
                None => return,
                Some(true) => {
                    fruitless = 0;
                    continue;
                }
                Some(false) => {}
            }
            fruitless += 1;
            if fruitless > ASSIST_WAITS {
                return;
            }
            // Ask the background marker for work, and wait a moment for
            // it (a donation takes it some dozens of objects), or for its
            // credit to cover the debt.
            // (No lock here: outside a no-preempt region, a stop could
            // park this thread holding it. A version that peeked at the
            // queue with `try_lock` deadlocked the second stop.)
            a.hungry.fetch_add(1, SeqCst);
            let t0 = Instant::now();
            let donations = a.donations.load(Relaxed);
            while t0.elapsed() < HUNGRY_WAIT
                && a.donations.load(Relaxed) == donations
                && a.credit(self.raw.shaded_bytes.load(Relaxed)) < owed
            {
                std::hint::spin_loop();
            }
            a.hungry.fetch_sub(1, SeqCst);
        }
    }

    /// One assist unit: takes gray objects, marks up to `budget` bytes from
    /// them, and queues what is left. `Some(false)` if there was nothing to
    /// take; `None` once the marking is closing or over.
    ///
    /// Only the queue and pool operations exclude stops (a stop must never
    /// find their locks held); the marking between them may be interrupted
    /// by any stop but the second one of this cycle, which waits for every
    /// unit that holds gray objects (see `take_queued_or_close`). A stop
    /// inside a long no-preempt region would wait for a mutator the kernel
    /// has descheduled: with three threads on two CPUs, 1-4 ms.
    fn assist_unit(&self, budget: usize) -> Option<bool> {
        // A goroutine is never switched out holding a unit's gray objects:
        // the cycle cannot end until they are marked, and another
        // goroutine of its worker waiting at the brake would block the
        // only thread that can run it (see `heap::lock`).
        let _no_yield = pardon_preempt::no_yield_here();
        let raw = &self.raw;
        let a = &raw.assist;
        let (mut stack, took) = self.registry.outside_stops(|| {
            if raw.phase.load(Relaxed) != MARK || a.closing.load(Relaxed) {
                return None;
            }
            let mut stack = {
                let mut stacks = lock(&a.stacks);
                match stacks.pop() {
                    Some(s) => s,
                    // More assists at once than stacks: this one skips.
                    None if a.stacks_made.load(Relaxed) == ASSIST_STACKS => return None,
                    None => {
                        // A mapping: a system call, not the allocator.
                        let s = GrayStack::new(ASSIST_STACK).ok()?;
                        a.stacks_made.fetch_add(1, Relaxed);
                        s
                    }
                }
            };
            let mut queue = lock(&raw.shaded);
            if a.closing.load(Relaxed) {
                drop(queue);
                lock(&a.stacks).push(stack);
                return None;
            }
            // Counted under the queue's lock, so the coordinator never sees
            // the work neither queued nor announced; a unit that finds
            // nothing is not counted (assists that keep looking must not
            // hold the end of the marking off).
            let mut took = queue.give_some(&mut stack, ASSIST_TAKE);
            if took > 0 {
                a.active.fetch_add(1, SeqCst);
            }
            drop(queue);
            if took == 0 {
                if let Some(team) = raw.helpers.team() {
                    // Only rounds fill the pool, and none runs once the
                    // coordinator can close: counted first all the same.
                    a.active.fetch_add(1, SeqCst);
                    took = team.give_to(&mut stack, ASSIST_TAKE);
                    if took == 0 {
                        a.active.fetch_sub(1, SeqCst);
                    }
                }
            }
            Some((stack, took))
        })?;
        if took > 0 {
            let bytes = stack.drain_assist(raw, budget);
            a.assisted.fetch_add(bytes, Relaxed);
            a.units.fetch_add(1, Relaxed);
        }
        self.registry.outside_stops(|| {
            if took > 0 {
                // What does not fit is recorded as the queue's overflow.
                stack.spill_into(&mut lock(&raw.shaded));
                a.active.fetch_sub(1, SeqCst);
            }
            lock(&a.stacks).push(stack);
        });
        Some(took > 0)
    }

    /// The coordinator, between rounds of the concurrent mark, its gray
    /// stack empty: moves what the barrier shaded and the assists left onto
    /// `m` and returns how many; or, if nothing is queued and no unit holds
    /// gray objects (waiting for those that do: units are short), closes
    /// the marking to assists and returns 0. Then nothing gray exists
    /// outside the shaded queue, and only the barrier adds to it until the
    /// second stop takes it.
    pub(crate) fn take_queued_or_close(&self, m: &mut Marker<'_>) -> usize {
        let a = &self.raw.assist;
        loop {
            let taken = self.registry.outside_stops(|| {
                let mut queue = lock(&self.raw.shaded);
                if !queue.is_empty() {
                    return Some(m.take_all(&mut queue));
                }
                if a.active.load(SeqCst) == 0 {
                    a.closing.store(true, Relaxed);
                    return Some(0);
                }
                None
            });
            match taken {
                Some(n) => return n,
                None => std::thread::yield_now(),
            }
        }
    }

    /// The concurrent mark's background part: drains `m`'s gray objects
    /// within the background share (see the module comment).
    pub(crate) fn mark_in_background(&self, m: &mut Marker<'_>) {
        let a = &self.raw.assist;
        if a.share_milli >= 1000 {
            m.complete_with(a.share_milli / 1000);
            a.background.store(m.marked_bytes(), Relaxed);
            return;
        }
        let share = a.share_milli as f64 / 1000.0;
        loop {
            // A quantum, handing work over once to assists that wait.
            let t0 = Instant::now();
            let mut gave = false;
            let emptied = loop {
                let heed = !gave;
                let base = m.marked_bytes();
                let emptied = m.drain_until(|bytes| {
                    // Credit published as it is earned, so assists pay only
                    // for what the background has not done.
                    a.background.store(base + bytes, Relaxed);
                    (heed && a.hungry.load(Relaxed) > 0) || t0.elapsed() >= QUANTUM
                });
                if emptied || t0.elapsed() >= QUANTUM {
                    break emptied;
                }
                let k = (m.gray_len() / 2).clamp(1, DONATE_MAX);
                self.registry
                    .outside_stops(|| m.give_gray(&mut lock(&self.raw.shaded), k));
                a.donations.fetch_add(1, Relaxed);
                gave = true;
            };
            a.background.store(m.marked_bytes(), Relaxed);
            if emptied {
                break;
            }
            let me = usize::from(pardon_preempt::is_attached());
            if self.registry.running_threads() - me < a.cores {
                // A CPU would idle: mark on it.
                continue;
            }
            let until = Instant::now() + t0.elapsed().mul_f64((1.0 - share) / share);
            self.registry.blocking(|| loop {
                let now = Instant::now();
                if now >= until || a.hungry.load(Relaxed) > 0 {
                    break;
                }
                std::thread::sleep((until - now).min(Duration::from_micros(200)));
            });
        }
        // Recovers from an overflow, if any (the stack is empty).
        m.complete_with(1);
    }
}
