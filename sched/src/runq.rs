//! A worker's run queue: a ring of slots at the front, a linked spill
//! behind it.
//!
//! Why a ring: a thief steals from the front of a victim's queue while
//! holding the victim's lock, and the victim's own spawns and yields wait
//! for that lock. When the queue was linked through the goroutines
//! (`linked::Fifo`), a steal of 64 followed 64 link words, each in a task
//! the victim had just written on its own core: a chain of dependent
//! cache misses, one after the other, with the lock held. On a spawn
//! burst (`goroutines --mode spawn-wg`, 2 workers) the spawning worker
//! spent 7-9 % of its time waiting for that lock (perf, cpu-clock), and
//! the thief 13 % in the walk. The ring holds the tasks' addresses side by
//! side: a steal reads a few cache lines of slots and touches no task it
//! takes that has not run (Go's `runq` is a ring of 256 for the same
//! reason, lock-free; ours keeps the lock, which every other part of the
//! queue's protocol relies on).
//!
//! Whether a queued goroutine may be stolen depends first on whether it
//! has run: one that has not may go to any worker. That cannot change
//! while it is queued (a goroutine's `home` is set when a worker first
//! runs it, and a queued goroutine is not running), so the queue reads it
//! once, when the goroutine is put in a slot, and keeps it in the slot's
//! low bit (`FRESH`; tasks are 8-byte aligned). Only a goroutine that has
//! run costs the thief a look at the task (`Task::released`, in a
//! migrating runtime).
//!
//! Why a spill: nothing inside the runtime's locks may allocate (see
//! `linked`), and a queue must take any number of goroutines (a
//! goroutine may spawn a million before any runs). Past the ring's
//! `RING` slots they wait in a linked `Fifo` behind it, and each pop from
//! the ring moves the spill's first into the ring's last slot, so the
//! order stays: the ring's slots from `head`, then the spill.
//!
//! The queue owns one reference of every task on it, as `Fifo` does: in
//! a slot, as `Arc::into_raw` with the tag bit; in the spill, as the
//! spill's.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use crate::linked::{Fifo, RunLink};
use crate::queue::TaskRef;
use crate::task::{Task, NO_HOME};

/// Slots in a worker's ring (Go's `runq`: 256).
pub(crate) const RING: usize = 256;

/// The most goroutines one steal takes (Go's `runqsteal` takes half of a
/// 256-slot queue).
pub(crate) const STEAL_MAX: usize = 64;

/// How far into a victim's queue a steal looks for goroutines that may
/// move (past those that may not).
pub(crate) const WINDOW: usize = 2 * STEAL_MAX;

/// The tag bit of a slot: the task had not run when it was queued (and so
/// has not run yet: see the module comment).
const FRESH: usize = 1;

/// A slot's value: a task reference's raw pointer, its low bit `FRESH` if
/// the task has not run (a tagged pointer, so it keeps its provenance).
type Slot = *const Task;

/// A task reference as a slot holds it.
fn to_slot(t: TaskRef) -> Slot {
    let fresh = t.home.load(SeqCst) == NO_HOME;
    let p = Arc::into_raw(t);
    debug_assert_eq!(p.addr() & FRESH, 0, "tasks are 8-byte aligned");
    p.map_addr(|a| a | usize::from(fresh))
}

/// Whether a slot's task had not run when it was queued.
fn is_fresh(e: Slot) -> bool {
    e.addr() & FRESH != 0
}

/// The task a slot's value points to.
///
/// # Safety
/// `e` must come from [`to_slot`], and its reference must still be held
/// by the caller's queue (or `Stolen`) for as long as the result is used.
unsafe fn task_of<'a>(e: Slot) -> &'a Task {
    // SAFETY: the caller's contract: a live task, kept alive by the
    // reference the slot holds.
    unsafe { &*e.map_addr(|a| a & !FRESH) }
}

/// The reference a slot's value holds, taken back.
///
/// # Safety
/// `e` must come from [`to_slot`], and be taken back once.
unsafe fn from_slot(e: Slot) -> TaskRef {
    // SAFETY: the caller's contract: `Arc::into_raw` of a reference that
    // only this value holds now.
    unsafe { Arc::from_raw(e.map_addr(|a| a & !FRESH)) }
}

