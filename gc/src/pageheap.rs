//! The page heap: runs of free pages, handed out as spans and coalesced when
//! they come back (Go's `mheap`, in its older binned form).
//!
//! Free runs are kept in intrusive doubly-linked lists: one per length from 1
//! to 128 pages, and one for longer runs searched best-fit. A free run's first
//! and last pages point at its span in the page table, so a run being freed
//! finds its neighbours in O(1) and merges with any that are free. Span
//! structures come from a reservation in the arena (one per page) and a pool
//! of released ones: nothing here calls the system allocator, which matters
//! because allocation runs in no-preempt regions and a thread stopped inside
//! `malloc` may hold the lock `malloc` would wait for.
//!
//! Pages that stay free for [`Config::scavenge_after`](crate::Config) collections
//! are decommitted (`MADV_DONTNEED`) so resident memory follows the live heap;
//! they read as zero when reused, so they need no zeroing.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Mutex, MutexGuard};

use crate::arena::Arena;
use crate::sizeclass::PAGE_SIZE;
use crate::span::{Span, FREE, MANUAL};
use crate::sweep::LockScope;

const BINS: usize = 129;

pub(crate) struct PageHeap {
    inner: Mutex<Inner>,
    /// `in_use`, `free_committed` and `used_pages`, republished whenever the
    /// lock is released, so statistics and heap walks need no lock (a thread
    /// stopped while holding it must not block them).
    published: [AtomicUsize; 3],
}

/// The locked page heap; publishes the figures on unlock. In a no-yield
/// region while held, as every heap lock (see `heap::lock`).
struct Locked<'a> {
    g: MutexGuard<'a, Inner>,
    published: &'a [AtomicUsize; 3],
    _no_yield: pardon_preempt::NoYieldHere,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.g
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.g
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.published[0].store(self.g.in_use, Relaxed);
        self.published[1].store(self.g.free_committed, Relaxed);
        self.published[2].store(self.g.used_pages, Release);
    }
}

struct Inner {
    bins: [*mut Span; BINS],
    large: *mut Span,
    pool: *mut Span,
    /// Span structures: reserved memory in the arena, used in order.
    fresh: *mut Span,
    fresh_left: usize,
    /// Pages handed out from the arena so far (the high-water mark).
    used_pages: usize,
    /// Bytes in spans that are not free.
    in_use: usize,
    /// Bytes of free spans that are committed (touched and not decommitted).
    free_committed: usize,
}

// SAFETY: the raw span pointers point into the arena's span-structure
// reservation, which outlives the page heap; they are only followed under the
// mutex.
unsafe impl Send for Inner {}

/// The heap has no room for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exhausted;

/// Page-heap figures.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PageStats {
    pub in_use: usize,
    pub free_committed: usize,
    pub used_pages: usize,
}

fn links(s: *mut Span) -> &'static mut crate::span::Links {
    // SAFETY: callers hold the page-heap lock, which owns the links of every
    // span on its lists and in its pool; spans live as long as the heap.
    unsafe { &mut *(*s).link.get() }
}

fn span<'a>(s: *mut Span) -> &'a Span {
    // SAFETY: every span pointer the page heap holds points into the arena's
    // span-structure reservation, initialised before first use.
    unsafe { &*s }
}

impl Inner {
    fn bin_of(&mut self, npages: usize) -> &mut *mut Span {
        if npages < BINS {
            &mut self.bins[npages]
        } else {
            &mut self.large
        }
    }

    fn push(&mut self, s: *mut Span) {
        let head = self.bin_of(span(s).npages());
        let old = *head;
        *head = s;
        *links(s) = crate::span::Links {
            next: old,
            prev: std::ptr::null_mut(),
        };
        if !old.is_null() {
            links(old).prev = s;
        }
    }

    fn unlink(&mut self, s: *mut Span) {
        let crate::span::Links { next, prev } = *links(s);
        if prev.is_null() {
            *self.bin_of(span(s).npages()) = next;
        } else {
            links(prev).next = next;
        }
        if !next.is_null() {
            links(next).prev = prev;
        }
    }

    fn new_span_struct(&mut self) -> *mut Span {
        if self.pool.is_null() {
            // Each span structure in use or on a free list covers at least one
            // page of its own, so the reservation (one per page) never runs out.
            assert!(self.fresh_left > 0, "pardon: span structures exhausted");
            let s = self.fresh;
            // SAFETY: `s` is the next unused slot of the reservation, inside
            // it (fresh_left > 0) and suitably aligned; nothing refers to it.
            unsafe { s.write(Span::default()) };
            // SAFETY: one past `s` is inside or at the end of the reservation.
            self.fresh = unsafe { s.add(1) };
            self.fresh_left -= 1;
            return s;
        }
        let s = self.pool;
        self.pool = links(s).next;
        s
    }

