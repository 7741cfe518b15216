//! Weak references: words the collector clears, instead of following, when
//! the object they name dies (Go's `weak.Pointer`, Boehm's disappearing
//! links).
//!
//! The heap keeps one table of weak words ([`WordTable`], the structure of
//! the global roots), which the mark never treats as roots. At the end of
//! every mark, with the world still stopped, the coordinator clears each
//! weak word whose object the mark left unmarked: exactly the objects the
//! coming sweep frees. So a weak reference is cleared before its object can
//! be freed, and no mutator can run between the two decisions: nothing ever
//! reads a weak word that names freed memory.
//!
//! Reading one ([`Weak::get`]) roots the object on the reading thread the
//! way [`Member::get`](crate::Member::get) does: a stop that comes after
//! the load finds the address in the reader's registers or stack (scanned
//! conservatively), so the object is marked and the word not cleared; a
//! stop before the load has cleared the word already.
//!
//! With finalizers (`finalizer`): weak words are cleared *before* a
//! finalizable object is resurrected, so a weak reference to an object
//! whose finalizer is queued already reads as cleared (as in Go). Objects
//! that a registered finalizable object references are kept alive by it
//! (they are what its finalizer may read), so weak references to them stay
//! set until it is gone.
//!
//! Generational heaps: a minor collection treats every old object as live,
//! so a weak reference to an old object is cleared only by the full
//! collection that frees it — again exactly when the object is freed.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering::{Acquire, Release};

use crate::collector::Heap;
use crate::heap::RawHeap;
use crate::mark::Marker;
use crate::mutator::Mutator;
use crate::roots::RootTableFull;
use crate::typed::{GcObject, Root};

/// Owns a weak reference of the raw API ([`Heap::add_weak`],
/// [`RawHeap::add_weak`]) of one heap: neither `Clone` nor `Copy`, so the
/// slot it names is removed at most once, and only by its heap (a slot
/// removed twice, or another heap's slot of the same number, let a later
/// [`Weak`] share its slot with another and read that one's object as its
/// own type).
///
/// ```compile_fail
/// let heap = pardon::Heap::new(pardon::Config::default()).unwrap();
/// let m = heap.attach().unwrap();
/// let a = m.alloc_raw(heap.register_type(&pardon::TypeDesc {
///     name: "leaf", size: 16, align: 8, pointer_words: &[] }).unwrap()).unwrap();
/// let id = heap.add_weak(a).unwrap();
/// heap.remove_weak(id);
/// heap.remove_weak(id); // a second removal would free a slot in use
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WeakId {
    /// The `RawHeap::id` of the heap whose table holds the slot.
    heap: u64,
    /// The slot in that heap's weak-reference table.
    index: usize,
}

/// Why a weak reference could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeakError {
    /// The address is not inside an allocated object of this heap.
    NotAnObject {
        /// The address given.
        addr: usize,
    },
    /// The weak-reference table is full.
    TableFull(RootTableFull),
}

impl fmt::Display for WeakError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeakError::NotAnObject { addr } => write!(
                f,
                "weak reference to {addr:#x}, which is not inside an allocated object of this heap"
            ),
            WeakError::TableFull(e) => write!(f, "weak-reference table: {e}"),
        }
    }
}

impl std::error::Error for WeakError {}

impl From<RootTableFull> for WeakError {
    fn from(e: RootTableFull) -> Self {
        WeakError::TableFull(e)
    }
}

impl RawHeap {
    /// Makes a weak reference to the object containing `addr`, which must be
    /// a live object: reachable, or held where the next collection will see
    /// it. The word read back is `addr` itself until the object dies, then
    /// 0. On the threaded heap use [`Heap::add_weak`] or [`Weak`].
    pub fn add_weak(&self, addr: usize) -> Result<WeakId, WeakError> {
        if self.find(addr).is_none() {
            return Err(WeakError::NotAnObject { addr });
        }
        Ok(self.weak_id(self.weaks.insert(addr)?))
    }

