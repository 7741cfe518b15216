//! Size classes, generated at compile time.
//!
//! A candidate object size steps by 8 bytes below 32, by 16 below 128, and
//! then by the largest power of two (at least 16) not above size/16, so
//! neighbouring classes are about 6% apart. Each candidate gets the smallest
//! span (in 8 KiB pages) whose tail waste — the bytes left over after the last
//! whole object — is at most 12.5% of the span. When a candidate gets the same
//! span size *and* the same object count as the class before it, it replaces
//! that class (a larger object in the same slots is strictly better), as Go's
//! `mksizeclasses.go` does. The result is [`NUM_CLASSES`] classes from 8 bytes
//! to 32 KiB; larger objects get a span of their own (class 0).
//!
//! Each class also carries Go's `divMul`, `u32::MAX / size + 1`, so that an
//! offset's object index is `(offset * div_mul) >> 32`, exact for every offset
//! inside the span (a test checks every offset of every class).

/// Bytes per page.
pub const PAGE_SIZE: usize = 8192;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: usize = 13;
/// The largest object served from a size class.
pub const MAX_SMALL_SIZE: usize = 32768;
/// The most objects a span holds (8-byte objects in one page).
pub const MAX_OBJS_PER_SPAN: usize = PAGE_SIZE / 8;

const MAX_CLASSES: usize = 96;

/// One size class. Class 0 is "large" and has no entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeClass {
    /// Object size in bytes.
    pub size: u32,
    /// Pages per span.
    pub npages: u32,
    /// Objects per span.
    pub nelems: u32,
    /// `u32::MAX / size + 1`.
    pub div_mul: u32,
}

const fn generate() -> ([SizeClass; MAX_CLASSES], usize) {
    let empty = SizeClass {
        size: 0,
        npages: 0,
        nelems: 0,
        div_mul: 0,
    };
    let mut out = [empty; MAX_CLASSES];
    let mut n = 1; // class 0 is the large class
    let mut size = 8usize;
    while size <= MAX_SMALL_SIZE {
        let mut np = 1;
        loop {
            let span = np * PAGE_SIZE;
            if span % size <= span / 8 {
                break;
            }
            np += 1;
        }
        let nelems = np * PAGE_SIZE / size;
        let c = SizeClass {
            size: size as u32,
            npages: np as u32,
            nelems: nelems as u32,
            div_mul: (u32::MAX / size as u32).wrapping_add(1),
        };
        if n > 1 && out[n - 1].npages == c.npages && out[n - 1].nelems == c.nelems {
            out[n - 1] = c;
        } else {
            out[n] = c;
            n += 1;
        }
        let step = if size < 32 {
            8
        } else if size < 128 {
            16
        } else {
            let mut p = 16;
            while p * 2 <= size / 16 {
                p *= 2;
            }
            p
        };
        size += step;
    }
    (out, n)
}

const GENERATED: ([SizeClass; MAX_CLASSES], usize) = generate();

/// Number of size classes, class 0 (large) included.
pub const NUM_CLASSES: usize = GENERATED.1;
/// Number of span classes: each size class with and without the no-scan bit.
pub const NUM_SPAN_CLASSES: usize = NUM_CLASSES * 2;

/// The class table; entry 0 is the large class (all zero).
pub static CLASSES: [SizeClass; MAX_CLASSES] = GENERATED.0;

const SMALL_LOOKUP_MAX: usize = 1024;
const fn lookup_small() -> [u8; SMALL_LOOKUP_MAX / 8 + 1] {
    let mut t = [0u8; SMALL_LOOKUP_MAX / 8 + 1];
    let mut i = 0;
    let mut c = 1;
    while i < t.len() {
        let size = i * 8;
        while (GENERATED.0[c].size as usize) < size {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
}
const fn lookup_large() -> [u8; (MAX_SMALL_SIZE - SMALL_LOOKUP_MAX) / 64 + 1] {
    let mut t = [0u8; (MAX_SMALL_SIZE - SMALL_LOOKUP_MAX) / 64 + 1];
    let mut i = 0;
    let mut c = 1;
    while i < t.len() {
        let size = SMALL_LOOKUP_MAX + i * 64;
        while (GENERATED.0[c].size as usize) < size {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
}
static SIZE_TO_CLASS_8: [u8; SMALL_LOOKUP_MAX / 8 + 1] = lookup_small();
static SIZE_TO_CLASS_64: [u8; (MAX_SMALL_SIZE - SMALL_LOOKUP_MAX) / 64 + 1] = lookup_large();

/// The smallest size class whose objects hold `size` bytes, or 0 (large) for
/// sizes above [`MAX_SMALL_SIZE`]. `size` 0 maps to the smallest class.
#[inline(always)]
pub fn size_to_class(size: usize) -> usize {
    if size <= SMALL_LOOKUP_MAX {
        SIZE_TO_CLASS_8[size.div_ceil(8)] as usize
    } else if size <= MAX_SMALL_SIZE {
        SIZE_TO_CLASS_64[(size - SMALL_LOOKUP_MAX).div_ceil(64)] as usize
    } else {
        0
    }
}

/// A span class: a size class and the no-scan bit.
#[inline(always)]
pub const fn span_class(size_class: usize, noscan: bool) -> usize {
    size_class << 1 | noscan as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shape() {
        assert!((60..=76).contains(&NUM_CLASSES), "{NUM_CLASSES} classes");
        assert_eq!(CLASSES[1].size, 8);
        assert_eq!(CLASSES[NUM_CLASSES - 1].size as usize, MAX_SMALL_SIZE);
        for c in 2..NUM_CLASSES {
            assert!(CLASSES[c].size > CLASSES[c - 1].size);
        }
        for (c, &k) in CLASSES.iter().enumerate().take(NUM_CLASSES).skip(1) {
            let span = k.npages as usize * PAGE_SIZE;
            assert_eq!(k.nelems as usize, span / k.size as usize);
            assert!(
                span % k.size as usize <= span / 8,
                "class {c} wastes too much"
            );
            assert!(k.nelems as usize <= MAX_OBJS_PER_SPAN);
            assert_eq!(k.size % 8, 0);
            if k.size > 1024 {
                assert_eq!(
                    k.size % 64,
                    0,
                    "the lookup table above 1 KiB has 64-byte steps"
                );
            }
            if k.size >= 32 {
                assert_eq!(k.size % 16, 0, "class {c} is 16-byte aligned");
            }
        }
    }

    #[test]
    fn every_size_maps_to_smallest_fitting_class() {
        for size in 0..=MAX_SMALL_SIZE {
            let c = size_to_class(size);
            assert!((1..NUM_CLASSES).contains(&c), "size {size}");
            assert!(
                CLASSES[c].size as usize >= size,
                "size {size} does not fit class {c}"
            );
            assert!(
                c == 1 || (CLASSES[c - 1].size as usize) < size,
                "size {size}: class {} also fits",
                c - 1
            );
        }
        assert_eq!(size_to_class(MAX_SMALL_SIZE + 1), 0);
    }

    #[test]
    fn div_mul_is_exact_for_every_offset() {
        for (c, &k) in CLASSES.iter().enumerate().take(NUM_CLASSES).skip(1) {
            let span = k.npages as u64 * PAGE_SIZE as u64;
            for off in 0..span {
                let idx = (off * k.div_mul as u64) >> 32;
                assert_eq!(idx, off / k.size as u64, "class {c} offset {off}");
            }
        }
    }
}
