//! Channels between goroutines (Go's `chan`): bounded, unbounded, and
//! rendezvous (capacity 0: a send returns once a receiver has taken the
//! value). A goroutine that must wait parks (its worker runs others); a
//! thread outside the runtime sleeps on a futex until the channel changes
//! (`sleepers`). Closing is by drop:
//! when every sender is gone, receivers drain what is queued and then get
//! [`RecvError`]; when every receiver is gone, a send returns its value in
//! [`SendError`].
//!
//! Values pass between goroutines as in Go: a send to a parked receiver
//! writes straight into the receiver's frame, and on a rendezvous channel
//! a goroutine with no receiver to meet parks with its value in its own
//! frame, where the receiver takes it (one lock a send). A thread outside
//! the runtime, which cannot park, queues its value and waits for it to be
//! popped (or, every receiver gone, takes it back: a rendezvous send
//! returns only once a receiver has the value); a thread waiting in a
//! receive is counted, so that a send that does not wait for a receiver to
//! come may queue its value for it (see `State::thread_receivers`).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crate::linked::WaitList;
use crate::lock::Lock;
use crate::park::{park, park_on, Parker, Waker};
use crate::region::lock;
use crate::room::Room;
use crate::sleepers::Sleepers;
use crate::worker::Worker;

mod timed;

pub use timed::{RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};

struct State<T> {
    /// Filled only where it has room, and grown before the region that
    /// fills it (see `room`).
    queue: VecDeque<T>,
    /// `None`: unbounded; `Some(0)`: rendezvous.
    cap: Option<usize>,
    /// Values pushed and popped so far: a rendezvous sender outside the
    /// runtime (which cannot park) waits until its value's number has been
    /// popped. One that finds every receiver gone takes its value back out
    /// of the queue once it is at the front (those ahead of it belong to
    /// senders doing the same), counting it popped, so the numbers of the
    /// values behind still hold.
    pushed: u64,
    popped: u64,
    /// Threads outside the runtime waiting in a receive (`recv`,
    /// `recv_timeout`), which cannot park: they look, and sleep until the
    /// channel changes (`sleepers`). Raised on a thread's first look and
    /// lowered under the same lock as the look that ends its wait (which
    /// takes a value if one is queued), so a value queued for one of them
    /// is always taken. A send that must not wait for a receiver to come
    /// (`try_send`, `send_timeout`) queues its value on a rendezvous
    /// channel only while more of them wait than values are queued (see
    /// `room_now`): the push wakes them, and one of them takes it.
    thread_receivers: usize,
    /// Threads outside the runtime asleep until the channel changes: woken
    /// (all of them) by a value queued or taken, a goroutine parking with
    /// a value or for one, a thread starting to wait in a receive, the
    /// last sender or receiver gone (see `sleepers`).
    sleepers: Sleepers,
    senders: usize,
    receivers: usize,
    /// Goroutines waiting to send: for room on a buffered channel; on a
    /// rendezvous, each with the address of the `Option<T>` in its `send`
    /// frame that holds its value (a `Slot<T>`), for a receiver to take
    /// straight from there (Go's parked sender, whose `sudog` holds the
    /// element).
    send_waiters: WaitList,
    /// Goroutines parked in `recv`, each with the address of the slot on
    /// its stack (a `Slot<T>`) where a sender may put a value straight
    /// away (see `Sender::send`).
    recv_waiters: WaitList,
}

impl<T> State<T> {
    /// Whether a send that does not wait for a receiver to come may queue
    /// a value now: a buffer with room, or, on a rendezvous channel, a
    /// thread outside the runtime waiting in a receive for each value
    /// queued and this one (see `thread_receivers`). (A receiver parked
    /// in `recv` is handed the value first: `give_to_receiver`.)
    fn room_now(&self) -> bool {
        match self.cap {
            None => true,
            Some(0) => self.thread_receivers > self.queue.len(),
            Some(c) => self.queue.len() < c,
        }
    }

