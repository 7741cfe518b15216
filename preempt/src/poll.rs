//! Cooperative stops: polls, no-preempt regions, safe regions, and the poll
//! strategies loop code takes as a type parameter.

use std::sync::atomic::Ordering;

use crate::handshake::ThreadRecord;
use crate::park::poll_slow;
use crate::registry::Attached;
use crate::safe;

impl Attached {
    /// A safepoint poll: one load and a well-predicted branch; parks the thread
    /// if a stop is waiting for it.
    #[inline(always)]
    pub fn poll(&self) {
        let rec = self.record();
        if rec.poll_flag.load(Ordering::Relaxed) != 0 {
            poll_slow(rec);
        }
    }

    /// Enters a no-preempt region: signals that arrive inside it are turned
    /// into a deferred request, and the thread parks when the outermost region
    /// ends. For the library's own critical sections (allocation slow paths,
    /// frame linking). Regions nest.
    #[inline(always)]
    pub fn no_preempt(&self) -> NoPreempt<'_> {
        let rec = self.record();
        rec.enter_no_preempt();
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        NoPreempt { rec }
    }

    /// Runs `f` inside a safe region: the thread counts as stopped while `f`
    /// runs (it must not touch the managed heap) and is never signalled. Use
    /// around blocking system calls. If a stop is in progress when `f`
    /// returns, the thread waits for the restart.
    pub fn safe_region<R>(&self, f: impl FnOnce() -> R) -> R {
        let _g = self.enter_safe_region();
        f()
    }

    /// Runs `f` as a plainly running thread, which code that changes what a
    /// stopped world relies on (allocation, handle tables) must be. Called
    /// inside a safe region (from a closure given to
    /// [`Attached::safe_region`], or after a leaked [`SafeRegion`] guard),
    /// it leaves the region first, waiting for a stop in progress to end,
    /// and enters it again afterwards, on unwind too. Otherwise it just runs
    /// `f`.
    pub fn as_running<R>(&self, f: impl FnOnce() -> R) -> R {
        let rec = self.record();
        if !matches!(
            rec.state.load(Ordering::SeqCst),
            crate::state::SAFE | crate::state::SAFE_STOPPED
        ) {
            return f();
        }
        safe::exit_safe_region(rec);
        struct Reenter<'a>(&'a ThreadRecord);
        impl Drop for Reenter<'_> {
            fn drop(&mut self) {
                safe::enter_safe_region(self.0);
            }
        }
        let _again = Reenter(rec);
        f()
    }

    /// Enters a safe region until the guard is dropped. See
    /// [`Attached::safe_region`].
    pub fn enter_safe_region(&self) -> SafeRegion<'_> {
        let rec = self.record();
        if rec.detached.load(Ordering::Relaxed) {
            // Nothing stops a detached thread: no region to enter.
            return SafeRegion { rec };
        }
        assert_eq!(
            rec.no_preempt.load(Ordering::Relaxed),
            0,
            "a safe region cannot be entered inside a no-preempt region"
        );
        safe::enter_safe_region(rec);
        SafeRegion { rec }
    }

    /// A poller for loop code, bound to this thread.
    pub fn poller(&self) -> Poller<'_> {
        Poller { rec: self.record() }
    }
}

/// A no-preempt region; see [`Attached::no_preempt`].
#[must_use = "the region ends when the guard is dropped"]
pub struct NoPreempt<'a> {
    rec: &'a ThreadRecord,
}

impl NoPreempt<'_> {
    /// Ends the region like dropping the guard, but instead of parking here
    /// when a stop asked for the thread meanwhile, returns `true`: the caller
    /// must then [`poll`](Attached::poll) soon, with nothing of the heap's
    /// left half-done. For fast paths that want no call of their own: the
    /// caller can make that poll a tail call to a cold function.
    #[inline(always)]
    pub fn end_deferring_poll(self) -> bool {
        let rec = self.rec;
        std::mem::forget(self);
        end_region(rec)
    }
}

/// Leaves a no-preempt region; true if it was the outermost and a stop asked
/// for the thread meanwhile.
#[inline(always)]
fn end_region(rec: &ThreadRecord) -> bool {
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
    let prev = rec.exit_no_preempt();
    prev == 1 && rec.poll_flag.load(Ordering::Relaxed) != 0
}

