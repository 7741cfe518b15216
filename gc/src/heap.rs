//! The raw heap: the arena, the page heap and the span lists a heap is made
//! of, exact object lookup, and statistics. Allocation is in `cache` (thread
//! caches), `central` (central lists) and `large`; sweeping in `sweep`;
//! heap bits in `heapbits`; a collection of the raw heap in `collect`;
//! marking in `mark`; verification in `verify` and `integrity`.

use std::fmt;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::Mutex;

use crate::arena::Arena;
use crate::central::Central;
use crate::config::{Config, ConfigError};
use crate::pageheap::PageHeap;
use crate::sizeclass::{NUM_SPAN_CLASSES, PAGE_SIZE};
use crate::span::{Span, BITMAP_WORDS, IN_USE};
use crate::types::{Type, TypeDesc, TypeError};

/// Byte written over freed slots in verify mode.
pub const POISON: u8 = 0xDB;

/// Heap statistics.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapStats {
    /// Bytes in spans that are in use (objects, free slots and tail waste).
    pub span_bytes: usize,
    /// Bytes of free spans still committed.
    pub free_committed: usize,
    /// Bytes live at the last collection plus bytes handed to allocation
    /// since (cached spans count whole), what the pacer compares to its goal.
    pub allocated: usize,
    /// Bytes marked by the last collection.
    pub live_after_last: usize,
    /// Completed collections.
    pub collections: u64,
}

/// The heap, without threads: allocation through
/// [`ThreadCache`](crate::ThreadCache)s, lookup, marking from a root set and
/// lazy sweeping. The collector (`Heap`) adds the stop-the-world and
/// per-thread roots on top.
///
/// Who touches what: every lock here is taken only outside stops (inside a
/// no-preempt region, or holding the coordinator lock on a thread that is
/// not attached) or by the coordinator of a stopped world, so no stopped
/// thread ever holds one.
pub struct RawHeap {
    /// This heap's number, unique in the process (from 1): what a
    /// `ThreadCache` holding its spans is bound to.
    pub(crate) id: u64,
    /// The reserved address space, its page-to-span table, heap bits and
    /// cards. Immutable after `new`; its tables are atomics.
    pub(crate) arena: Arena,
    /// Free runs of pages (its own lock; see `pageheap`).
    pub(crate) pages: PageHeap,
    /// Per span class, the spans no cache holds. Taken by caches refilling
    /// or flushing, by sweepers and by the coordinator.
    pub(crate) central: Box<[Mutex<Central>]>,
    /// Large-object spans: [swept, unswept] by the same flip as `central`,
    /// and (generational heaps) old ones, as `Central::old`. Same takers.
    pub(crate) large: Mutex<[*mut Span; 3]>,
    /// The sweep generation (see `sweep`): advanced by 2 only by a
    /// coordinator, with the world stopped and every span swept; read by
    /// everyone (each sweep step rereads it).
    pub(crate) sweepgen: AtomicU32,
    /// Completed collections: written with `sweepgen`.
    pub(crate) gc_count: AtomicU64,
    /// Immutable after `new`.
    pub(crate) config: Config,
    /// Bytes given out to caches (a span's free slots are charged when a
    /// cache takes it and refunded when it gives it back) and large objects
    /// since the last collection, plus what that collection marked. Added to
    /// by allocators, reset by the coordinator at the flip.
    pub(crate) allocated: AtomicUsize,
    /// Bytes the last collection left live: written at the flip.
    pub(crate) live_after_last: AtomicUsize,
    /// The coordinator's gray stack: only markers take it.
    pub(crate) gray: Mutex<crate::mark::GrayStack>,
    /// Helper threads for parallel marking (none when `mark_workers` is 1).
    pub(crate) helpers: crate::mark::MarkHelpers,
    /// Verify mode: room for one copy of every span's mark bits. Used only
    /// by the coordinator, world stopped.
    pub(crate) snapshot: Option<memmap2::MmapMut>,
    /// Verify mode: the type and count each object was allocated with, the
    /// independent record its heap bits are checked against (see `verify`).
    /// Written by the allocating thread for a slot it owns; read by a
    /// coordinator with the world stopped.
    pub(crate) type_record: Option<crate::verify::TypeRecord>,
    /// Weak references (see `weak`): written by any thread, cleared by a
    /// coordinator with the world stopped.
    pub(crate) weaks: crate::roots::WordTable,
    /// Registered finalizers (see `finalizer`): taken by mutators only
    /// outside stops, by a coordinator with the world stopped.
    pub(crate) finalizers: Mutex<crate::finalizer::FinalizerTable>,
    /// Concurrent marking: `barrier::OFF` or `barrier::MARK`. Written by a
    /// coordinator with the world stopped (raised at the first stop of a
    /// cycle, lowered at the second); read by mutators' barriers and
    /// allocation slow paths.
    pub(crate) phase: AtomicU32,
    /// Concurrent marking: objects the deletion barrier shaded (marked,
    /// not yet scanned). Pushed by mutators inside no-preempt regions,
    /// taken by the marking coordinator, and emptied at the second stop.
    /// A stack in a mapping of its own (`gray_capacity` entries), so a
    /// push never calls the system allocator: a thread stopped inside
    /// `malloc` may hold its lock for the whole stop, and a mutator that
    /// waited for it inside its no-preempt region would hold the stop off.
    /// A push onto a full queue records an overflow, recovered from at the
    /// second stop by the heap rescan.
    pub(crate) shaded: Mutex<crate::mark::GrayStack>,
    /// Concurrent marking: spans a cache took while marking, with the slot
    /// allocation resumed from (`Span::mark_start`): their slots from there
    /// on are new, hence live, and are marked at the second stop. Pushed by
    /// mutators inside no-preempt regions, read and cleared by the
    /// coordinator with the world stopped.
    /// Reserved at creation with room for every span the arena can hold
    /// (a span is recorded at most once a cycle), so a push never calls
    /// the system allocator inside its region (see `shaded`).
    pub(crate) new_spans: Mutex<Vec<usize>>,
    /// Concurrent marking: the number of the cycle marking now (raised at
    /// each first stop), so a span records its `mark_start` once a cycle.
    pub(crate) mark_epoch: AtomicU64,
    /// Concurrent marking: bytes of the objects mutators shaded this cycle
    /// (counted live). Added to by mutators, read and reset by the
    /// coordinator at the second stop.
    pub(crate) shaded_bytes: AtomicUsize,
    /// Concurrent marking: a cycle was abandoned at its second stop, and
    /// its mark bits and queues are cleared at the next first stop (see
    /// `Collector::abandon_marking`). Set by that cycle's coordinator, read
    /// and cleared by the next one, world stopped.
    pub(crate) marks_stale: AtomicBool,
    /// Concurrent marking: the background share and mutator assists (see
    /// `assist`; its fields say who writes them).
    pub(crate) assist: crate::mark::assist::Assist,
}

