//! Synchronisation that parks the goroutine, not the thread: a
//! [`WaitGroup`], a [`Mutex`] and its [`Condvar`]. Each also works from a thread
//! outside the runtime, which then sleeps until woken (see `sleepers`).

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar as StdCondvar, Mutex as StdMutex};

use crate::linked::WaitList;
use crate::lock::Lock;
use crate::park::park;
use crate::region::{lock, lock_plain};
use crate::sleepers::{sleep, Sleepers};

/// Waits for a number of goroutines to finish (Go's `sync.WaitGroup`).
/// Clones share one counter.
#[derive(Clone, Default)]
pub struct WaitGroup {
    inner: Arc<WgInner>,
}

#[derive(Default)]
struct WgInner {
    /// The count, changed without a lock (a `done` that leaves it above
    /// zero costs one atomic instruction, as Go's); the `done` that brings
    /// it to zero then takes `waiters`' lock to wake them. A waiter reads
    /// it under that lock before it registers, so either it sees zero or
    /// that `done` finds it registered.
    count: AtomicUsize,
    /// Who waits in `wait`, under the lock the fall to zero takes.
    waiters: StdMutex<WgWaiters>,
    /// Threads outside the runtime waiting in `wait`.
    zero: StdCondvar,
}

#[derive(Default)]
struct WgWaiters {
    /// Goroutines parked in `wait`.
    parked: WaitList,
    /// Whether a thread waits on `zero` (a notify is a system call,
    /// waiter or not).
    threads: bool,
}

impl WaitGroup {
    /// A group with a count of zero.
    pub fn new() -> WaitGroup {
        WaitGroup::default()
    }

    /// Adds `n` to the count.
    pub fn add(&self, n: usize) {
        self.inner.count.fetch_add(n, SeqCst);
    }

    /// Subtracts one from the count; at zero, wakes every waiter.
    ///
    /// # Panics
    /// If the count is already zero (a `done` without its `add`).
    pub fn done(&self) {
        let before = self.inner.count.fetch_sub(1, SeqCst);
        if before == 0 {
            self.inner.count.fetch_add(1, SeqCst);
            panic!("WaitGroup::done with a count of zero");
        }
        if before > 1 {
            return;
        }
        let (mut parked, threads) = {
            let mut w = lock(&self.inner.waiters);
            let threads = std::mem::take(&mut w.threads);
            (w.parked.take(), threads)
        };
        if threads {
            self.inner.zero.notify_all();
        }
        parked.wake_all();
    }

    /// Waits until the count is zero.
    pub fn wait(&self) {
        loop {
            if self.inner.count.load(SeqCst) == 0 {
                return;
            }
            let parked = park(|w| {
                let mut st = w.lock(&self.inner.waiters);
                if self.inner.count.load(SeqCst) == 0 {
                    false
                } else {
                    st.parked.push(w.waker());
                    true
                }
            });
            if !parked {
                // A thread outside the runtime: as `JoinHandle::join`'s.
                pardon_preempt::blocking_here(|| {
                    let mut st = lock_plain(&self.inner.waiters);
                    while self.inner.count.load(SeqCst) > 0 {
                        st.threads = true;
                        st = self.inner.zero.wait(st).unwrap_or_else(|e| e.into_inner());
                    }
                });
                return;
            }
        }
    }
}

/// A mutual-exclusion lock whose waiters are parked goroutines: a
/// goroutine that waits for it lets its worker run others (a `std` mutex
/// would block the worker's thread). Not fair: a woken waiter tries again
/// and may lose to a newcomer.
pub struct Mutex<T> {
    /// Held, the goroutines waiting for it (one is woken at each unlock),
    /// and the threads outside the runtime asleep until it is let go (all
    /// are woken at each unlock).
    state: Lock<(bool, WaitList, Sleepers)>,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through a guard, and at most one guard
// exists at a time (`state.0`).
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: as for any container of a `T: Send`.
unsafe impl<T: Send> Send for Mutex<T> {}

/// Access to a [`Mutex`]'s value; unlocks on drop.
///
/// Shared between threads only if `T` is `Sync` (each sharer reaches the
/// value through `&T`), as std's guard: otherwise two threads could `set`
/// the `Cell` of a `Mutex<Cell<u32>>` at once through one guard.
///
/// ```compile_fail
/// use std::cell::Cell;
/// let m = pardon_sched::Mutex::new(Cell::new(0u32));
/// let g = m.lock();
/// std::thread::scope(|s| {
///     s.spawn(|| g.set(1)); // `&MutexGuard<Cell<_>>` cannot cross threads
/// });
/// ```
pub struct MutexGuard<'a, T> {
    m: &'a Mutex<T>,
    /// Neither `Send` nor `Sync` by itself: see the impls below.
    _not_auto: PhantomData<*const ()>,
}

