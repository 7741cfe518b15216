//! The channel operations that do not wait, or wait only so long:
//! `try_send`, `try_recv`, `send_timeout` and `recv_timeout`. A goroutine
//! that waits with a deadline parks with two wakers, its entry on the
//! channel's wait list and an alarm (`timer`); once running again it
//! settles the alarm and leaves the list under the channel's lock (under
//! which every wake-up from the channel happens), so neither wakes it
//! later, in another park. Threads outside the runtime sleep until the
//! channel changes (`sleepers`), or their deadline passes. A wait of
//! `Duration::MAX` (or any deadline past what an `Instant` holds) has no
//! end (`timer::deadline`).

use std::fmt;
use std::time::{Duration, Instant};

use super::{ready, sleep_outside, Receiver, RecvError, Sender, Slot, State};
use crate::park::park;
use crate::region::lock;
use crate::room::Room;

/// Why [`Receiver::try_recv`] returned no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing to take now (on a rendezvous channel: no sender waiting).
    Empty,
    /// Every sender is gone and nothing is queued.
    Disconnected,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryRecvError::Empty => "receiving on an empty channel",
            TryRecvError::Disconnected => return fmt::Display::fmt(&RecvError, f),
        })
    }
}

impl std::error::Error for TryRecvError {}

/// Why [`Receiver::recv_timeout`] returned no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// The time ran out first.
    Timeout,
    /// Every sender is gone and nothing is queued.
    Disconnected,
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecvTimeoutError::Timeout => "timed out receiving on a channel",
            RecvTimeoutError::Disconnected => return fmt::Display::fmt(&RecvError, f),
        })
    }
}

impl std::error::Error for RecvTimeoutError {}

/// Why [`Sender::try_send`] did not send: the value comes back.
#[derive(PartialEq, Eq)]
pub enum TrySendError<T> {
    /// No room now (on a rendezvous channel: no receiver waiting).
    Full(T),
    /// Every receiver is gone.
    Disconnected(T),
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "Full(..)",
            TrySendError::Disconnected(_) => "Disconnected(..)",
        })
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "sending on a full channel",
            TrySendError::Disconnected(_) => "sending on a channel whose receivers are all gone",
        })
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// Why [`Sender::send_timeout`] did not send: the value comes back.
#[derive(PartialEq, Eq)]
pub enum SendTimeoutError<T> {
    /// The time ran out first.
    Timeout(T),
    /// Every receiver is gone.
    Disconnected(T),
}

impl<T> fmt::Debug for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendTimeoutError::Timeout(_) => "Timeout(..)",
            SendTimeoutError::Disconnected(_) => "Disconnected(..)",
        })
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendTimeoutError::Timeout(_) => "timed out sending on a channel",
            SendTimeoutError::Disconnected(_) => {
                "sending on a channel whose receivers are all gone"
            }
        })
    }
}

impl<T> std::error::Error for SendTimeoutError<T> {}

/// How a timed send's look under the lock ended.
enum Attempt {
    /// Handed to a receiver or queued.
    Sent,
    /// Every receiver is gone.
    Closed,
    /// The deadline has passed.
    Late,
    /// The buffer is full of its allocation: grow it outside the region.
    NoQueueRoom,
    /// The timer's heap is full of its allocation: grow it, as above.
    NoTimerRoom,
    /// Parked, with an alarm and a wait-list entry.
    Parked,
}

impl<T> Sender<T> {
    /// Sends `v` if that needs no wait: to a receiver parked in `recv`,
    /// or into a buffer with room. On a rendezvous channel only a waiting
    /// receiver takes it: a goroutine parked in a receive, or a thread
    /// outside the runtime in one, for which the value is queued (and
    /// taken at its next look). Never waits.
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        let mut v = Some(v);
        loop {
            let tried = try_send_locked(&mut lock(&self.chan.state), &mut v);
            let mut back = || v.take().expect("not sent");
            match tried {
                Tried::Sent => return Ok(()),
                Tried::Closed => return Err(TrySendError::Disconnected(back())),
                Tried::Full => return Err(TrySendError::Full(back())),
                // Growing allocates: outside the lock's region.
                Tried::NoRoom => crate::room::grow(&self.chan.state, |st| &mut st.queue),
            }
        }
    }
}

/// What a send that does not wait found under the lock.
enum Tried {
    /// Handed to a parked receiver or queued: `v` is empty.
    Sent,
    /// Every receiver is gone.
    Closed,
    /// No room now, nor a receiver waiting (see `State::room_now`).
    Full,
    /// The buffer is full of its allocation: grow it outside the region.
    NoRoom,
}