// SAFETY: the large lists' span pointers follow the same rules as Central's.
unsafe impl Send for RawHeap {}

// SAFETY: all shared state is atomics or behind mutexes; see each field.
unsafe impl Sync for RawHeap {}

impl fmt::Debug for RawHeap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawHeap")
            .field("stats", &self.stats())
            .finish()
    }
}

/// The span a span pointer names.
pub(crate) fn span_ref<'a>(s: *mut Span) -> &'a Span {
    // SAFETY: every span pointer handled here came from the page heap's pool,
    // which lives as long as the heap.
    unsafe { &*s }
}

/// Locks one of the heap's mutexes (a poisoned one is taken anyway), in a
/// no-yield region of the calling thread for as long as the guard lives.
/// On a goroutine's worker, a goroutine switched out holding a heap lock
/// would leave the next goroutine of that worker to take it blocking the
/// worker's thread for ever (the holder can only resume there): found
/// with the background collector's request lock, taken by an allocation
/// on a concurrent heap. Stops are taken as anywhere.
pub(crate) fn lock<T>(m: &Mutex<T>) -> Locked<'_, T> {
    let no_yield = pardon_preempt::no_yield_here();
    Locked {
        guard: m.lock().unwrap_or_else(|e| e.into_inner()),
        _no_yield: no_yield,
    }
}

/// A heap mutex's guard, in a no-yield region (see [`lock`]); the guard
/// is released before the region ends (fields drop in order).
pub(crate) struct Locked<'a, T> {
    guard: std::sync::MutexGuard<'a, T>,
    _no_yield: pardon_preempt::NoYieldHere,
}

impl<'a, T> Locked<'a, T> {
    /// Waits on `cv` with the lock, as `Condvar::wait`, still in the
    /// no-yield region.
    pub(crate) fn wait(self, cv: &std::sync::Condvar) -> Locked<'a, T> {
        let Locked { guard, _no_yield } = self;
        Locked {
            guard: cv.wait(guard).unwrap_or_else(|e| e.into_inner()),
            _no_yield,
        }
    }
}

