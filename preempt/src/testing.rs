//! Test support (feature `testing`): a global allocator that emulates an
//! allocator lock held by a thread a stop has parked.
//!
//! A thread stopped inside `malloc` holds the allocator's lock until the
//! world restarts, and a stop waits for every thread to leave its
//! no-preempt region; so code in such a region must never call the
//! allocator (a thread blocked there on that lock would hold the stop off
//! until `stop_timeout`). To test that rule, install [`Gate`] as a test
//! binary's global allocator: while one thread has [`hold`] the "lock",
//! every allocation or free by a thread that has called [`arm`] spins
//! until it is released. The holder spins in call-free code, where a stop
//! parks it "holding" the lock; an armed thread that meets the gate at
//! depth 0 is stopped like any thread, one that meets it inside a region
//! makes the stop fail.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

/// The global allocator: `System`, behind the gate.
pub struct Gate;

/// Another thread "holds the allocator's lock".
static HELD: AtomicBool = AtomicBool::new(false);
/// Armed threads that reached the allocator while it was held.
static WAITS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations wait while the lock is held
    /// (const-initialised and without a destructor: reading it allocates
    /// nothing).
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

/// From now on, the calling thread's allocations and frees wait while the
/// lock is held.
pub fn arm() {
    ARMED.with(|a| a.set(true));
}

/// The calling thread's allocations no longer wait.
pub fn disarm() {
    ARMED.with(|a| a.set(false));
}

/// Takes (`true`) or releases (`false`) the emulated lock.
pub fn hold(held: bool) {
    HELD.store(held, SeqCst);
}

/// How many times an armed thread has waited since the last [`reset`].
pub fn waits() -> usize {
    WAITS.load(SeqCst)
}

/// Zeroes the count of waits.
pub fn reset() {
    WAITS.store(0, SeqCst);
}

fn gate() {
    if ARMED.with(Cell::get) && HELD.load(SeqCst) {
        WAITS.fetch_add(1, SeqCst);
        while HELD.load(SeqCst) {
            std::hint::spin_loop();
        }
    }
}

// SAFETY: forwards every call to `System` unchanged, after `gate`, which
// allocates nothing.
unsafe impl GlobalAlloc for Gate {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        gate();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        gate();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        gate();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
