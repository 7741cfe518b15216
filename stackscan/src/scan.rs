//! The hybrid scan of one stopped thread.

use std::sync::atomic::Ordering;

use crate::frame::FrameHeader;
use crate::map::FrameMap;

/// The oracle: given an address, the base of the allocated object containing
/// it, or `None`. The heap implements it exactly; tests use doubles.
pub trait ObjectFinder {
    /// See the trait docs.
    fn find_object(&self, addr: usize) -> Option<usize>;

    /// A range `[lo, hi)` outside which [`ObjectFinder::find_object`]
    /// answers `None` for every address, if the finder knows one (a heap's
    /// arena). The scanner then passes over a conservative range's other
    /// words with one comparison each: most words of a stack are small
    /// numbers, return addresses and pointers elsewhere, and asking about
    /// each was most of a parked goroutine's root cost. A range too narrow
    /// loses roots; the default, `None`, asks about every word.
    fn candidates(&self) -> Option<(usize, usize)> {
        None
    }
}

impl<F: Fn(usize) -> Option<usize>> ObjectFinder for F {
    fn find_object(&self, addr: usize) -> Option<usize> {
        self(addr)
    }
}

/// Where a root was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RootKind {
    /// A word of the conservative stack range.
    Stack,
    /// A saved register word.
    Register,
    /// A live slot of a frame at its current call site. The word reported
    /// is the slot's value as it is, not resolved by the oracle (see
    /// [`Scanner::frames`]).
    Precise,
}

/// Counts from a scan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Words examined conservatively (stack and registers).
    pub words_examined: usize,
    /// Conservative words that hit an object.
    pub conservative_hits: usize,
    /// Live, non-null slots (each reported as a precise root).
    pub precise_roots: usize,
    /// Frames walked.
    pub frames: usize,
    /// The chain ended early because a frame header was out of order or
    /// outside the stack.
    pub bad_chain: bool,
}

/// Scans roots against a finder, reporting each root to `visit`: for
/// conservative words, the base of the object found; for precise slots, the
/// slot's value.
pub struct Scanner<'f, F: ObjectFinder + ?Sized, V: FnMut(usize, RootKind)> {
    finder: &'f F,
    visit: V,
    stack_lo: usize,
    stack_hi: usize,
    /// The finder's candidate range as a start and a length (everything
    /// when it has none): a word `w` may be an object's only if
    /// `w - cand_lo < cand_len`, wrapping.
    cand_lo: usize,
    cand_len: usize,
    /// Counts so far.
    pub stats: ScanStats,
}

impl<'f, F: ObjectFinder + ?Sized, V: FnMut(usize, RootKind)> Scanner<'f, F, V> {
    /// A scanner for a thread whose stack is `[stack_lo, stack_hi)`: words
    /// pointing into it are not heap roots.
    pub fn new(finder: &'f F, stack_lo: usize, stack_hi: usize, visit: V) -> Self {
        let (cand_lo, cand_len) = match finder.candidates() {
            Some((lo, hi)) => (lo, hi.saturating_sub(lo)),
            None => (0, usize::MAX),
        };
        Scanner {
            finder,
            visit,
            stack_lo,
            stack_hi,
            cand_lo,
            cand_len,
            stats: ScanStats::default(),
        }
    }

    /// Offers one word conservatively.
    #[inline(always)]
    pub fn word(&mut self, w: usize, kind: RootKind) {
        self.stats.words_examined += 1;
        self.offer(w, kind);
    }

    /// [`Scanner::word`], uncounted.
    #[inline(always)]
    fn offer(&mut self, w: usize, kind: RootKind) {
        if w.wrapping_sub(self.stack_lo) < self.stack_hi.wrapping_sub(self.stack_lo) {
            return;
        }
        if let Some(base) = self.finder.find_object(w) {
            self.stats.conservative_hits += 1;
            (self.visit)(base, kind);
        }
    }