/// A worker's run queue (see the module comment). `N` is the ring's size
/// (`RING`; smaller in the model test, to reach the spill).
pub(crate) struct RunQueue<const N: usize = RING> {
    /// `slots[(head + i) % N]` for `i < n` hold the queue's first `n`
    /// tasks, in order, as `to_slot` made them; the other slots hold
    /// nothing (stale values, never read).
    slots: [Slot; N],
    /// The first task's slot, `< N`.
    head: usize,
    /// Tasks in slots, `<= N`.
    n: usize,
    /// The tasks behind the slots', in order. Not empty only while the
    /// slots are full or have lost some to steals since it was last empty
    /// (each pop from the slots moves one back in).
    spill: Fifo<RunLink>,
}

// SAFETY: the queue owns `Arc<Task>` references (which are Send) through
// its slots and touches them only through `&mut self`: moving it to
// another thread moves that ownership, as `Fifo`'s impl says of its own.
unsafe impl<const N: usize> Send for RunQueue<N> {}

impl<const N: usize> Default for RunQueue<N> {
    fn default() -> Self {
        RunQueue {
            slots: [std::ptr::null(); N],
            head: 0,
            n: 0,
            spill: Fifo::new(),
        }
    }
}

impl<const N: usize> RunQueue<N> {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.n + self.spill.len()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts a slot value at the back of the slots (there is room).
    #[inline]
    fn put(&mut self, e: Slot) {
        debug_assert!(self.n < N);
        self.slots[(self.head + self.n) % N] = e;
        self.n += 1;
    }

    /// Puts `t` at the back.
    #[inline]
    pub(crate) fn push_back(&mut self, t: TaskRef) {
        if self.n < N && self.spill.is_empty() {
            self.put(to_slot(t));
        } else {
            self.spill.push_back(t);
        }
    }

    /// Takes the first task.
    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<TaskRef> {
        if self.n == 0 {
            // Steals may have emptied the slots before the spill.
            return self.spill.pop_front();
        }
        let e = self.slots[self.head];
        self.head = (self.head + 1) % N;
        self.n -= 1;
        if let Some(t) = self.spill.pop_front() {
            self.put(to_slot(t));
        }
        // SAFETY: `e` was the first slot's, which held its reference.
        Some(unsafe { from_slot(e) })
    }

    /// Puts every task of `other` after this queue's, in their order,
    /// leaving `other` empty: into free slots while the spill is empty,
    /// the rest onto the spill without a walk.
    pub(crate) fn append(&mut self, other: &mut Fifo<RunLink>) {
        while self.n < N && self.spill.is_empty() {
            let Some(t) = other.pop_front() else { return };
            self.put(to_slot(t));
        }
        self.spill.append(other);
    }

    /// Takes every task, in order, as a linked queue (a shutdown's, which
    /// drops them once it has let the lock go).
    pub(crate) fn take_all(&mut self) -> Fifo<RunLink> {
        let mut all = Fifo::new();
        while self.n > 0 {
            let e = self.slots[self.head];
            self.head = (self.head + 1) % N;
            self.n -= 1;
            // SAFETY: `e` was the first slot's, which held its reference.
            all.push_back(unsafe { from_slot(e) });
        }
        all.append(&mut self.spill);
        all
    }

    /// Takes up to `take` (at most `STEAL_MAX`) of the tasks that may
    /// move, from the first `WINDOW` (or `N`, if fewer): every one that has not run, and one
    /// that has if `may_move` says so. The ones passed over keep their
    /// places and order. Reads the slots, and only the tasks that have
    /// run.
    pub(crate) fn steal(&mut self, take: usize, may_move: impl Fn(&Task) -> bool) -> Stolen {
        let mut out = Stolen::default();
        let take = take.min(STEAL_MAX);
        let window = N.min(WINDOW);
        // Earlier steals took slots' tasks while the spill held more: the
        // spill's front comes into the slots until the window is in them
        // (a walk, as every steal made before the ring; at most one steal
        // in two of a long queue's pays for one).
        while self.n < window {
            let Some(t) = self.spill.pop_front() else {
                break;
            };
            self.put(to_slot(t));
        }
        let mut kept = [std::ptr::null(); WINDOW];
        let mut nk = 0;
        let mut seen = 0;
        let look = self.n.min(window);
        while out.n < take && seen < look {
            let e = self.slots[(self.head + seen) % N];
            seen += 1;
            // SAFETY: `e` is in a slot of this queue, which holds its
            // reference while `&mut self` is borrowed here.
            if is_fresh(e) || may_move(unsafe { task_of(e) }) {
                out.items[out.n] = e;
                out.n += 1;
            } else {
                kept[nk] = e;
                nk += 1;
            }
        }
        // The first `seen` slots now hold the `nk` kept, in their order,
        // ending where they ended.
        let head = (self.head + seen - nk) % N;
        for (i, &e) in kept[..nk].iter().enumerate() {
            self.slots[(head + i) % N] = e;
        }
        self.head = head;
        self.n -= out.n;
        out
    }

