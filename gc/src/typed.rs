//! The typed layer for Rust users: objects declared with [`gc_object!`](crate::gc_object!),
//! rooted handles ([`Root`]), reference fields ([`Member`]) and global roots
//! ([`Global`]).
//!
//! Why it cannot use-after-free:
//! - A [`Root`] is a slot in its thread's handle table, scanned precisely at
//!   every collection, for as long as the `Root` exists; `&T` borrowed from a
//!   root cannot outlive it.
//! - Every way to obtain a `Root` (allocation, [`Member::get`],
//!   [`Global::get`]) reads the address and registers it in one no-preempt
//!   step relative to the collector; in between, the address is in the
//!   interrupted frame's registers or stack, which the scan covers.
//! - Objects hold only [`Member`] references (atomic words the heap bits mark)
//!   and plain data whose all-zero bytes are valid ([`ZeroValid`]): allocation
//!   returns zeroed memory, and nothing ever needs dropping, since the heap
//!   never runs destructors.
//! - A `Root` borrows its [`Mutator`], which is neither `Send` nor `Sync`, so
//!   roots stay on their thread; objects cross threads only through
//!   [`Global`], which requires `T: Sync`.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{self, AtomicUsize, Ordering};

use crate::alloc_error::AllocError;
use crate::collector::{GlobalRootId, Heap};
use crate::mutator::Mutator;
use crate::types::{Type, TypeDesc};

/// Plain data whose all-zero bit pattern is a valid value and which needs no
/// drop.
///
/// # Safety
/// All-zero bytes must be a valid value of the type; it must have no drop
/// glue and hold no references into the managed heap.
pub unsafe trait ZeroValid: 'static {}

macro_rules! zero_valid {
    ($($t:ty),*) => {$(
        // SAFETY: integers, floats, bools and their atomic and Cell wrappers
        // are valid all-zero and have no drop glue.
        unsafe impl ZeroValid for $t {}
    )*};
}
zero_valid!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64, bool);
zero_valid!(
    atomic::AtomicU8,
    atomic::AtomicU16,
    atomic::AtomicU32,
    atomic::AtomicU64,
    atomic::AtomicUsize,
    atomic::AtomicI8,
    atomic::AtomicI16,
    atomic::AtomicI32,
    atomic::AtomicI64,
    atomic::AtomicIsize,
    atomic::AtomicBool
);
zero_valid!(
    Cell<u8>,
    Cell<u16>,
    Cell<u32>,
    Cell<u64>,
    Cell<usize>,
    Cell<i8>,
    Cell<i16>
);
zero_valid!(
    Cell<i32>,
    Cell<i64>,
    Cell<isize>,
    Cell<f32>,
    Cell<f64>,
    Cell<bool>
);
// SAFETY: an array of all-zero-valid elements is all-zero-valid.
unsafe impl<T: ZeroValid, const N: usize> ZeroValid for [T; N] {}

/// A field type allowed in a [`gc_object!`](crate::gc_object!): plain data or references.
///
/// # Safety
/// `ref_words` must list exactly the 8-byte words of the field that hold
/// managed references, and all-zero bytes must be a valid value.
pub unsafe trait GcField: 'static {
    /// Appends the word offsets (relative to the field) of its references.
    fn ref_words(base_word: usize, out: &mut Vec<usize>);
}

// SAFETY: plain data holds no references.
unsafe impl<T: ZeroValid> GcField for T {
    fn ref_words(_: usize, _: &mut Vec<usize>) {}
}

/// A reference field: null or the address of a live `T`. An atomic word, so
/// objects with members may be shared between threads (through [`Global`]).
///
/// `Send` and `Sync` only if `T` is `Sync`: any thread that reaches a member
/// reaches its object (`get`) as `&T`. (An object holding a member to a
/// `Cell` was otherwise shareable, and two threads could write the cell.)
///
/// ```compile_fail
/// use std::cell::Cell;
/// use pardon::{gc_object, Global, Member};
/// gc_object! { struct Counter { n: Cell<i64> } }
/// gc_object! { struct Holder { c: Member<Counter> } }
/// fn shareable<T: Send + Sync>() {}
/// shareable::<Global<Holder>>(); // would let two threads reach one Cell
/// ```
#[repr(transparent)]
pub struct Member<T: GcObject> {
    word: AtomicUsize,
    /// Neither `Send` nor `Sync` by itself: see the impls below.
    _t: PhantomData<*const T>,
}

