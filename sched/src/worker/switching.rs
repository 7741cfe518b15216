//! The switches between a worker's scheduler and its goroutines: into a
//! goroutine (`prepare_switch_in`, then `context::switch`), out of one
//! back to the scheduler (`to_scheduler`, `switch_out`), from one parking
//! goroutine straight into the one it woke (`hand_off`, `pass_over`), a
//! goroutine's first and last instructions (`task_entry`), and the
//! preemption signal's yield hook and the poll's slow path, which switch
//! a goroutine out at the end of its slice. Each keeps the depth
//! invariant of the module above.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::Arc;

use super::{worker, Worker};
use crate::context::switch;
use crate::queue::TaskRef;
use crate::task::{Task, DEAD, RUNNING};

/// What every switch into a goroutine that has a stack does first, at
/// depth 1: marks it running, pays the scan a deferral may want of it,
/// and tells the overflow handler and the preempt record which stack the
/// thread is about to run on and which task word is the goroutine's.
pub(super) fn prepare_switch_in(me: &Worker, t: &TaskRef) {
    let shared = &me.shared;
    let p = me.proc_();
    // Release: only the worker that dequeued it writes it now (wakers act
    // only on WAITING).
    t.state.store(RUNNING, Release);
    // Held by this worker until it lets go again (a migrating runtime's).
    t.released.store(false, Relaxed);
    // SAFETY: read-only: the stack stays with the task while it runs.
    let (lo, hi) = match unsafe { (*t.stack.get()).as_ref() } {
        Some(s) => (s.bottom(), s.top()),
        None => unreachable!("a task runs with a stack"),
    };
    if shared.track_tasks {
        // Before the deferral check: a stop that begins a deferral after
        // this store sees this goroutine as running (both at depth 1).
        p.current.store(Arc::as_ptr(t) as usize, Relaxed);
        if shared.deferral.on() {
            shared.deferral.before_resume(t);
        }
    }
    crate::overflow::set_guard(lo - crate::stack::GUARD, lo);
    if let Some(a) = me.attached() {
        // SAFETY: depth 1; the goroutine lowers it only once it runs on
        // this stack, and it stays on it until it raises it again.
        unsafe { a.set_stack_bounds(lo, hi) };
        // SAFETY: the goroutine's own word, saved when it was last
        // switched out (0 before its first run), as the cell requires.
        unsafe { a.task_word_cell().store(*t.word.get(), Relaxed) };
    }
}

/// What every switch out of a goroutine does, at depth 1: its task word
/// goes with it (a stop sees it in the task source's report), and the
/// record holds none until the next goroutine's is put back.
pub(super) fn save_word(me: &Worker, t: &TaskRef) {
    if let Some(a) = me.attached() {
        // Only this thread writes the cell (load and store, not a swap: a
        // locked instruction a switch). SAFETY: the cell's contract: 0,
        // or a goroutine's own saved word.
        let cell = unsafe { a.task_word_cell() };
        let w = cell.load(Relaxed);
        cell.store(0, Relaxed);
        // SAFETY: only the worker that ran a task touches its cells.
        unsafe { *t.word.get() = w };
    }
    if me.shared.track_tasks {
        me.proc_().current.store(0, Relaxed);
    }
}

