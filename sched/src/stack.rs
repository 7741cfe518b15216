//! Goroutine stacks: fixed reservations, since pardon's heap scans
//! interrupted frames conservatively and so cannot move a stack (Go grows
//! its stacks by copying them, with exact maps of every frame). Each is an
//! anonymous `MAP_NORESERVE` mapping: only the pages a task touches are
//! ever committed. The lowest page is a guard, so an overflow faults
//! instead of writing over whatever lies below. Stacks are pooled for
//! reuse, and unmapped beyond the pool's capacity.
//!
//! The guard is a *lightweight guard region* (`MADV_GUARD_INSTALL`, Linux
//! 6.13) where the kernel has them, and a `PROT_NONE` page otherwise. The
//! difference is the number of mappings: a `PROT_NONE` page splits the
//! stack's mapping in two, and a process may have at most
//! `vm.max_map_count` of them (65,530 by default), so `PROT_NONE` guards
//! stop a program near 32,000 live goroutines (measured: 40,000 parked
//! goroutines failed with `ENOMEM`); a guard region splits nothing, and
//! neighbouring stacks, mapped with the same flags, merge into one
//! mapping.

use std::fmt;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use nix::sys::mman::{mmap_anonymous, mprotect, munmap, MapFlags, ProtFlags};

use crate::lock::Lock;

/// The page size assumed for the guard (4 KiB on x86-64 Linux).
pub const GUARD: usize = 4096;

/// The smallest stack accepted: a guard page and three usable pages.
pub const MIN_STACK: usize = 4 * GUARD;

/// Why a stack could not be made.
#[derive(Debug)]
pub enum StackError {
    /// The size is below [`MIN_STACK`] or not a multiple of the page size.
    BadSize(usize),
    /// The kernel refused the mapping or the guard page.
    Os(nix::Error),
    /// A pool this large cannot keep its list of free stacks (reserved
    /// whole at creation, so that returning a stack never allocates).
    PoolTooLarge(usize),
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StackError::BadSize(s) => write!(
                f,
                "stack size {s}: must be a multiple of {GUARD} and at least {MIN_STACK} bytes"
            ),
            StackError::Os(e) => write!(f, "cannot map a stack: {e}"),
            StackError::PoolTooLarge(n) => {
                write!(f, "a pool of {n} stacks: cannot reserve its list")
            }
        }
    }
}

impl std::error::Error for StackError {}

/// One stack: `size` bytes of address space, the lowest page a guard.
pub struct Stack {
    base: NonNull<libc::c_void>,
    size: usize,
    /// The count of mapped stacks of the pool that mapped it, if one did
    /// (see `StackPool::mapped`): lowered when it is unmapped.
    counted: Option<Arc<AtomicUsize>>,
}

// SAFETY: a Stack owns its mapping; nothing about it is tied to a thread.
unsafe impl Send for Stack {}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Stack({:#x}..{:#x})",
            self.base.as_ptr() as usize,
            self.top()
        )
    }
}

/// `MADV_GUARD_INSTALL` (Linux 6.13; not yet in the `libc` crate).
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// Whether guard regions work here: 0 not tried yet, 1 yes, 2 no.
static GUARD_REGIONS: AtomicU8 = AtomicU8::new(0);

/// Makes the first page at `base` (of a mapping just made, which nothing
/// uses yet) fault on any access.
fn guard(base: NonNull<libc::c_void>) -> Result<(), nix::Error> {
    if GUARD_REGIONS.load(Relaxed) != 2 {
        // SAFETY: advises on the first page of our own fresh mapping.
        let rc = unsafe { libc::madvise(base.as_ptr(), GUARD, MADV_GUARD_INSTALL) };
        if rc == 0 {
            GUARD_REGIONS.store(1, Relaxed);
            return Ok(());
        }
        let e = nix::Error::last();
        if e != nix::Error::EINVAL || GUARD_REGIONS.load(Relaxed) == 1 {
            return Err(e);
        }
        // An older kernel: fall back for good.
        GUARD_REGIONS.store(2, Relaxed);
    }
    // SAFETY: as above.
    unsafe { mprotect(base, GUARD, ProtFlags::PROT_NONE) }
}