// SAFETY: the word is atomic; another thread that has the member reaches
// its object only as `&T` (through `get`, rooted on that thread's own
// mutator), and never drops or moves it: `T: Sync` is what that needs.
unsafe impl<T: GcObject + Sync> Send for Member<T> {}
// SAFETY: as for `Send`.
unsafe impl<T: GcObject + Sync> Sync for Member<T> {}

// SAFETY: a single word, null when zero.
unsafe impl<T: GcObject> GcField for Member<T> {
    fn ref_words(base_word: usize, out: &mut Vec<usize>) {
        out.push(base_word);
    }
}

// SAFETY: each element contributes its own words at its own offset.
unsafe impl<T: GcObject, const N: usize> GcField for [Member<T>; N] {
    fn ref_words(base_word: usize, out: &mut Vec<usize>) {
        out.extend(base_word..base_word + N);
    }
}

impl<T: GcObject> fmt::Debug for Member<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Member({:#x})", self.word.load(Ordering::Relaxed))
    }
}

impl<T: GcObject> Member<T> {
    /// The referenced object, rooted on `m`'s thread, or `None` if null.
    #[inline]
    ///
    /// # Panics
    /// If `m` is a mutator of another heap than the one this member lives
    /// in: that heap's collections would not see the root.
    pub fn get<'m>(&self, m: &'m Mutator) -> Option<Root<'m, T>> {
        assert!(
            m.heap.collector.raw.arena.contains(self.addr_of()),
            "Member::get with a mutator of another heap than the member's"
        );
        // The load and the rooting happen where no stop can come between
        // them unseen (see `Mutator::root_found`).
        let (slot, v) = m.root_found(|| self.word.load(Ordering::Acquire))?;
        // SAFETY: a non-null member holds the address of a live T: it was
        // set from a Root, and the object it names is reachable from this
        // one, which the caller reached through a root; it is now rooted.
        Some(unsafe { Root::from_parts(m, slot, v) })
    }

    /// Points the field at `v`'s object, or clears it. Runs the write
    /// barrier first (see [`Mutator::write_barrier`]), so generational heaps
    /// need nothing more from typed code.
    ///
    /// # Panics
    /// If `v` is an object of another heap than the one this member lives
    /// in: neither heap's collections would see the reference.
    #[inline]
    pub fn set(&self, v: Option<&Root<'_, T>>) {
        match v {
            Some(r) => {
                assert!(
                    r.m.heap.collector.raw.arena.contains(self.addr_of()),
                    "Member::set with an object of another heap than the member's"
                );
                // The card is dirtied before the store (the release store
                // keeps it first), while `r` still roots the object.
                r.m.write_barrier(&self.word as *const AtomicUsize as usize);
                // On a concurrent heap, with the deletion barrier (see
                // `barrier`).
                r.m.heap
                    .collector
                    .store_ref(r.m.attached(), &self.word, r.addr());
            }
            // No mutator at hand: the barrier finds the heap by address.
            None => crate::mark::barrier::store_anywhere(&self.word, 0),
        }
    }

    /// Where this field lives.
    fn addr_of(&self) -> usize {
        &self.word as *const AtomicUsize as usize
    }

    /// The raw address the field holds (0 when null). Reading it creates no
    /// root: the address stays valid only while something else keeps the
    /// object reachable (pardon never moves objects).
    #[inline]
    pub fn addr(&self) -> usize {
        self.word.load(Ordering::Acquire)
    }

    /// Whether the field is null.
    pub fn is_null(&self) -> bool {
        self.word.load(Ordering::Relaxed) == 0
    }

    /// Whether the field references `r`'s object.
    pub fn is(&self, r: &Root<'_, T>) -> bool {
        self.word.load(Ordering::Relaxed) == r.addr()
    }
}