    /// Puts the tasks of a steal at the back, in their order.
    pub(crate) fn push_stolen(&mut self, s: &mut Stolen) {
        while s.at < s.n {
            let e = s.items[s.at];
            s.at += 1;
            if self.n < N && self.spill.is_empty() {
                self.put(e);
            } else {
                // SAFETY: `e` came from a slot and is taken back once (the
                // steal's `at` has passed it).
                self.spill.push_back(unsafe { from_slot(e) });
            }
        }
    }
}

impl<const N: usize> Drop for RunQueue<N> {
    fn drop(&mut self) {
        while self.pop_front().is_some() {}
    }
}

/// The tasks one steal took, as slot values (the thief moves them into
/// its own slots without touching them).
pub(crate) struct Stolen {
    /// `items[at..n]` are the tasks not yet taken out, each holding its
    /// reference.
    items: [Slot; STEAL_MAX],
    at: usize,
    n: usize,
}

impl Default for Stolen {
    fn default() -> Self {
        Stolen {
            items: [std::ptr::null(); STEAL_MAX],
            at: 0,
            n: 0,
        }
    }
}

impl Stolen {
    pub(crate) fn is_empty(&self) -> bool {
        self.at == self.n
    }

    /// Takes the first task not yet taken.
    pub(crate) fn pop_front(&mut self) -> Option<TaskRef> {
        if self.is_empty() {
            return None;
        }
        let e = self.items[self.at];
        self.at += 1;
        // SAFETY: `e` holds its reference, taken back once (`at` passed it).
        Some(unsafe { from_slot(e) })
    }
}

