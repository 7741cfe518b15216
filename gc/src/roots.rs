//! Root tables: the heap's global roots and each mutator's handle table.
//!
//! Both are slot tables whose slots are atomic words, scanned precisely while
//! the world is stopped. They are mutated only inside no-preempt regions (a
//! mutator is never stopped halfway through an insertion), so the stopped
//! world sees them consistent, and the scan takes no lock a stopped mutator
//! can hold.

use std::fmt;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// The global-root table is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootTableFull {
    /// How many global roots the table holds.
    pub capacity: usize,
}

impl fmt::Display for RootTableFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the global-root table is full ({} roots); remove some first",
            self.capacity
        )
    }
}

impl std::error::Error for RootTableFull {}

/// Slots per handle-table chunk.
const HANDLE_CHUNK: usize = 256;
/// Chunks per handle table: a million handles per thread.
const HANDLE_CHUNKS: usize = 4096;

struct HandleChunk {
    slots: [AtomicUsize; HANDLE_CHUNK],
}

/// A thread's handle table: the part a coordinator reads. Fixed chunks of
/// atomic slots that never move, so a stopped owner may have been anywhere,
/// even halfway through adding a chunk; the free list is owner-only
/// ([`HandleFree`]) and never read by the coordinator.
pub(crate) struct SlotTable {
    chunks: Box<[AtomicPtr<HandleChunk>]>,
}

/// The owner's half of a handle table: which slots are free.
pub(crate) struct HandleFree {
    free: Vec<u32>,
    nchunks: usize,
    live: usize,
}

impl SlotTable {
    pub fn new() -> (SlotTable, HandleFree) {
        let chunks = (0..HANDLE_CHUNKS)
            .map(|_| AtomicPtr::new(std::ptr::null_mut()))
            .collect();
        (
            SlotTable { chunks },
            HandleFree {
                free: Vec::with_capacity(HANDLE_CHUNK),
                nchunks: 0,
                live: 0,
            },
        )
    }

    fn slot(&self, i: usize) -> &AtomicUsize {
        let c = self.chunks[i / HANDLE_CHUNK].load(Ordering::Acquire);
        // SAFETY: a slot index comes from `insert`, which only hands out slots
        // of published chunks; chunks live as long as the table.
        unsafe { &(*c).slots[i % HANDLE_CHUNK] }
    }

    /// Stores `v` in a free slot and returns its index. Owner only. It may
    /// allocate a chunk (calling the system allocator), so it must not run
    /// inside a no-preempt region: a thread stopped inside `malloc` may hold
    /// the lock that call would wait for. It needs no such region: the
    /// coordinator sees the slot as 0 or as `v`, and either is consistent.
    pub fn insert(&self, own: &mut HandleFree, v: usize) -> Result<usize, String> {
        self.reserve(own)?;
        let i = own.free.pop().expect("a free slot") as usize;
        self.slot(i).store(v, Ordering::Release);
        own.live += 1;
        Ok(i)
    }

    /// Makes sure a free slot exists, allocating a chunk if none does, so
    /// that the next `insert` allocates nothing (and may then run inside a
    /// no-preempt region). Owner only; outside any no-preempt region.
    pub fn reserve(&self, own: &mut HandleFree) -> Result<(), String> {
        if own.free.is_empty() {
            if own.nchunks == HANDLE_CHUNKS {
                return Err(format!(
                    "more than {} live handles on one thread",
                    HANDLE_CHUNKS * HANDLE_CHUNK
                ));
            }
            let chunk = Box::new(HandleChunk {
                slots: [const { AtomicUsize::new(0) }; HANDLE_CHUNK],
            });
            self.chunks[own.nchunks].store(Box::into_raw(chunk), Ordering::Release);
            let base = own.nchunks * HANDLE_CHUNK;
            // Room for every slot ever handed out: `remove` never reallocates.
            own.free.reserve_exact(base + HANDLE_CHUNK - own.free.len());
            own.free
                .extend((base..base + HANDLE_CHUNK).rev().map(|i| i as u32));
            own.nchunks += 1;
        }
        Ok(())
    }

    /// Frees slot `i`. Owner only; never allocates (the free list has room
    /// for every slot ever handed out).
    pub fn remove(&self, own: &mut HandleFree, i: usize) {
        self.slot(i).store(0, Ordering::Release);
        own.free.push(i as u32);
        own.live -= 1;
    }

