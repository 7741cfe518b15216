//! Threads outside the runtime asleep on a channel, a mutex or a condition
//! variable: [`Sleepers`], the list of them such a state keeps, and
//! [`sleep`], how one waits.
//!
//! A goroutine that must wait parks (its worker runs others); a thread
//! outside the runtime cannot, and used to look again after a
//! `sched_yield` or a 50 µs sleep. Looking again burned a CPU: a main
//! thread receiving the results of two CPU-bound goroutines on a two-CPU
//! machine slowed them (0.48-0.62 s, median 0.57, against 0.48 s for the
//! same work joined; docs/STATUS.md, fifteenth session).
//! Now such a thread puts a [`Sleeper`] from its own stack on the state's
//! list, under the state's lock, lets the lock go and sleeps on the
//! sleeper's futex word until a change it may be waiting for wakes every
//! sleeper (or its deadline passes), then takes the lock, takes itself off
//! the list if a waker has not, and looks again.
//!
//! Waking all and letting each look again keeps the wakers simple (any
//! change a thread may wait for wakes them all: a value queued or taken, a
//! goroutine parking with a value or for one, a thread starting to wait to
//! receive, the last sender or receiver gone) and costs the goroutines
//! nothing but a look at an empty list under a lock they hold anyway.
//! Threads are few, and a wrong wake-up only costs a look.
//!
//! **Lifetime of a sleeper.** The node lives in the sleeping thread's
//! frame. A waker reaches it only under the lock, while it is listed; the
//! sleeper leaves [`sleep`] only after taking the lock and seeing itself
//! unlisted (or unlisting itself). So no waker touches a node whose frame
//! has gone, including the futex wake, which is done under the lock. No
//! allocation anywhere: the list is linked through the nodes, and a
//! worker may wake sleepers inside its no-preempt region.

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// One sleeping thread: lives in its frame (see the module comment).
pub(crate) struct Sleeper {
    /// 0 while it may sleep; 1 once woken. The futex word.
    word: AtomicU32,
    /// The next sleeper on the list. Under the list's lock.
    next: Cell<*const Sleeper>,
    /// On the list. Under the list's lock.
    listed: Cell<bool>,
}

impl Sleeper {
    pub(crate) fn new() -> Sleeper {
        Sleeper {
            word: AtomicU32::new(0),
            next: Cell::new(ptr::null()),
            listed: Cell::new(false),
        }
    }
}

/// The sleepers of one state, linked through their nodes. Touched only
/// under the lock of the state that holds it.
pub(crate) struct Sleepers {
    head: *const Sleeper,
}

// SAFETY: the list is read and written only under the lock of the state
// that holds it, and the nodes it points to stay alive while listed (see
// the module comment); a node's fields are atomics or `Cell`s touched
// only under that lock (`word` also by its own thread, atomically).
unsafe impl Send for Sleepers {}

impl Default for Sleepers {
    fn default() -> Sleepers {
        Sleepers::new()
    }
}

impl Sleepers {
    pub(crate) const fn new() -> Sleepers {
        Sleepers { head: ptr::null() }
    }

    /// Wakes every sleeper and takes it off the list; nothing if none
    /// (a goroutine's look at an empty list).
    #[inline]
    pub(crate) fn wake_all(&mut self) {
        if !self.head.is_null() {
            self.wake_all_slow();
        }
    }

    #[cold]
    fn wake_all_slow(&mut self) {
        let mut p = std::mem::replace(&mut self.head, ptr::null());
        while !p.is_null() {
            // SAFETY: listed, so alive (the module comment), and we hold
            // the lock.
            let s = unsafe { &*p };
            p = s.next.get();
            s.listed.set(false);
            s.word.store(1, SeqCst);
            // Under the lock: its thread cannot have left `sleep` yet.
            pardon_preempt::futex::wake(&s.word, 1);
        }
    }

    fn push(&mut self, s: &Sleeper) {
        s.word.store(0, SeqCst);
        s.next.set(self.head);
        s.listed.set(true);
        self.head = s;
    }

    /// Takes `s` off the list if it is on it.
    fn remove(&mut self, s: &Sleeper) {
        if !s.listed.get() {
            return;
        }
        s.listed.set(false);
        let mut link: *mut *const Sleeper = &mut self.head;
        // SAFETY: every node reached is listed, so alive, and we hold the
        // lock; `link` points at `self.head` or at a listed node's `next`
        // (a `Cell`, whose pointer may be written through under the lock).
        unsafe {
            while !(*link).is_null() {
                if ptr::eq(*link, s) {
                    *link = s.next.get();
                    return;
                }
                link = (**link).next.as_ptr();
            }
        }
    }
}

/// Sleeps the calling thread, which holds `guard` (a lock of the state
/// holding the list `list` picks), until a waker wakes the list or
/// `until` passes (or spuriously); returns the lock taken again by
/// `relock`, with the thread off the list. The caller looks again. An
/// attached thread sleeps in a safe region (a stop does not wait for it).
pub(crate) fn sleep<G: std::ops::DerefMut>(
    mut guard: G,
    list: impl Fn(&mut G::Target) -> &mut Sleepers,
    relock: impl FnOnce() -> G,
    until: Option<Instant>,
) -> G {
    let me = Sleeper::new();
    list(&mut guard).push(&me);
    drop(guard);
    let timeout = until.map(|u| u.saturating_duration_since(Instant::now()));
    if timeout != Some(Duration::ZERO) {
        pardon_preempt::blocking_here(|| pardon_preempt::futex::wait(&me.word, 0, timeout));
    }
    // `me` is listed until the lock is taken again: leaving this frame by
    // an unwind from `relock` would leave a waker a dangling node.
    let abort = AbortOnUnwind;
    let mut guard = relock();
    std::mem::forget(abort);
    list(&mut guard).remove(&me);
    guard
}

/// Ends the process if dropped: forgotten on the normal path.
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        eprintln!("pardon-sched: a lock unwound while a sleeping thread was listed");
        std::process::abort();
    }
}