/// A Rust type the collector can allocate: implemented by [`gc_object!`](crate::gc_object!).
///
/// # Safety
/// `layout` must describe the type exactly: its size and alignment, and every
/// word holding a [`Member`]; every field must be valid all-zero.
pub unsafe trait GcObject: Sized + 'static {
    /// The registered layout.
    fn gc_type() -> Type;
}

#[doc(hidden)]
pub fn __register<T>(name: &'static str, refs: Vec<usize>) -> Type {
    crate::types::register(&TypeDesc {
        name,
        size: std::mem::size_of::<T>(),
        align: std::mem::align_of::<T>(),
        pointer_words: &refs,
    })
    .unwrap_or_else(|e| panic!("gc_object!: {e}"))
}

/// Declares a struct the collector can allocate, deriving its pointer layout.
/// Every field must be a [`Member`] (or an array of them) or [`ZeroValid`]
/// plain data; anything else fails to compile.
///
/// ```
/// use std::sync::atomic::{AtomicI64, Ordering};
/// use pardon::{gc_object, Config, Heap, Member};
///
/// gc_object! {
///     /// A binary tree node.
///     pub struct Node {
///         pub left: Member<Node>,
///         pub right: Member<Node>,
///         pub value: AtomicI64,
///     }
/// }
///
/// let heap = Heap::new(Config::default()).unwrap();
/// let m = heap.attach().unwrap();
/// let root = m.alloc::<Node>().unwrap();
/// let child = m.alloc::<Node>().unwrap();
/// child.value.store(7, Ordering::Relaxed);
/// root.left.set(Some(&child));
/// drop(child);
/// m.collect().unwrap();
/// let again = root.left.get(&m).unwrap();
/// assert_eq!(again.value.load(Ordering::Relaxed), 7);
/// ```
#[macro_export]
macro_rules! gc_object {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($(#[$fmeta:meta])* $fvis:vis $field:ident : $fty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        $vis struct $name { $($(#[$fmeta])* $fvis $field: $fty),* }

        // SAFETY: the layout is derived from the struct itself: size and
        // alignment from `size_of`/`align_of`, reference words from each
        // field's `GcField` impl at its `offset_of!`; `GcField` requires
        // every field to be valid all-zero.
        unsafe impl $crate::GcObject for $name {
            fn gc_type() -> $crate::Type {
                static TYPE: ::std::sync::OnceLock<$crate::Type> = ::std::sync::OnceLock::new();
                if let ::std::option::Option::Some(t) = TYPE.get() {
                    return *t;
                }
                // The first call registers the type. A goroutine switched
                // out inside the initialisation would leave the next
                // goroutine of its worker to ask waiting for it, blocking
                // the only thread that can finish it: no yields here.
                let _no_yield = $crate::preempt::no_yield_here();
                *TYPE.get_or_init(|| {
                    let mut refs = ::std::vec::Vec::new();
                    $(
                        <$fty as $crate::GcField>::ref_words(
                            ::std::mem::offset_of!($name, $field) / 8, &mut refs);
                    )*
                    $crate::__register::<$name>(stringify!($name), refs)
                })
            }
        }
    };
}

/// A rooted reference to a `T`, valid on its mutator's thread for as long as
/// it exists. Dereferences to `&T`.
pub struct Root<'m, T: GcObject> {
    m: &'m Mutator,
    slot: usize,
    ptr: NonNull<T>,
}

impl<'m, T: GcObject> Root<'m, T> {
    /// Roots the object at `addr`.
    ///
    /// # Safety
    /// `addr` must be the address of a live `T` in `m`'s heap.
    pub(crate) unsafe fn from_addr(m: &'m Mutator, addr: usize) -> Root<'m, T> {
        let slot = m.push_handle(addr);
        // SAFETY: caller contract.
        unsafe { Root::from_parts(m, slot, addr) }
    }

    /// A root over handle `slot`, which holds `addr`.
    ///
    /// # Safety
    /// `addr` must be the address of a live `T` in `m`'s heap, held by
    /// `m`'s handle `slot`, which the new root then owns.
    pub(crate) unsafe fn from_parts(m: &'m Mutator, slot: usize, addr: usize) -> Root<'m, T> {
        // SAFETY: caller contract: a live object's address is non-null.
        let ptr = unsafe { NonNull::new_unchecked(addr as *mut T) };
        Root { m, slot, ptr }
    }

    /// The object's address.
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// The mutator this root is on.
    pub fn mutator(&self) -> &'m Mutator {
        self.m
    }

    /// Whether two roots reference the same object.
    pub fn ptr_eq(&self, other: &Root<'_, T>) -> bool {
        self.addr() == other.addr()
    }
}

impl<T: GcObject> Deref for Root<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the handle slot keeps the object alive and unmoved (the heap
        // never moves objects) for as long as `self`, which this borrow
        // cannot outlive.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: GcObject> Clone for Root<'_, T> {
    fn clone(&self) -> Self {
        // SAFETY: our own root keeps the object live meanwhile.
        unsafe { Root::from_addr(self.m, self.addr()) }
    }
}

impl<T: GcObject> Drop for Root<'_, T> {
    fn drop(&mut self) {
        self.m.pop_handle(self.slot);
    }
}

