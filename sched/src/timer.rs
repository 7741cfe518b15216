//! Timers: [`sleep`], [`after`], and the alarms behind
//! [`Receiver::recv_timeout`](crate::channel::Receiver::recv_timeout).
//! One thread per process keeps every deadline in a heap and acts on each
//! as it falls due: it wakes a sleeping goroutine, sends on an `after`
//! channel, or fires an alarm.
//!
//! An alarm wakes a goroutine that may have been woken by something else
//! first and be parked elsewhere by the time the deadline comes. A wake-up
//! that lands on a later park would be spurious, and the runtime's parks
//! do not tolerate those (a goroutine woken while still on a channel's
//! wait list would be listed twice). So an alarm is a small state machine
//! shared by the timer and the goroutine: the timer fires it only from
//! `ARMED`, and the goroutine, once running again, cancels it or, if it
//! fired, waits until the timer's wake-up is over (`Alarm::settle`):
//! a wake-up that finds the goroutine running does nothing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{
    AtomicU64, AtomicU8, AtomicUsize, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed,
    Ordering::Release,
};
use std::sync::{Arc, Condvar as StdCondvar, Mutex as StdMutex, OnceLock};
use std::time::{Duration, Instant};

use crate::park::{park, Parker, Waker};
use crate::region::lock_plain;
use crate::room::Room;

/// What the timer does when a deadline falls due.
enum Due {
    /// Wakes a goroutine in `sleep`.
    Wake(Waker),
    /// Fires an alarm (see the module comment).
    Alarm(Arc<Alarm>, Waker),
    /// Sends the time on an `after` channel.
    Send(crate::channel::Sender<Instant>),
}

/// A deadline: ordered by time, then by arrival.
struct Sleeper {
    at: Instant,
    seq: u64,
    due: Due,
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

/// The process's timer: deadlines in a heap, and the thread that acts on
/// them.
pub(crate) struct Timers {
    /// The deadlines (pushed only where the heap has room: see `room`),
    /// and a sequence number for ties.
    heap: StdMutex<(BinaryHeap<Reverse<Sleeper>>, u64)>,
    changed: StdCondvar,
    /// The fork generation of the timer thread, if one was started (in a
    /// forked child the parent's does not exist, and a new one is
    /// started).
    thread_gen: StdMutex<Option<u64>>,
    /// Alarms cancelled since the heap was last purged of them. A
    /// cancelled alarm stays in the heap until its deadline, holding its
    /// goroutine's task: a loop of `recv_timeout(an hour)` that always
    /// finds a value would grow the heap by an entry a call (Go's
    /// `time.After` in a loop did the same until Go 1.23). The timer
    /// thread purges them once they are `PURGE_AT` and half the heap.
    cancelled: AtomicUsize,
    /// `thread_gen`'s generation plus one once a thread is started (0:
    /// none), read without the lock.
    started_gen: AtomicU64,
}

/// Cancelled alarms that make the timer thread look for a purge.
const PURGE_AT: usize = 4096;

fn timers() -> &'static Timers {
    static T: OnceLock<Timers> = OnceLock::new();
    // As `blocking::pool`.
    crate::region::no_yield(|| {
        T.get_or_init(|| Timers {
            heap: StdMutex::new((BinaryHeap::new(), 0)),
            changed: StdCondvar::new(),
            thread_gen: StdMutex::new(None),
            cancelled: AtomicUsize::new(0),
            started_gen: AtomicU64::new(0),
        })
    })
}

/// Starts the timer thread if this process has none. Returns false if it
/// cannot be started. Starting a thread allocates, so this runs outside
/// any no-preempt region: in a no-yield one (a stop may park the caller
/// holding `thread_gen`, which no stopped world needs; no other goroutine
/// of its worker can run and wait for it).
fn ensure_timer_thread(t: &'static Timers) -> bool {
    let g = crate::fork::generation();
    if t.started_gen.load(Acquire) == g.wrapping_add(1) {
        // Started in this process (the common case: no lock).
        return true;
    }
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
            t.started_gen.store(g.wrapping_add(1), Release);
        }
        ok
    })
}

