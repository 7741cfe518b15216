//! Root tables: the heap's global roots and each mutator's handle table.
//!
//! Both are slot tables whose slots are atomic words, scanned precisely while
//! the world is stopped. They are mutated only inside no-preempt regions (a
//! mutator is never stopped halfway through an insertion), so the stopped
//! world sees them consistent, and the scan takes no lock a stopped mutator
//! can hold.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A table of root slots with a free list; grows by doubling.
pub(crate) struct SlotTable {
    slots: Vec<AtomicUsize>,
    free: Vec<usize>,
}

impl SlotTable {
    pub fn new() -> SlotTable {
        SlotTable {
            slots: Vec::with_capacity(64),
            free: Vec::new(),
        }
    }

    /// Stores `v` in a free slot and returns its index. Call only inside a
    /// no-preempt region (it may reallocate).
    pub fn insert(&mut self, v: usize) -> usize {
        if let Some(i) = self.free.pop() {
            self.slots[i].store(v, Ordering::Relaxed);
            i
        } else {
            self.slots.push(AtomicUsize::new(v));
            self.slots.len() - 1
        }
    }

    /// Frees slot `i`.
    pub fn remove(&mut self, i: usize) {
        self.slots[i].store(0, Ordering::Relaxed);
        self.free.push(i);
    }

    /// Calls `f` with every non-zero slot.
    pub fn for_each(&self, mut f: impl FnMut(usize)) {
        for s in &self.slots {
            let v = s.load(Ordering::Relaxed);
            if v != 0 {
                f(v);
            }
        }
    }

    pub fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

const CHUNK: usize = 256;
const MAX_CHUNKS: usize = 4096;

/// Global roots: chunks of atomic slots that are never freed or moved, so a
/// coordinator reads them without a lock while writers (under `free`'s lock)
/// may have been stopped anywhere. A root whose store had not happened when
/// its writer stopped is still in that writer's registers or stack.
pub(crate) struct GlobalRoots {
    chunks: Box<[std::sync::atomic::AtomicPtr<AtomicUsize>]>,
    free: std::sync::Mutex<(Vec<usize>, usize)>,
}

impl GlobalRoots {
    pub fn new() -> GlobalRoots {
        GlobalRoots {
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

    pub fn insert(&self, v: usize) -> Result<usize, String> {
        let mut g = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let i = match g.0.pop() {
            Some(i) => i,
            None => {
                let i = g.1;
                if i == CHUNK * MAX_CHUNKS {
                    return Err(format!("more than {} global roots", CHUNK * MAX_CHUNKS));
                }
                if i % CHUNK == 0 {
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
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .push(i);
    }

    /// Calls `f` with every non-zero root, taking no lock.
    pub fn for_each(&self, mut f: impl FnMut(usize)) {
        for c in self.chunks.iter() {
            let c = c.load(Ordering::Acquire);
            if c.is_null() {
                break;
            }
            for k in 0..CHUNK {
                // SAFETY: `c` is a live chunk of CHUNK slots.
                let v = unsafe { &*c.add(k) }.load(Ordering::Acquire);
                if v != 0 {
                    f(v);
                }
            }
        }
    }
}

impl Drop for GlobalRoots {
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
