//! Queues of goroutines linked through the goroutines themselves, so that
//! putting one on a queue never allocates.
//!
//! The runtime takes its locks inside no-preempt regions, and its
//! scheduler runs in one throughout (see `region`, `worker`). A stop of
//! the preempt registry waits for every worker to leave its region, while
//! the threads it has already stopped stay where it caught them — perhaps
//! inside `malloc`, holding the allocator's lock. A worker that called the
//! allocator in a region would then wait for that lock, and the stop for
//! the worker, until the stop timed out (`tests/allocator_locks.rs`). So
//! nothing a region does may allocate or free, and a queue that grows
//! (a `VecDeque` of goroutines) is out.
//!
//! Instead each [`Task`] carries two link words, one per kind of queue
//! it can be on: `run_link` for a run queue (a worker's or the global
//! one), `wait_link` for the wait list of what it is parked on (a channel,
//! a mutex, a join). A goroutine is on at most one run queue (only whoever
//! moves its state to `RUNNABLE` queues it, see `task`) and on at most one
//! wait list (it parks on one thing at a time, and whoever takes it off
//! that list wakes it), so one word of each kind is enough. A link word is
//! read and written only by the holder of the lock of the queue the task
//! is on; a queue owns one reference count of each task on it (a
//! `TaskRef` turned into a raw pointer), given back when the task leaves.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ptr;
use std::sync::Arc;

use crate::park::Waker;
use crate::queue::TaskRef;
use crate::task::Task;

/// Which of a task's link words a queue uses.
pub(crate) trait Link {
    fn word(t: &Task) -> &UnsafeCell<*const Task>;
}

/// Run queues link through `Task::run_link`.
pub(crate) struct RunLink;

impl Link for RunLink {
    #[inline]
    fn word(t: &Task) -> &UnsafeCell<*const Task> {
        &t.run_link
    }
}

/// Wait lists link through `Task::wait_link`.
pub(crate) struct WaitLink;

impl Link for WaitLink {
    #[inline]
    fn word(t: &Task) -> &UnsafeCell<*const Task> {
        &t.wait_link
    }
}

/// A first-in, first-out queue of goroutines.
pub(crate) struct Fifo<L: Link> {
    /// The first task, or null when empty. Each task on the queue is an
    /// `Arc::into_raw` of a `TaskRef` the queue owns; its `L` link word
    /// points to the next one (null for the last).
    head: *const Task,
    /// The last task, or null when empty.
    tail: *const Task,
    len: usize,
    _link: PhantomData<L>,
}

// SAFETY: a Fifo owns `Arc<Task>` references (which are Send) and touches
// their link words only through `&mut self`: moving it to another thread
// moves that ownership, as a `VecDeque<Arc<Task>>` would.
unsafe impl<L: Link> Send for Fifo<L> {}

impl<L: Link> Default for Fifo<L> {
    fn default() -> Self {
        Fifo::new()
    }
}