impl<T: GcObject> fmt::Debug for Root<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Root({:#x})", self.addr())
    }
}

impl Mutator {
    /// Allocates a zeroed `T` and roots it.
    #[inline]
    pub fn alloc<T: GcObject>(&self) -> Result<Root<'_, T>, AllocError> {
        let (slot, addr) = self.alloc_rooted(T::gc_type())?;
        // SAFETY: a fresh, zeroed (hence valid) T in this heap, rooted.
        Ok(unsafe { Root::from_parts(self, slot, addr) })
    }
}

/// A global root: keeps a `T` alive and lets any thread attached to the same
/// heap reach it. `Send`/`Sync` exactly when `T` is `Sync`.
pub struct Global<T: GcObject> {
    heap: Heap,
    id: GlobalRootId,
    _t: PhantomData<fn() -> T>,
}

// SAFETY: a Global only hands out Roots on the caller's own thread; sharing
// the object between threads is sound when T is Sync.
unsafe impl<T: GcObject + Sync> Send for Global<T> {}
// SAFETY: as above.
unsafe impl<T: GcObject + Sync> Sync for Global<T> {}

impl<T: GcObject> Global<T> {
    /// A global root for `r`'s object.
    pub fn new(r: &Root<'_, T>) -> Result<Global<T>, crate::RootTableFull> {
        let heap = r.m.heap().clone();
        let id = heap.add_root(r.addr())?;
        Ok(Global {
            heap,
            id,
            _t: PhantomData,
        })
    }

    /// A global root of `heap` that holds nothing yet (see
    /// [`Global::set`]).
    pub fn empty(heap: &Heap) -> Result<Global<T>, crate::RootTableFull> {
        let id = heap.add_root(0)?;
        Ok(Global {
            heap: heap.clone(),
            id,
            _t: PhantomData,
        })
    }

    /// The object, rooted on `m`'s thread, or `None` if the global is
    /// empty.
    ///
    /// # Panics
    /// If `m` is a mutator of another heap.
    pub fn get<'m>(&self, m: &'m Mutator) -> Option<Root<'m, T>> {
        assert!(
            std::sync::Arc::ptr_eq(&self.heap.collector, &m.heap().collector),
            "Global::get with a mutator of another heap"
        );
        let (slot, v) = m.root_found(|| self.heap.root_value(&self.id))?;
        // SAFETY: the global root kept the object live until it was rooted.
        Some(unsafe { Root::from_parts(m, slot, v) })
    }

    /// Points the global at `r`'s object, or empties it.
    ///
    /// # Panics
    /// If `r` is an object of another heap.
    pub fn set(&self, r: Option<&Root<'_, T>>) {
        let addr = match r {
            Some(r) => {
                assert!(
                    std::sync::Arc::ptr_eq(&self.heap.collector, &r.m.heap().collector),
                    "Global::set with an object of another heap"
                );
                r.addr()
            }
            None => 0,
        };
        self.heap.set_root(&self.id, addr);
    }

    /// Whether the global holds nothing.
    pub fn is_empty(&self) -> bool {
        self.heap.root_value(&self.id) == 0
    }
}

impl<T: GcObject> Drop for Global<T> {
    fn drop(&mut self) {
        // The global's own id, never used again.
        self.heap.remove_root_of_dropped(&self.id);
    }
}
