//! Parking a goroutine and waking it: [`park`], the [`Parker`] its
//! closure is handed, and the [`Waker`] that makes it runnable again.
//!
//! Every wait of the runtime (channels, locks, joins, sleeps, timed waits,
//! `blocking`) is one `park`: a closure, run under the waited-on state's
//! lock inside the park's no-preempt region, either finds what it waits
//! for or publishes a waker and has the goroutine switched away.
//!
//! **Who owns a parked goroutine.** A task is reference counted
//! (`TaskRef`). While it runs, its worker's `current` holds one reference;
//! while it is parked, its *first waker* does: the waker `Parker::waker`
//! makes does not count a reference of its own but takes over the one
//! `current` held, which the worker forgets once the switch away has saved
//! the goroutine (`worker::hand_off`, or the scheduler after `switch_out`).
//! A park so costs no reference count traffic (a clone and a drop, two
//! locked instructions a park, 10 ns of a 90 ns channel switch until the
//! tenth session). Until that switch, the count is the worker's and the
//! waker's at once, which is sound because in that window:
//! - a waker that wakes only moves the reference to a run queue of the
//!   goroutine's own worker, which is the thread switching it out and
//!   looks at its queues only afterwards (see `task`);
//! - a waker is never dropped unwoken by another thread: the runtime's own
//!   code drops an unwoken waker only when the goroutine itself takes it
//!   back once running again (`WaitList::remove`, a settled alarm), when
//!   the timer thread drops a cancelled alarm's (a second waker, `also`,
//!   which counts its own reference), or with the waited-on state, which
//!   the parked goroutine's frame borrows;
//! - a waker dropped on the parking thread itself (a closure that made one
//!   and then did not park) is recognised by `Drop` (the thread's running
//!   goroutine is the waker's and is not `RUNNING`) and gives up nothing.

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::sync::atomic::Ordering::{Release, SeqCst};
use std::sync::Arc;

use crate::queue::{Place, TaskRef};
use crate::region::RegionLock;
use crate::task::{Task, NO_HOME, RUNNING, WAITING, WAITING_TWICE};
use crate::worker::{goroutine, parking_here, to_scheduler_on, worker, Worker};

/// What wakes one parked goroutine: owns a reference to it (see the
/// module comment for the first waker of a park).
pub(crate) struct Waker {
    task: ManuallyDrop<TaskRef>,
}

impl Waker {
    pub(crate) fn from_task(task: TaskRef) -> Waker {
        Waker {
            task: ManuallyDrop::new(task),
        }
    }

    pub(crate) fn into_task(self) -> TaskRef {
        let mut me = ManuallyDrop::new(self);
        // SAFETY: taken once; `me` is never dropped, so neither is the
        // field again.
        unsafe { ManuallyDrop::take(&mut me.task) }
    }

    /// A second waker of the same goroutine (an alarm's, beside the one
    /// on a wait list), made only by [`Parker::two_wakers`], whose
    /// announcement makes the two race by compare-and-swap: whichever
    /// wakes first wakes it, the other finds it no longer parked, or must
    /// be taken back before it parks again (see `timer`). It counts a
    /// reference of its own.
    fn also(&self) -> Waker {
        Waker::from_task(TaskRef::clone(&self.task))
    }

    /// The goroutine this waker wakes.
    pub(crate) fn task_ptr(&self) -> *const Task {
        Arc::as_ptr(&self.task)
    }

    /// Makes the goroutine runnable, in its home worker's `next` slot
    /// (it runs in the rest of the current slice there), unless it is no
    /// longer parked.
    pub(crate) fn wake(self) {
        self.wake_on(worker(), false);
    }

    /// [`Waker::wake`] from inside a park's `register` closure, whose
    /// `Parker` is `p`: the thread is `p`'s worker, already in the park's
    /// no-preempt region, so the worker is not looked up again and its
    /// `next` slot is filled without a region of its own (a channel
    /// operation that wakes its partner: 20 of a switch's instructions).
    pub(crate) fn wake_in_park(self, p: &Parker<'_>) {
        self.wake_on(Some(p.me), true);
    }

    /// [`Waker::wake_in_park`] if the caller runs in a park's closure
    /// (`park` is its `Parker`), [`Waker::wake`] otherwise.
    #[inline]
    pub(crate) fn wake_from(self, park: Option<&Parker<'_>>) {
        match park {
            Some(p) => self.wake_in_park(p),
            None => self.wake(),
        }
    }