impl Drop for NoPreempt<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if end_region(self.rec) {
            poll_slow(self.rec);
        }
    }
}

/// A safe region; see [`Attached::enter_safe_region`].
#[must_use = "the region ends when the guard is dropped"]
pub struct SafeRegion<'a> {
    rec: &'a ThreadRecord,
}

impl Drop for SafeRegion<'_> {
    fn drop(&mut self) {
        safe::exit_safe_region(self.rec);
    }
}

/// A thread's poll, detached from the `Attached` borrow so loop code can hold
/// it in a register. `Copy`.
#[derive(Clone, Copy)]
pub struct Poller<'a> {
    rec: &'a ThreadRecord,
}

impl Poller<'_> {
    /// See [`Attached::poll`].
    #[inline(always)]
    pub fn poll(&self) {
        if self.rec.poll_flag.load(Ordering::Relaxed) != 0 {
            poll_slow(self.rec);
        }
    }
}

/// How a loop polls. Loop code is generic over it, so [`NoPoll`] compiles to
/// nothing and [`StripMined`] polls every N iterations.
///
/// Loops that a compiler could strip-mine (counted loops) are written as an
/// outer loop over strips of [`PollStrategy::STRIP`] iterations, calling
/// [`PollStrategy::end_strip`] after each, with an inner loop that calls
/// [`PollStrategy::tick`] only when `STRIP == usize::MAX` (strategies that
/// are not strip-mined). [`StripMined`] thus polls once per strip and leaves
/// the inner loop poll-free, so it still vectorises, as in HotSpot. Loops of
/// unknown trip count (spin-waits) call `tick` every iteration; strip-mined
/// strategies count those down.
pub trait PollStrategy {
    /// Iterations per strip in counted loops; `usize::MAX` for one strip.
    const STRIP: usize = usize::MAX;
    /// Called once per loop iteration (per back edge).
    fn tick(&mut self);
    /// Called after each strip of a counted loop.
    #[inline(always)]
    fn end_strip(&mut self) {}
    /// Called between kernel calls (the only poll of the cooperative-only
    /// baseline).
    fn between_calls(&mut self);
}

/// Never polls: signal preemption, or a reference run with no runtime.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPoll;

impl PollStrategy for NoPoll {
    #[inline(always)]
    fn tick(&mut self) {}
    #[inline(always)]
    fn between_calls(&mut self) {}
}

/// Polls on every back edge.
#[derive(Clone, Copy)]
pub struct EveryIteration<'a>(pub Poller<'a>);

impl PollStrategy for EveryIteration<'_> {
    #[inline(always)]
    fn tick(&mut self) {
        self.0.poll();
    }
    #[inline(always)]
    fn between_calls(&mut self) {
        self.0.poll();
    }
}

/// Polls every `N` back edges (HotSpot's loop strip mining).
#[derive(Clone, Copy)]
pub struct StripMined<'a, const N: u32> {
    poller: Poller<'a>,
    left: u32,
}

impl<'a, const N: u32> StripMined<'a, N> {
    /// A strip-mined poller.
    pub fn new(poller: Poller<'a>) -> Self {
        StripMined { poller, left: N }
    }
}

impl<const N: u32> PollStrategy for StripMined<'_, N> {
    const STRIP: usize = N as usize;
    #[inline(always)]
    fn end_strip(&mut self) {
        self.poller.poll();
    }
    #[inline(always)]
    fn tick(&mut self) {
        self.left -= 1;
        if self.left == 0 {
            self.left = N;
            self.poller.poll();
        }
    }
    #[inline(always)]
    fn between_calls(&mut self) {
        self.poller.poll();
    }
}

/// Polls only between kernel calls, never inside a loop (Go ≤ 1.13).
#[derive(Clone, Copy)]
pub struct BetweenCalls<'a>(pub Poller<'a>);

impl PollStrategy for BetweenCalls<'_> {
    #[inline(always)]
    fn tick(&mut self) {}
    #[inline(always)]
    fn between_calls(&mut self) {
        self.0.poll();
    }
}