/// `save_word` for `from` and `prepare_switch_in` for `to` at once, for a
/// hand-off from one goroutine straight to the other, at depth 1: the
/// record and the flags are looked up once, and the task word and
/// `Proc::current` go from one goroutine's to the other's without the
/// empty value between (nothing reads either until the thread is at depth
/// 0 again, on `to`'s stack). Its parts keep `prepare_switch_in`'s order.
#[inline]
fn pass_over(me: &Worker, from: &TaskRef, to: &TaskRef) {
    let shared = &me.shared;
    // Release: as in `prepare_switch_in`.
    to.state.store(RUNNING, Release);
    to.released.store(false, Relaxed);
    // SAFETY: read-only: the stack stays with the task while it runs.
    let (lo, hi) = match unsafe { (*to.stack.get()).as_ref() } {
        Some(s) => (s.bottom(), s.top()),
        None => unreachable!("a task runs with a stack"),
    };
    if shared.track_tasks {
        me.proc_().current.store(Arc::as_ptr(to) as usize, Relaxed);
        if shared.deferral.on() {
            shared.deferral.before_resume(to);
        }
    }
    crate::overflow::set_guard(lo - crate::stack::GUARD, lo);
    if let Some(a) = me.attached() {
        // SAFETY: the cell's contract: only this thread writes it, 0 or a
        // goroutine's own saved word; only the worker that runs a task
        // touches its cells.
        unsafe {
            let cell = a.task_word_cell();
            *from.word.get() = cell.load(Relaxed);
            cell.store(*to.word.get(), Relaxed);
        }
        // SAFETY: as in `prepare_switch_in`.
        unsafe { a.set_stack_bounds(lo, hi) };
    }
}

pub(super) extern "C" fn task_entry(arg: usize) -> ! {
    // Switched into at depth 1: this is goroutine code now.
    if lower_at_entry() {
        scrub_below();
        crate::sys::clear_vector_registers();
    }
    // SAFETY: `arg` is the Task the worker keeps alive while it runs.
    let t = unsafe { &*(arg as *const Task) };
    // A panic of the closure is caught by the body; this is only a guard
    // against unwinding off the stack's top (a panicking destructor of a
    // result nobody took, say).
    // SAFETY: the worker running the task, once (its first run).
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe { t.body.run() }));
    // Looked up again: in a migrating runtime the goroutine may have
    // moved to another worker since it started.
    let me = worker().expect("a goroutine runs on a worker");
    me.raise();
    t.state.store(DEAD, SeqCst);
    // SAFETY: back to the scheduler for good: it frees the stack only
    // after this switch has saved our (never resumed) context.
    unsafe { switch(&mut *t.ctx.get(), &*me.sched.get()) };
    unreachable!("a dead goroutine was resumed");
}

/// A goroutine's first lowering of the depth (see `task_entry`), in a
/// frame of its own: the worker it looks up is left in no slot of
/// `task_entry`'s frame, which lives as long as the goroutine, where the
/// yield hook of a migrating runtime would find it and keep the goroutine
/// on that worker for good. Returns whether the runtime migrates.
#[inline(never)]
fn lower_at_entry() -> bool {
    let me = worker().expect("a goroutine runs on a worker");
    me.lower();
    me.migrate
}

/// Bytes [`scrub_below`] clears.
const SCRUB: usize = 2048;

/// Clears the stack below the caller's frame, where `lower_at_entry` and
/// what it called left pointers to the worker and its record: the frames
/// the goroutine's code puts there next need not write every slot, and
/// the yield hook of a migrating runtime, which reads the whole stack,
/// would find them and keep the goroutine home for good (every preemption
/// of a debug build did, which keeps every local in a slot).
#[inline(never)]
fn scrub_below() {
    let mut buf = [0u8; SCRUB];
    // The stores are kept: the buffer escapes.
    std::hint::black_box(&mut buf);
}

/// Switches the running goroutine to its scheduler, at depth 1.
fn switch_out(me: &Worker) {
    let ctx = me.current().expect("a running goroutine").ctx.get();
    // SAFETY: saves this goroutine's context, resumes the scheduler's; the
    // task stays alive in the scheduler's hands meanwhile.
    unsafe { switch(&mut *ctx, &*me.sched.get()) };
}

/// Switches the calling goroutine back to its worker's scheduler, having
/// set its state (`RUNNING` to yield, `WAITING` to park). `prepare` runs
/// first, at depth 1, with the goroutine (a park registers its waker
/// there); if it returns false nothing is switched. A park whose worker
/// has a goroutine in its `next` slot switches straight into it
/// (`hand_off`) rather than through the scheduler.
pub(crate) fn to_scheduler(prepare: impl FnOnce(&Worker, &TaskRef) -> bool) -> bool {
    to_scheduler_on(worker().expect("a goroutine runs on a worker"), prepare)
}