    /// `me`: the calling thread's worker, if it is one; `raised`: the
    /// caller is inside a no-preempt region of `me`'s.
    #[inline]
    fn wake_on(self, me: Option<&'static Worker>, raised: bool) {
        let task = self.into_task();
        if task.wake() {
            // Home: a parked goroutine has run (see `task`).
            let home = task.home.load(SeqCst);
            debug_assert_ne!(home, NO_HOME);
            if let Some(me) = me {
                if Arc::ptr_eq(&me.shared, &task.shared) {
                    if me.index == home {
                        // Woken on its own worker: no lock, no kick.
                        if raised {
                            me.put_next_raised(task);
                        } else {
                            me.put_next(task);
                        }
                    } else {
                        // By another worker of its runtime, whose shared
                        // state outlives the call (no reference counted
                        // on a line every worker's wake-ups touch).
                        me.shared.enqueue(task, Place::Next(home));
                    }
                    return;
                }
            }
            // From outside the runtime: the task may be run and dropped
            // as soon as it is queued, so the shared state is held here.
            let shared = task.shared.clone();
            shared.enqueue(task, Place::Next(home));
        }
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        // SAFETY: taken once, here; the field is not used again.
        let task = unsafe { ManuallyDrop::take(&mut self.task) };
        if parking_here(&task) {
            // A park's first waker, dropped by the closure that made it:
            // the reference is still the one `current` holds.
            std::mem::forget(task);
        }
    }
}

/// The goroutine that is deciding whether to park, as `park` hands it to
/// its `register` closure: [`Parker::waker`] announces the park and makes
/// the waker, only once the closure has found it must wait. (A closure
/// that finds what it waits for already there then changes no state: a
/// channel send to a parked receiver is one of those.)
pub(crate) struct Parker<'a> {
    /// The calling thread's worker (see `Waker::wake_in_park`).
    me: &'static Worker,
    task: &'a TaskRef,
    announced: &'a Cell<bool>,
}

impl Parker<'_> {
    /// Locks a runtime mutex for the closure: the closure runs in the
    /// park's own no-preempt region (depth 1, `worker::to_scheduler`), so
    /// the lock needs none of its own (`region::lock` would enter one).
    #[inline]
    pub(crate) fn lock<'m, L: RegionLock>(&self, m: &'m L) -> L::Guard<'m> {
        m.acquire()
    }

    /// Announces the park and returns what wakes it: the park's first
    /// waker, which takes over the running goroutine's reference (see the
    /// module comment). Called under the lock that publishes the waker: a
    /// waker is found only after this store, which is why Release is
    /// enough (see `task`).
    pub(crate) fn waker(self) -> Waker {
        self.announce(WAITING)
    }

    /// [`Parker::waker`] for a park with two wakers (a timed wait's: its
    /// wait list's, and its alarm's, which counts a reference of its own:
    /// see [`Waker::also`]), announced as such (`WAITING_TWICE`: see
    /// `task`) so that they race by compare-and-swap.
    pub(crate) fn two_wakers(self) -> (Waker, Waker) {
        let first = self.announce(WAITING_TWICE);
        let second = first.also();
        (first, second)
    }

    #[inline]
    fn announce(self, state: u32) -> Waker {
        self.task.state.store(state, Release);
        self.announced.set(true);
        let ptr = Arc::as_ptr(self.task);
        // SAFETY: `ptr` is a live `Arc`'s; the reference made here is the
        // one `current` holds, given up by the worker once the switch away
        // has saved the goroutine, or kept by `Drop` if this waker is
        // dropped before (see the module comment).
        Waker::from_task(unsafe { Arc::from_raw(ptr) })
    }
}

