//! What a goroutine runs and what it leaves: its closure and its result,
//! kept in its task, and the [`JoinHandle`] that waits for the result.
//!
//! A spawn used to allocate twice (the task, and the closure beside its
//! join state), then once (the two in one `Arc`, with the task reused
//! from its worker's free list). That last allocation was made on the
//! spawning thread and freed on the one that ran the goroutine, which is
//! the slow path of glibc's allocator (the freeing thread's cache fills,
//! the spawning thread's empties, and both go to the arena under its
//! lock): over a quarter of perf's samples in Go's spawn shape (a
//! `WaitGroup`, no handle kept). So the task carries a [`Slot`] of
//! `SLOT_BYTES` bytes: the spawn moves the closure into it, the run moves
//! the closure out, calls it and moves the result into the same bytes,
//! and the join moves the result out. A closure or a result too large or
//! too aligned for the slot is boxed, and the slot holds the box. A spawn
//! onto a task from the free list then allocates nothing.
//!
//! The handle holds a reference to the task, so a task is reused only
//! once its handle is gone (the free lists take only tasks nothing else
//! refers to). Who may touch the slot, in order: the spawner while the
//! task is its alone; the worker that runs it, which takes the closure
//! and writes the result before it publishes the end (`ENDED` in the
//! body's state word); then whichever of the join and the end comes
//! second, as the state word's read-modify-writes decide:
//!
//! - the handle joins: it takes the result;
//! - the handle is dropped unjoined (*detached*) before the end: the end
//!   drops the result itself, in the goroutine's own code;
//! - the handle is dropped after the end: its drop takes the result and
//!   drops it, on the dropping thread.
//!
//! So the slot is empty once the task has ended and its handle is gone,
//! and the last reference to a task, which the runtime may drop anywhere
//! (a wait list inside a lock, a stopped world's claim of a parked
//! task), never runs the user's destructors: only a task that never ran
//! still holds a closure, and its references are the queues, which
//! `Runtime::drop` empties, and the handle.

use std::any::Any;
use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::{align_of, size_of, MaybeUninit};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::sync::Arc;

use crate::park::{park, Waker};
use crate::queue::TaskRef;

/// Bytes of a closure or a result kept in the task itself.
pub(crate) const SLOT_BYTES: usize = 64;
/// The alignment the slot gives.
const SLOT_ALIGN: usize = 16;

/// Room for a closure or a result (or a box of one).
#[repr(C, align(16))]
pub(crate) struct Slot([MaybeUninit<u8>; SLOT_BYTES]);

const _: () = assert!(align_of::<Slot>() == SLOT_ALIGN);

impl Slot {
    const fn empty() -> Slot {
        Slot([MaybeUninit::uninit(); SLOT_BYTES])
    }
}

/// Whether an `X` is kept in the slot itself rather than boxed.
pub(crate) const fn fits<X>() -> bool {
    size_of::<X>() <= SLOT_BYTES && align_of::<X>() <= SLOT_ALIGN
}

/// Moves `x` into the slot, boxed if it does not fit.
///
/// # Safety
///
/// `slot` is valid for writes and holds nothing that needs dropping.
unsafe fn put<X>(slot: *mut Slot, x: X) {
    if fits::<X>() {
        // SAFETY: the slot has room and alignment for an `X` (`fits`),
        // and is writable (the caller).
        unsafe { slot.cast::<X>().write(x) }
    } else {
        // SAFETY: a box is a pointer, which fits; writable (the caller).
        unsafe { slot.cast::<Box<X>>().write(Box::new(x)) }
    }
}

/// Moves the `X` that `put` left in the slot out of it.
///
/// # Safety
///
/// The slot holds an `X` put there by [`put`] and not taken since; it
/// holds nothing afterwards.
unsafe fn take<X>(slot: *mut Slot) -> X {
    if fits::<X>() {
        // SAFETY: an `X` lies there (the caller).
        unsafe { slot.cast::<X>().read() }
    } else {
        // SAFETY: a `Box<X>` lies there (the caller).
        *unsafe { slot.cast::<Box<X>>().read() }
    }
}