fn timer_main(t: &'static Timers) {
    // Deadlines met on time, even while every CPU runs a worker.
    crate::sys::favour_wakeups();
    let mut due = Vec::new();
    let mut h = lock_plain(&t.heap);
    loop {
        let cancelled = t.cancelled.load(Relaxed);
        if cancelled >= PURGE_AT && cancelled >= h.0.len() / 2 {
            t.cancelled.store(0, Relaxed);
            // Rebuilt without the cancelled alarms, which are dropped
            // once the lock is let go (a task's last reference may be
            // among them). Goroutines that made room before this find
            // less and make it again (`push`).
            let all = std::mem::take(&mut h.0).into_vec();
            let (dead, live): (Vec<_>, Vec<_>) = all
                .into_iter()
                .partition(|Reverse(s)| matches!(&s.due, Due::Alarm(a, _) if a.cancelled()));
            h.0 = BinaryHeap::from(live);
            drop(h);
            drop(dead);
            h = lock_plain(&t.heap);
            continue;
        }
        let now = Instant::now();
        while h.0.peek().is_some_and(|Reverse(s)| s.at <= now) {
            let Reverse(s) = h.0.pop().expect("peeked");
            due.push(s.due);
        }
        if !due.is_empty() {
            // Acted on without the heap's lock: a send takes a channel's
            // lock, which a goroutine may hold while it arms an alarm.
            drop(h);
            for d in due.drain(..) {
                match d {
                    Due::Wake(w) => w.wake(),
                    Due::Alarm(alarm, w) => alarm.fire(w),
                    Due::Send(tx) => {
                        // Room for one, which only this send fills: never
                        // waits. A dropped receiver is no error.
                        let _ = tx.send(now);
                    }
                }
            }
            h = lock_plain(&t.heap);
            continue;
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

/// Pushes a deadline, if the heap has room; returns false if not (the
/// caller grows it outside any region and tries again: see `room`).
/// `due` is called only once there is room: a park's closure announces
/// its park there. The lock is taken in a no-preempt region (a goroutine
/// switched out holding it would leave its worker's next sleeper blocking
/// the thread on it).
fn push(t: &'static Timers, at: Instant, due: impl FnOnce() -> Due) -> bool {
    let mut h = crate::region::lock(&t.heap);
    if !h.0.has_room() {
        return false;
    }
    h.1 += 1;
    let seq = h.1;
    h.0.push(Reverse(Sleeper {
        at,
        seq,
        due: due(),
    }));
    // The timer thread sleeps until the earliest deadline: it need hear of
    // this one only if it is now the earliest (a notify is a system call,
    // waiter or not).
    if h.0.peek().is_some_and(|Reverse(s)| s.seq == seq) {
        t.changed.notify_one();
    }
    true
}

/// The timer, its thread started, or `None` if no thread can be started.
pub(crate) fn started() -> Option<&'static Timers> {
    let t = timers();
    ensure_timer_thread(t).then_some(t)
}

/// Makes room in the heap for one more deadline (outside any region),
/// after a `push` found none.
pub(crate) fn make_room(t: &'static Timers) {
    crate::room::grow(&t.heap, |h| &mut h.0);
}

/// `d` from now; when that is past what an `Instant` can hold (a
/// caller's `Duration::MAX`, meaning "never"), a century from now, which
/// no timer reaches. Adding `d` itself would panic in the caller.
pub(crate) fn deadline(d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    // A century fits: `Instant` counts seconds since boot in an i64.
    now.checked_add(d)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

/// Sleeps for at least `d`: a goroutine is parked (its worker runs
/// others) and woken by the timer thread; a thread outside the runtime
/// sleeps. `Duration::MAX` sleeps for ever.
pub fn sleep(d: Duration) {
    let at = deadline(d);
    if crate::worker::goroutine().is_none() {
        std::thread::sleep(d);
        return;
    }
    let Some(t) = started() else {
        // No thread to wake us: sleep on the worker instead.
        std::thread::sleep(d);
        return;
    };
    loop {
        let mut no_room = false;
        park(|p| {
            // Announced only once the deadline has room.
            let pushed = push(t, at, || Due::Wake(p.waker()));
            no_room = !pushed;
            pushed
        });
        if !no_room {
            return;
        }
        // Grown outside the park's region (it allocates), then again.
        make_room(t);
    }
}

/// A channel that receives the time once, at least `d` from now (Go's
/// `time.After`). Works from goroutines and from threads outside a
/// runtime; if no timer thread can be started, the time is sent at once.
/// After `Duration::MAX`, nothing is ever sent.
pub fn after(d: Duration) -> crate::channel::Receiver<Instant> {
    let at = deadline(d);
    let (tx, rx) = crate::channel::channel(1);
    match started() {
        Some(t) => {
            let mut tx = Some(tx);
            while !push(t, at, || Due::Send(tx.take().expect("pushed once"))) {
                make_room(t);
            }
        }
        None => {
            let _ = tx.send(Instant::now());
        }
    }
    rx
}

/// Armed, and neither fired nor cancelled.
const ARMED: u8 = 0;
/// Cancelled by its goroutine: the timer will do nothing.
const CANCELLED: u8 = 1;
/// The timer is waking the goroutine.
const FIRING: u8 = 2;
/// The timer has woken it.
const FIRED: u8 = 3;

/// A wake-up a goroutine asks of the timer, which it can take back (see
/// the module comment).
pub(crate) struct Alarm {
    state: AtomicU8,
}

impl Alarm {
    pub(crate) fn new() -> Arc<Alarm> {
        Arc::new(Alarm {
            state: AtomicU8::new(ARMED),
        })
    }

    /// Inside a park's closure: arms the alarm for `at` and announces the
    /// park, returning the waker for the channel's wait list (the alarm
    /// holds a second one of the same goroutine); `None`, having announced
    /// nothing, if the timer's heap has no room.
    pub(crate) fn arm(
        self: &Arc<Alarm>,
        t: &'static Timers,
        at: Instant,
        p: Parker<'_>,
    ) -> Option<Waker> {
        let mut listed = None;
        let armed = push(t, at, || {
            let (waker, again) = p.two_wakers();
            listed = Some(waker);
            Due::Alarm(self.clone(), again)
        });
        listed.filter(|_| armed)
    }

    /// The timer's side: wakes the goroutine unless it cancelled first.
    fn fire(&self, w: Waker) {
        if self
            .state
            .compare_exchange(ARMED, FIRING, AcqRel, Acquire)
            .is_ok()
        {
            w.wake();
            self.state.store(FIRED, Release);
        }
    }

    fn cancelled(&self) -> bool {
        self.state.load(Acquire) == CANCELLED
    }

    /// The goroutine's side, once it runs again: after this returns, the
    /// timer will not wake it for this alarm. Returns whether the alarm
    /// fired.
    pub(crate) fn settle(&self) -> bool {
        match self
            .state
            .compare_exchange(ARMED, CANCELLED, AcqRel, Acquire)
        {
            Ok(_) => {
                let t = timers();
                let n = t.cancelled.fetch_add(1, Relaxed) + 1;
                if n.is_multiple_of(PURGE_AT) {
                    // The timer thread may sleep until a far deadline:
                    // wake it to look (a system call a PURGE_AT cancels).
                    t.changed.notify_one();
                }
                false
            }
            Err(_) => {
                // Fired, or firing: the timer's wake-up finds us running
                // (a no-op) and is over in a moment.
                while self.state.load(Acquire) != FIRED {
                    std::hint::spin_loop();
                    std::thread::yield_now();
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{channel, Config, Preemption, Runtime};

    /// A loop of long `recv_timeout`s that always find a value leaves no
    /// more than a bounded number of cancelled alarms in the heap, once
    /// the timer thread has looked (waited for, up to a minute: it may be
    /// slow to get a CPU on a loaded machine, never wrong).
    #[test]
    fn cancelled_alarms_are_purged() {
        let rt = Runtime::new(Config {
            procs: 1,
            preemption: Preemption::Cooperative,
            ..Config::default()
        })
        .unwrap();
        rt.block_on(|| {
            let (tx, rx) = channel::channel::<u32>(1);
            for i in 0..5 * PURGE_AT as u32 {
                // Parks, armed, until the sender runs: each call cancels
                // an alarm due in an hour.
                let tx2 = tx.clone();
                let s = crate::go(move || tx2.send(i).unwrap());
                assert_eq!(rx.recv_timeout(Duration::from_secs(3600)), Ok(i));
                s.join().unwrap();
            }
        })
        .unwrap();
        let t0 = Instant::now();
        loop {
            let left = lock_plain(&timers().heap).0.len();
            if left < PURGE_AT {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{left} alarms still in the heap after 5 x {PURGE_AT} were cancelled"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
