//! Heap bits: one bit per arena word, set for words that hold references,
//! written at allocation from the type's pointer bitmap (Go's heap bitmap).
//! Marking reads nothing else to find an object's references.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use crate::heap::RawHeap;
use crate::types::Type;

pub(crate) fn extract_bits(bits: &[u64], i: usize, take: usize) -> u64 {
    let lo = bits.get(i / 64).copied().unwrap_or(0) >> (i % 64);
    let hi = if !i.is_multiple_of(64) {
        bits.get(i / 64 + 1).copied().unwrap_or(0) << (64 - i % 64)
    } else {
        0
    };
    let v = lo | hi;
    if take >= 64 {
        v
    } else {
        v & ((1u64 << take) - 1)
    }
}

/// Replaces the `nwords` bits at `off` in one heap-bits word with the low
/// bits of `src`.
#[inline(always)]
pub(crate) fn set_bits(word: &AtomicU64, off: usize, nwords: usize, src: u64) {
    let mask = low_bits(nwords) << off;
    word.store((word.load(Relaxed) & !mask) | (src << off), Relaxed);
}

/// The low `n` bits set (`n` up to 64).
#[inline(always)]
pub(crate) fn low_bits(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

impl RawHeap {
    /// Writes the heap bits of a slot: `count` copies of the type's pointer
    /// bitmap, then zeros to the end of the slot.
    #[inline]
    pub(crate) fn write_heap_bits(&self, addr: usize, slot: usize, ty: Type, count: usize) {
        let w0 = (addr - self.arena.base) / 8;
        let tw = ty.size() / 8;
        let nwords = slot / 8;
        let off = w0 % 64;
        if count == 1 && off + nwords <= 64 && tw <= 64 {
            // The common case: one object whose slot lies in one bitmap word.
            // (Slots of sizes that do not divide 512 may straddle a 512-byte
            // boundary however small they are: those take the slow path.)
            set_bits(self.arena.bits_word(w0), off, nwords, ty.0.bits0);
            return;
        }
        self.write_heap_bits_slow(w0, nwords, ty, tw, count);
    }

    #[cold]
    pub(crate) fn write_heap_bits_slow(
        &self,
        w0: usize,
        nwords: usize,
        ty: Type,
        tw: usize,
        count: usize,
    ) {
        let bits = &ty.0.ptr_bits;
        let mut i = 0;
        while i < nwords {
            let w = w0 + i;
            let off = w % 64;
            // Within one element of the pattern, take at most up to its end.
            let (elem, in_elem) = i.checked_div(tw).map_or((usize::MAX, 0), |e| (e, i % tw));
            let mut take = (64 - off).min(nwords - i);
            let src = if elem < count {
                take = take.min(tw - in_elem);
                extract_bits(bits, in_elem, take)
            } else {
                0
            };
            let mask = if take == 64 {
                u64::MAX
            } else {
                ((1u64 << take) - 1) << off
            };
            let word = self.arena.bits_word(w);
            word.store((word.load(Relaxed) & !mask) | (src << off), Relaxed);
            i += take;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_bits_across_words() {
        let b = [0xF000_0000_0000_000Fu64, 0x3];
        assert_eq!(extract_bits(&b, 0, 4), 0xF);
        assert_eq!(extract_bits(&b, 60, 6), 0b11_1111);
        assert_eq!(extract_bits(&b, 62, 4), 0b1111);
        assert_eq!(extract_bits(&b, 64, 64), 0x3);
        assert_eq!(extract_bits(&b, 200, 10), 0);
    }
}