/// `try_send`'s look, under the lock the caller holds.
fn try_send_locked<T>(st: &mut State<T>, v: &mut Option<T>) -> Tried {
    if st.receivers == 0 {
        return Tried::Closed;
    }
    if st.give_to_receiver(v, None) {
        return Tried::Sent;
    }
    if !st.room_now() {
        return Tried::Full;
    }
    if !st.queue.has_room() {
        return Tried::NoRoom;
    }
    st.queue.push_back(v.take().expect("not sent"));
    st.pushed += 1;
    st.sleepers.wake_all();
    Tried::Sent
}

impl<T> Sender<T> {
    /// Sends `v`, waiting at most `d` for a receiver (on a rendezvous
    /// channel) or for room; fails, returning `v`, when the time runs out
    /// or every receiver is gone. A goroutine parks with an alarm beside
    /// its wait-list entry (see the module comment); a thread outside the
    /// runtime sleeps until the channel changes (see `State::sleepers`).
    pub fn send_timeout(&self, v: T, d: Duration) -> Result<(), SendTimeoutError<T>> {
        let deadline = crate::timer::deadline(d);
        let timer = match crate::worker::goroutine() {
            Some(_) => crate::timer::started(),
            None => None,
        };
        let Some(t) = timer else {
            let mut v = Some(v);
            loop {
                let mut st = lock(&self.chan.state);
                let tried = try_send_locked(&mut st, &mut v);
                let mut back = || v.take().expect("not sent");
                match tried {
                    Tried::Sent => return Ok(()),
                    Tried::Closed => return Err(SendTimeoutError::Disconnected(back())),
                    Tried::NoRoom => {
                        drop(st);
                        crate::room::grow(&self.chan.state, |st| &mut st.queue);
                    }
                    Tried::Full if Instant::now() >= deadline => {
                        return Err(SendTimeoutError::Timeout(back()))
                    }
                    Tried::Full => sleep_outside(&self.chan, st, Some(deadline)),
                }
            }
        };
        // The value waits in this frame: on a rendezvous channel a
        // receiver takes it from here (as in `send_parked`); otherwise we
        // are woken when room appears, and look again.
        let rendezvous = self.chan.rendezvous;
        let mut slot = Some(v);
        let ptr = Slot(&mut slot as *mut Option<T>);
        let take = |ptr: &Slot<T>| {
            // SAFETY: our own slot, and no receiver holds it: we are on no
            // wait list when this is called.
            unsafe { (*ptr.0).take() }.expect("the value is still ours")
        };
        loop {
            let alarm = crate::timer::Alarm::new();
            let mut me = std::ptr::null();
            let mut attempt = Attempt::Parked;
            park(|w| {
                let mut st = w.lock(&self.chan.state);
                if st.receivers == 0 {
                    attempt = Attempt::Closed;
                    return false;
                }
                // SAFETY: our own slot; a receiver touches it only while
                // this goroutine is parked with it listed, which it is not.
                let mine = unsafe { &mut *ptr.0 };
                if st.give_to_receiver(mine, Some(&w)) {
                    attempt = Attempt::Sent;
                    return false;
                }
                if st.room_now() {
                    if !st.queue.has_room() {
                        attempt = Attempt::NoQueueRoom;
                        return false;
                    }
                    st.queue.push_back(mine.take().expect("not sent"));
                    st.pushed += 1;
                    st.sleepers.wake_all();
                    attempt = Attempt::Sent;
                    return false;
                }
                if Instant::now() >= deadline {
                    attempt = Attempt::Late;
                    return false;
                }
                let Some(waker) = alarm.arm(t, deadline, w) else {
                    attempt = Attempt::NoTimerRoom;
                    return false;
                };
                me = waker.task_ptr();
                if rendezvous {
                    st.send_waiters.push_with(waker, ptr.0 as usize);
                    // A thread waiting to receive may take it now.
                    st.sleepers.wake_all();
                } else {
                    st.send_waiters.push(waker);
                }
                true
            });
            match attempt {
                Attempt::Sent => return Ok(()),
                Attempt::Closed => return Err(SendTimeoutError::Disconnected(take(&ptr))),
                Attempt::Late => return Err(SendTimeoutError::Timeout(take(&ptr))),
                Attempt::NoQueueRoom => {
                    crate::room::grow(&self.chan.state, |st| &mut st.queue);
                    continue;
                }
                Attempt::NoTimerRoom => {
                    crate::timer::make_room(t);
                    continue;
                }
                Attempt::Parked => {}
            }
            // Running again: after `settle` the alarm wakes no one; after
            // leaving the wait list no receiver does. Unless the alarm
            // fired, the channel woke us, and every wake-up from the
            // channel takes its waiter off the list first: no lock then.
            if alarm.settle() {
                lock(&self.chan.state).send_waiters.remove(me);
            }
            // SAFETY: no receiver holds our slot now: we are on no list.
            if unsafe { (*ptr.0).is_none() } {
                // A receiver took it from our frame (rendezvous).
                return Ok(());
            }
            // Still ours: look again (the deadline is checked there).
        }
    }
}

