//! Type layouts: what marking needs to know about an object.
//!
//! An embedder describes a type once ([`TypeDesc`]): its size, alignment,
//! which 8-byte words hold heap references, and a name for diagnostics. The
//! heap turns it into a [`Type`]: a `Copy` handle to an immutable layout that
//! lives as long as the process (types are few and permanent, like classes in
//! a language runtime).
//!
//! **How marking finds an object's layout.** At allocation the type's pointer
//! bitmap is copied into the *heap bits* (one bit per arena word, see
//! `arena`), and objects without pointers go to no-scan spans that marking
//! never scans. No header word: for binary-trees' 16-byte two-pointer node a
//! header would cost 50% more memory (it would need the 24-byte class), and
//! the bits cost 1/64 of the scanned heap. `docs/design.md` has the
//! measurements behind the choice.

use std::fmt;

use crate::sizeclass::{size_to_class, span_class, CLASSES, MAX_SMALL_SIZE};

/// The most pointer words a single type may describe.
pub const MAX_TYPE_WORDS: usize = 1 << 32;

/// An embedder's description of a type.
#[derive(Clone, Debug)]
pub struct TypeDesc<'a> {
    /// Name, for diagnostics.
    pub name: &'a str,
    /// Size in bytes (0 is allowed: such objects take the smallest slot).
    pub size: usize,
    /// Alignment: a power of two, at most 4096.
    pub align: usize,
    /// Offsets (in 8-byte words) of the fields that hold heap references.
    /// Each may hold null, a base or interior pointer, or any other value
    /// (a tagged integer, say): see [`words`](crate::words) for how the
    /// mark resolves them, and for word accessors.
    pub pointer_words: &'a [usize],
}

/// A registered type. Cheap to copy.
#[derive(Clone, Copy)]
pub struct Type(pub(crate) &'static TypeInfo);

pub(crate) struct TypeInfo {
    pub name: String,
    pub size: usize,
    pub align: usize,
    /// One bit per word of the object, set for reference words.
    pub ptr_bits: Vec<u64>,
    pub noscan: bool,
    /// The span class one object of this type is allocated in, or
    /// [`NOT_SMALL`] for large or over-aligned types.
    pub small_spc: usize,
    /// `small_spc` if its objects are at most 64 bytes (the inlined
    /// allocation fast path's case), else [`NOT_SMALL`].
    pub tiny_spc: usize,
    /// `ptr_bits[0]`, restricted to the type's words.
    pub bits0: u64,
    /// The reference words as the embedder listed them, sorted: what verify
    /// mode checks heap bits against, independently of `ptr_bits`/`bits0`.
    pub pointer_words: Box<[usize]>,
}

/// `TypeInfo::small_spc` of a type allocated as a large object.
pub(crate) const NOT_SMALL: usize = usize::MAX;

impl Type {
    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.0.size
    }
    /// Alignment in bytes.
    pub fn align(&self) -> usize {
        self.0.align
    }
    /// Name.
    pub fn name(&self) -> &str {
        &self.0.name
    }
    /// Whether the type holds no references (its objects are never scanned).
    pub fn is_noscan(&self) -> bool {
        self.0.noscan
    }
    /// Whether word `w` of the object holds a reference.
    pub fn is_pointer_word(&self, w: usize) -> bool {
        self.0
            .ptr_bits
            .get(w / 64)
            .is_some_and(|b| b & (1 << (w % 64)) != 0)
    }
}

impl fmt::Debug for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Type({}, {} bytes)", self.0.name, self.0.size)
    }
}

/// A type description that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeError(pub String);

impl fmt::Display for TypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid type: {}", self.0)
    }
}
impl std::error::Error for TypeError {}

/// Validates a description and leaks an immutable layout for it.
pub(crate) fn register(desc: &TypeDesc<'_>) -> Result<Type, TypeError> {
    let name = desc.name;
    if !desc.align.is_power_of_two() || desc.align > 4096 {
        return Err(TypeError(format!(
            "{name}: align {} is not a power of two up to 4096",
            desc.align
        )));
    }
    if !desc.size.is_multiple_of(desc.align) {
        return Err(TypeError(format!(
            "{name}: size {} is not a multiple of align {}",
            desc.size, desc.align
        )));
    }
    let words = desc.size.div_ceil(8);
    if words > MAX_TYPE_WORDS {
        return Err(TypeError(format!(
            "{name}: size {} is too large",
            desc.size
        )));
    }
    let mut bits = vec![0u64; words.div_ceil(64).max(1)];
    for &w in desc.pointer_words {
        // `w >= size / 8` rather than `(w + 1) * 8 > size`, which overflows
        // for huge `w`.
        if w >= desc.size / 8 {
            return Err(TypeError(format!(
                "{name}: pointer word {w} lies outside the {}-byte object",
                desc.size
            )));
        }
        if bits[w / 64] & (1 << (w % 64)) != 0 {
            return Err(TypeError(format!("{name}: pointer word {w} listed twice")));
        }
        bits[w / 64] |= 1 << (w % 64);
    }
    if desc.align < 8 && !desc.pointer_words.is_empty() {
        return Err(TypeError(format!(
            "{name}: a type with references needs 8-byte alignment (got {})",
            desc.align
        )));
    }
    let noscan = desc.pointer_words.is_empty();
    // Precomputed for the allocation fast path: the span class of one object
    // (as `ThreadCache::alloc` would choose it), and the pointer bits of the
    // first 64 words.
    let small_spc = if desc.size <= MAX_SMALL_SIZE && desc.align <= 16 {
        let rounded = if desc.align == 16 {
            desc.size.next_multiple_of(16)
        } else {
            desc.size
        };
        span_class(size_to_class(rounded), noscan)
    } else {
        NOT_SMALL
    };
    // The class of objects the inlined fast path takes: at most 64 bytes,
    // so zeroing is a few stores and the pointer bits fit one bitmap word.
    let tiny_spc = if small_spc != NOT_SMALL && CLASSES[small_spc >> 1].size <= 64 {
        small_spc
    } else {
        NOT_SMALL
    };
    let bits0 = bits[0]
        & if words >= 64 {
            u64::MAX
        } else {
            (1u64 << words) - 1
        };
    let info = TypeInfo {
        name: name.to_string(),
        size: desc.size,
        align: desc.align,
        noscan,
        ptr_bits: bits,
        small_spc,
        tiny_spc,
        bits0,
        pointer_words: {
            let mut v = desc.pointer_words.to_vec();
            v.sort_unstable();
            v.into_boxed_slice()
        },
    };
    Ok(Type(Box::leak(Box::new(info))))
}
