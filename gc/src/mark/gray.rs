//! Gray stacks: the objects marked but not yet scanned, one stack a
//! marking thread (and one more for what the barrier shades: the heap's
//! shaded queue), each in its own `MAP_NORESERVE` mapping so pushing never
//! calls the system allocator — not even inside a mutator's no-preempt
//! region. A push onto a full stack drops the entry and records the
//! overflow (the object stays marked; `Marker::complete` rescans the heap
//! for such objects).

use memmap2::{MmapMut, MmapOptions};

use super::tracer::Tracer;
use crate::heap::RawHeap;

pub(crate) struct GrayStack {
    /// `cap` words, committed by the kernel as they are first touched.
    pub(super) map: MmapMut,
    /// Entries the mapping holds; fixed at creation.
    pub(super) cap: usize,
    /// Entries in use: the first `len` words are object bases, `len <= cap`.
    pub(super) len: usize,
    /// An entry was dropped because the stack was full: set by `push` (and
    /// by `spill_into`), cleared only by whoever recovers (the heap rescan)
    /// or starts afresh.
    pub(super) overflowed: bool,
}

impl GrayStack {
    pub fn new(cap: usize) -> std::io::Result<GrayStack> {
        let map = MmapOptions::new()
            .len(cap * 8)
            .no_reserve_swap()
            .map_anon()?;
        Ok(GrayStack {
            map,
            cap,
            len: 0,
            overflowed: false,
        })
    }

    #[inline(always)]
    pub(super) fn slots(&mut self) -> *mut usize {
        self.map.as_mut_ptr() as *mut usize
    }

    #[inline(always)]
    pub(super) fn push(&mut self, v: usize) {
        if self.len == self.cap {
            self.overflowed = true;
            return;
        }
        // SAFETY: `len < cap` and the mapping holds `cap` words.
        unsafe { *self.slots().add(self.len) = v };
        self.len += 1;
    }

    #[inline(always)]
    pub(super) fn pop(&mut self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: `len < cap` after the decrement.
        Some(unsafe { *self.slots().add(self.len) })
    }

    /// Moves the bottom `k` entries of `self` onto the top of `to` (which has
    /// room for them), and shifts the rest down.
    pub(super) fn give_bottom(&mut self, to: &mut GrayStack, k: usize) {
        debug_assert!(k <= self.len && to.len + k <= to.cap);
        let src = self.slots();
        let dst = to.slots();
        // SAFETY: `k <= self.len` entries are read from the start of our
        // mapping and written after `to.len` in `to`'s mapping, which has
        // room (checked by the caller); the two mappings are distinct. The
        // shift moves `len - k` initialised entries within our mapping
        // (`copy` allows overlap).
        unsafe {
            std::ptr::copy_nonoverlapping(src, dst.add(to.len), k);
            std::ptr::copy(src.add(k), src, self.len - k);
        }
        to.len += k;
        self.len -= k;
    }

    /// Moves up to `k` entries from the top of `self` onto `to`, as room
    /// allows; returns how many.
    pub(crate) fn give_some(&mut self, to: &mut GrayStack, k: usize) -> usize {
        let k = k.min(self.len).min(to.cap - to.len);
        self.give_top(to, k);
        k
    }

    /// Moves every entry onto `to`. What does not fit is dropped and
    /// recorded as `to`'s overflow (the objects stay marked: the overflow
    /// rescan finds them), as is an overflow of `self`, which is cleared.
    pub(crate) fn spill_into(&mut self, to: &mut GrayStack) {
        self.give_some(to, self.len);
        // Left over (no room): dropped, so recorded as `to`'s overflow.
        let dropped = self.len > 0;
        if std::mem::take(&mut self.overflowed) || dropped {
            to.overflowed = true;
        }
        self.len = 0;
    }

