//! Verify mode's layout oracle: an independent record of what every object
//! was allocated as, and the check that its heap bits say the same.
//!
//! Marking trusts the heap bits: a reference word whose bit is missing is
//! never traced, and the object it names is freed while reachable. A second
//! mark from the same roots cannot notice (it reads the same wrong bits), so
//! verify mode keeps a record that does not share their data: at allocation,
//! the object's `Type` and element count go into a side table keyed by the
//! object's base; at every verified collection, each marked object's heap
//! bits are recomputed from the type's *original* list of reference words
//! (`TypeInfo::pointer_words`, not the precomputed bitmaps the allocation
//! paths copy from) and compared bit for bit, over the whole slot.
//!
//! The check runs with the world stopped, so it allocates nothing and takes
//! no lock: a failure is a plain `Copy` value that the collector turns into a
//! panic after the world restarts.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

use crate::heap::RawHeap;
use crate::mark::{CollectionKind, Marker};
use crate::missed_path::MissedPath;
use crate::span::BITMAP_WORDS;
use crate::types::{Type, TypeInfo};

/// What verification found wrong, as `Copy` values built with the world
/// stopped.
pub(crate) enum VerifyError {
    Layout(LayoutError),
    Remark(MarkMismatch),
    /// A weak reference still names an object the mark left unmarked.
    DanglingWeak(usize),
    /// A full re-mark at the end of a concurrent cycle marked an object
    /// the concurrent mark had left unmarked.
    Concurrent(MarkMismatch),
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Layout(e) => e.fmt(f),
            VerifyError::Remark(e) => {
                write!(f, "re-marking from scratch disagrees with the mark: {e}")
            }
            VerifyError::Concurrent(e) => {
                write!(
                    f,
                    "a full re-mark at the end of a concurrent cycle found live objects the \
                     concurrent mark left unmarked (a reference store without the deletion \
                     barrier?)"
                )?;
                if let Some(a) = e.first_missed() {
                    write!(f, ": the first is the object at {a:#x}")?;
                }
                write!(f, " ({e})")
            }
            VerifyError::DanglingWeak(a) => write!(
                f,
                "a weak reference to {a:#x} was not cleared, but the sweep will free its object"
            ),
        }
    }
}

/// Two `MAP_NORESERVE` tables with one entry per arena word (an object's
/// base is 8-byte aligned): the `TypeInfo` pointer and the element count of
/// the object allocated there. Only the pages under allocated objects are
/// ever touched.
pub(crate) struct TypeRecord {
    types: memmap2::MmapMut,
    counts: memmap2::MmapMut,
}

impl TypeRecord {
    pub(crate) fn new(arena_size: usize) -> std::io::Result<TypeRecord> {
        let map = || {
            memmap2::MmapOptions::new()
                .len(arena_size.max(8))
                .no_reserve_swap()
                .map_anon()
        };
        Ok(TypeRecord {
            types: map()?,
            counts: map()?,
        })
    }

    fn slot(&self, word: usize) -> (*mut usize, *mut usize) {
        assert!(word < self.types.len() / 8);
        // SAFETY: both tables hold `len / 8` words (bounds checked above).
        unsafe {
            (
                (self.types.as_ptr() as *mut usize).add(word),
                (self.counts.as_ptr() as *mut usize).add(word),
            )
        }
    }
}

/// A marked object whose heap bits disagree with the type it was allocated
/// as (or that has no record). Allocation-free, for the stopped world.
#[derive(Clone, Copy, Debug)]
pub struct LayoutError {
    /// The object's base address.
    pub object: usize,
    /// The recorded type's name, or "" if none was recorded.
    pub type_name: &'static str,
    /// The recorded element count.
    pub count: usize,
    /// The object's slot size in bytes.
    pub slot: usize,
    /// The first disagreeing word of the slot.
    pub word: usize,
    /// Whether that word should be a reference.
    pub expected: bool,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.type_name.is_empty() && self.count == 0 {
            return write!(
                f,
                "marked object at {:#x} ({}-byte slot) was never recorded as allocated",
                self.object, self.slot
            );
        }
        write!(
            f,
            "heap bits of the object at {:#x} ({} x {}, {}-byte slot) say word {} {} a \
             reference, but its type says it {}",
            self.object,
            self.count,
            self.type_name,
            self.slot,
            self.word,
            if self.expected { "is not" } else { "is" },
            if self.expected { "is" } else { "is not" },
        )
    }
}