impl<L: Link> Fifo<L> {
    pub(crate) const fn new() -> Self {
        Fifo {
            head: ptr::null(),
            tail: ptr::null(),
            len: 0,
            _link: PhantomData,
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads `t`'s link word.
    ///
    /// # Safety
    /// `t` must be on this queue (so the caller, holding the queue by
    /// `&self`, holds the lock that guards its link word).
    #[inline]
    unsafe fn next_of(t: *const Task) -> *const Task {
        // SAFETY: the caller's contract: `t` is alive (the queue owns a
        // reference) and its link word is ours to read.
        unsafe { *L::word(&*t).get() }
    }

    /// Writes `t`'s link word.
    ///
    /// # Safety
    /// `t` must be on this queue or being put on it, by `&mut self`.
    #[inline]
    unsafe fn set_next(t: *const Task, next: *const Task) {
        // SAFETY: the caller's contract, as for `next_of`.
        unsafe { *L::word(&*t).get() = next };
    }

    /// Puts `t` at the back.
    pub(crate) fn push_back(&mut self, t: TaskRef) {
        let p = Arc::into_raw(t);
        // SAFETY: `p` is being put on this queue (it is on no other queue
        // of this kind: see the module comment), and `tail`, if any, is on
        // it.
        unsafe {
            Self::set_next(p, ptr::null());
            if self.tail.is_null() {
                self.head = p;
            } else {
                Self::set_next(self.tail, p);
            }
        }
        self.tail = p;
        self.len += 1;
    }

    /// Takes the first task.
    pub(crate) fn pop_front(&mut self) -> Option<TaskRef> {
        if self.head.is_null() {
            return None;
        }
        let p = self.head;
        // SAFETY: `p` is on this queue.
        self.head = unsafe { Self::next_of(p) };
        if self.head.is_null() {
            self.tail = ptr::null();
        }
        self.len -= 1;
        // SAFETY: the reference the queue owned since `push_*` made `p`.
        Some(unsafe { Arc::from_raw(p) })
    }

    /// Puts every task of `other` after this queue's, in their order,
    /// leaving `other` empty. Costs no walk.
    pub(crate) fn append(&mut self, other: &mut Fifo<L>) {
        if other.head.is_null() {
            return;
        }
        if self.tail.is_null() {
            self.head = other.head;
        } else {
            // SAFETY: `tail` is on this queue; `other.head` joins it.
            unsafe { Self::set_next(self.tail, other.head) };
        }
        self.tail = other.tail;
        self.len += other.len;
        // Not `*other = Fifo::new()`, which would drop (release) the tasks
        // just moved.
        other.head = ptr::null();
        other.tail = ptr::null();
        other.len = 0;
    }

    /// Takes the first `n` tasks (all, if fewer) as a queue of their own.
    pub(crate) fn split_front(&mut self, n: usize) -> Fifo<L> {
        let mut front = Fifo::new();
        for _ in 0..n {
            match self.pop_front() {
                Some(t) => front.push_back(t),
                None => break,
            }
        }
        front
    }

    /// Takes `t` out of the queue if it is on it, the others keeping
    /// their order: a walk of the whole queue (a timed-out waiter leaving
    /// a wait list; rare).
    pub(crate) fn remove(&mut self, t: *const Task) -> Option<TaskRef> {
        let mut found = None;
        for _ in 0..self.len {
            let x = self.pop_front().expect("counted");
            if found.is_none() && ptr::eq(Arc::as_ptr(&x), t) {
                found = Some(x);
            } else {
                self.push_back(x);
            }
        }
        found
    }

    /// The tasks in order, for a look without taking them (the model
    /// test's; a worker's spill of free tasks, whose stacks it takes).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Task> + '_ {
        let mut p = self.head;
        std::iter::from_fn(move || {
            if p.is_null() {
                return None;
            }
            // SAFETY: `p` is on this queue, which `&self` keeps unchanged
            // (and its tasks alive) while the iterator borrows it.
            let t = unsafe { &*p };
            // SAFETY: as above.
            p = unsafe { Self::next_of(p) };
            Some(t)
        })
    }
}

impl<L: Link> Drop for Fifo<L> {
    fn drop(&mut self) {
        while self.pop_front().is_some() {}
    }
}

/// The goroutines parked on one thing (a channel's side, a mutex, a
/// join), each with a word the list keeps for it, woken in the order they
/// came. Pushing and popping never allocate.
#[derive(Default)]
pub(crate) struct WaitList(Fifo<WaitLink>);

impl WaitList {
    pub(crate) const fn new() -> WaitList {
        WaitList(Fifo::new())
    }

    /// Adds the goroutine `w` wakes.
    pub(crate) fn push(&mut self, w: Waker) {
        self.push_with(w, 0);
    }

    /// Adds the goroutine `w` wakes, with `data` kept for it.
    #[inline]
    pub(crate) fn push_with(&mut self, w: Waker, data: usize) {
        let t = w.into_task();
        // SAFETY: the task is being put on this list (it is on no other
        // wait list: it parks on one thing at a time), so its `wait_data`
        // is ours, under the lock the caller holds for the list.
        unsafe { *t.wait_data.get() = data };
        self.0.push_back(t);
    }

    /// Takes the first goroutine's waker.
    pub(crate) fn pop(&mut self) -> Option<Waker> {
        self.pop_with().map(|(w, _)| w)
    }