    /// Hands the value in `v` to a goroutine parked in a receive, if one
    /// is listed: writes it into that receiver's slot and wakes it (under
    /// the lock the caller holds). Returns whether it did (`v` is then
    /// empty). `park`: the caller's `Parker`, if it runs in a park's
    /// closure (see `Waker::wake_from`).
    fn give_to_receiver(&mut self, v: &mut Option<T>, park: Option<&Parker<'_>>) -> bool {
        let Some((w, theirs)) = self.recv_waiters.pop_with() else {
            return false;
        };
        // SAFETY: see `Slot`: that receiver is parked in a receive until
        // this wake-up, and the caller holds the lock.
        unsafe { *(theirs as *mut Option<T>) = v.take() };
        self.pushed += 1;
        self.popped += 1;
        w.wake_from(park);
        true
    }
}

/// Where a value passes between a parked goroutine and the one that
/// meets it: an `Option<T>` in the parked one's `recv` (or rendezvous
/// `send`) frame, which stays put while it is parked (it resumes only
/// when woken, and every wake-up takes its entry out of the wait list
/// first). A parked receiver's slot is filled, a parked sender's emptied.
struct Slot<T>(*mut Option<T>);

// SAFETY: the pointee is touched by the goroutine that meets the parked
// one only while it holds the channel's lock, before it wakes it, and by
// the parked one only after it has been woken (the wake-up orders the
// two); `T: Send` moves across.
unsafe impl<T: Send> Send for Slot<T> {}

struct Chan<T> {
    state: Lock<State<T>>,
    /// Capacity 0 (fixed at creation, so read without the lock).
    rendezvous: bool,
}

/// The sending side; clone it for more senders.
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

/// The receiving side; clone it for more receivers.
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
}

/// Every receiver is gone: the value comes back.
#[derive(PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sending on a channel whose receivers are all gone")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// Every sender is gone and nothing is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvError;

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("receiving on an empty channel whose senders are all gone")
    }
}

impl std::error::Error for RecvError {}

fn make<T>(cap: Option<usize>) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan {
        state: Lock::new(State {
            queue: VecDeque::new(),
            cap,
            pushed: 0,
            popped: 0,
            thread_receivers: 0,
            sleepers: Sleepers::new(),
            senders: 1,
            receivers: 1,
            send_waiters: WaitList::new(),
            recv_waiters: WaitList::new(),
        }),
        rendezvous: cap == Some(0),
    });
    (Sender { chan: chan.clone() }, Receiver { chan })
}

/// A channel holding at most `cap` values; `cap == 0` is a rendezvous.
pub fn channel<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    make(Some(cap))
}

/// A channel with no bound.
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    make(None)
}

/// Waits until `ready` (run under the channel's lock) returns `Some`:
/// parked as a goroutine, registered by `register`; asleep on the
/// channel's sleepers outside a runtime.
fn wait<T, R>(
    chan: &Chan<T>,
    mut ready: impl FnMut(&mut State<T>) -> Option<R>,
    register: impl Fn(&mut State<T>, Waker),
) -> R {
    loop {
        let mut out = None;
        let parked = park(|w| {
            let mut st = w.lock(&chan.state);
            match ready(&mut st) {
                Some(r) => {
                    out = Some(r);
                    false
                }
                None => {
                    register(&mut st, w.waker());
                    true
                }
            }
        });
        if let Some(r) = out {
            return r;
        }
        if !parked {
            let mut st = lock(&chan.state);
            if let Some(r) = ready(&mut st) {
                return r;
            }
            sleep_outside(chan, st, None);
        }
    }
}

/// Sleeps a thread outside the runtime, which holds the channel's lock
/// (`st`) and has found nothing to do, until the channel changes in a way
/// it may wait for, or `until` passes (see `State::sleepers`). Lets the
/// lock go; the caller looks again.
fn sleep_outside<'a, T>(
    chan: &'a Chan<T>,
    st: crate::region::Locked<'a, Lock<State<T>>>,
    until: Option<std::time::Instant>,
) {
    drop(crate::sleepers::sleep(
        st,
        |st| &mut st.sleepers,
        || lock(&chan.state),
        until,
    ));
}

/// How a send's attempt under the lock ended.
enum Sent<T> {
    /// Pushed or handed over: the value's number, and whether a parked
    /// receiver took it.
    Done(u64, bool),
    /// Every receiver is gone.
    Closed(T),
    /// The buffer is full of its allocation: grow it outside the region.
    NoRoom,
}