/// Drops the `X` that `put` left in the slot.
///
/// # Safety
///
/// As [`take`].
unsafe fn drop_held<X>(slot: *mut Slot) {
    // SAFETY: the caller's.
    drop(unsafe { take::<X>(slot) })
}

/// A panic's payload, or why a goroutine could not start.
type Failure = Box<dyn Any + Send>;

/// The functions of one goroutine's closure type `F` and result type
/// `T`, for a slot that does not know them.
struct Ops {
    /// Takes the `F` out of the slot, calls it and puts its `T` there, or
    /// returns its panic (the slot is then empty).
    run: unsafe fn(*mut Slot) -> Result<(), Failure>,
    /// Drops an `F` that never ran.
    drop_closure: unsafe fn(*mut Slot),
    /// Drops a `T` nobody took.
    drop_result: unsafe fn(*mut Slot),
}

struct OpsOf<T, F>(PhantomData<fn(F) -> T>);

impl<T, F: FnOnce() -> T> OpsOf<T, F> {
    const OPS: Ops = Ops {
        run: run_closure::<T, F>,
        drop_closure: drop_held::<F>,
        drop_result: drop_held::<T>,
    };
}

/// # Safety
///
/// The slot holds an `F` put by [`put`].
unsafe fn run_closure<T, F: FnOnce() -> T>(slot: *mut Slot) -> Result<(), Failure> {
    // SAFETY: the caller's.
    let f = unsafe { take::<F>(slot) };
    let v = catch_unwind(AssertUnwindSafe(f))?;
    // SAFETY: emptied by the `take` above.
    unsafe { put::<T>(slot, v) };
    Ok(())
}