impl<T> std::ops::Deref for Locked<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::DerefMut for Locked<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl RawHeap {
    /// Reserves the arena and side tables.
    pub fn new(config: Config) -> Result<RawHeap, ConfigError> {
        config.validate()?;
        let arena = Arena::new(config.arena_size).map_err(|e| {
            ConfigError(format!(
                "arena_size: cannot reserve {} bytes: {e}",
                config.arena_size
            ))
        })?;
        let gray = crate::mark::GrayStack::new(config.gray_capacity).map_err(|e| {
            ConfigError(format!("gray_capacity: cannot reserve the gray stack: {e}"))
        })?;
        let helpers = crate::mark::MarkHelpers::new(config.mark_workers, config.gray_capacity)
            .map_err(|e| {
                ConfigError(format!(
                    "mark_workers: cannot start {} marking helpers: {e}",
                    config.mark_workers - 1
                ))
            })?;
        let pages = PageHeap::new(&arena);
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(RawHeap {
            id: NEXT_ID.fetch_add(1, Relaxed),
            helpers,
            arena,
            pages,
            central: (0..NUM_SPAN_CLASSES)
                .map(|_| {
                    Mutex::new(Central {
                        partial: [std::ptr::null_mut(); 2],
                        full: [std::ptr::null_mut(); 2],
                        old: std::ptr::null_mut(),
                    })
                })
                .collect(),
            large: Mutex::new([std::ptr::null_mut(); 3]),
            sweepgen: AtomicU32::new(2),
            gc_count: AtomicU64::new(0),
            allocated: AtomicUsize::new(0),
            live_after_last: AtomicUsize::new(0),
            gray: Mutex::new(gray),
            weaks: crate::roots::WordTable::new(),
            phase: AtomicU32::new(crate::mark::barrier::OFF),
            shaded: Mutex::new(
                crate::mark::GrayStack::new(config.gray_capacity).map_err(|e| {
                    ConfigError(format!(
                        "gray_capacity: cannot reserve the shaded queue: {e}"
                    ))
                })?,
            ),
            new_spans: Mutex::new(if config.concurrent {
                // One per span structure the arena reserves (a page each,
                // and one more). Virtual: touched as spans are recorded.
                Vec::with_capacity(config.arena_size / crate::sizeclass::PAGE_SIZE + 1)
            } else {
                Vec::new()
            }),
            mark_epoch: AtomicU64::new(0),
            shaded_bytes: AtomicUsize::new(0),
            marks_stale: AtomicBool::new(false),
            assist: crate::mark::assist::Assist::new(config.background_mark_percent),
            finalizers: Mutex::new(Default::default()),
            snapshot: if config.verify {
                Some(
                    memmap2::MmapOptions::new()
                        .len(config.arena_size / PAGE_SIZE * BITMAP_WORDS * 8)
                        .no_reserve_swap()
                        .map_anon()
                        .map_err(|e| {
                            ConfigError(format!("verify: cannot reserve the mark snapshot: {e}"))
                        })?,
                )
            } else {
                None
            },
            type_record: if config.verify {
                Some(
                    crate::verify::TypeRecord::new(config.arena_size).map_err(|e| {
                        ConfigError(format!("verify: cannot reserve the type record: {e}"))
                    })?,
                )
            } else {
                None
            },
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Registers a type.
    pub fn register_type(&self, desc: &TypeDesc<'_>) -> Result<Type, TypeError> {
        crate::types::register(desc)
    }

    /// Statistics.
    pub fn stats(&self) -> HeapStats {
        let p = self.pages.stats();
        HeapStats {
            span_bytes: p.in_use,
            free_committed: p.free_committed,
            allocated: self.allocated.load(Relaxed),
            live_after_last: self.live_after_last.load(Relaxed),
            collections: self.gc_count.load(Relaxed),
        }
    }

    /// The arena's address range `[lo, hi)`.
    pub fn arena_range(&self) -> (usize, usize) {
        (self.arena.base, self.arena.end())
    }

    /// The exact lookup: the base of the allocated object containing `addr`
    /// (interior pointers and the last byte included), or `None` for anything
    /// else — outside the arena, free pages, spans being set up, tail waste,
    /// free slots and slots freed by the last sweep. Never faults on any
    /// input. Exact while no thread allocates or sweeps concurrently (during a
    /// collection); otherwise a racing answer may be stale, never unsafe.
    #[inline]
    pub fn find_object(&self, addr: usize) -> Option<usize> {
        self.find(addr).map(|(base, _, _)| base)
    }

    /// As [`RawHeap::find_object`], also returning the span and index.
    #[inline(always)]
    pub(crate) fn find(&self, addr: usize) -> Option<(usize, &Span, usize)> {
        let s = self.arena.span_of(addr);
        if s.is_null() {
            return None;
        }
        let s = span_ref(s);
        if s.state.load(Acquire) != IN_USE {
            return None;
        }
        let base = s.base();
        let off = addr.wrapping_sub(base);
        if off >= s.bytes() {
            return None;
        }
        let idx = s.obj_index(off);
        if idx >= s.nelems() || !s.is_allocated(idx) {
            return None;
        }
        Some((base + idx * s.elemsize(), s, idx))
    }

    /// The size of the slot of the allocated object at `base` (its class size,
    /// or the span size for a large object), or `None` if `base` is not the
    /// base of an allocated object.
    pub fn object_size(&self, base: usize) -> Option<usize> {
        match self.find(base) {
            Some((b, s, _)) if b == base => Some(s.elemsize()),
            _ => None,
        }
    }

    pub(crate) fn swept_index(sg: u32) -> usize {
        (sg / 2 % 2) as usize
    }
}