impl<T> Sender<T> {
    /// Sends `v`, waiting for room (or, on a rendezvous channel, until a
    /// receiver has taken it). A receiver parked in `recv` is handed the
    /// value directly. Fails, returning `v`, once every receiver is gone.
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        if self.chan.rendezvous {
            if let Some(me) = crate::worker::goroutine() {
                return self.send_parked(me, v);
            }
        }
        let mut v = Some(v);
        // Wait for room and push.
        let (ticket, handed) = loop {
            let sent = wait(
                &self.chan,
                |st| {
                    if st.receivers == 0 {
                        return Some(Sent::Closed(v.take().expect("not sent yet")));
                    }
                    let room = st.cap.is_none_or(|c| st.queue.len() < c.max(1));
                    if !room {
                        return None;
                    }
                    // A receiver parked in `recv` (the queue is empty then)
                    // gets the value straight into its slot, as Go hands a
                    // value to a waiting receiver: the send is done, even
                    // on a rendezvous channel, since that receiver has it.
                    if st.give_to_receiver(&mut v, None) {
                        return Some(Sent::Done(st.pushed, true));
                    }
                    if !st.queue.has_room() {
                        // Not here: growing allocates.
                        return Some(Sent::NoRoom);
                    }
                    st.queue.push_back(v.take().expect("not sent yet"));
                    st.pushed += 1;
                    st.sleepers.wake_all();
                    Some(Sent::Done(st.pushed, false))
                },
                |st, w| st.send_waiters.push(w),
            );
            match sent {
                Sent::Done(ticket, handed) => break (ticket, handed),
                Sent::Closed(v) => return Err(SendError(v)),
                Sent::NoRoom => crate::room::grow(&self.chan.state, |st| &mut st.queue),
            }
        };
        if !handed && self.chan.rendezvous {
            // A rendezvous from outside the runtime: until a receiver has
            // taken it, or, every receiver gone, until it is at the front
            // of the queue, to be taken back (see `pushed`).
            let back = wait(
                &self.chan,
                |st| {
                    if st.popped >= ticket {
                        return Some(None);
                    }
                    if st.receivers == 0 && st.popped + 1 == ticket {
                        st.popped += 1;
                        // The next sender's value is at the front now.
                        st.sleepers.wake_all();
                        return Some(st.queue.pop_front());
                    }
                    None
                },
                |st, w| st.send_waiters.push(w),
            );
            if let Some(v) = back {
                return Err(SendError(v));
            }
        }
        Ok(())
    }

    /// A goroutine's send on a rendezvous channel, as Go's: handed to a
    /// parked receiver, or parked with the value until a receiver takes it
    /// from the sender's own frame. One lock a send (queueing the value
    /// and waiting for it to be popped took four).
    fn send_parked(&self, mut me: &'static Worker, v: T) -> Result<(), SendError<T>> {
        let mut slot = Some(v);
        let ptr = Slot(&mut slot as *mut Option<T>);
        loop {
            let mut closed = false;
            park_on(me, |w| {
                let mut st = w.lock(&self.chan.state);
                if st.receivers == 0 {
                    closed = true;
                    return false;
                }
                // SAFETY: our own slot; a receiver touches it only while
                // this goroutine is parked with it listed, which it is not.
                let mine = unsafe { &mut *ptr.0 };
                if st.give_to_receiver(mine, Some(&w)) {
                    return false;
                }
                st.send_waiters.push_with(w.waker(), ptr.0 as usize);
                // A thread waiting to receive may take it now.
                st.sleepers.wake_all();
                true
            });
            // SAFETY: no receiver holds our slot now: we are listed in no
            // wait list (handed over, cancelled, or woken, which unlists).
            let mine = unsafe { &mut *ptr.0 };
            if mine.is_none() {
                return Ok(());
            }
            if closed {
                return Err(SendError(mine.take().expect("looked at above")));
            }
            // Woken with the value still here (every receiver gone, or the
            // park cancelled): look again, from the worker we run on now
            // (a migrating runtime's goroutine may have moved in the park).
            me = crate::worker::goroutine().expect("a goroutine");
        }
    }
}