impl std::error::Error for LayoutError {}

/// Verify mode: a full re-mark from the same roots disagreed with the
/// collection's mark. A `Copy` value, built with the world stopped (no
/// allocation), formatted once it restarts.
#[derive(Clone, Copy, Debug)]
pub struct MarkMismatch {
    /// Base of the span whose mark bits disagree.
    pub span: usize,
    /// Its size class.
    pub class: usize,
    /// The mark-bit word that disagrees.
    pub word: usize,
    /// That word after the collection's mark.
    pub mark: u64,
    /// That word after the re-mark.
    pub remark: u64,
    /// The collection's kind.
    pub kind: CollectionKind,
    /// The span's object size.
    pub elemsize: usize,
    /// The path from a root to the first missed object (see
    /// [`MarkMismatch::first_missed`]); empty when the re-mark missed
    /// nothing the mark had (the mark kept more than the re-mark).
    pub path: MissedPath,
}

impl MarkMismatch {
    /// The first object the re-mark marked and the mark did not.
    pub fn first_missed(&self) -> Option<usize> {
        let missed = self.remark & !self.mark;
        (missed != 0).then(|| {
            let idx = self.word * 64 + missed.trailing_zeros() as usize;
            self.span + idx * self.elemsize
        })
    }
}

impl fmt::Display for MarkMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "span {:#x} (class {}): mark word {} was {:#018x}, re-mark gives {:#018x}",
            self.span, self.class, self.word, self.mark, self.remark
        )?;
        if self.path.len > 0 {
            write!(f, "; {}", self.path)?;
        }
        if self.kind == CollectionKind::Minor {
            f.write_str(
                " (the minor mark missed reachable objects: a reference stored into an old \
                 object without the write barrier?)",
            )?;
        }
        Ok(())
    }
}

impl RawHeap {
    /// Verify mode: copies every in-use span's mark bits aside and clears
    /// them, ready for a second mark. Allocates nothing. Returns a token for
    /// [`RawHeap::compare_mark_snapshot`].
    pub(crate) fn take_mark_snapshot(&self) -> usize {
        let Some(snap) = &self.snapshot else { return 0 };
        let base = snap.as_ptr() as *mut u64;
        let mut n = 0;
        self.pages.for_each_in_use(&self.arena, |span| {
            let p = self.arena.page_of(span.base());
            for w in 0..BITMAP_WORDS {
                // SAFETY: the snapshot has BITMAP_WORDS words per arena page.
                unsafe { *base.add(p * BITMAP_WORDS + w) = span.mark_bits[w].swap(0, Relaxed) };
            }
            n += 1;
        });
        n
    }

    /// Verify mode, world stopped: re-marks from scratch from `roots` and
    /// the finalizer table's roots, and checks the collection's mark
    /// against it (see [`RawHeap::compare_mark_snapshot`]: equal for a
    /// full collection, a superset for a minor or a concurrent one).
    /// Allocation-free.
    // A large error on purpose: it is built with the world stopped, where
    // boxing it would call the system allocator (see `missed_path`).
    #[allow(clippy::result_large_err)]
    pub(crate) fn remark_and_compare(
        &self,
        roots: &dyn Fn(&mut Marker<'_>),
        finalizers: &crate::finalizer::FinalizerTable,
        kind: CollectionKind,
    ) -> Result<(), MarkMismatch> {
        let snap = self.take_mark_snapshot();
        let all_roots = |m: &mut Marker<'_>| {
            roots(m);
            finalizers.offer_roots(m);
        };
        let mut again = self.marker();
        all_roots(&mut again);
        again.finish();
        self.compare_mark_snapshot(&snap, kind, &all_roots)
    }

