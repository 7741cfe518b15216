//! Verify mode's explanation of a missed object: the path from a root to
//! an object a re-mark found reachable but the collection left unmarked.
//!
//! Naming the missed object says *that* the mark is wrong; the path says
//! *where*. Its most telling step is the first, counting from the root,
//! where an object the collection marked references one it did not: a
//! marked object's references were all scanned (or, for an object marked
//! black at allocation or old in a minor collection, were not meant to
//! need scanning), so the reference on that step was stored after the scan
//! without the barrier that should have told the collector — or the scan
//! itself lost it.
//!
//! The search runs with the world stopped, right after the re-mark, while
//! the mark bits hold the re-mark (every reachable object) and the
//! snapshot holds the collection's mark. It allocates nothing and takes no
//! lock: it walks back from the missed object, one *referrer* at a time (a
//! re-marked object with a reference word naming the current one, found by
//! scanning every re-marked object's heap bits: one heap walk a step), and
//! stops at an object a root word names (asked of the same replayable
//! roots, through a marker that only watches: `RawHeap::root_probe`), at
//! `PATH_MAX` objects, or where every referrer is already on the path.
//! Slow — steps × heap — but it runs once, on the way to a panic.

use std::fmt;

use crate::heap::RawHeap;
use crate::mark::Marker;
use crate::span::{Span, BITMAP_WORDS};

/// The most objects a path records, the missed one included.
pub const PATH_MAX: usize = 12;

/// A path to a missed object, found back from it towards a root. A `Copy`
/// value: built with the world stopped, formatted once it restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MissedPath {
    /// `objects[0]` is the missed object; `objects[i + 1]` references
    /// `objects[i]`. The first `len` entries are meaningful.
    pub objects: [usize; PATH_MAX],
    /// `words[i]`, for `i >= 1`: the word of `objects[i]` (counted from its
    /// base) that holds the reference to `objects[i - 1]`.
    pub words: [usize; PATH_MAX],
    /// Whether the collection's mark had marked `objects[i]`.
    pub marked: [bool; PATH_MAX],
    /// Entries used.
    pub len: usize,
    /// `objects[len - 1]` is named by a root word. False: the walk stopped
    /// at `PATH_MAX` or found no referrer off the path.
    pub rooted: bool,
}

impl MissedPath {
    /// The objects from the root end to the missed object, each with
    /// whether the collection marked it and the word of it that references
    /// the next.
    pub fn from_root(&self) -> impl Iterator<Item = (usize, bool, Option<usize>)> + '_ {
        (0..self.len).rev().map(|i| {
            (
                self.objects[i],
                self.marked[i],
                (i > 0).then(|| self.words[i]),
            )
        })
    }

    /// The first step, from the root end, where a marked object references
    /// an unmarked one: (that object, its word, the unmarked object).
    pub fn broken_edge(&self) -> Option<(usize, usize, usize)> {
        (1..self.len)
            .rev()
            .find(|&i| self.marked[i] && !self.marked[i - 1])
            .map(|i| (self.objects[i], self.words[i], self.objects[i - 1]))
    }
}

impl fmt::Display for MissedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 0 {
            return Ok(());
        }
        f.write_str(if self.rooted {
            "path: root"
        } else {
            "path (no root found within the walk): ..."
        })?;
        for (obj, marked, word) in self.from_root() {
            write!(
                f,
                " -> {obj:#x} ({})",
                if marked { "marked" } else { "unmarked" }
            )?;
            if let Some(w) = word {
                write!(f, " word {w}")?;
            }
        }
        if let Some((from, word, to)) = self.broken_edge() {
            write!(
                f,
                "; the marked object {from:#x} references the unmarked {to:#x} at word {word}"
            )?;
        }
        Ok(())
    }
}

impl RawHeap {
    /// Calls `f(word index, base of the object it names)` for each
    /// reference word of the object at `base` (in `span`) that names an
    /// allocated object, until `f` returns true; returns whether it did.
    pub(crate) fn references_from(
        &self,
        base: usize,
        span: &Span,
        mut f: impl FnMut(usize, usize) -> bool,
    ) -> bool {
        if span.noscan() {
            return false;
        }
        let w0 = (base - self.arena.base) / 8;
        for i in 0..span.elemsize() / 8 {
            let w = w0 + i;
            if self
                .arena
                .bits_word(w)
                .load(std::sync::atomic::Ordering::Relaxed)
                & (1 << (w % 64))
                == 0
            {
                continue;
            }
            // SAFETY: word `i` of an allocated object in our arena, read
            // atomically as the marker reads it.
            let v = unsafe { &*((base + i * 8) as *const std::sync::atomic::AtomicUsize) }
                .load(std::sync::atomic::Ordering::Relaxed);
            if let Some((to, _, _)) = self.find(v) {
                if f(i, to) {
                    return true;
                }
            }
        }
        false
    }

    /// Whether the verification snapshot (the collection's mark) had the
    /// object at `base` marked.
    fn snapshot_marked(&self, base: usize) -> bool {
        let (Some(snap), Some((_, span, idx))) = (&self.snapshot, self.find(base)) else {
            return false;
        };
        let p = self.arena.page_of(span.base());
        // SAFETY: the snapshot has BITMAP_WORDS words per arena page, and
        // `idx / 64 < BITMAP_WORDS` for any object index of a span.
        let word = unsafe { *(snap.as_ptr() as *const u64).add(p * BITMAP_WORDS + idx / 64) };
        word & (1 << (idx % 64)) != 0
    }