    /// Empties the stack and forgets its overflow.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.overflowed = false;
    }

    /// Whether the stack holds no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Moves the top `k` entries of `self` onto `to`.
    pub(super) fn give_top(&mut self, to: &mut GrayStack, k: usize) {
        debug_assert!(k <= self.len && to.len + k <= to.cap);
        let src = self.slots();
        let dst = to.slots();
        // SAFETY: `k <= self.len` initialised entries below `self.len` are
        // copied after `to.len` in a distinct mapping with room for them.
        unsafe { std::ptr::copy_nonoverlapping(src.add(self.len - k), dst.add(to.len), k) };
        to.len += k;
        self.len -= k;
    }
}

impl GrayStack {
    /// A mutator assist's marking (see `assist`): scans from this stack,
    /// with the concurrent mark's atomic mark bits, until it is empty or
    /// about `budget` bytes are marked; returns the bytes marked.
    pub(crate) fn drain_assist(&mut self, heap: &RawHeap, budget: usize) -> usize {
        let mut t = Tracer {
            heap,
            gray: self,
            objects: 0,
            bytes: 0,
        };
        t.drain::<true>(None, |t| t.bytes >= budget);
        t.bytes
    }
}

#[cfg(test)]
mod tests {
    //! Moves between stacks against a model (vectors), over every length
    //! and room up to a few entries: what arrives, in what order, and when
    //! an overflow must be recorded.

    use super::GrayStack;

    fn stack(cap: usize, entries: &[usize]) -> GrayStack {
        let mut s = GrayStack::new(cap).unwrap();
        for &e in entries {
            s.push(e);
        }
        s
    }

    fn contents(s: &mut GrayStack) -> Vec<usize> {
        let mut v = Vec::new();
        while let Some(e) = s.pop() {
            v.push(e);
        }
        v.reverse();
        v
    }

    #[test]
    fn spilling_keeps_what_fits_and_records_what_does_not() {
        for from_len in 0..6 {
            for to_cap in 1..6 {
                for to_len in 0..=to_cap {
                    for from_overflowed in [false, true] {
                        let ours: Vec<usize> = (100..100 + from_len).collect();
                        let theirs: Vec<usize> = (0..to_len).collect();
                        let mut from = stack(8, &ours);
                        from.overflowed = from_overflowed;
                        let mut to = stack(to_cap, &theirs);
                        from.spill_into(&mut to);
                        let room = to_cap - to_len;
                        let moved = from_len.min(room);
                        // The model: the top `moved` of ours, in order, on
                        // top of theirs; an overflow iff something was
                        // left over or ours had overflowed.
                        let mut want = theirs.clone();
                        want.extend(&ours[from_len - moved..]);
                        let case = format!(
                            "from {from_len} (overflowed {from_overflowed}), to {to_len}/{to_cap}"
                        );
                        assert_eq!(from.len, 0, "{case}");
                        assert!(!from.overflowed, "{case}");
                        assert_eq!(to.overflowed, moved < from_len || from_overflowed, "{case}");
                        assert_eq!(contents(&mut to), want, "{case}");
                    }
                }
            }
        }
    }

    #[test]
    fn giving_some_moves_at_most_what_was_asked_and_fits() {
        for from_len in 0..6 {
            for to_cap in 1..6 {
                for to_len in 0..=to_cap {
                    for k in 0..7 {
                        let ours: Vec<usize> = (100..100 + from_len).collect();
                        let mut from = stack(8, &ours);
                        let mut to = stack(to_cap, &(0..to_len).collect::<Vec<_>>());
                        let n = from.give_some(&mut to, k);
                        let want = k.min(from_len).min(to_cap - to_len);
                        assert_eq!(n, want);
                        assert_eq!(from.len, from_len - want);
                        assert_eq!(to.len, to_len + want);
                        assert!(!to.overflowed && !from.overflowed);
                        let moved = &ours[from_len - want..];
                        assert_eq!(&contents(&mut to)[to_len..], moved);
                        assert_eq!(contents(&mut from), &ours[..from_len - want]);
                    }
                }
            }
        }
    }
}