/// What a receive finds under the lock: a queued value, a parked
/// rendezvous sender's, the end of the channel, or nothing yet (`None`).
/// `park`: the caller's `Parker`, if it runs in a park's closure (see
/// `Waker::wake_from`).
#[inline(always)]
fn ready<T>(st: &mut State<T>, park: Option<&Parker<'_>>) -> Option<Result<T, RecvError>> {
    if let Some(v) = st.queue.pop_front() {
        st.popped += 1;
        // Room, or a thread's value taken.
        st.sleepers.wake_all();
        if st.cap != Some(0) {
            // Room now. (A rendezvous's waiting senders are parked
            // with their values: only threads queue.)
            st.send_waiters.wake_all();
        }
        return Some(Ok(v));
    }
    if st.cap == Some(0) {
        if let Some((w, theirs)) = st.send_waiters.pop_with() {
            // SAFETY: see `Slot`: that sender is parked in
            // `send_parked` until this wake-up, and we hold the
            // lock; its slot holds its value while it is listed.
            let v = unsafe { (*(theirs as *mut Option<T>)).take() };
            st.pushed += 1;
            st.popped += 1;
            w.wake_from(park);
            return Some(Ok(v.expect("a parked sender holds its value")));
        }
    }
    if st.senders == 0 {
        Some(Err(RecvError))
    } else {
        None
    }
}

impl<T> Receiver<T> {
    /// Receives the next value, waiting for one; fails once every sender
    /// is gone and nothing is queued.
    pub fn recv(&self) -> Result<T, RecvError> {
        let Some(mut me) = crate::worker::goroutine() else {
            return self
                .recv_outside(None)
                .unwrap_or_else(|| unreachable!("a wait without a deadline ended"));
        };
        let mut slot: Option<T> = None;
        loop {
            let mut closed = false;
            let ptr = Slot(&mut slot as *mut Option<T>);
            park_on(me, |w| {
                let mut st = w.lock(&self.chan.state);
                match ready(&mut st, Some(&w)) {
                    Some(Ok(v)) => {
                        // Into the slot a sender fills when we park: one
                        // place to look afterwards. SAFETY: our own slot,
                        // listed on no wait list now.
                        unsafe { *ptr.0 = Some(v) };
                        false
                    }
                    Some(Err(RecvError)) => {
                        closed = true;
                        false
                    }
                    None => {
                        st.recv_waiters.push_with(w.waker(), ptr.0 as usize);
                        // A thread's timed send may meet it now.
                        st.sleepers.wake_all();
                        true
                    }
                }
            });
            if let Some(v) = slot.take() {
                return Ok(v);
            }
            if closed {
                return Err(RecvError);
            }
            // Woken with nothing (the park cancelled): look again, from
            // the worker we run on now (see `send_parked`).
            me = crate::worker::goroutine().expect("a goroutine");
        }
    }

    /// A receive on a thread outside the runtime: look, then sleep until
    /// the channel changes, or `until` passes (`None` then); counted as
    /// waiting from the first look to the last, which takes a value if one
    /// is queued (see `State::thread_receivers`).
    #[inline(never)]
    fn recv_outside(&self, until: Option<std::time::Instant>) -> Option<Result<T, RecvError>> {
        let mut counted = false;
        loop {
            let mut st = lock(&self.chan.state);
            if !counted {
                st.thread_receivers += 1;
                counted = true;
                // A thread's timed send may queue for it now.
                st.sleepers.wake_all();
            }
            let out = match ready(&mut st, None) {
                Some(r) => Some(Some(r)),
                None if until.is_some_and(|u| std::time::Instant::now() >= u) => Some(None),
                None => None,
            };
            if let Some(r) = out {
                st.thread_receivers -= 1;
                return r;
            }
            sleep_outside(&self.chan, st, until);
        }
    }
}

impl<T> Receiver<T> {
    /// Values queued now. On a rendezvous channel these are only values
    /// handed to threads outside the runtime, which cannot park: those of
    /// senders outside it waiting for a receiver, and those sent to a
    /// thread waiting in a receive, which takes it at its next look. A
    /// goroutine's value waits in its own `send` frame until a receiver
    /// takes it.
    pub fn len(&self) -> usize {
        lock(&self.chan.state).queue.len()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        lock(&self.chan.state).senders += 1;
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        lock(&self.chan.state).receivers += 1;
        Receiver {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut st = lock(&self.chan.state);
        st.senders -= 1;
        if st.senders == 0 {
            st.recv_waiters.wake_all();
            st.sleepers.wake_all();
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut st = lock(&self.chan.state);
        st.receivers -= 1;
        if st.receivers == 0 {
            st.send_waiters.wake_all();
            st.sleepers.wake_all();
        }
    }
}