    /// Offers every aligned word of `[lo, hi)` conservatively: those in
    /// the finder's candidate range are looked up, the others passed over.
    ///
    /// # Safety
    /// `[lo, hi)` must be readable and not change during the call.
    pub unsafe fn range(&mut self, lo: usize, hi: usize) {
        let p = lo.next_multiple_of(8);
        if p + 8 > hi {
            return;
        }
        let n = (hi - p) / 8;
        self.stats.words_examined += n;
        // SAFETY: caller contract: `n` aligned words from `p` are readable
        // and do not change during the call.
        let words = unsafe { std::slice::from_raw_parts(p as *const usize, n) };
        let (clo, clen) = (self.cand_lo, self.cand_len);
        for &w in words {
            if w.wrapping_sub(clo) < clen {
                self.offer(w, RootKind::Stack);
            }
        }
    }

    /// Offers every live, non-null slot of every frame from `head` outward to
    /// `visit`, as the slot's value: a precise slot holds a reference (or
    /// null) by contract, so it is not looked up here. The consumer resolves
    /// it, and should still do so exactly: the collector's marker looks every
    /// root word up before marking (it must, to find the mark bit), so a wrong
    /// map costs a leak there, never a corruption. Resolving here too was a
    /// second lookup per slot, most of the cost of precise scanning.
    /// Returns where the conservative range should end: the first frame
    /// after the innermost one that lies above it (normally the second frame).
    ///
    /// Frames need not be in address order: when the compiler inlines two
    /// `with_frame` calls into one native frame, it may place the inner
    /// frame's header above the outer one's. (An earlier version stopped the
    /// walk at the first out-of-order frame and so lost every root beyond it;
    /// GCBench's long-lived tree was collected.) The walk checks instead that
    /// each header lies on the thread's stack and stops after as many frames
    /// as the stack could hold, so a corrupted, cyclic chain still ends.
    ///
    /// # Safety
    /// `head` must be 0 or the head of a frame chain whose frames are all
    /// linked (their owner thread stopped, or the current thread), with valid
    /// maps and slots.
    pub unsafe fn frames(&mut self, head: usize) -> Option<usize> {
        let mut bound = None;
        let mut p = head;
        let max_frames = (self.stack_hi - self.stack_lo) / std::mem::size_of::<FrameHeader>() + 1;
        let mut last: ((*const FrameMap, usize, u32), &[usize]) = ((std::ptr::null(), 0, 0), &[]);
        while p != 0 {
            if p < self.stack_lo
                || p > self.stack_hi - std::mem::size_of::<FrameHeader>()
                || self.stats.frames >= max_frames
            {
                self.stats.bad_chain = true;
                break;
            }
            // SAFETY: caller contract: `p` is a linked frame header.
            let h = unsafe { &*(p as *const FrameHeader) };
            let site = h.site.load(Ordering::Relaxed) as usize;
            // Consecutive frames often share a map and a site (recursion):
            // reuse the last frame's checked liveness words.
            let key = (h.map, site, h.nslots);
            let words = if key == last.0 {
                Some(last.1)
            } else {
                // SAFETY: a linked frame's map outlives the link.
                let map: &FrameMap = unsafe { &*h.map };
                (site < map.sites() && map.slots() == h.nslots as usize).then(|| {
                    let w = map.site_words(site);
                    last = (key, w);
                    w
                })
            };
            if let Some(words) = words {
                for (wi, &word) in words.iter().enumerate() {
                    if word == 0 {
                        continue;
                    }
                    let base = wi * usize::BITS as usize;
                    let start = word.trailing_zeros() as usize;
                    let run = word >> start;
                    if run & run.wrapping_add(1) == 0 {
                        // One run of live slots (the common dense map): a
                        // plain loop over consecutive slots.
                        let first = base + start;
                        for slot in first..first + run.count_ones() as usize {
                            // SAFETY: as below; every slot of the run has
                            // its bit set.
                            let v = unsafe { &*h.slots.add(slot) }.load(Ordering::Relaxed);
                            if v != 0 {
                                self.stats.precise_roots += 1;
                                (self.visit)(v, RootKind::Precise);
                            }
                        }
                        continue;
                    }
                    let mut bits = word;
                    while bits != 0 {
                        let slot = base + bits.trailing_zeros() as usize;
                        bits &= bits - 1;
                        // SAFETY: set bits lie below `nslots` (the map's
                        // builder keeps the bits past the last slot clear),
                        // and `slots` points to nslots words.
                        let v = unsafe { &*h.slots.add(slot) }.load(Ordering::Relaxed);
                        if v != 0 {
                            self.stats.precise_roots += 1;
                            (self.visit)(v, RootKind::Precise);
                        }
                    }
                }
            } else {
                self.stats.bad_chain = true;
            }
            self.stats.frames += 1;
            if bound.is_none() && self.stats.frames >= 2 && p > head {
                bound = Some(p);
            }
            p = h.prev;
        }
        bound
    }