/// [`to_scheduler`] for a caller that has looked its worker up already
/// (`me` must be the calling thread's).
///
/// In a migrating runtime `me` is not touched once the goroutine has been
/// switched out: it may resume on another worker, and the one it left may
/// have ended meanwhile (a runtime dropped while its goroutines move), its
/// `Worker` gone with its thread's stack. Reading even `me.migrate` there
/// read freed memory: found false, it took the branch that lowers `me`'s
/// depth, through a freed attachment (a segfault in 18 of 40 runs of a
/// migrating signal runtime dropped while 12 goroutines yield).
#[inline]
pub(crate) fn to_scheduler_on(
    me: &'static Worker,
    prepare: impl FnOnce(&Worker, &TaskRef) -> bool,
) -> bool {
    if let Some(a) = me.attached() {
        // (A thread that holds a stopped world, any registry's, is in a
        // no-yield region of its own record: pardon-preempt's
        // `stop_the_world`.)
        if !a.may_switch_task(0) {
            refuse_switch(a);
        }
    }
    me.raise();
    let go = prepare(me, me.current().expect("a running goroutine"));
    if go && !hand_off(me) {
        switch_out(me);
    }
    if go {
        // Switched back into by a scheduler or by another goroutine's
        // hand-off: in a migrating runtime perhaps on another worker, so
        // the worker is looked up afresh and `me` is not read (see above).
        let now = worker().expect("a goroutine runs on a worker");
        if now.migrate {
            // What the scheduler or the other goroutine left in the
            // vector registers is dead. A goroutine that handed off to
            // this one is saved now.
            crate::sys::clear_vector_registers();
            now.release_handed();
        }
        now.lower();
    } else {
        // Not switched: `me` is this thread's. (Its record, looked up for
        // the raise, is reused.)
        me.lower();
    }
    go
}

/// Why the running goroutine cannot be switched out here (see
/// `to_scheduler`), as a panic.
#[cold]
#[inline(never)]
fn refuse_switch(a: &pardon_preempt::Attached) -> ! {
    if pardon_preempt::holds_stopped_world() {
        // Its worker would run other goroutines in the stopped world.
        panic!("a goroutine cannot wait or yield while it holds a stopped world");
    }
    if !a.is_running() {
        // In a safe region (a heap mutator's `blocking`): the other
        // goroutines would run while stops count the thread stopped.
        panic!(
            "a goroutine cannot wait or yield inside a safe region \
             (use pardon_sched::blocking for blocking calls)"
        );
    }
    // Inside a region whose state the other goroutines of this worker
    // share (a heap mutator's handle table, say).
    panic!("a goroutine cannot wait or yield inside a no-preempt or no-yield region");
}