    /// Verify mode: checks the current mark bits (a full re-mark from
    /// `roots`) against the snapshot (the collection's mark). After a full
    /// collection they must be equal. After a minor one the re-mark must
    /// be a subset (the minor mark keeps old garbage until the next full
    /// collection; a reachable object it missed means a missing write
    /// barrier), and the snapshot's marks are put back, so the heap goes on
    /// as it would have without verification. An object the re-mark found
    /// and the mark missed comes with its path from a root (see
    /// `missed_path`). World stopped; allocates nothing.
    // A large error on purpose: it is built with the world stopped, where
    // boxing it would call the system allocator (see `missed_path`).
    #[allow(clippy::result_large_err)]
    fn compare_mark_snapshot(
        &self,
        _token: &usize,
        kind: CollectionKind,
        roots: &dyn Fn(&mut Marker<'_>),
    ) -> Result<(), MarkMismatch> {
        let Some(snap) = &self.snapshot else {
            return Ok(());
        };
        let base = snap.as_ptr() as *const u64;
        let mut err: Option<MarkMismatch> = None;
        self.pages.for_each_in_use(&self.arena, |span| {
            if err.is_some() {
                return;
            }
            let p = self.arena.page_of(span.base());
            for w in 0..BITMAP_WORDS {
                // SAFETY: as in take_mark_snapshot.
                let before = unsafe { *base.add(p * BITMAP_WORDS + w) };
                let now = span.mark_bits[w].load(Relaxed);
                let bad = match kind {
                    CollectionKind::Full => before != now,
                    CollectionKind::Minor => now & !before != 0,
                };
                if bad {
                    // No formatting here: the world is stopped.
                    err = Some(MarkMismatch {
                        span: span.base(),
                        class: span.spc.load(Relaxed) as usize >> 1,
                        word: w,
                        mark: before,
                        remark: now,
                        kind,
                        elemsize: span.elemsize(),
                        path: MissedPath::default(),
                    });
                    return;
                }
            }
        });
        // The path needs both marks: before the minor mark's are put back.
        if let Some(e) = &mut err {
            if let Some(missed) = e.first_missed() {
                e.path = self.explain_missed(missed, roots);
            }
        }
        if kind == CollectionKind::Minor {
            self.pages.for_each_in_use(&self.arena, |span| {
                let p = self.arena.page_of(span.base());
                for w in 0..BITMAP_WORDS {
                    // SAFETY: as in take_mark_snapshot.
                    let before = unsafe { *base.add(p * BITMAP_WORDS + w) };
                    span.mark_bits[w].store(before, Relaxed);
                }
            });
        }
        err.map_or(Ok(()), Err)
    }
}

impl RawHeap {
    /// Verify mode: records that `count` objects of `ty` were allocated at
    /// `addr`. Called by the allocation paths for objects with references.
    #[cold]
    #[inline(never)]
    pub(crate) fn record_type(&self, addr: usize, ty: Type, count: usize) {
        let Some(rec) = &self.type_record else { return };
        let (t, c) = rec.slot((addr - self.arena.base) / 8);
        // SAFETY: the slot at `addr` belongs to the allocating thread until
        // it returns the object, and coordinators read the record only with
        // every allocating thread stopped.
        unsafe {
            *t = ty.0 as *const TypeInfo as usize;
            *c = count;
        }
    }

    /// Whether word `w` of the arena is marked as a reference in the heap
    /// bits.
    fn heap_bit(&self, w: usize) -> bool {
        self.arena.bits_word(w).load(Relaxed) & (1 << (w % 64)) != 0
    }

