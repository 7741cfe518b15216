//! The runtime's own lock, [`Lock`]: a futex mutex without poisoning, for
//! the state that goroutines and threads share and always take inside a
//! no-preempt region (see `region`): channels, run queues, wait lists.
//!
//! Why not `std::sync::Mutex`: the runtime takes a lock several times a
//! channel switch, and `std`'s costs more than the lock word's two locked
//! instructions around it: a poison flag read at every lock and unlock
//! (with a look at the thread's panic count), and a guard that records
//! whether the thread was panicking. The runtime never wants poisoning (it
//! keeps its state consistent across the panics it lets through, which are
//! the user's and happen outside its locks, and took a poisoned lock
//! anyway), so [`Lock`] is `std`'s futex mutex without it: measured on a
//! channel ping-pong (`goroutines --mode switch`, callgrind), 613 -> 582
//! instructions a switch.
//!
//! Why not a crate's (`parking_lot`): its contended path parks through a
//! global hash table it allocates and grows on first use in a thread, and
//! nothing a region does may call the allocator (see `linked`). This one
//! calls nothing but `futex(2)`.
//!
//! The lock word, as in Drepper's "Futexes Are Tricky" (mutex 2):
//! - 0: unlocked;
//! - 1: locked, no thread asleep on it;
//! - 2: locked, and a thread may be asleep on it (the unlock wakes one).
//!
//! A waiter spins a little first (a holder is inside a no-preempt region:
//! the signal never switches it out, so it holds the lock for tens of
//! instructions unless the kernel deschedules its thread), then marks the
//! word 2 and sleeps until an unlock wakes it. The unlock's swap reads
//! whether to wake in the same instruction that unlocks: no wake-up is
//! lost, and no unlock of an uncontended lock makes a system call.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use pardon_preempt::futex;

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const SLEEPERS: u32 = 2;

/// Times a contended lock looks again before its thread sleeps.
const SPINS: u32 = 100;

/// A mutual-exclusion lock for runtime state: see the module comment.
pub(crate) struct Lock<T> {
    /// `UNLOCKED`, `LOCKED` or `SLEEPERS` (see the module comment).
    word: AtomicU32,
    /// Touched only through a [`LockGuard`], that is by the thread that
    /// moved `word` from `UNLOCKED`, until it moves it back.
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands `&mut T` to one thread at a time (see `data`),
// which is what `std::sync::Mutex` requires of `T` for the same impls.
unsafe impl<T: Send> Sync for Lock<T> {}
// SAFETY: as above; moving the lock moves the `T` it owns.
unsafe impl<T: Send> Send for Lock<T> {}

impl<T: Default> Default for Lock<T> {
    fn default() -> Self {
        Lock::new(T::default())
    }
}

impl<T> Lock<T> {
    pub(crate) const fn new(value: T) -> Self {
        Lock {
            word: AtomicU32::new(UNLOCKED),
            data: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, waiting for it if another thread holds it. Not
    /// reentrant: a thread that takes a lock it holds waits for ever.
    #[inline]
    pub(crate) fn lock(&self) -> LockGuard<'_, T> {
        if self
            .word
            .compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed)
            .is_err()
        {
            self.contended();
        }
        LockGuard { lock: self }
    }

    #[cold]
    #[inline(never)]
    fn contended(&self) {
        for _ in 0..SPINS {
            std::hint::spin_loop();
            if self.word.load(Relaxed) == UNLOCKED
                && self
                    .word
                    .compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        // Marked before sleeping, so the holder's unlock wakes a sleeper;
        // taken with the mark (a thread that takes it this way cannot know
        // whether others still sleep, so its own unlock wakes one, perhaps
        // needlessly).
        while self.word.swap(SLEEPERS, Acquire) != UNLOCKED {
            futex::wait(&self.word, SLEEPERS, None);
        }
    }
}

/// A held [`Lock`], released by drop.
pub(crate) struct LockGuard<'a, T> {
    lock: &'a Lock<T>,
}

impl<T> Drop for LockGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if self.lock.word.swap(UNLOCKED, Release) == SLEEPERS {
            futex::wake(&self.lock.word, 1);
        }
    }
}

impl<T> Deref for LockGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this guard's thread holds the lock (see `Lock::data`).
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for LockGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` makes it the only
        // reference made through this guard.
        unsafe { &mut *self.lock.data.get() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Every increment of four threads contending for one lock is kept (a
    /// lock that let two in at once loses some: the read and the write of
    /// the count are separate), including through the sleeping path:
    /// each thread sometimes holds the lock across a sleep, so the others
    /// run out of spins and sleep on the word.
    #[test]
    fn contending_threads_exclude_each_other() {
        // Miri runs it too (`cargo +nightly miri test -p pardon-sched
        // --lib lock::`), more slowly.
        let rounds: u64 = if cfg!(miri) { 400 } else { 20_000 };
        let lock = Arc::new(Lock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for k in 0..rounds {
                        let mut g = lock.lock();
                        let v = *g;
                        if k % (rounds / 10) == i {
                            std::thread::sleep(std::time::Duration::from_micros(200));
                        }
                        std::hint::black_box(&mut *g);
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 4 * rounds);
        assert_eq!(lock.word.load(Relaxed), UNLOCKED);
    }

    /// A guard dropped by a panic unlocks (no poisoning: the next lock
    /// simply takes it).
    #[test]
    fn a_panic_while_held_unlocks() {
        let lock = Arc::new(Lock::new(5));
        let l2 = lock.clone();
        let r = std::thread::spawn(move || {
            let _g = l2.lock();
            panic!("held");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(*lock.lock(), 5);
    }
}