/// Parks the running goroutine by switching straight into the goroutine
/// in the worker's `next` slot, which the scheduler would run next anyway
/// (in the rest of the same slice): one switch instead of two, and none
/// of the scheduler's loop (Go's `park_m` goes through `schedule` on g0
/// every time). At depth 1, with the running goroutine `WAITING` (or
/// already woken: see `task`).
///
/// Returns false, having changed nothing, when the scheduler must look
/// first: a yield (the goroutine goes to the back of the queue), an empty
/// `next`, a shutdown, or a goroutine in `next` that owes a collector's
/// deferral a scan of its stack (made on the scheduler's stack, not on a
/// goroutine's, whose room may be short). Returns true once the goroutine
/// is running again.
///
/// A waker may queue the goroutine before this switch has saved it; it
/// cannot run until then: a parked goroutine is woken onto its home, and
/// this thread switches into it only after this switch (see `task`); in a
/// migrating runtime another worker may take it only once the goroutine
/// switched into has released it (`Worker::handed`). No stop
/// reads it meanwhile (the worker is at depth 1 until the goroutine
/// switched into lowers it), and no deferred scan is owed by a goroutine
/// that was running.
fn hand_off(me: &Worker) -> bool {
    let shared = &me.shared;
    let cur = me.current().expect("a running goroutine");
    let t = if me.migrate {
        match next_to_hand_off(me, cur) {
            Some(t) => t,
            None => return false,
        }
    } else {
        // SAFETY: this thread's own slot, at depth 1 (see `next`).
        let next = unsafe { &mut *me.next.get() };
        let Some(to) = next.as_ref() else {
            return false;
        };
        if !shared.config.hand_off
            || cur.state.load(Relaxed) == RUNNING
            // Woken by its own park's closure (on this thread, so into
            // `next`): the scheduler switches back into it once it is saved.
            || Arc::ptr_eq(to, cur)
            || shared.shutdown.load(SeqCst)
            || (shared.track_tasks && !shared.deferral.settled(to))
        {
            return false;
        }
        next.take().expect("looked at above")
    };
    let p = me.proc_();
    p.hand_offs.store(p.hand_offs.load(Relaxed) + 1, Relaxed);
    pass_over(me, cur, &t);
    let to = t.ctx.get();
    // SAFETY: depth 1; no other access to `current` is live.
    let from = unsafe { (*me.current.get()).replace(t) }.expect("a running goroutine");
    let save = from.ctx.get();
    if me.migrate {
        p.count_switch();
        // Released by `t` once running (see `Worker::handed`).
        // SAFETY: this thread's own cell, at depth 1.
        unsafe { *me.handed.get() = Arc::as_ptr(&from) };
    }
    // The reference is the park's first waker's now (see `park`); the
    // task stays alive until this switch has saved it (it can only be
    // queued on this worker meanwhile, and only this thread takes it from
    // there until it is released).
    std::mem::forget(from);
    // SAFETY: `to` was saved by the goroutine's last switch away (it has
    // run: it was woken) and no other worker runs it; `save` is this
    // goroutine's context, alive until the switch has saved it (above).
    unsafe { switch(&mut *save, &*to) };
    true
}

/// `hand_off`'s choice in a migrating runtime, whose wake-ups are in the
/// locked slot (see `Worker::next`): the goroutine there, if the hand-off
/// may go ahead. Out of line, so the private slot's path stays short.
#[inline(never)]
fn next_to_hand_off(me: &Worker, cur: &TaskRef) -> Option<TaskRef> {
    let shared = &me.shared;
    // No deferral to settle: a runtime that keeps task lists (a shared
    // registry) does not migrate (`Runtime::with_registry` refuses).
    debug_assert!(!shared.track_tasks);
    if !shared.config.hand_off || cur.state.load(Relaxed) == RUNNING || shared.shutdown.load(SeqCst)
    {
        return None;
    }
    // (Not one woken by its own park's closure: as in `hand_off`.)
    me.proc_()
        .lock_local_raised()
        .next
        .take_if(|to| !Arc::ptr_eq(to, cur))
}

/// The preempt registry's yield hook (signal mode): called in the
/// injected call, at depth 1, with every register of the interrupted
/// goroutine saved on its stack. Switches the goroutine out if `token` is
/// still its slice (`sysmon` asks with the slice's tick; a goroutine that
/// has given up the worker since is left alone).
pub(crate) fn on_yield(token: u64) {
    let Some(me) = worker() else { return };
    if me.attached().is_none() {
        // Not attached by its runtime, which then is neither signal
        // preempted nor sharing a registry: its code attached the thread
        // by hand to a registry with this hook. Such a runtime was made
        // safely, so its goroutines may not be switched out here.
        return;
    }
    let p = me.proc_();
    if p.tick.load(Acquire) != token || p.running.load(Relaxed) == 0 || me.current().is_none() {
        return;
    }
    p.preemptions.fetch_add(1, Relaxed);
    if me.migrate && holds_its_worker(me) {
        let t = me.current().expect("looked at above");
        // SAFETY: only the worker running a task touches its cells.
        unsafe { *t.stay.get() = true };
        p.stays.store(p.stays.load(Relaxed) + 1, Relaxed);
    }
    switch_out(me);
}