    /// The words (indices from the object's base) of the allocated object at
    /// `base` that marking treats as references, read from the heap bits; or
    /// `None` if `base` is not the base of an allocated object. Objects of
    /// pointer-free types report none. For tests and debugging.
    pub fn reference_words(&self, base: usize) -> Option<Vec<usize>> {
        let (b, span, _) = self.find(base)?;
        if b != base {
            return None;
        }
        if span.noscan() {
            return Some(Vec::new());
        }
        let w0 = (base - self.arena.base) / 8;
        Some(
            (0..span.elemsize() / 8)
                .filter(|&i| self.heap_bit(w0 + i))
                .collect(),
        )
    }

    /// Verify mode: checks every marked object's heap bits against the
    /// recorded type, recomputed from the type's own list of reference
    /// words. World stopped; allocates nothing.
    pub(crate) fn check_layouts(&self) -> Result<usize, LayoutError> {
        let Some(rec) = &self.type_record else {
            return Ok(0);
        };
        let mut checked = 0;
        let mut err = None;
        self.pages.for_each_in_use(&self.arena, |span| {
            if err.is_some() || span.noscan() {
                return;
            }
            let size = span.elemsize();
            for idx in 0..span.nelems() {
                if !span.is_marked(idx) {
                    continue;
                }
                let base = span.base() + idx * size;
                let w0 = (base - self.arena.base) / 8;
                let (t, c) = rec.slot(w0);
                // SAFETY: world stopped; see `record_type`.
                let (t, count) = unsafe { (*t, *c) };
                if t == 0 {
                    err = Some(LayoutError {
                        object: base,
                        type_name: "",
                        count: 0,
                        slot: size,
                        word: 0,
                        expected: false,
                    });
                    return;
                }
                // SAFETY: recorded from a `Type`, whose layout is leaked for
                // the life of the process.
                let info: &'static TypeInfo = unsafe { &*(t as *const TypeInfo) };
                let tw = info.size / 8;
                for i in 0..size / 8 {
                    let expected = tw != 0
                        && i < count.saturating_mul(tw)
                        && info.pointer_words.binary_search(&(i % tw)).is_ok();
                    if self.heap_bit(w0 + i) != expected {
                        err = Some(LayoutError {
                            object: base,
                            type_name: &info.name,
                            count,
                            slot: size,
                            word: i,
                            expected,
                        });
                        return;
                    }
                }
                checked += 1;
            }
        });
        err.map_or(Ok(checked), Err)
    }
}

#[cfg(test)]
mod tests {
    //! The allocation paths' heap bits against an oracle computed from the
    //! layout the test itself chose: every type size of the inlined fast
    //! path (8 to 64 bytes) with every layout of its words, at every slot of
    //! a span; every larger size class with a reference at each word
    //! position (all of them up to 512 bytes, a spread beyond); arrays.
    use super::*;
    use crate::cache::ThreadCache;
    use crate::sizeclass::{CLASSES, NUM_CLASSES};
    use crate::types::TypeDesc;
    use crate::Config;

    fn heap() -> RawHeap {
        RawHeap::new(Config {
            arena_size: 4 << 30,
            gc_percent: None,
            verify: true,
            mark_workers: 1,
            ..Config::default()
        })
        .unwrap()
    }

    /// The reference words of `count` elements of a `words`-word type with
    /// references at `refs`, over a slot of `slot_words`.
    fn oracle(refs: &[usize], words: usize, count: usize, slot_words: usize) -> Vec<usize> {
        (0..slot_words)
            .filter(|&i| i < words * count && refs.contains(&(i % words)))
            .collect()
    }

    fn ty(heap: &RawHeap, size: usize, refs: &[usize]) -> Type {
        heap.register_type(&TypeDesc {
            name: "t",
            size,
            align: 8,
            pointer_words: refs,
        })
        .unwrap()
    }

    fn check(heap: &RawHeap, addr: usize, refs: &[usize], words: usize, count: usize, how: &str) {
        let slot = heap.object_size(addr).expect("allocated") / 8;
        let got = heap.reference_words(addr).unwrap();
        let want = oracle(refs, words, count, slot);
        assert_eq!(
            got,
            want,
            "{how}: {count} x {}-byte type with refs {refs:?} at {addr:#x} (slot offset {} in its \
             512-byte bitmap word)",
            words * 8,
            (addr - heap.arena.base) % 512
        );
    }