    /// A marked (by the current bits: the re-mark) object other than those
    /// in `skip` with a reference to `target`, and the word that holds it.
    fn referrer(&self, target: usize, skip: &[usize]) -> Option<(usize, usize)> {
        let mut found = None;
        self.pages.for_each_in_use(&self.arena, |span| {
            if found.is_some() || span.noscan() {
                return;
            }
            for idx in 0..span.nelems() {
                if !span.is_marked(idx) {
                    continue;
                }
                let base = span.base() + idx * span.elemsize();
                if skip.contains(&base) {
                    continue;
                }
                let mut word = 0;
                if self.references_from(base, span, |i, to| {
                    word = i;
                    to == target
                }) {
                    found = Some((base, word));
                    return;
                }
            }
        });
        found
    }

    /// Verify mode, world stopped, after a re-mark from `roots` (the mark
    /// bits) and with the collection's mark in the snapshot: the path to
    /// `missed` (see the module comment). Allocates nothing.
    pub(crate) fn explain_missed(
        &self,
        missed: usize,
        roots: &dyn Fn(&mut Marker<'_>),
    ) -> MissedPath {
        let mut p = MissedPath::default();
        let mut cur = missed;
        loop {
            p.objects[p.len] = cur;
            p.marked[p.len] = self.snapshot_marked(cur);
            p.len += 1;
            let mut probe = self.root_probe(cur);
            roots(&mut probe);
            if probe.probe_hit() {
                p.rooted = true;
                return p;
            }
            drop(probe);
            if p.len == PATH_MAX {
                return p;
            }
            let Some((parent, word)) = self.referrer(cur, &p.objects[..p.len]) else {
                return p;
            };
            p.words[p.len] = word;
            cur = parent;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The path against the graph the test built (an oracle that does not
    //! read the mark bits): a chain rooted at one end, with the snapshot
    //! edited to say the collection missed its tail.

    use super::*;
    use crate::cache::ThreadCache;
    use crate::{Config, Type, TypeDesc};

    fn alloc(heap: &RawHeap, ty: Type, n: usize) -> Vec<usize> {
        let mut cache = ThreadCache::new();
        let v = (0..n)
            .map(|_| cache.alloc(heap, ty).unwrap().as_ptr() as usize)
            .collect();
        cache.flush(heap);
        v
    }

    fn heap() -> (RawHeap, Type) {
        let heap = RawHeap::new(Config {
            arena_size: 64 << 20,
            gc_percent: None,
            verify: true,
            mark_workers: 1,
            ..Config::default()
        })
        .unwrap();
        let ty = heap
            .register_type(&TypeDesc {
                name: "node",
                size: 32,
                align: 8,
                pointer_words: &[1, 3],
            })
            .unwrap();
        (heap, ty)
    }

    #[test]
    fn the_path_runs_from_the_root_to_the_missed_object() {
        let (heap, ty) = heap();
        // chain[0] is rooted; chain[i] holds chain[i + 1] in word 1 (even
        // i) or word 3 (odd i). Decoys reference chain members from
        // unreachable objects, which must not appear.
        let objs = alloc(&heap, ty, 7);
        let (chain, decoy) = (&objs[..6], objs[6]);
        for i in 0..5 {
            let w = if i % 2 == 0 { 1 } else { 3 };
            // SAFETY: word `w` of a live 32-byte object.
            unsafe { *((chain[i] + w * 8) as *mut usize) = chain[i + 1] };
        }
        // SAFETY: as above.
        unsafe { *((decoy + 8) as *mut usize) = chain[4] };
        let roots = |m: &mut Marker<'_>| {
            m.mark_word(chain[0]);
        };
        // The collection's mark: everything but the last two.
        let mut m = heap.marker();
        roots(&mut m);
        m.finish();
        for &o in &chain[4..] {
            let (_, span, idx) = heap.find(o).unwrap();
            span.mark_bits[idx / 64]
                .fetch_and(!(1 << (idx % 64)), std::sync::atomic::Ordering::Relaxed);
        }
        let snap = heap.take_mark_snapshot();
        let mut again = heap.marker();
        roots(&mut again);
        again.finish();
        let p = heap.explain_missed(chain[4], &roots);
        let _ = snap;
        assert!(p.rooted, "{p:?}");
        let from_root: Vec<_> = p.from_root().collect();
        let want: Vec<_> = (0..5)
            .map(|i| {
                // The word of chain[i] that references chain[i + 1].
                let word = (i < 4).then_some(if i % 2 == 0 { 1 } else { 3 });
                (chain[i], i < 4, word)
            })
            .collect();
        assert_eq!(from_root, want);
        assert_eq!(p.broken_edge(), Some((chain[3], 3, chain[4])));
        let text = p.to_string();
        assert!(text.starts_with("path: root -> "), "{text}");
        assert!(text.contains(&format!(
            "references the unmarked {:#x} at word 3",
            chain[4]
        )));
    }

    #[test]
    fn a_cycle_without_a_root_ends_the_walk() {
        let (heap, ty) = heap();
        // a <-> b, and nothing roots either: the walk must stop, unrooted.
        let objs = alloc(&heap, ty, 2);
        let (a, b) = (objs[0], objs[1]);
        // SAFETY: word 1 of live 32-byte objects.
        unsafe {
            *((a + 8) as *mut usize) = b;
            *((b + 8) as *mut usize) = a;
        }
        let snap = heap.take_mark_snapshot();
        let mut m = heap.marker();
        m.mark_word(a);
        m.finish();
        let p = heap.explain_missed(b, &|_: &mut Marker<'_>| {});
        let _ = snap;
        assert!(!p.rooted);
        assert_eq!(p.len, 2);
        assert_eq!(&p.objects[..2], &[b, a]);
        assert!(p.to_string().starts_with("path (no root found"));
    }
}