    /// The word of weak reference `id`: the address it was made with, or 0
    /// once its object died. Creates no root: on a threaded heap, read it
    /// as a running attached thread (see [`Mutator::weak_get`]).
    ///
    /// # Panics
    /// If `id` is another heap's.
    pub fn weak_value(&self, id: &WeakId) -> usize {
        self.weaks.get(self.own_weak(id))
    }

    /// Drops weak reference `id`; its slot is reused.
    ///
    /// # Panics
    /// If `id` is another heap's.
    pub fn remove_weak(&self, id: WeakId) {
        self.weaks.remove(self.own_weak(&id));
    }

    /// The id of this heap's weak slot `index`.
    fn weak_id(&self, index: usize) -> WeakId {
        WeakId {
            heap: self.id,
            index,
        }
    }

    /// `id`'s slot number, checked to be this heap's.
    fn own_weak(&self, id: &WeakId) -> usize {
        assert!(
            id.heap == self.id,
            "a WeakId used with another heap than the one that made it"
        );
        id.index
    }

    /// Clears every weak word whose object `m` left unmarked. Coordinator,
    /// world stopped, after the mark is complete and before finalizable
    /// objects are resurrected. Returns how many it cleared. Allocates
    /// nothing and takes no lock.
    pub(crate) fn clear_dead_weaks(&self, m: &Marker<'_>) -> usize {
        let mut cleared = 0;
        self.weaks.for_each_slot(|slot| {
            let v = slot.load(Acquire);
            if v != 0 && !m.is_marked(v) {
                slot.store(0, Release);
                cleared += 1;
            }
        });
        cleared
    }

    /// Verify mode: the first set weak word whose object is not marked (and
    /// so will be freed by the coming sweep), if any. Run after the re-mark.
    pub(crate) fn find_dangling_weak(&self) -> Option<usize> {
        let mut bad = None;
        self.weaks.for_each(|v| {
            let marked = self
                .find(v)
                .is_some_and(|(_, span, idx)| span.is_marked(idx));
            if !marked && bad.is_none() {
                bad = Some(v);
            }
        });
        bad
    }
}

impl Heap {
    /// Makes a weak reference to the object containing `addr` (see
    /// [`RawHeap::add_weak`]). The caller must keep the object reachable
    /// (or its address in a running attached thread's registers or stack)
    /// until this returns. Typed code uses [`Weak`].
    pub fn add_weak(&self, addr: usize) -> Result<WeakId, WeakError> {
        let raw = &self.collector.raw;
        // A slot first, holding 0 (no weak reference): taking it may
        // allocate and takes the table's lock, neither of which a
        // no-preempt region may do (a stop may have caught the thread that
        // holds the allocator's lock, or the table's).
        let id = raw.weaks.insert(0)?;
        // Validated and stored with no stop in between: a stop that freed
        // the object after the check would leave a dangling word.
        let ok = self.collector.registry.outside_stops(|| {
            let ok = raw.find(addr).is_some();
            if ok {
                raw.weaks.set(id, addr);
            }
            ok
        });
        if !ok {
            raw.weaks.remove(id);
            return Err(WeakError::NotAnObject { addr });
        }
        Ok(raw.weak_id(id))
    }

    /// The word of weak reference `id` (0 once its object died). Creates no
    /// root; see [`Mutator::weak_get`].
    ///
    /// # Panics
    /// If `id` is another heap's.
    pub fn weak_value(&self, id: &WeakId) -> usize {
        self.collector.raw.weak_value(id)
    }

    /// Drops weak reference `id`.
    ///
    /// # Panics
    /// If `id` is another heap's.
    pub fn remove_weak(&self, id: WeakId) {
        self.collector.raw.remove_weak(id)
    }
}

impl Mutator {
    /// Reads weak reference `id` as a running thread (leaving a safe region
    /// for the read): the address, which stays valid while it is in this
    /// thread's registers or stack or otherwise reachable, or 0 once the
    /// object died.
    ///
    /// # Panics
    /// If `id` is another heap's.
    pub fn weak_get(&self, id: &WeakId) -> usize {
        self.as_running(|| self.heap.collector.raw.weak_value(id))
    }
}