    /// Scans a stopped thread: its frames precisely; conservatively every word
    /// from `scan_lo` up to the second-innermost frame (precisely: the first
    /// frame above the innermost one; the stack top if there is none), and
    /// `registers`.
    ///
    /// # Safety
    /// The thread must be stopped (or be the caller), `[scan_lo, stack_hi)`
    /// readable, and `head` as for [`Scanner::frames`].
    pub unsafe fn thread(&mut self, scan_lo: usize, head: usize, registers: &[u64]) {
        // SAFETY: forwarded contract.
        let bound = unsafe { self.frames(head) };
        let lo = scan_lo.max(self.stack_lo);
        let hi = bound.unwrap_or(self.stack_hi).min(self.stack_hi);
        // SAFETY: `[lo, hi)` lies within `[scan_lo, stack_hi)`.
        unsafe { self.range(lo, hi) };
        for &r in registers {
            self.word(r as usize, RootKind::Register);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finder over a few objects, with or without its candidate range.
    struct Objects {
        /// `(base, size)` of each object, inside `[LO, HI)`.
        objs: Vec<(usize, usize)>,
        range: bool,
    }

    const LO: usize = 0x10_0000;
    const HI: usize = 0x20_0000;

    impl ObjectFinder for Objects {
        fn find_object(&self, a: usize) -> Option<usize> {
            self.objs
                .iter()
                .find(|&&(b, n)| (b..b + n).contains(&a))
                .map(|&(b, _)| b)
        }
        fn candidates(&self) -> Option<(usize, usize)> {
            self.range.then_some((LO, HI))
        }
    }

    fn scan(f: &Objects, words: &[usize]) -> (Vec<(usize, RootKind)>, ScanStats) {
        let mut seen = Vec::new();
        // The "stack" is `words` itself: words pointing into it are not
        // roots.
        let lo = words.as_ptr() as usize;
        let hi = lo + std::mem::size_of_val(words);
        let mut sc = Scanner::new(f, lo, hi, |b, k| seen.push((b, k)));
        // SAFETY: `words` is readable and unchanged during the call.
        unsafe { sc.range(lo, hi) };
        let stats = sc.stats;
        (seen, stats)
    }

    /// The candidate filter changes nothing: every word at and around the
    /// range's edges, the objects' edges, the stack's own addresses and
    /// the extremes, alone and all together in every rotation, finds the
    /// same roots, with the same counts, as asking about every word.
    #[test]
    fn the_candidate_filter_finds_what_asking_every_word_finds() {
        let objs = vec![(LO, 16), (LO + 4096, 64), (HI - 32, 32)];
        let mut probes = vec![0, 1, 8, LO - 8, LO - 1, HI, HI + 1, HI + 8, usize::MAX];
        for &(b, n) in &objs {
            probes.extend([b - 1, b, b + 1, b + n - 1, b + n, b + n + 1]);
        }
        let filtered = Objects {
            objs: objs.clone(),
            range: true,
        };
        let asked = Objects { objs, range: false };
        for w in &probes {
            let words = [*w, 0];
            assert_eq!(scan(&filtered, &words), scan(&asked, &words), "word {w:#x}");
        }
        let n = probes.len() + 1;
        for r in 0..n - 1 {
            let mut words = probes.clone();
            words.rotate_left(r);
            // And a word pointing into the scanned range itself.
            words.push(0);
            let last = words.len() - 1;
            words[last] = words.as_ptr() as usize + 8 * r;
            let (a, sa) = scan(&filtered, &words);
            let (b, sb) = scan(&asked, &words);
            assert_eq!((&a, sa), (&b, sb), "rotation {r}");
            assert_eq!(sa.words_examined, n);
            assert!(!a.is_empty());
        }
    }
}