    /// Takes the first goroutine's waker and the word kept for it.
    #[inline]
    pub(crate) fn pop_with(&mut self) -> Option<(Waker, usize)> {
        let t = self.0.pop_front()?;
        // SAFETY: written by `push_with` under the same lock; the task has
        // just left the list, and only its waker (ours now) acts on it.
        let data = unsafe { *t.wait_data.get() };
        Some((Waker::from_task(t), data))
    }

    /// Takes `t`'s waker out of the list if it is on it.
    pub(crate) fn remove(&mut self, t: *const Task) -> Option<Waker> {
        self.0.remove(t).map(Waker::from_task)
    }

    /// Takes the whole list, leaving it empty.
    pub(crate) fn take(&mut self) -> WaitList {
        std::mem::take(self)
    }

    /// Wakes every goroutine on the list, in order.
    pub(crate) fn wake_all(&mut self) {
        while let Some(w) = self.pop() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn tasks(n: usize) -> Vec<TaskRef> {
        let shared = crate::queue::Shared::for_tests();
        (0..n).map(|_| Arc::new(Task::for_tests(&shared))).collect()
    }

    fn order(q: &Fifo<RunLink>, all: &[TaskRef]) -> Vec<usize> {
        q.iter()
            .map(|t| all.iter().position(|a| ptr::eq(Arc::as_ptr(a), t)).unwrap())
            .collect()
    }

    /// Every sequence of 8 operations (push, pop, append of a two-task
    /// queue, split of the first two) on up to 16 tasks agrees with a `VecDeque` of their indices, and reference
    /// counts come back to one when the queues are gone.
    #[test]
    fn agrees_with_a_vecdeque_on_every_short_sequence() {
        const OPS: usize = 4;
        const LEN: u32 = 8;
        let all = tasks(2 * LEN as usize);
        for code in 0..OPS.pow(LEN) {
            let mut next = 0;
            let mut q: Fifo<RunLink> = Fifo::new();
            let mut model: VecDeque<usize> = VecDeque::new();
            let mut c = code;
            for _ in 0..LEN {
                match c % OPS {
                    0 => {
                        q.push_back(all[next].clone());
                        model.push_back(next);
                        next += 1;
                    }
                    1 => {
                        let got = q
                            .pop_front()
                            .map(|t| all.iter().position(|a| Arc::ptr_eq(a, &t)).unwrap());
                        assert_eq!(got, model.pop_front(), "code {code}");
                    }
                    2 => {
                        let mut other = Fifo::new();
                        for _ in 0..2 {
                            if next < all.len() {
                                other.push_back(all[next].clone());
                                model.push_back(next);
                                next += 1;
                            }
                        }
                        q.append(&mut other);
                        assert!(other.is_empty());
                    }
                    _ => {
                        let mut front = q.split_front(2);
                        let want: Vec<usize> = (0..2).filter_map(|_| model.pop_front()).collect();
                        assert_eq!(order(&front, &all), want, "code {code}");
                        assert_eq!(front.len(), want.len());
                        // Put them back at the end (exercises a split
                        // queue's tail).
                        q.append(&mut front);
                        model.extend(want);
                    }
                }
                c /= OPS;
                assert_eq!(q.len(), model.len(), "code {code}");
                assert_eq!(order(&q, &all), model.iter().copied().collect::<Vec<_>>());
            }
            drop(q);
            assert!(all.iter().all(|t| Arc::strong_count(t) == 1), "code {code}");
        }
    }

    /// The two link words are independent: a task may be on a run queue
    /// and a wait list at once without either seeing the other's order.
    #[test]
    fn run_and_wait_links_are_separate() {
        let all = tasks(3);
        let mut run: Fifo<RunLink> = Fifo::new();
        let mut wait: Fifo<WaitLink> = Fifo::new();
        for t in &all {
            run.push_back(t.clone());
        }
        for t in all.iter().rev() {
            wait.push_back(t.clone());
        }
        let r: Vec<_> = std::iter::from_fn(|| run.pop_front()).collect();
        let w: Vec<_> = std::iter::from_fn(|| wait.pop_front()).collect();
        assert!(r.iter().zip(&all).all(|(a, b)| Arc::ptr_eq(a, b)));
        assert!(w
            .iter()
            .zip(all.iter().rev())
            .all(|(a, b)| Arc::ptr_eq(a, b)));
    }
}