impl Drop for Stolen {
    fn drop(&mut self) {
        while self.pop_front().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::Ordering::Relaxed;

    /// `n` tasks; those with an odd index have run (a home of 0), the
    /// others not.
    fn tasks(n: usize) -> Vec<TaskRef> {
        let shared = crate::queue::Shared::for_tests();
        (0..n)
            .map(|i| {
                let t = Arc::new(Task::for_tests(&shared));
                if i % 2 == 1 {
                    t.home.store(0, Relaxed);
                }
                t
            })
            .collect()
    }

    fn index(all: &[TaskRef], t: &TaskRef) -> usize {
        all.iter().position(|a| Arc::ptr_eq(a, t)).unwrap()
    }

    /// The model's steal: from the first `window`, up to `take` of those
    /// that may move (every even index, and odd ones `may` admits), the
    /// others left in place.
    fn model_steal(
        m: &mut VecDeque<usize>,
        window: usize,
        take: usize,
        may: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        let mut out = Vec::new();
        let mut kept = Vec::new();
        let mut seen = 0;
        while out.len() < take.min(STEAL_MAX) && seen < window {
            let Some(i) = m.pop_front() else { break };
            seen += 1;
            if i % 2 == 0 || may(i) {
                out.push(i);
            } else {
                kept.push(i);
            }
        }
        for i in kept.into_iter().rev() {
            m.push_front(i);
        }
        out
    }

    /// Every sequence of 7 operations (push, pop, steal of up to 2 with
    /// and without moving run tasks, append of two, take all) on a queue
    /// of 3 slots agrees with a `VecDeque` of task indices, through the
    /// spill and back (a steal looks at as many as the slots hold); the thief's queue, filled
    /// by `push_stolen`, agrees too; and every reference count is one
    /// again once the queues are gone. The slow path (a linked queue)
    /// is the model's order; the ring is the fast path under test.
    #[test]
    fn agrees_with_a_vecdeque_on_every_short_sequence() {
        const OPS: usize = 6;
        // (Miri: `cargo +nightly miri test -p pardon-sched --lib runq::`,
        // sequences of 4.)
        const LEN: u32 = if cfg!(miri) { 4 } else { 7 };
        let all = tasks(3 * LEN as usize);
        for code in 0..OPS.pow(LEN) {
            let mut next = 0;
            let mut q: RunQueue<3> = RunQueue::default();
            let mut thief: RunQueue<3> = RunQueue::default();
            let mut model: VecDeque<usize> = VecDeque::new();
            let mut thief_model: VecDeque<usize> = VecDeque::new();
            let mut c = code;
            for _ in 0..LEN {
                match c % OPS {
                    0 => {
                        q.push_back(all[next].clone());
                        model.push_back(next);
                        next += 1;
                    }
                    1 => {
                        let got = q.pop_front().map(|t| index(&all, &t));
                        assert_eq!(got, model.pop_front(), "code {code}");
                    }
                    op @ (2 | 3) => {
                        let moves = op == 3;
                        let mut s = q.steal(2, |_| moves);
                        let want = model_steal(&mut model, 3, 2, |_| moves);
                        // The first to run at once, the rest to the thief.
                        let first = s.pop_front().map(|t| index(&all, &t));
                        assert_eq!(first, want.first().copied(), "code {code}");
                        thief.push_stolen(&mut s);
                        assert!(s.is_empty());
                        thief_model.extend(want.iter().skip(1));
                    }
                    4 => {
                        let mut f: Fifo<RunLink> = Fifo::new();
                        for _ in 0..2 {
                            f.push_back(all[next].clone());
                            model.push_back(next);
                            next += 1;
                        }
                        q.append(&mut f);
                        assert!(f.is_empty());
                    }
                    _ => {
                        let f = q.take_all();
                        let got: Vec<usize> = f
                            .iter()
                            .map(|t| {
                                all.iter()
                                    .position(|a| std::ptr::eq(Arc::as_ptr(a), t))
                                    .unwrap()
                            })
                            .collect();
                        assert_eq!(got, model.drain(..).collect::<Vec<_>>(), "code {code}");
                        assert!(q.is_empty());
                    }
                }
                assert_eq!(q.len(), model.len(), "code {code}");
                assert_eq!(thief.len(), thief_model.len(), "code {code}");
                c /= OPS;
            }
            let rest: Vec<usize> = std::iter::from_fn(|| q.pop_front())
                .map(|t| index(&all, &t))
                .collect();
            assert_eq!(rest, model.into_iter().collect::<Vec<_>>(), "code {code}");
            let stolen: Vec<usize> = std::iter::from_fn(|| thief.pop_front())
                .map(|t| index(&all, &t))
                .collect();
            assert_eq!(
                stolen,
                thief_model.into_iter().collect::<Vec<_>>(),
                "code {code}"
            );
        }
        for t in &all {
            assert_eq!(Arc::strong_count(t), 1);
        }
    }

    /// The full-size queue against the model, over longer random runs
    /// (a steal's window and limit matter here: 300 queued, most of them
    /// run, steals of up to 64 from the first 128), and queues dropped
    /// with tasks in slots, in the spill and in a steal give every
    /// reference back.
    #[test]
    fn agrees_with_a_vecdeque_at_full_size() {
        let all = tasks(4000);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let rounds = if cfg!(miri) { 1 } else { 8 };
        for round in 0..rounds {
            let mut q: RunQueue = RunQueue::default();
            let mut model: VecDeque<usize> = VecDeque::new();
            let mut next = round * 500;
            let mut held = Vec::new();
            for _ in 0..if cfg!(miri) { 300 } else { 2000 } {
                match rand(10) {
                    0..=4 if next < (round + 1) * 500 => {
                        q.push_back(all[next].clone());
                        model.push_back(next);
                        next += 1;
                    }
                    5..=6 => {
                        let got = q.pop_front().map(|t| index(&all, &t));
                        assert_eq!(got, model.pop_front());
                    }
                    7 => {
                        let take = rand(80) as usize;
                        let moves = rand(2) == 0;
                        let mut s = q.steal(take, |_| moves);
                        let want = model_steal(&mut model, WINDOW, take, |_| moves);
                        let got: Vec<usize> = std::iter::from_fn(|| s.pop_front())
                            .map(|t| index(&all, &t))
                            .collect();
                        assert_eq!(got, want);
                    }
                    8 => {
                        // A steal kept unopened, dropped with the queue.
                        let mut s = q.steal(3, |_| false);
                        model_steal(&mut model, WINDOW, 3, |_| false);
                        if let Some(t) = s.pop_front() {
                            drop(t);
                        }
                        held.push(s);
                    }
                    _ => {}
                }
                assert_eq!(q.len(), model.len());
            }
            drop(q);
            drop(held);
        }
        for t in &all {
            assert_eq!(Arc::strong_count(t), 1);
        }
    }
}