impl Stack {
    /// Maps a stack of `size` bytes (guard page included).
    pub fn new(size: usize) -> Result<Stack, StackError> {
        if size < MIN_STACK || !size.is_multiple_of(GUARD) {
            return Err(StackError::BadSize(size));
        }
        let len = NonZeroUsize::new(size).ok_or(StackError::BadSize(size))?;
        // SAFETY: a fresh anonymous mapping aliases nothing.
        let base = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE | MapFlags::MAP_STACK,
            )
        }
        .map_err(StackError::Os)?;
        if let Err(e) = guard(base) {
            // SAFETY: the mapping just made, not shared.
            let _ = unsafe { munmap(base, size) };
            return Err(StackError::Os(e));
        }
        Ok(Stack {
            base,
            size,
            counted: None,
        })
    }

    /// One past the highest usable address (16-byte aligned): stacks grow
    /// down from here.
    pub fn top(&self) -> usize {
        self.base.as_ptr() as usize + self.size
    }

    /// The lowest usable address (just above the guard page).
    pub fn bottom(&self) -> usize {
        self.base.as_ptr() as usize + GUARD
    }

    /// Whether `addr` is in the guard page (a fault there is an overflow).
    pub fn in_guard(&self, addr: usize) -> bool {
        (self.base.as_ptr() as usize..self.bottom()).contains(&addr)
    }

    /// The stack's size, guard included.
    pub fn size(&self) -> usize {
        self.size
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        let _ = unsafe { munmap(self.base, self.size) };
        if let Some(c) = &self.counted {
            c.fetch_sub(1, Relaxed);
        }
    }
}

/// Stacks of one size kept for reuse: a dead task's stack goes back to the
/// pool, up to `capacity`, and is unmapped beyond it.
pub struct StackPool {
    size: usize,
    capacity: usize,
    /// Reserved for `capacity` stacks at creation: a scheduler returns
    /// stacks in its no-preempt region, where nothing may allocate.
    free: Lock<Vec<Stack>>,
    /// Stacks this pool mapped that are still mapped (in the pool, or
    /// with a goroutine, running, parked or finished and kept for reuse):
    /// raised by `get`, lowered by each such stack's unmapping.
    mapped: Arc<AtomicUsize>,
}

impl StackPool {
    /// A pool of stacks of `size` bytes that keeps at most `capacity` free
    /// (its list of them is reserved now).
    pub fn new(size: usize, capacity: usize) -> Result<StackPool, StackError> {
        if size < MIN_STACK || !size.is_multiple_of(GUARD) {
            return Err(StackError::BadSize(size));
        }
        let mut free = Vec::new();
        free.try_reserve_exact(capacity)
            .map_err(|_| StackError::PoolTooLarge(capacity))?;
        Ok(StackPool {
            size,
            capacity,
            free: Lock::new(free),
            mapped: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// A stack from the pool, or a new one.
    pub fn get(&self) -> Result<Stack, StackError> {
        match self.free.lock().pop() {
            Some(s) => Ok(s),
            None => {
                let mut s = Stack::new(self.size)?;
                self.mapped.fetch_add(1, Relaxed);
                s.counted = Some(self.mapped.clone());
                Ok(s)
            }
        }
    }

    /// Gives a stack back (unmapped if the pool is full).
    pub fn put(&self, stack: Stack) {
        self.put_all(std::iter::once(stack));
    }

    /// Gives stacks back under one lock (unmapped beyond the pool's
    /// capacity).
    pub fn put_all(&self, stacks: impl Iterator<Item = Stack>) {
        let mut stacks = stacks.peekable();
        if stacks.peek().is_none() {
            return;
        }
        let mut free = self.free.lock();
        for stack in stacks {
            if free.len() < self.capacity && stack.size == self.size {
                free.push(stack);
            }
        }
    }

    /// Stacks this pool mapped that are mapped still: pooled, or with a
    /// goroutine (running, parked, or finished and kept by its worker).
    pub fn mapped(&self) -> usize {
        self.mapped.load(Relaxed)
    }

    /// Stacks waiting in the pool.
    pub fn pooled(&self) -> usize {
        self.free.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool's count of mapped stacks follows the mappings: raised by
    /// each new one, lowered by each unmapping wherever it happens (beyond
    /// the pool's capacity, with a stack dropped elsewhere, with the pool),
    /// and not by stacks merely going back to the pool.
    #[test]
    fn the_mapped_count_follows_the_mappings() {
        let pool = StackPool::new(64 * 1024, 2).unwrap();
        let count = pool.mapped.clone();
        let stacks: Vec<_> = (0..5).map(|_| pool.get().unwrap()).collect();
        assert_eq!(pool.mapped(), 5);
        let mut it = stacks.into_iter();
        drop(it.next());
        assert_eq!(pool.mapped(), 4, "a stack dropped outside the pool");
        pool.put_all(it.by_ref().take(3));
        assert_eq!(
            (pool.pooled(), pool.mapped()),
            (2, 3),
            "one beyond capacity"
        );
        let reused = pool.get().unwrap();
        assert_eq!(pool.mapped(), 3, "a pooled stack is not a new mapping");
        drop(reused);
        drop(it);
        assert_eq!(pool.mapped(), 1);
        let unpooled = Stack::new(64 * 1024).unwrap();
        pool.put(unpooled);
        assert_eq!(
            (pool.pooled(), pool.mapped()),
            (2, 1),
            "a stack the pool did not map is not counted"
        );
        drop(pool);
        assert_eq!(count.load(Relaxed), 0);
    }
}