    fn release_span_struct(&mut self, s: *mut Span) {
        span(s).npages.store(0, Relaxed);
        links(s).next = self.pool;
        self.pool = s;
    }
}

impl PageHeap {
    pub fn new(arena: &Arena) -> PageHeap {
        let (fresh, fresh_left) = arena.span_struct_region();
        PageHeap {
            inner: Mutex::new(Inner {
                bins: [std::ptr::null_mut(); BINS],
                large: std::ptr::null_mut(),
                pool: std::ptr::null_mut(),
                fresh,
                fresh_left,
                used_pages: 0,
                in_use: 0,
                free_committed: 0,
            }),
            published: [const { AtomicUsize::new(0) }; 3],
        }
    }

    fn lock(&self) -> Locked<'_> {
        let no_yield = pardon_preempt::no_yield_here();
        Locked {
            g: self.inner.lock().unwrap_or_else(|e| e.into_inner()),
            published: &self.published,
            _no_yield: no_yield,
        }
    }

    /// The figures as of the last unlock; takes no lock.
    pub fn stats(&self) -> PageStats {
        PageStats {
            in_use: self.published[0].load(Relaxed),
            free_committed: self.published[1].load(Relaxed),
            used_pages: self.published[2].load(Acquire),
        }
    }

    /// Allocates a span of `npages` pages, in the `MANUAL` state, with its
    /// pages mapped in the page table and `needzero` telling whether its
    /// memory may hold old data. Fails if the arena or `limit` (bytes of
    /// in-use spans) would be exceeded.
    pub fn alloc(
        &self,
        arena: &Arena,
        npages: usize,
        limit: usize,
    ) -> Result<*mut Span, Exhausted> {
        assert!(npages > 0);
        let mut g = self.lock();
        if g.in_use + npages * PAGE_SIZE > limit {
            return Err(Exhausted);
        }
        // Best fit: exact bins upward, then the large list.
        let mut found: *mut Span = std::ptr::null_mut();
        for b in npages.min(BINS)..BINS {
            if !g.bins[b].is_null() {
                found = g.bins[b];
                break;
            }
        }
        if found.is_null() {
            let mut s = g.large;
            while !s.is_null() {
                let n = span(s).npages();
                if n >= npages && (found.is_null() || n < span(found).npages()) {
                    found = s;
                }
                s = links(s).next;
            }
        }
        let s = if !found.is_null() {
            g.unlink(found);
            let f = span(found);
            let have = f.npages();
            if f.committed.load(Relaxed) {
                g.free_committed -= have * PAGE_SIZE;
            }
            if have > npages {
                // Split: the tail stays free.
                let rest = g.new_span_struct();
                let r = span(rest);
                r.base.store(f.base() + npages * PAGE_SIZE, Relaxed);
                r.npages.store(have - npages, Relaxed);
                r.needzero.store(f.needzero.load(Relaxed), Relaxed);
                r.committed.store(f.committed.load(Relaxed), Relaxed);
                r.free_since_gc
                    .store(f.free_since_gc.load(Relaxed), Relaxed);
                r.state.store(FREE, Release);
                if r.committed.load(Relaxed) {
                    g.free_committed += r.bytes();
                }
                Self::map_ends(arena, rest);
                g.push(rest);
                f.npages.store(npages, Relaxed);
            }
            found
        } else {
            if g.used_pages + npages > arena.npages {
                return Err(Exhausted);
            }
            let s = g.new_span_struct();
            let sp = span(s);
            sp.base.store(arena.page_addr(g.used_pages), Relaxed);
            sp.npages.store(npages, Relaxed);
            sp.needzero.store(false, Relaxed);
            g.used_pages += npages;
            s
        };
        let sp = span(s);
        sp.committed.store(true, Relaxed);
        sp.state.store(MANUAL, Release);
        g.in_use += npages * PAGE_SIZE;
        drop(g);
        let first = arena.page_of(sp.base());
        for p in first..first + npages {
            arena.span_slot(p).store(s, Release);
        }
        Ok(s)
    }

    fn map_ends(arena: &Arena, s: *mut Span) {
        let sp = span(s);
        let first = arena.page_of(sp.base());
        arena.span_slot(first).store(s, Release);
        arena.span_slot(first + sp.npages() - 1).store(s, Release);
    }

    /// Returns a span's pages, merging with free neighbours. Allocates
    /// nothing and may run while the world is stopped.
    pub fn free(&self, arena: &Arena, s: *mut Span, gc_count: u64) {
        let mut g = self.lock();
        let sp = span(s);
        g.in_use -= sp.bytes();
        sp.state.store(FREE, Release);
        sp.needzero.store(true, Relaxed);
        sp.free_since_gc.store(gc_count, Relaxed);
        g.free_committed += sp.bytes();
        let mut s = s;
        // Merge with the run before.
        let first = arena.page_of(span(s).base());
        if first > 0 {
            let prev = arena.span_slot(first - 1).load(Acquire);
            if !prev.is_null()
                && prev != s
                && span(prev).state.load(Acquire) == FREE
                && span(prev).npages() > 0
                && span(prev).base() + span(prev).bytes() == span(s).base()
            {
                g.unlink(prev);
                let (a, b) = (span(prev), span(s));
                a.npages.store(a.npages() + b.npages(), Relaxed);
                a.needzero
                    .store(a.needzero.load(Relaxed) | b.needzero.load(Relaxed), Relaxed);
                if !a.committed.load(Relaxed) {
                    // Part of the merged run was decommitted: count it committed
                    // from now on (a later scavenge re-advises harmlessly).
                    g.free_committed += a.bytes() - b.bytes();
                    a.committed.store(true, Relaxed);
                }
                a.free_since_gc.store(gc_count, Relaxed);
                g.release_span_struct(s);
                s = prev;
            }
        }
        // Merge with the run after.
        let end_page = arena.page_of(span(s).base()) + span(s).npages();
        if end_page < g.used_pages {
            let next = arena.span_slot(end_page).load(Acquire);
            if !next.is_null()
                && next != s
                && span(next).state.load(Acquire) == FREE
                && span(next).npages() > 0
                && span(next).base() == span(s).base() + span(s).bytes()
            {
                g.unlink(next);
                let (a, b) = (span(s), span(next));
                if !b.committed.load(Relaxed) {
                    g.free_committed += b.bytes();
                }
                a.npages.store(a.npages() + b.npages(), Relaxed);
                a.needzero
                    .store(a.needzero.load(Relaxed) | b.needzero.load(Relaxed), Relaxed);
                g.release_span_struct(next);
            }
        }
        Self::map_ends(arena, s);
        g.push(s);
    }

    /// Decommits free runs that have been free since before collection
    /// `before_gc`. Returns the bytes released. Works in batches of a few
    /// spans, each holding the lock inside `scope` (a no-preempt region when
    /// an attached thread scavenges), so no thread is ever stopped holding the
    /// lock and a stop waits for at most a few `madvise` calls.
    pub fn scavenge(&self, arena: &Arena, before_gc: u64, scope: &impl LockScope) -> usize {
        const BATCH: usize = 8;
        let mut released = 0;
        loop {
            let (bytes, done) = scope.run(|| {
                let mut g = self.lock();
                let mut bytes = 0;
                let mut n = 0;
                let heads: [*mut Span; BINS + 1] =
                    std::array::from_fn(|i| if i < BINS { g.bins[i] } else { g.large });
                for mut s in heads {
                    while !s.is_null() {
                        let sp = span(s);
                        if sp.committed.load(Relaxed) && sp.free_since_gc.load(Relaxed) < before_gc
                        {
                            arena.decommit(sp.base(), sp.bytes());
                            sp.committed.store(false, Relaxed);
                            sp.needzero.store(false, Relaxed);
                            bytes += sp.bytes();
                            n += 1;
                            if n == BATCH {
                                g.free_committed -= bytes;
                                return (bytes, false);
                            }
                        }
                        s = links(s).next;
                    }
                }
                g.free_committed -= bytes;
                (bytes, true)
            });
            released += bytes;
            if done {
                return released;
            }
        }
    }

    /// Calls `f` for every span that is not free (for heap walks while the
    /// world is stopped; allocates nothing).
    pub fn for_each_in_use(&self, arena: &Arena, mut f: impl FnMut(&Span)) {
        let used = self.published[2].load(Acquire);
        let mut p = 0;
        while p < used {
            let s = arena.span_slot(p).load(Acquire);
            if s.is_null() {
                p += 1;
                continue;
            }
            let sp = span(s);
            if sp.npages() == 0 || sp.base() != arena.page_addr(p) {
                p += 1;
                continue;
            }
            if sp.state.load(Acquire) != FREE {
                f(sp);
            }
            p += sp.npages();
        }
    }
}
