//! The heap's table of mutator states: every [`Mutator`](crate::Mutator)'s
//! allocation cache, handle table and frame chain, owned by the heap rather
//! than reached only through a live thread.
//!
//! Why the heap owns them: safe Rust may leak a `Mutator`
//! (`std::mem::forget`), keep one in a thread-local whose destructor runs
//! after the thread was detached at exit, or drop it in any order. A cache
//! the collector cannot find keeps its spans off the sweep lists with their
//! mark bits set, and the next mark then skips the fields of every object in
//! them (their children were freed while reachable). So every collection
//! flushes *every* cache in this table, and gathers every handle table here,
//! whatever became of the thread; a leaked state costs its memory, never a
//! live object.
//!
//! A thread's frame chain is not here but in its preempt record (the task
//! word, which a goroutine scheduler switches per goroutine): a
//! coordinator finds a stopped thread's frames through the thread itself,
//! so no table entry can lend one thread another's.
//!
//! Locking: the table's lock is taken by a thread about to attach (not yet
//! attached, so never stopped while holding it), by `Mutator::drop` inside
//! `Registry::outside_stops` (never stopped while holding it either), and by
//! a coordinator with the world stopped. Nothing here allocates under the
//! lock except `insert`, which runs unattached.

use std::cell::UnsafeCell;
use std::sync::{Arc, Mutex};

use crate::cache::ThreadCache;
use crate::heap::lock;
use crate::roots::{HandleFree, SlotTable};

/// One mutator's state.
pub(crate) struct MutatorState {
    /// The allocation cache. Used by the owner inside a region no stop
    /// overlaps (a no-preempt region, or the coordinator lock once the
    /// thread is detached); flushed by a coordinator with the world stopped.
    pub cache: UnsafeCell<ThreadCache>,
    /// The handle table (atomic slots, read by coordinators) and its free
    /// list (owner only).
    pub handles: SlotTable,
    pub handle_free: UnsafeCell<HandleFree>,
}

// SAFETY: the cells are used by one thread at a time, as each field says:
// the owner outside stops, a coordinator only while no owner code can run
// on them.
unsafe impl Sync for MutatorState {}
// SAFETY: as above; the state moves between threads only inside its `Arc`.
unsafe impl Send for MutatorState {}

impl MutatorState {
    pub(crate) fn new() -> MutatorState {
        let (handles, handle_free) = SlotTable::new();
        MutatorState {
            cache: UnsafeCell::new(ThreadCache::new()),
            handles,
            handle_free: UnsafeCell::new(handle_free),
        }
    }
}

struct Slots {
    entries: Vec<Option<Arc<MutatorState>>>,
    /// Free indices; its capacity always covers every entry, so `remove`
    /// never allocates.
    free: Vec<usize>,
}

/// See the module documentation.
pub(crate) struct MutatorTable {
    slots: Mutex<Slots>,
}

impl MutatorTable {
    pub(crate) fn new() -> MutatorTable {
        MutatorTable {
            slots: Mutex::new(Slots {
                entries: Vec::new(),
                free: Vec::new(),
            }),
        }
    }

    /// Adds a state; returns its slot (index + 1). Call before the
    /// thread attaches: it may allocate.
    pub(crate) fn insert(&self, ms: Arc<MutatorState>) -> usize {
        let mut s = lock(&self.slots);
        let i = match s.free.pop() {
            Some(i) => {
                s.entries[i] = Some(ms);
                i
            }
            None => {
                s.entries.push(Some(ms));
                let n = s.entries.len();
                s.free.reserve(n);
                n - 1
            }
        };
        i + 1
    }

    /// Removes the state in slot `ctx` and returns it, for the caller to
    /// drop outside any no-preempt region (dropping frees memory). Never
    /// allocates.
    pub(crate) fn remove(&self, ctx: usize) -> Option<Arc<MutatorState>> {
        let mut s = lock(&self.slots);
        let ms = s.entries.get_mut(ctx.wrapping_sub(1))?.take();
        if ms.is_some() {
            s.free.push(ctx - 1);
        }
        ms
    }

    /// Runs `f` over the table, locked. World stopped (or no mutator left).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&Entries<'_>) -> R) -> R {
        let s = lock(&self.slots);
        f(&Entries(&s.entries))
    }
}

/// The table's entries, borrowed under its lock.
pub(crate) struct Entries<'a>(&'a [Option<Arc<MutatorState>>]);

impl Entries<'_> {
    /// Every state, whatever became of its thread.
    pub(crate) fn all(&self) -> impl Iterator<Item = &MutatorState> {
        self.0.iter().flatten().map(|a| &**a)
    }
}
