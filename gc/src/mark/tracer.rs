//! One marking thread's loop: find the object a word points into, mark
//! it, push it gray, scan gray objects' reference words from their heap
//! bits, and (in a parallel round) share work and detect the end.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

use super::gray::GrayStack;
use super::team::{MarkTeam, SHARE_MAX};
use crate::heap::{lock, RawHeap};
use crate::span::Span;

/// One marking thread's view: a heap, its own gray stack and its counts.
pub(super) struct Tracer<'a> {
    pub(super) heap: &'a RawHeap,
    pub(super) gray: &'a mut GrayStack,
    pub(super) objects: usize,
    pub(super) bytes: usize,
}

impl Tracer<'_> {
    /// Marks the object `word` points into; pushes it if it needs scanning.
    #[inline(always)]
    pub(super) fn mark_ref<const PAR: bool>(&mut self, word: usize) -> Option<usize> {
        let (base, span, idx) = self.heap.find(word)?;
        let won = if PAR {
            span.try_mark(idx)
        } else {
            span.try_mark_single(idx)
        };
        if won {
            self.objects += 1;
            self.bytes += span.elemsize();
            if !span.noscan() {
                self.gray.push(base);
            }
        }
        Some(base)
    }

    /// Scans one object's reference words.
    #[inline(always)]
    pub(super) fn scan_object<const PAR: bool>(&mut self, base: usize, span: &Span) {
        self.scan_words::<PAR>(base, span.elemsize() / 8);
    }

    /// Scans the reference words among the `nwords` words at `base`, which
    /// lie inside one allocated object.
    #[inline(always)]
    pub(super) fn scan_words<const PAR: bool>(&mut self, base: usize, nwords: usize) {
        let heap = self.heap;
        let w0 = (base - heap.arena.base) / 8;
        let mut i = 0;
        while i < nwords {
            let w = w0 + i;
            let off = w % 64;
            let take = (64 - off).min(nwords - i);
            let mut bits = heap.arena.bits_word(w).load(Relaxed) >> off;
            if take < 64 {
                bits &= (1u64 << take) - 1;
            }
            while bits != 0 {
                let k = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                // SAFETY: word `i + k` of an allocated object in our arena;
                // read atomically, since mutators may be storing into it
                // (concurrent marking).
                let v = unsafe { &*((base + (i + k) * 8) as *const AtomicUsize) }.load(Relaxed);
                self.mark_ref::<PAR>(v);
            }
            i += take;
        }
    }

    /// Scans everything reachable from the gray stack; with a team, hands
    /// work to the pool whenever a worker is idle and the pool is empty.
    ///
    /// Objects pass through a small FIFO between the gray stack and the
    /// scan, and are prefetched on entering it, so the cache miss on each
    /// object's memory overlaps the scanning of the ones before it (the
    /// prefetch-on-grey scheme of Cher, Hosking and Vijaykumar, ASPLOS 2004).
    ///
    /// `stop` is asked every 64 objects (give `|_| false` to drain to the
    /// end); when it says so, the objects in the FIFO go back on the stack
    /// and the drain returns false. True: the stack is empty.
    #[inline(always)]
    pub(super) fn drain<const PAR: bool>(
        &mut self,
        team: Option<&MarkTeam>,
        mut stop: impl FnMut(&Tracer<'_>) -> bool,
    ) -> bool {
        const AHEAD: usize = 8;
        let mut ring = [0usize; AHEAD];
        let (mut head, mut len) = (0usize, 0usize);
        let mut n = 0u32;
        loop {
            while len < AHEAD {
                let Some(base) = self.gray.pop() else { break };
                prefetch(base);
                ring[(head + len) % AHEAD] = base;
                len += 1;
            }
            if len == 0 {
                return true;
            }
            n = n.wrapping_add(1);
            if n.is_multiple_of(64) && stop(self) {
                for i in 0..len {
                    // Room: each came off this stack since its last push.
                    self.gray.push(ring[(head + i) % AHEAD]);
                }
                return false;
            }
            if PAR {
                if let Some(team) = team {
                    if self.gray.len >= 2
                        && (team.idle.load(Relaxed) > 0
                            || self.heap.assist.hungry.load(Relaxed) > 0)
                        && team.pool_len.load(Relaxed) == 0
                    {
                        self.share(team);
                    }
                }
            }
            let base = ring[head];
            head = (head + 1) % AHEAD;
            len -= 1;
            let span = crate::heap::span_ref(self.heap.arena.span_of(base));
            self.scan_object::<PAR>(base, span);
        }
    }

    /// Gives up to half of this worker's stack, from the bottom, to the pool.
    #[cold]
    fn share(&mut self, team: &MarkTeam) {
        let mut pool = lock(&team.pool);
        let k = (self.gray.len / 2).min(SHARE_MAX).min(pool.cap - pool.len);
        if k == 0 {
            return;
        }
        self.gray.give_bottom(&mut pool, k);
        team.pool_len.store(pool.len, Relaxed);
        team.shares.fetch_add(1, Relaxed);
    }

    /// One worker's part of a parallel round: drain, then take from the pool
    /// until every worker is idle and the pool is empty. `idle` says whether
    /// the worker is already counted idle.
    pub(super) fn work(&mut self, team: &MarkTeam, mut idle: bool) {
        let workers = team.round_workers.load(Relaxed);
        'outer: loop {
            if !idle {
                self.drain::<true>(Some(team), |_| false);
                team.idle.fetch_add(1, SeqCst);
            }
            let mut spins = 0u32;
            loop {
                if team.done.load(Acquire) {
                    break 'outer;
                }
                if team.pool_len.load(Relaxed) > 0 || team.idle.load(SeqCst) == workers {
                    let mut pool = lock(&team.pool);
                    if pool.len > 0 {
                        let idle_now = team.idle.fetch_sub(1, SeqCst);
                        let k = (pool.len / idle_now.max(1)).clamp(1, SHARE_MAX);
                        pool.give_top(self.gray, k);
                        team.pool_len.store(pool.len, Relaxed);
                        idle = false;
                        continue 'outer;
                    }
                    if team.idle.load(SeqCst) == workers {
                        team.done.store(true, Release);
                        break 'outer;
                    }
                }
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        if self.gray.overflowed {
            team.overflow.store(true, Relaxed);
        }
        if self.objects > 0 {
            team.active_workers.fetch_add(1, Relaxed);
        }
        team.objects.fetch_add(self.objects, Relaxed);
        team.bytes.fetch_add(self.bytes, Relaxed);
    }
}

/// Hints that the object at `addr` will be read soon.
#[inline(always)]
pub(super) fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}