/// Parks the calling goroutine until a [`Waker`] that `register` makes
/// wakes it. `register` runs inside a no-preempt region and returns
/// `false` if there is nothing to wait for after all; otherwise it must
/// have made the waker ([`Parker::waker`], which announces the park, so a
/// wake that comes before the switch is not lost: see `task`) and
/// published it. A waker made by a `register` that returns `false` must not
/// be kept (the park is cancelled). Returns `false` outside a goroutine
/// (a thread outside the runtime, or a worker's scheduler: see
/// `worker::goroutine`), having called nothing.
pub(crate) fn park(register: impl FnOnce(Parker<'_>) -> bool) -> bool {
    match goroutine() {
        Some(me) => park_on(me, register),
        None => false,
    }
}

/// [`park`] for a caller that has found itself a goroutine already: `me`
/// is what `worker::goroutine` returned on this thread (each lookup is a
/// thread-local read; a channel operation made three).
#[inline]
pub(crate) fn park_on(me: &'static Worker, register: impl FnOnce(Parker<'_>) -> bool) -> bool {
    to_scheduler_on(me, |_, task| {
        let announced = Cell::new(false);
        let go = register(Parker {
            me,
            task,
            announced: &announced,
        });
        debug_assert!(!go || announced.get(), "a park registered no waker");
        if !go && announced.get() {
            task.state.store(RUNNING, SeqCst);
        }
        go && announced.get()
    });
    true
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::channel;
    use crate::config::Config;
    use crate::runtime::{go, Runtime};
    use crate::worker::current_references;

    /// A goroutine's reference count is what it was before, after every
    /// way a park ends: woken by a send from another goroutine (with a
    /// hand-off) and from a thread outside the runtime, a timed wait ended
    /// by its alarm and one ended by a send (once the timer thread has
    /// dropped the alarm's own waker), a park its own closure cancelled
    /// after making its waker, and a sleep. A waker that gave up a
    /// reference the worker still held (or kept one it had taken over)
    /// moves the count; the worker's free list then reuses a task still
    /// referred to, or never reuses one.
    #[test]
    fn every_park_leaves_the_reference_count_as_it_found_it() {
        for hand_off in [true, false] {
            let rt = Runtime::new(Config {
                procs: 1,
                hand_off,
                ..Config::default()
            })
            .unwrap();
            let (out_tx, out_rx) = channel::unbounded::<u64>();
            let outside = std::thread::spawn(move || {
                for i in 0..100 {
                    out_tx.send(i).unwrap();
                    std::thread::sleep(Duration::from_micros(50));
                }
            });
            let counts = rt
                .block_on(move || {
                    let before = current_references();
                    let mut seen = Vec::new();
                    let (tx, rx) = channel::channel::<u64>(0);
                    let (back_tx, back_rx) = channel::channel::<u64>(0);
                    let echo = go(move || {
                        while let Ok(v) = rx.recv() {
                            back_tx.send(v).unwrap();
                        }
                    });
                    for i in 0..100 {
                        tx.send(i).unwrap();
                        assert_eq!(back_rx.recv().unwrap(), i);
                        seen.push(current_references());
                    }
                    for _ in 0..100 {
                        out_rx.recv().unwrap();
                        seen.push(current_references());
                    }
                    let (ttx, trx) = channel::channel::<u64>(0);
                    for _ in 0..20 {
                        assert!(trx.recv_timeout(Duration::from_micros(200)).is_err());
                        seen.push(current_references());
                    }
                    let sender = go(move || {
                        for i in 0..20 {
                            ttx.send(i).unwrap();
                        }
                    });
                    for _ in 0..20 {
                        trx.recv_timeout(Duration::from_millis(5)).unwrap();
                    }
                    sender.join().unwrap();
                    // Each alarm's own waker stays in the timer's heap
                    // until its deadline: wait for the timer thread to drop
                    // them (not a bound on its speed: 60 s is a hang).
                    let t0 = std::time::Instant::now();
                    while current_references() != before && t0.elapsed() < Duration::from_secs(60) {
                        crate::sleep(Duration::from_millis(1));
                    }
                    seen.push(current_references());
                    for _ in 0..20 {
                        let parked = park(|p| {
                            drop(p.waker());
                            false
                        });
                        assert!(parked);
                        seen.push(current_references());
                    }
                    for _ in 0..5 {
                        crate::sleep(Duration::from_micros(100));
                        seen.push(current_references());
                    }
                    drop(tx);
                    echo.join().unwrap();
                    (before, seen)
                })
                .unwrap();
            outside.join().unwrap();
            let (before, seen) = counts;
            assert!(
                seen.iter().all(|&c| c == before),
                "hand_off {hand_off}: {before} references before, then {seen:?}"
            );
        }
    }
}
