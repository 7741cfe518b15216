//! Synchronisation that parks the goroutine, not the thread: a
//! [`WaitGroup`], a [`Mutex`] and its [`Condvar`], and [`sleep`]. Each also works from a thread
//! outside the runtime, which then blocks (or, for the mutex, yields while
//! it waits).

use std::cell::UnsafeCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar as StdCondvar, Mutex as StdMutex, OnceLock};
use std::time::{Duration, Instant};

use crate::linked::WaitList;
use crate::region::{lock, lock_plain};
use crate::room::Room;
use crate::runtime::{park, Waker};

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
    /// Held, and the goroutines waiting for it.
    state: StdMutex<(bool, WaitList)>,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through a guard, and at most one guard
// exists at a time (`state.0`).
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: as for any container of a `T: Send`.
unsafe impl<T: Send> Send for Mutex<T> {}

/// Access to a [`Mutex`]'s value; unlocks on drop.
pub struct MutexGuard<'a, T> {
    m: &'a Mutex<T>,
}

impl<T> Mutex<T> {
    /// A mutex holding `value`.
    pub fn new(value: T) -> Mutex<T> {
        Mutex {
            state: StdMutex::new((false, WaitList::new())),
            value: UnsafeCell::new(value),
        }
    }

    /// Locks, parking the calling goroutine while another holds it (a
    /// thread outside the runtime yields meanwhile).
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
                return MutexGuard { m: self };
            }
            if !parked {
                let mut st = lock(&self.state);
                if !st.0 {
                    st.0 = true;
                    return MutexGuard { m: self };
                }
                drop(st);
                std::thread::yield_now();
            }
        }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        let next = {
            let mut st = lock(&self.m.state);
            st.0 = false;
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
    waiters: StdMutex<WaitList>,
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
        let parked = park(move |w| {
            w.lock(&self.waiters).push(w.waker());
            drop(guard);
            true
        });
        if !parked {
            // Outside a runtime (the guard was dropped with the closure):
            // a spurious wake-up, after letting others run.
            std::thread::yield_now();
        }
        m.lock()
    }

    /// Wakes one waiter, if any.
    pub fn notify_one(&self) {
        let w = lock(&self.waiters).pop();
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        let mut ws = lock(&self.waiters).take();
        ws.wake_all();
    }
}

/// A sleeping goroutine: ordered by deadline, then by arrival.
struct Sleeper {
    at: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Sleeper {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Sleeper {}
impl PartialOrd for Sleeper {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Sleeper {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// The process's timer: sleeping goroutines by deadline, and the thread
/// that wakes them.
struct Timers {
    /// The sleepers (pushed only where the heap has room: see `room`), and
    /// a sequence number for ties.
    heap: StdMutex<(BinaryHeap<Reverse<Sleeper>>, u64)>,
    changed: StdCondvar,
    /// The fork generation of the timer thread, if one was started (in a
    /// forked child the parent's does not exist, and a new one is
    /// started).
    thread_gen: StdMutex<Option<u64>>,
}

fn timers() -> &'static Timers {
    static T: OnceLock<Timers> = OnceLock::new();
    // As `blocking::pool`.
    crate::region::no_yield(|| {
        T.get_or_init(|| Timers {
            heap: StdMutex::new((BinaryHeap::new(), 0)),
            changed: StdCondvar::new(),
            thread_gen: StdMutex::new(None),
        })
    })
}

/// Starts the timer thread if this process has none. Returns false if it
/// cannot be started. Starting a thread allocates, so this runs outside
/// any no-preempt region: in a no-yield one (a stop may park the caller
/// holding `thread_gen`, which no stopped world needs; no other goroutine
/// of its worker can run and wait for it).
fn ensure_timer_thread(t: &'static Timers) -> bool {
    crate::region::no_yield(|| {
        let g = crate::fork::generation();
        let mut started = lock_plain(&t.thread_gen);
        if *started == Some(g) {
            return true;
        }
        let ok = std::thread::Builder::new()
            .name("pardon-timers".into())
            .spawn(move || timer_main(t))
            .is_ok();
        if ok {
            *started = Some(g);
        }
        ok
    })
}

fn timer_main(t: &'static Timers) {
    // Sleepers woken on time, even while every CPU runs a worker.
    crate::sys::favour_wakeups();
    let mut h = lock_plain(&t.heap);
    loop {
        let now = Instant::now();
        while h.0.peek().is_some_and(|Reverse(s)| s.at <= now) {
            let Reverse(s) = h.0.pop().expect("peeked");
            s.waker.wake();
        }
        h = match h.0.peek().map(|Reverse(s)| s.at) {
            Some(at) => {
                t.changed
                    .wait_timeout(h, at.saturating_duration_since(now))
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => t.changed.wait(h).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

/// Sleeps for at least `d`: a goroutine is parked (its worker runs
/// others) and woken by the timer thread; a thread outside the runtime
/// sleeps.
pub fn sleep(d: Duration) {
    let at = Instant::now() + d;
    if crate::worker::goroutine().is_none() {
        std::thread::sleep(d);
        return;
    }
    let t = timers();
    if !ensure_timer_thread(t) {
        // No thread to wake us: sleep on the worker instead.
        std::thread::sleep(d);
        return;
    }
    loop {
        crate::room::grow(&t.heap, |h| &mut h.0);
        let mut no_room = false;
        park(|waker| {
            let mut h = waker.lock(&t.heap);
            if !h.0.has_room() {
                // Taken by another sleeper since `grow`: grow again.
                no_room = true;
                return false;
            }
            h.1 += 1;
            let seq = h.1;
            h.0.push(Reverse(Sleeper {
                at,
                seq,
                waker: waker.waker(),
            }));
            // The timer thread sleeps until the earliest deadline: it need
            // hear of this one only if it is now the earliest (a notify is
            // a system call, waiter or not).
            if h.0.peek().is_some_and(|Reverse(s)| s.seq == seq) {
                t.changed.notify_one();
            }
            true
        });
        if !no_room {
            return;
        }
    }
}