/// Whether the goroutine the signal interrupted holds a pointer into its
/// worker's own state, in a register or anywhere on its stack: the
/// `Worker`, its preempt attachment, its thread's record, its `Proc`.
/// Such a pointer is this crate's: goroutine code finds its worker at depth 0 and enters
/// a no-preempt region of the worker's record a few instructions later
/// (or parks, spawns onto the worker's free list, wakes into its `next`
/// slot, polls its record); resumed on another thread in between, it
/// would change the first thread's state from the second. Conservative,
/// as a collector's scan of a stack is: a word that merely looks like
/// such a pointer keeps the goroutine home too, which costs balance, never
/// soundness. Reads from the lowest address the injected call saved
/// registers at (below it lie only the injected call's and this hook's
/// frames) to the top of the goroutine's stack: a few hundred bytes for a
/// shallow goroutine, once a slice.
fn holds_its_worker(me: &Worker) -> bool {
    let a = me
        .attached()
        .expect("a migrating signal runtime attaches its workers");
    let lo = a.yield_saved_lo();
    let t = me.current().expect("a running goroutine");
    // SAFETY: read-only: the stack stays with the task while it runs.
    let hi = match unsafe { (*t.stack.get()).as_ref() } {
        Some(s) => s.top(),
        None => unreachable!("a task runs with a stack"),
    };
    if lo == 0 || lo >= hi {
        // Not where the hook was promised to be called: keep it home.
        return true;
    }
    let worker = me as *const Worker as usize;
    let holder = a as *const pardon_preempt::Attached as usize;
    let proc_ = me.proc_() as *const crate::queue::Proc as usize;
    let ranges = [
        (worker, worker + std::mem::size_of::<Worker>()),
        (
            holder,
            holder + std::mem::size_of::<pardon_preempt::Attached>(),
        ),
        a.record_range(),
        // Shared, but some of its words only the owner writes.
        (proc_, proc_ + std::mem::size_of::<crate::queue::Proc>()),
    ];
    let mut at = lo.next_multiple_of(8);
    while at + 8 <= hi {
        // SAFETY: `[lo, hi)` is this goroutine's own stack, in use from
        // `lo` (where the injected call saved its registers, below the
        // interrupted SP) to the top, so mapped; nothing else writes it
        // while this hook runs on it. Volatile: some words (padding,
        // unused slots) were never written, and are only looked at.
        let w = unsafe { std::ptr::read_volatile(at as *const usize) };
        if ranges.iter().any(|&(l, h)| (l..h).contains(&w)) {
            return true;
        }
        at += 8;
    }
    false
}

/// The slow path of a poll: ends the slice `sysmon` asked to end, if it
/// is still the running one.
#[cold]
#[inline(never)]
pub(crate) fn poll_slow(me: &Worker, wanted: u64) {
    let p = me.proc_();
    p.want_yield.store(0, Relaxed);
    if p.tick.load(Relaxed) == wanted {
        p.preemptions.fetch_add(1, Relaxed);
        to_scheduler(|_, _| true);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::sync::Arc;

    use crate::{go, Config, Preemption, Runtime};

    /// The yield hook switches nothing on a worker its runtime did not
    /// attach: a cooperative runtime's, which its code may attach by hand
    /// to a registry carrying the hook (`registry_config` is safe), where
    /// the hook would run between two arbitrary instructions. Called here
    /// directly with the slice that is running: before the check, it
    /// switched the goroutine out and the one queued behind it ran.
    #[test]
    fn the_hook_leaves_goroutines_of_a_runtime_that_did_not_attach_alone() {
        let rt = Runtime::new(Config {
            procs: 1,
            preemption: Preemption::Cooperative,
            ..Config::default()
        })
        .unwrap();
        let switched = rt
            .block_on(|| {
                let other_ran = Arc::new(AtomicBool::new(false));
                let o2 = other_ran.clone();
                let other = go(move || o2.store(true, SeqCst));
                let me = super::worker().expect("a worker");
                let tick = me.proc_().tick.load(SeqCst);
                super::on_yield(tick);
                let switched = other_ran.load(SeqCst);
                other.join().unwrap();
                switched
            })
            .unwrap();
        assert!(
            !switched,
            "the hook switched out a cooperative runtime's goroutine"
        );
    }
}