// SAFETY: the guard may end (unlock) on another thread: the lock is a
// flag and a wait list, not tied to the thread that took it; moving it
// moves `&mut T` access, so `T: Send`.
unsafe impl<T: Send> Send for MutexGuard<'_, T> {}
// SAFETY: a shared guard gives only `&T` to each sharer: `T: Sync`.
unsafe impl<T: Sync> Sync for MutexGuard<'_, T> {}

impl<T> Mutex<T> {
    /// A mutex holding `value`.
    pub fn new(value: T) -> Mutex<T> {
        Mutex {
            state: Lock::new((false, WaitList::new(), Sleepers::new())),
            value: UnsafeCell::new(value),
        }
    }

    /// Locks, parking the calling goroutine while another holds it (a
    /// thread outside the runtime sleeps meanwhile).
    pub fn lock(&self) -> MutexGuard<'_, T> {
        loop {
            let mut got = false;
            let parked = park(|w| {
                let mut st = w.lock(&self.state);
                if st.0 {
                    st.1.push(w.waker());
                    true
                } else {
                    st.0 = true;
                    got = true;
                    false
                }
            });
            if got {
                return MutexGuard {
                    m: self,
                    _not_auto: PhantomData,
                };
            }
            if !parked {
                let mut st = lock(&self.state);
                if !st.0 {
                    st.0 = true;
                    return MutexGuard {
                        m: self,
                        _not_auto: PhantomData,
                    };
                }
                drop(sleep(st, |st| &mut st.2, || lock(&self.state), None));
            }
        }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        let next = {
            let mut st = lock(&self.m.state);
            st.0 = false;
            st.2.wake_all();
            st.1.pop()
        };
        if let Some(w) = next {
            w.wake();
        }
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one (see `Mutex`).
        unsafe { &*self.m.value.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above.
        unsafe { &mut *self.m.value.get() }
    }
}

/// A condition variable for [`Mutex`]: a goroutine that waits is parked.
/// Wake-ups may be spurious (check the condition in a loop, as with any
/// condition variable).
#[derive(Default)]
pub struct Condvar {
    /// The goroutines waiting, and the threads outside the runtime asleep
    /// until a notification (which wakes them all: see `notify_one`).
    waiters: Lock<(WaitList, Sleepers)>,
}

impl Condvar {
    /// A condition variable with no waiters.
    pub fn new() -> Condvar {
        Condvar::default()
    }

    /// Unlocks `guard`'s mutex, waits for a notification, and locks it
    /// again. The waiter is registered before the mutex is released, so a
    /// notification sent after that release is not lost.
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        let m = guard.m;
        if crate::worker::goroutine().is_none() {
            // A thread outside the runtime: listed (by `sleep`) before
            // the mutex is let go, under the lock every notification
            // takes, so none between the two is missed.
            let waiters = lock(&self.waiters);
            drop(guard);
            drop(sleep(waiters, |st| &mut st.1, || lock(&self.waiters), None));
            return m.lock();
        }
        park(move |w| {
            w.lock(&self.waiters).0.push(w.waker());
            drop(guard);
            true
        });
        m.lock()
    }

    /// Wakes one waiter, if any: a goroutine, or, if none waits, every
    /// thread outside the runtime that does (a wake-up may be spurious).
    pub fn notify_one(&self) {
        let w = {
            let mut st = lock(&self.waiters);
            let w = st.0.pop();
            if w.is_none() {
                st.1.wake_all();
            }
            w
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        let mut ws = {
            let mut st = lock(&self.waiters);
            st.1.wake_all();
            st.0.take()
        };
        ws.wake_all();
    }
}