    /// Calls `f` with every non-zero slot.
    pub fn for_each(&self, mut f: impl FnMut(usize)) {
        for c in self.chunks.iter() {
            let c = c.load(Ordering::Acquire);
            if c.is_null() {
                break;
            }
            // SAFETY: published chunks live as long as the table.
            for s in unsafe { &(*c).slots } {
                let v = s.load(Ordering::Relaxed);
                if v != 0 {
                    f(v);
                }
            }
        }
    }
}

impl HandleFree {
    pub fn live(&self) -> usize {
        self.live
    }
}

impl Drop for SlotTable {
    fn drop(&mut self) {
        for c in self.chunks.iter() {
            let c = c.load(Ordering::Acquire);
            if !c.is_null() {
                // SAFETY: every published chunk came from Box::into_raw and
                // is freed once, here.
                drop(unsafe { Box::from_raw(c) });
            }
        }
    }
}

const CHUNK: usize = 256;
const MAX_CHUNKS: usize = 4096;

/// A table of words, for the global roots and for weak references: chunks
/// of atomic slots that are never freed or moved, so a coordinator reads
/// (and, for weak references, clears) them without a lock while writers
/// (under `free`'s lock) may have been stopped anywhere. A word whose store
/// had not happened when its writer stopped is still in that writer's
/// registers or stack.
pub(crate) struct WordTable {
    chunks: Box<[std::sync::atomic::AtomicPtr<AtomicUsize>]>,
    free: std::sync::Mutex<(Vec<usize>, usize)>,
}

impl WordTable {
    pub fn new() -> WordTable {
        WordTable {
            chunks: (0..MAX_CHUNKS)
                .map(|_| std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            free: std::sync::Mutex::new((Vec::new(), 0)),
        }
    }

    fn slot(&self, i: usize) -> &AtomicUsize {
        let c = self.chunks[i / CHUNK].load(Ordering::Acquire);
        assert!(!c.is_null(), "global root {i} was never allocated");
        // SAFETY: chunk pointers come from leaked boxes of CHUNK slots and are
        // never freed while the table lives (see Drop).
        unsafe { &*c.add(i % CHUNK) }
    }

    pub fn insert(&self, v: usize) -> Result<usize, RootTableFull> {
        // A heap lock (no-yield: see `heap::lock`).
        let mut g = crate::heap::lock(&self.free);
        let i = match g.0.pop() {
            Some(i) => i,
            None => {
                let i = g.1;
                if i == CHUNK * MAX_CHUNKS {
                    return Err(RootTableFull {
                        capacity: CHUNK * MAX_CHUNKS,
                    });
                }
                if i.is_multiple_of(CHUNK) {
                    let chunk: Box<[AtomicUsize]> =
                        (0..CHUNK).map(|_| AtomicUsize::new(0)).collect();
                    let p = Box::into_raw(chunk) as *mut AtomicUsize;
                    self.chunks[i / CHUNK].store(p, Ordering::Release);
                }
                g.1 += 1;
                i
            }
        };
        self.slot(i).store(v, Ordering::Release);
        Ok(i)
    }

    pub fn set(&self, i: usize, v: usize) {
        self.slot(i).store(v, Ordering::Release);
    }

    pub fn get(&self, i: usize) -> usize {
        self.slot(i).load(Ordering::Acquire)
    }

    pub fn remove(&self, i: usize) {
        self.slot(i).store(0, Ordering::Release);
        crate::heap::lock(&self.free).0.push(i);
    }

    /// Calls `f` with every non-zero word, taking no lock.
    pub fn for_each(&self, mut f: impl FnMut(usize)) {
        self.for_each_slot(|slot| {
            let v = slot.load(Ordering::Acquire);
            if v != 0 {
                f(v);
            }
        });
    }

    /// Calls `f` with every slot ever handed out, taking no lock.
    pub fn for_each_slot(&self, mut f: impl FnMut(&AtomicUsize)) {
        for c in self.chunks.iter() {
            let c = c.load(Ordering::Acquire);
            if c.is_null() {
                break;
            }
            for k in 0..CHUNK {
                // SAFETY: `c` is a live chunk of CHUNK slots.
                f(unsafe { &*c.add(k) });
            }
        }
    }
}

impl Drop for WordTable {
    fn drop(&mut self) {
        for c in self.chunks.iter() {
            let c = c.load(Ordering::Acquire);
            if !c.is_null() {
                // SAFETY: leaked in `insert` as a Box<[AtomicUsize]> of CHUNK.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(c, CHUNK)) });
            }
        }
    }
}