/// What the slot holds.
#[derive(Clone, Copy)]
enum Held {
    Nothing,
    Closure(&'static Ops),
    Result(&'static Ops),
}

/// `Body::state`: the end is published (the result is in the slot, or
/// the failure in `failure`). Set once, by the end.
const ENDED: u32 = 1;
/// The handle is gone, unjoined. Set once, by its drop.
const DETACHED: u32 = 2;
/// A goroutine joins: its waker is in `joiner`. Set by the joiner.
const JOINER: u32 = 4;
/// A thread outside the runtime joins, sleeping on the state word. Set by
/// the joiner.
const THREAD_WAITS: u32 = 8;

/// A goroutine's closure, then its result, and its join state: a part of
/// its task (see the module comment for who touches what, when).
pub(crate) struct Body {
    /// What `slot` holds. Written by the spawner while the task is its
    /// alone, by the running worker before it sets `ENDED`, then by
    /// whichever of the join and the end acts second (`state`).
    held: UnsafeCell<Held>,
    slot: UnsafeCell<Slot>,
    /// `ENDED`, `DETACHED`, `JOINER`, `THREAD_WAITS`, each set by one
    /// `fetch_or`: of the end and the handle's drop, the second to set its
    /// bit sees the other's and drops the result; of the end and a
    /// joiner's registration, the second sees the other's and wakes the
    /// joiner (the end) or does not wait (the joiner). A join then costs
    /// no lock (a mutex taken by the end and by the handle's drop was two
    /// locks of every spawn).
    state: AtomicU32,
    /// Why it failed: written by the end before it sets `ENDED`, taken as
    /// the result is.
    failure: UnsafeCell<Option<Failure>>,
    /// The joining goroutine's waker: written by it before it sets
    /// `JOINER`; taken by the end if the end sees `JOINER`, or back by the
    /// joiner if it sees `ENDED` when it sets `JOINER`.
    joiner: UnsafeCell<Option<Waker>>,
}

// SAFETY: the cells are used by one thread at a time, in the order the
// module comment and `state` give (the queue that hands the task to its
// worker, then `state`'s read-modify-writes, order them); what they hold
// is `Send` (`Body::hold` requires it; a waker is `Send`).
unsafe impl Sync for Body {}
// SAFETY: as above.
unsafe impl Send for Body {}

impl Body {
    pub(crate) const fn new() -> Body {
        Body {
            held: UnsafeCell::new(Held::Nothing),
            slot: UnsafeCell::new(Slot::empty()),
            state: AtomicU32::new(0),
            failure: UnsafeCell::new(None),
            joiner: UnsafeCell::new(None),
        }
    }

    /// Gives the body of a finished task, whose only reference the
    /// caller holds, back its new state (dropping anything it still
    /// holds, though the protocol leaves nothing: see the module comment).
    pub(crate) fn reset(&mut self) {
        self.drop_held();
        *self.state.get_mut() = 0;
        *self.failure.get_mut() = None;
        *self.joiner.get_mut() = None;
    }

    /// Moves the closure in. The body holds nothing (new or reset).
    pub(crate) fn hold<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(&mut self, f: F) {
        debug_assert!(matches!(self.held.get_mut(), Held::Nothing));
        // SAFETY: it holds nothing; exclusive access (`&mut`).
        unsafe { put::<F>(self.slot.get(), f) };
        *self.held.get_mut() = Held::Closure(&OpsOf::<T, F>::OPS);
    }

    /// Whether it holds a closure that has not run.
    #[cfg(test)]
    pub(crate) fn holds_closure(&self) -> bool {
        // SAFETY: tests call this where no other thread uses the body.
        matches!(unsafe { *self.held.get() }, Held::Closure(_))
    }

    /// Whether it holds nothing and has not ended.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        // SAFETY: as above.
        matches!(unsafe { *self.held.get() }, Held::Nothing)
            && self.state.load(Acquire) == 0
            // SAFETY: as above.
            && unsafe { (*self.failure.get()).is_none() }
    }

    /// Runs the closure and publishes the end. Goroutine code (depth 0):
    /// the closure, and the drop of a result nobody will take, are the
    /// user's.
    ///
    /// # Safety
    ///
    /// Called once, by the worker running the task (the only thread that
    /// touches the body between the spawn and the end).
    pub(crate) unsafe fn run(&self) {
        // SAFETY: the cell is this thread's between the spawn and the end
        // (the caller); no reference to it outlives the statement (the
        // closure runs in between).
        let Held::Closure(ops) = (unsafe { self.held.get().replace(Held::Nothing) }) else {
            return;
        };
        // SAFETY: the slot holds the closure `ops` belongs to.
        let r = unsafe { (ops.run)(self.slot.get()) };
        if r.is_ok() {
            // SAFETY: as above.
            unsafe { self.held.get().write(Held::Result(ops)) };
        }
        // SAFETY: the end of the run the caller makes.
        unsafe { self.end(r) };
    }

    /// Drops the closure of a goroutine that cannot start, and ends it
    /// with `why`. Outside any region (the drop is the user's).
    ///
    /// # Safety
    ///
    /// As [`Body::run`], instead of it.
    pub(crate) unsafe fn refuse(&self, why: String) {
        // SAFETY: as in `run`.
        unsafe { self.drop_held_shared() };
        // SAFETY: the caller's.
        unsafe { self.end(Err(Box::new(why))) };
    }

    /// # Safety
    ///
    /// The caller may touch the slot (see the module comment).
    unsafe fn drop_held_shared(&self) {
        // SAFETY: the caller's.
        let held = unsafe { &mut *self.held.get() };
        let was = std::mem::replace(held, Held::Nothing);
        match was {
            Held::Nothing => {}
            // SAFETY: the slot holds what `was` says, and the caller may
            // touch it.
            Held::Closure(ops) => unsafe { (ops.drop_closure)(self.slot.get()) },
            // SAFETY: as above.
            Held::Result(ops) => unsafe { (ops.drop_result)(self.slot.get()) },
        }
    }

    fn drop_held(&mut self) {
        // SAFETY: exclusive access.
        unsafe { self.drop_held_shared() }
    }

    /// Publishes the end (the result is in the slot if `r` is `Ok`) and
    /// wakes whoever joins; or, if the handle is gone, drops what it would
    /// have taken. Goroutine code (or a window of the scheduler's).
    ///
    /// # Safety
    ///
    /// Called once, by the thread that ran (or refused) the closure.
    unsafe fn end(&self, r: Result<(), Failure>) {
        if let Err(f) = r {
            // SAFETY: before `ENDED`, the cell is this thread's.
            unsafe { *self.failure.get() = Some(f) };
        }
        // AcqRel: publishes the result, and sees the joiner's waker or
        // the handle's last use.
        let before = self.state.fetch_or(ENDED, AcqRel);
        if before & DETACHED != 0 {
            // Nobody will take it: dropped here, in the goroutine's own
            // code. The handle is gone, so the body is this thread's.
            // SAFETY: as just said.
            unsafe { self.drop_end() };
            return;
        }
        if before & JOINER != 0 {
            // SAFETY: written before `JOINER`, which this thread has seen
            // set; only this side takes it now (the joiner takes it back
            // only if it sees `ENDED` when it sets `JOINER`).
            if let Some(w) = unsafe { (*self.joiner.get()).take() } {
                w.wake();
            }
        }
        if before & THREAD_WAITS != 0 {
            pardon_preempt::futex::wake(&self.state, i32::MAX);
        }
    }

    /// Drops the result or the failure.
    ///
    /// # Safety
    ///
    /// `ENDED` is set and seen, and the body is the caller's (see the
    /// module comment).
    unsafe fn drop_end(&self) {
        // SAFETY: the caller's.
        unsafe { self.drop_held_shared() };
        // SAFETY: the caller's.
        drop(unsafe { (*self.failure.get()).take() });
    }

    /// Whether the end is published; with Acquire, so the slot and the
    /// failure may be read after `true`.
    fn ended(&self) -> bool {
        self.state.load(Acquire) & ENDED != 0
    }

    /// Takes the end: the failure, or the result moved out of the slot.
    ///
    /// # Safety
    ///
    /// `ended()` returned true on this thread, the caller is the handle,
    /// and the task's closure returned a `T` (its handle's type).
    unsafe fn take_end<T>(&self) -> Result<T, Failure> {
        // SAFETY: after `ENDED`, the handle's (the caller).
        if let Some(f) = unsafe { (*self.failure.get()).take() } {
            return Err(f);
        }
        // SAFETY: as above; ended without failure: the result is in the
        // slot.
        unsafe { *self.held.get() = Held::Nothing };
        // SAFETY: a `T` put by the run (the caller), moved out once.
        Ok(unsafe { take::<T>(self.slot.get()) })
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.drop_held();
    }
}

/// How often a thread joining from outside the runtime looks whether
/// the runtime's workers are gone (it is woken at once by the end).
const GONE_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// A goroutine's result: [`JoinHandle::join`] waits for it. Dropping the
/// handle detaches the goroutine (it runs on; its result is dropped).
pub struct JoinHandle<T> {
    /// `None` only once `join` has taken the result.
    task: Option<TaskRef>,
    result: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> JoinHandle<T> {
    /// The handle of `task`, whose closure returns a `T`.
    ///
    /// # Safety
    ///
    /// `task` holds a closure returning `T` (`Body::hold`), and has no
    /// other handle.
    pub(crate) unsafe fn new(task: TaskRef) -> JoinHandle<T> {
        JoinHandle {
            task: Some(task),
            result: PhantomData,
        }
    }

    /// Waits for the goroutine and returns its value, or its panic as the
    /// error (or, as a `String` saying so, that it could not start because
    /// no stack could be mapped, or that its runtime was dropped before it
    /// finished: an error a thread outside the runtime and a goroutine of
    /// another runtime get, rather than waiting for ever; or that the
    /// goroutine joined itself, which would wait for ever). A goroutine that
    /// joins is parked (its worker runs others); a thread outside the
    /// runtime blocks. A goroutine joining one of another runtime waits on
    /// a pool thread as [`crate::blocking`] does, a few microseconds more.
    pub fn join(mut self) -> Result<T, Box<dyn Any + Send>> {
        // The handle keeps the task until the end is taken: a join that
        // unwinds (a wait where waits are refused, a fork's check) or
        // gives up drops a handle that detaches, so the end still drops
        // the result in user code.
        let task = self.task.as_ref().expect("a handle joins once");
        let body = &task.body;
        let ended = body.ended()
            || match crate::worker::goroutine() {
                // Its own handle (sent to it, say): std's join of the
                // current thread fails too.
                Some(me) if me.runs(task) => {
                    return Err(Box::new(String::from(
                        "pardon-sched: a goroutine joined itself, which would wait for ever",
                    )));
                }
                // A goroutine of the same runtime parks: it cannot outlive
                // the goroutine it waits for unless both are abandoned.
                Some(me) if Arc::ptr_eq(&me.shared, &task.shared) => {
                    park_for_end(body);
                    true
                }
                // A goroutine of another runtime must learn, as a thread
                // outside does, that the goroutine's runtime was dropped
                // (nothing would wake its park then): it waits as a thread,
                // on a pool thread (`blocking`), its worker running others.
                Some(_) => crate::blocking::blocking(|| wait_as_thread(body, &task.shared)),
                None => wait_as_thread(body, &task.shared),
            };
        if !ended {
            return Err(Box::new(String::from(
                "pardon-sched: the goroutine's runtime was dropped before it finished",
            )));
        }
        // SAFETY: ended, seen with Acquire on this thread; this is the
        // handle; `new`'s contract gives the type.
        let end = unsafe { body.take_end::<T>() };
        // Taken: the drop has nothing left to do.
        self.task = None;
        end
    }

    /// Whether the goroutine has finished.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.body.ended())
    }
}

/// Parks the calling goroutine, of the same runtime as `body`'s task,
/// until the goroutine ends.
fn park_for_end(body: &Body) {
    while !body.ended() {
        park(|w| {
            // SAFETY: before `JOINER` is set, the cell is the joiner's.
            unsafe { *body.joiner.get() = Some(w.waker()) };
            // Release: the waker (and the park's announcement) before the
            // bit.
            if body.state.fetch_or(JOINER, AcqRel) & ENDED != 0 {
                // Ended meanwhile: the end has not looked at the cell (it
                // saw no `JOINER`), so the waker is ours again.
                // SAFETY: as just said.
                drop(unsafe { (*body.joiner.get()).take() });
                return false;
            }
            true
        });
    }
}

/// Waits on a thread that is not a goroutine of `shared`'s runtime until
/// `body`'s goroutine ends (true) or that runtime's workers are gone with
/// it unfinished (false). It sleeps on the state word, in a safe region
/// if the thread is attached to a registry (a stop must not wait for it),
/// looking every `GONE_CHECK` whether the workers are gone.
fn wait_as_thread(body: &Body, shared: &crate::queue::Shared) -> bool {
    pardon_preempt::blocking_here(|| {
        let mut seen = body.state.fetch_or(THREAD_WAITS, AcqRel) | THREAD_WAITS;
        while seen & ENDED == 0 {
            crate::fork::check(shared.generation, "joining an unfinished goroutine");
            if shared.workers_gone() {
                // Nothing runs it now; an end published before the
                // workers went is seen here.
                return body.ended();
            }
            pardon_preempt::futex::wait(&body.state, seen, Some(GONE_CHECK));
            seen = body.state.load(Acquire);
        }
        true
    })
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let body = &task.body;
        if body.state.fetch_or(DETACHED, AcqRel) & ENDED != 0 {
            // Ended first: what it left is the handle's to drop, here, on
            // the dropping thread (the task's last reference may go
            // anywhere: see the module comment).
            // SAFETY: ended, seen by the read-modify-write above; the end
            // is done with the body; this is the handle, and `new` gives
            // the type.
            drop(unsafe { body.take_end::<T>() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    /// Counts its drops.
    struct Counted(Arc<AtomicUsize>, #[allow(dead_code)] [u8; 7]);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn what_fits_is_what_the_slot_has_room_and_alignment_for() {
        assert!(fits::<()>());
        assert!(fits::<[u64; 8]>());
        assert!(!fits::<[u64; 9]>());
        assert!(fits::<u128>());
        #[repr(align(32))]
        struct Wide(#[allow(dead_code)] u8);
        assert!(!fits::<Wide>());
    }

    /// Every way a closure and its result leave a body, with the closure
    /// and the result each kept in the slot or boxed: every value dropped
    /// exactly once, and a result taken is the one returned.
    #[test]
    fn every_closure_and_result_is_dropped_once() {
        fn cycle<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
            drops: &Arc<AtomicUsize>,
            make: impl Fn() -> F,
            check: impl Fn(T),
        ) {
            let at = |n: usize, what: &str| assert_eq!(drops.load(SeqCst), n, "{what}");
            drops.store(0, SeqCst);
            // Never run: the closure dropped with the body.
            let mut b = Body::new();
            b.hold(make());
            assert!(b.holds_closure());
            drop(b);
            at(1, "a closure that never ran");
            // Run, the result never taken: dropped with the body.
            let mut b = Body::new();
            b.hold(make());
            // SAFETY: no other thread has this body.
            unsafe { b.run() };
            at(2, "the closure, by its run");
            drop(b);
            at(3, "an untaken result");
            // Run and reset for reuse.
            let mut b = Body::new();
            b.hold(make());
            // SAFETY: as above.
            unsafe { b.run() };
            b.reset();
            at(5, "a result at reset");
            assert!(b.is_empty());
            // Run and taken.
            b.hold(make());
            // SAFETY: as above.
            unsafe { b.run() };
            assert!(b.ended());
            // SAFETY: ended; the closure returns a `T`.
            let taken = unsafe { b.take_end::<T>() };
            check(taken.unwrap_or_else(|_| panic!("no panic")));
            at(7, "a taken result, by its taker");
            drop(b);
            at(7, "nothing left");
            // Refused: the closure dropped, the failure kept.
            let mut b = Body::new();
            b.hold(make());
            // SAFETY: as above.
            unsafe { b.refuse("no stack".into()) };
            at(8, "a refused closure");
            assert!(b.ended());
            // SAFETY: as above.
            let why = unsafe { b.take_end::<T>() }.err().expect("a failure");
            assert_eq!(why.downcast_ref::<String>().map(|s| &**s), Some("no stack"));
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let d = &drops;
        // Small closure, small result.
        cycle(
            d,
            || {
                let (c, d) = (Counted(d.clone(), [1; 7]), d.clone());
                move || (c.1[0], Counted(d, [2; 7]))
            },
            |(one, c)| assert_eq!((one, c.1), (1, [2; 7])),
        );
        // Large closure (boxed), large result (boxed).
        cycle(
            d,
            || {
                let (c, d, pad) = (Counted(d.clone(), [3; 7]), d.clone(), [9u64; 16]);
                move || (pad, c.1[0], Counted(d, [4; 7]))
            },
            |(pad, three, c)| assert_eq!((pad, three, c.1), ([9; 16], 3, [4; 7])),
        );
        // Small closure, large result; and a closure that panics.
        cycle(
            d,
            || {
                let (c, d) = (Counted(d.clone(), [5; 7]), d.clone());
                move || ([c.1[0] as u64; 20], Counted(d, [6; 7]))
            },
            |(a, c)| assert_eq!((a, c.1), ([5; 20], [6; 7])),
        );
        let mut b = Body::new();
        b.hold(|| -> u8 { panic!("inside") });
        // SAFETY: as above.
        unsafe { b.run() };
        assert!(b.ended());
        // SAFETY: ended; the closure returns a `u8`.
        let p = unsafe { b.take_end::<u8>() }.expect_err("a panic");
        assert_eq!(p.downcast_ref::<&str>(), Some(&"inside"));
    }
}
