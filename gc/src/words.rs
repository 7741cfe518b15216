//! The words of raw objects: what a reference word may hold, and accessors
//! so an embedder (an interpreter, say) reads and writes object words
//! without casting pointers by hand.
//!
//! ## What a reference word may hold
//!
//! A raw type lists its reference words ([`TypeDesc::pointer_words`]). The
//! mark resolves each such word *exactly*, through the same lookup a
//! conservative root goes through ([`RawHeap::find_object`]): the word is
//! looked up in the arena's page table, its span must be in use, and the
//! slot it falls in must be allocated. So a reference word may hold
//! anything:
//!
//! - **null** (0) or any other address outside the arena: ignored;
//! - **a pointer to an object's base**: keeps the object alive;
//! - **an interior pointer**, anywhere inside the object's slot (one past
//!   the object's last byte but inside its slot included): keeps the whole
//!   object alive, as a base pointer would;
//! - **a tagged integer or any other non-reference value**: ignored unless
//!   it happens to fall inside an allocated object, which it then keeps
//!   alive (false retention: a leak until the value changes, never a
//!   corruption, since nothing is ever written through a reference word
//!   and objects never move). Interpreters that tag small integers with a
//!   set low bit and keep objects 8-byte aligned can rely on a tagged
//!   integer resolving, at worst, to such retention.
//!
//! Words that are *not* listed as references are never looked at: an
//! object's only reference to another must sit in a listed word (or a
//! root), or the other object is freed.
//!
//! ## Stores and the write barrier
//!
//! [`Mutator::store_word`] runs the barriers: the deletion barrier of
//! concurrent marking (see [`Config::concurrent`](crate::Config::concurrent)),
//! and the generational write barrier before every
//! store (a range check and a byte store; without
//! [`Config::generational`](crate::Config::generational) only the range
//! check), so raw code needs nothing more. Loads and stores are atomic
//! (relaxed loads are acquire, stores release, as [`Member`](crate::Member)
//! does), so objects shared between threads are free of data races at the
//! word level.
//!
//! [`TypeDesc::pointer_words`]: crate::TypeDesc::pointer_words

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::heap::RawHeap;
use crate::mutator::Mutator;

/// Why a word access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WordError {
    /// The address is not inside an allocated object of this heap.
    NotAnObject {
        /// The address given.
        addr: usize,
    },
    /// The word index is past the object's slot.
    OutOfBounds {
        /// The index given.
        index: usize,
        /// The words the object's slot holds.
        words: usize,
    },
}

impl fmt::Display for WordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WordError::NotAnObject { addr } => write!(
                f,
                "{addr:#x} is not inside an allocated object of this heap"
            ),
            WordError::OutOfBounds { index, words } => write!(
                f,
                "word {index} is past the end of an object of {words} words"
            ),
        }
    }
}

impl std::error::Error for WordError {}

impl RawHeap {
    /// The word `index` of the object containing `obj` (any address inside
    /// it; words count from the object's base), checked.
    fn word_of(&self, obj: usize, index: usize) -> Result<&AtomicUsize, WordError> {
        let (base, span, _) = self.find(obj).ok_or(WordError::NotAnObject { addr: obj })?;
        let words = span.elemsize() / 8;
        if index >= words {
            return Err(WordError::OutOfBounds { index, words });
        }
        // SAFETY: `base` is an allocated object's slot of `words` aligned
        // words inside the arena, which stays mapped while the heap lives;
        // every access to heap words through this API is atomic.
        Ok(unsafe { &*((base + index * 8) as *const AtomicUsize) })
    }
}

impl Mutator {
    /// Loads word `index` of the object containing `obj`. The object must
    /// be live (reachable, or its address held where the collector sees it)
    /// for the result to mean anything; an address that no longer names an
    /// allocated object is an error, never undefined behaviour. Costs one
    /// lookup (the one the mark uses).
    pub fn load_word(&self, obj: usize, index: usize) -> Result<usize, WordError> {
        let w = self.heap.collector.raw.word_of(obj, index)?;
        Ok(w.load(Ordering::Acquire))
    }

    /// Stores `value` into word `index` of the object containing `obj`,
    /// running the barriers first (see the module comment). The address and
    /// index are checked as for [`Mutator::load_word`]. If the word is a
    /// reference word, `value` must be held elsewhere until the store (a
    /// handle, a frame slot, this thread's registers or stack).
    ///
    /// # Safety
    /// The object's own invariants are the caller's: in an object of a
    /// [`gc_object!`](crate::gc_object!) type, a [`Member`](crate::Member)
    /// word must hold null or the address of a live object of its type, and
    /// other fields only what their type allows (safe code reads them
    /// through `&T`). Raw objects, whose words only raw code reads, take any
    /// value.
    pub unsafe fn store_word(
        &self,
        obj: usize,
        index: usize,
        value: usize,
    ) -> Result<(), WordError> {
        let w = self.heap.collector.raw.word_of(obj, index)?;
        self.write_barrier(w as *const AtomicUsize as usize);
        self.heap.collector.store_ref(self.attached(), w, value);
        Ok(())
    }

    /// [`Mutator::load_word`] without the lookup.
    ///
    /// # Safety
    /// `obj` must be the base of a live object of this heap with more than
    /// `index` words.
    #[inline]
    pub unsafe fn load_word_unchecked(&self, obj: usize, index: usize) -> usize {
        // SAFETY: caller contract: an aligned word inside a live object.
        unsafe { &*((obj + index * 8) as *const AtomicUsize) }.load(Ordering::Acquire)
    }

    /// [`Mutator::store_word`] without the lookup (the write barrier still
    /// runs).
    ///
    /// # Safety
    /// As [`Mutator::load_word_unchecked`].
    #[inline]
    pub unsafe fn store_word_unchecked(&self, obj: usize, index: usize, value: usize) {
        let slot = obj + index * 8;
        self.write_barrier(slot);
        // SAFETY: caller contract: an aligned word inside a live object.
        let w = unsafe { &*(slot as *const AtomicUsize) };
        self.heap.collector.store_ref(self.attached(), w, value);
    }
}
