//! The generational write barrier's card table (see `arena` for its layout).

use std::sync::atomic::Ordering::Relaxed;

use crate::heap::RawHeap;

impl RawHeap {
    /// The write barrier of generational mode: call it with the address of a
    /// heap word *before* storing a reference into it (or with any address in
    /// the same 512-byte card). It marks the card dirty, so the next minor
    /// collection rescans the old objects on it. Two instructions and a
    /// store; addresses outside the arena are ignored. A no-op in effect when
    /// the heap is not generational.
    ///
    /// Why before: a thread may be stopped between the two stores. Barrier
    /// first, and a collection in between finds the reference still in the
    /// storing thread's registers or stack (it is about to be stored), marks
    /// it, and leaves an old-to-old edge. Store first, and the reference may
    /// already be gone from the thread's registers when the collection finds
    /// a clean card.
    #[inline(always)]
    pub fn write_barrier(&self, slot: usize) {
        self.arena.dirty_card(slot);
    }

    /// Clears the card table over the used part of the arena. Stopped world
    /// only.
    pub(crate) fn clear_cards(&self) {
        for w in self.arena.card_words(self.pages.stats().used_pages) {
            if w.load(Relaxed) != 0 {
                w.store(0, Relaxed);
            }
        }
    }
}