impl<T> Receiver<T> {
    /// Takes a value if one is there now: a queued one, or, on a
    /// rendezvous channel, a waiting sender's. Never waits.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        match ready(&mut lock(&self.chan.state), None) {
            Some(Ok(v)) => Ok(v),
            Some(Err(RecvError)) => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Receives the next value, waiting at most `d` for one; fails once
    /// every sender is gone and nothing is queued. A goroutine is parked
    /// and woken by a sender or by the timer thread (an alarm: see
    /// `timer`), whichever comes first; a thread outside the runtime sleeps
    /// until the channel changes (see `State::sleepers`).
    pub fn recv_timeout(&self, d: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = crate::timer::deadline(d);
        let timer = match crate::worker::goroutine() {
            Some(_) => crate::timer::started(),
            None => None,
        };
        let Some(t) = timer else {
            // A thread outside the runtime (or no timer thread).
            return match self.recv_outside(Some(deadline)) {
                Some(Ok(v)) => Ok(v),
                Some(Err(RecvError)) => Err(RecvTimeoutError::Disconnected),
                None => Err(RecvTimeoutError::Timeout),
            };
        };
        let mut slot: Option<T> = None;
        let ptr = Slot(&mut slot as *mut Option<T>);
        loop {
            let alarm = crate::timer::Alarm::new();
            let mut out = None;
            let mut me = std::ptr::null();
            let mut no_room = false;
            let parked = park(|w| {
                let mut st = w.lock(&self.chan.state);
                if let Some(r) = ready(&mut st, Some(&w)) {
                    out = Some(r.map_err(|_| RecvTimeoutError::Disconnected));
                    return false;
                }
                if Instant::now() >= deadline {
                    out = Some(Err(RecvTimeoutError::Timeout));
                    return false;
                }
                // Announced only once the alarm has room; the list's
                // waker and the alarm's wake the same goroutine.
                let Some(waker) = alarm.arm(t, deadline, w) else {
                    no_room = true;
                    return false;
                };
                me = waker.task_ptr();
                st.recv_waiters.push_with(waker, ptr.0 as usize);
                // A thread's timed send may meet it now.
                st.sleepers.wake_all();
                true
            });
            if let Some(r) = out {
                return r;
            }
            if no_room {
                // Grown outside the park's region (it allocates).
                crate::timer::make_room(t);
                continue;
            }
            debug_assert!(parked, "recv_timeout parks only in goroutines");
            // Running again: woken by a sender (the value is in `slot`),
            // by the channel's end, or by the alarm. After `settle` the
            // alarm wakes no one; after leaving the wait list (under the
            // lock every sender wakes under) no sender does.
            // Unless the alarm fired, the channel woke us, and every
            // wake-up from the channel takes its waiter off the list
            // first: no lock then.
            let fired = alarm.settle();
            let listed = fired && lock(&self.chan.state).recv_waiters.remove(me).is_some();
            // SAFETY: no sender holds our slot now: we are on no wait list.
            if let Some(v) = unsafe { (*ptr.0).take() } {
                return Ok(v);
            }
            if listed && Instant::now() >= deadline {
                return Err(RecvTimeoutError::Timeout);
            }
            // Woken by the channel's end, or early: look again.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::WAITING_TWICE;
    use crate::{Config, Preemption, Runtime};
    use std::sync::atomic::Ordering::SeqCst;

    /// A goroutine parked in a timed receive has two wakers (its wait
    /// list's and its alarm's) and is announced as such, so that the two
    /// race by compare-and-swap (see `task`): announced as a park with one
    /// waker, both could queue it. Looked at from a thread outside the
    /// runtime, through the channel's wait list, while it waits.
    #[test]
    fn a_timed_wait_is_announced_with_two_wakers() {
        let rt = Runtime::new(Config {
            procs: 1,
            preemption: Preemption::Cooperative,
            ..Config::default()
        })
        .unwrap();
        let (tx, rx) = super::super::channel::<u32>(0);
        let probe = rx.clone();
        let h = rt.go(move || rx.recv_timeout(Duration::from_secs(3600)));
        let deadline = Instant::now() + Duration::from_secs(30);
        let state = loop {
            {
                let mut st = lock(&probe.chan.state);
                if let Some((w, data)) = st.recv_waiters.pop_with() {
                    // SAFETY: the waker keeps the task alive.
                    let s = unsafe { (*w.task_ptr()).state.load(SeqCst) };
                    st.recv_waiters.push_with(w, data);
                    break s;
                }
            }
            assert!(Instant::now() < deadline, "the receiver never parked");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(state, WAITING_TWICE);
        tx.send(7).unwrap();
        assert_eq!(h.join().unwrap(), Ok(7));
    }
}