    #[test]
    fn fast_path_bits_match_the_layout_at_every_slot() {
        let heap = heap();
        for words in 1..=8usize {
            for mask in 1u32..(1 << words) {
                let refs: Vec<usize> = (0..words).filter(|w| mask & (1 << w) != 0).collect();
                let t = ty(&heap, words * 8, &refs);
                let spc = t.0.tiny_spc;
                assert_ne!(spc, crate::types::NOT_SMALL);
                let nelems = CLASSES[spc >> 1].nelems as usize;
                let mut cache = ThreadCache::new();
                // A whole span: every slot offset. `alloc_tiny` declines when
                // its cache word is empty; the slow path then takes that slot
                // (and is checked the same way).
                for _ in 0..nelems {
                    let (addr, how) = match cache.alloc_tiny(&heap, spc, t) {
                        Some(a) => (a, "fast path"),
                        None => (cache.alloc(&heap, t).unwrap().as_ptr() as usize, "refill"),
                    };
                    check(&heap, addr, &refs, words, 1, how);
                }
                cache.flush(&heap);
            }
        }
    }

    #[test]
    fn small_path_bits_match_the_layout_for_every_class_and_word() {
        let heap = heap();
        for class in &CLASSES[1..NUM_CLASSES] {
            let size = class.size as usize;
            let words = size / 8;
            let positions: Vec<usize> = if words <= 64 {
                (0..words).collect()
            } else {
                (0..66)
                    .chain((66..words).step_by(61))
                    .chain(words - 2..words)
                    .collect()
            };
            let mut cache = ThreadCache::new();
            for &p in &positions {
                // One reference at `p`; also `p` with its neighbours, which
                // crosses every bitmap-word boundary the slot does.
                for refs in [vec![p], (p.saturating_sub(1)..(p + 2).min(words)).collect()] {
                    let t = ty(&heap, size, &refs);
                    let nelems = class.nelems as usize;
                    for _ in 0..nelems.min(64) {
                        let a = cache.alloc(&heap, t).unwrap().as_ptr() as usize;
                        check(&heap, a, &refs, words, 1, "small path");
                    }
                }
            }
            cache.flush(&heap);
            // Keep the arena small: free everything between classes.
            heap.collect_with(&mut [&mut cache], |_| {});
        }
    }

    #[test]
    fn array_bits_match_the_layout() {
        let heap = heap();
        let mut cache = ThreadCache::new();
        for words in 1..=9usize {
            for mask in [1u32, 0b10, 0b101, (1 << words) - 1, 1 << (words - 1)] {
                let mask = mask & ((1 << words) - 1);
                if mask == 0 {
                    continue;
                }
                let refs: Vec<usize> = (0..words).filter(|w| mask & (1 << w) != 0).collect();
                let t = ty(&heap, words * 8, &refs);
                for n in (1..=200).chain([511, 1000, 4097, 40_000]) {
                    let a = cache.alloc_array(&heap, t, n).unwrap().as_ptr() as usize;
                    check(&heap, a, &refs, words, n, "array");
                }
            }
            heap.collect_with(&mut [&mut cache], |_| {});
        }
    }

    #[test]
    fn the_layout_check_catches_a_lost_reference_bit() {
        let heap = heap();
        let t = ty(&heap, 24, &[1]);
        let mut cache = ThreadCache::new();
        let a = cache.alloc(&heap, t).unwrap().as_ptr() as usize;
        cache.flush(&heap);
        // Lose the bit, as the straddling fast path once did.
        let w = (a - heap.arena.base) / 8 + 1;
        heap.arena.bits_word(w).fetch_and(!(1 << (w % 64)), Relaxed);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            heap.collect_with(&mut [], |m| {
                m.mark_word(a);
            })
        }));
        let msg = *r.unwrap_err().downcast::<String>().unwrap();
        assert!(msg.contains("say word 1 is not a reference"), "{msg}");
    }
}