/// A weak reference to a `T`: does not keep it alive, and reads as `None`
/// once it has died. `Send`/`Sync` exactly when `T` is `Sync`.
pub struct Weak<T: GcObject> {
    heap: Heap,
    id: WeakId,
    _t: PhantomData<fn() -> T>,
}

// SAFETY: a Weak only hands out Roots on the caller's own thread; sharing
// the object between threads is sound when T is Sync.
unsafe impl<T: GcObject + Sync> Send for Weak<T> {}
// SAFETY: as above.
unsafe impl<T: GcObject + Sync> Sync for Weak<T> {}

impl<T: GcObject> Weak<T> {
    /// A weak reference to `r`'s object.
    pub fn new(r: &Root<'_, T>) -> Result<Weak<T>, RootTableFull> {
        let heap = r.mutator().heap().clone();
        // `r` roots the object throughout.
        let id = heap.collector.raw.weaks.insert(r.addr())?;
        let id = heap.collector.raw.weak_id(id);
        Ok(Weak {
            heap,
            id,
            _t: PhantomData,
        })
    }

    /// The object, rooted on `m`'s thread, or `None` if it has died.
    ///
    /// # Panics
    /// If `m` is a mutator of another heap.
    pub fn get<'m>(&self, m: &'m Mutator) -> Option<Root<'m, T>> {
        assert!(
            std::sync::Arc::ptr_eq(&self.heap.collector, &m.heap().collector),
            "Weak::get with a mutator of another heap"
        );
        // The load and the rooting happen where no stop can come between
        // them unseen (see `Mutator::root_found` and the module comment).
        let (slot, v) = m.root_found(|| self.heap.collector.raw.weak_value(&self.id))?;
        // A concurrent mark may not have reached the object (it may even
        // have been unreachable when the cycle began): now that a mutator
        // holds it, it is live, so shade it.
        let col = &self.heap.collector;
        if col.raw.phase.load(std::sync::atomic::Ordering::Relaxed) != crate::mark::barrier::OFF {
            col.shade_excluding_stops(v);
        }
        // SAFETY: a set weak word names a live T (it was made from a Root,
        // and is cleared in the stop that finds the object dead, before any
        // sweep can free it); it is now rooted.
        Some(unsafe { Root::from_parts(m, slot, v) })
    }

    /// Whether the object has died. A `false` can be stale by the time it
    /// is used; only [`Weak::get`] gives an object.
    pub fn is_cleared(&self) -> bool {
        self.heap.collector.raw.weak_value(&self.id) == 0
    }
}

impl<T: GcObject> Clone for Weak<T> {
    /// Another weak reference to the same object (or another cleared one).
    ///
    /// # Panics
    /// If the weak-reference table is full.
    fn clone(&self) -> Self {
        let raw = &self.heap.collector.raw;
        // A slot first, holding 0, outside any region (see
        // `Heap::add_weak`); then read and copied with no stop in between:
        // a stop after the read could clear our word and free the object,
        // leaving the copy dangling.
        let id = raw.weaks.insert(0).inspect(|&id| {
            self.heap
                .collector
                .registry
                .outside_stops(|| raw.weaks.set(id, raw.weak_value(&self.id)))
        });
        match id {
            Ok(id) => Weak {
                heap: self.heap.clone(),
                id: raw.weak_id(id),
                _t: PhantomData,
            },
            Err(e) => panic!("pardon: cloning a Weak: {e}"),
        }
    }
}

impl<T: GcObject> Drop for Weak<T> {
    fn drop(&mut self) {
        // The weak's own id, never used again.
        let raw = &self.heap.collector.raw;
        raw.weaks.remove(raw.own_weak(&self.id));
    }
}

impl<T: GcObject> fmt::Debug for Weak<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.heap.collector.raw.weak_value(&self.id) {
            0 => f.write_str("Weak(cleared)"),
            v => write!(f, "Weak({v:#x})"),
        }
    }
}
