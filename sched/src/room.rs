//! Growing a buffer that is filled inside a no-preempt region, before the
//! region.
//!
//! Nothing a region does may call the allocator (see `linked` for why: a
//! stop could wait for ever for a worker blocked on the allocator's lock
//! that a stopped thread holds). Queues of goroutines are linked through
//! the goroutines, but values (a channel's buffer, the blocking pool's
//! jobs, the timers' heap) need a buffer. So such a buffer is filled only
//! where it has room, and grown by the code about to fill it, at depth 0:
//! [`grow`] allocates a larger buffer outside any region, moves the
//! entries into it under the lock (a move within allocated memory), and
//! frees the old one outside again. The filling code, in its region,
//! checks [`Room::has_room`] and, if another thread has taken the room in
//! the meantime, leaves the region and grows again.

use crate::region::{lock, RegionLock};
use std::collections::{BinaryHeap, VecDeque};

/// A buffer [`grow`] can enlarge.
pub(crate) trait Room: Sized {
    /// Whether one more entry fits without allocating.
    fn has_room(&self) -> bool;
    /// Entries that fit without allocating.
    fn room_for(&self) -> usize;
    /// An empty buffer with room for `n` (allocates).
    fn with_room(n: usize) -> Self;
    /// Moves every entry into `to`, which has room for them all (no
    /// allocation), leaving `self` empty with its buffer.
    fn move_into(&mut self, to: &mut Self);
}

impl<T> Room for VecDeque<T> {
    fn has_room(&self) -> bool {
        self.len() < self.capacity()
    }
    fn room_for(&self) -> usize {
        self.capacity()
    }
    fn with_room(n: usize) -> Self {
        VecDeque::with_capacity(n)
    }
    fn move_into(&mut self, to: &mut Self) {
        debug_assert!(to.capacity() - to.len() >= self.len());
        to.extend(self.drain(..));
    }
}

impl<T: Ord> Room for BinaryHeap<T> {
    fn has_room(&self) -> bool {
        self.len() < self.capacity()
    }
    fn room_for(&self) -> usize {
        self.capacity()
    }
    fn with_room(n: usize) -> Self {
        BinaryHeap::with_capacity(n)
    }
    fn move_into(&mut self, to: &mut Self) {
        debug_assert!(to.capacity() - to.len() >= self.len());
        // Not `append`, which may keep the smaller buffer.
        to.extend(self.drain());
    }
}

/// Makes sure the buffer `field` picks out of `m`'s state has room for one
/// more entry, allocating outside the lock's region: doubles it if it is
/// full. Returns at once if it has room. Called by the runtime at depth 0
/// (a goroutine's own code, the scheduler's window, a thread outside the
/// runtime); a caller inside a no-preempt region of its own (an
/// embedder's) allocates in it, which is that caller's choice.
pub(crate) fn grow<L: RegionLock, B: Room>(m: &L, field: impl Fn(&mut L::Data) -> &mut B) {
    let size = {
        let mut st = lock(m);
        let b = field(&mut st);
        if b.has_room() {
            return;
        }
        b.room_for()
    };
    // Outside the region: allocate.
    let mut fresh = B::with_room(size.saturating_mul(2).max(4));
    {
        let mut st = lock(m);
        let b = field(&mut st);
        // Another thread may have grown it meanwhile: keep the larger.
        if b.room_for() < fresh.room_for() {
            b.move_into(&mut fresh);
            std::mem::swap(b, &mut fresh);
        }
    }
    // Outside the region again: `fresh` now holds the smaller buffer,
    // empty, and frees it.
    drop(fresh);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Growing keeps every entry, in order (a deque, against a model) or
    /// by priority (a heap), and leaves room for one more that a push then
    /// takes without allocating, at every length up to 40.
    #[test]
    fn growing_keeps_the_entries() {
        for n in 0..40usize {
            // The runtime's lock (a channel's buffer) and std's (the
            // timers' heap): `grow` takes either.
            let m = crate::lock::Lock::new(VecDeque::new());
            let mut model = VecDeque::new();
            let h = std::sync::Mutex::new(BinaryHeap::new());
            for i in 0..n {
                grow(&m, |d| d);
                let mut d = m.lock();
                assert!(d.has_room());
                let cap = d.capacity();
                // Rotate the deque so its contents wrap around its buffer.
                d.push_back(i);
                model.push_back(i);
                if i % 3 == 0 {
                    let x = d.pop_front().unwrap();
                    d.push_back(x);
                    let x = model.pop_front().unwrap();
                    model.push_back(x);
                }
                assert_eq!(d.capacity(), cap, "a push with room allocated");
                drop(d);
                grow(&h, |b| b);
                let mut b = h.lock().unwrap();
                let cap = b.capacity();
                b.push((i * 7919) % 41);
                assert_eq!(b.capacity(), cap);
            }
            assert_eq!(*m.lock(), model);
            let b = h.into_inner().unwrap().into_sorted_vec();
            let mut want: Vec<usize> = (0..n).map(|i| (i * 7919) % 41).collect();
            want.sort_unstable();
            assert_eq!(b, want);
        }
    }
}
