//! Marking: gray stacks in their own mappings, precise scanning of heap
//! objects from their heap bits, parallel draining with work sharing, and
//! overflow handled by rescanning the heap.
//!
//! A root word — precise or conservative — goes through the exact lookup
//! ([`RawHeap::find`]): only the base of an allocated object is ever marked,
//! so a stale or random word can neither mark a free slot (a zombie) nor crash.
//! Precise roots are checked the same way (the stack scanner hands slot
//! values over unresolved, and this is their only lookup): it costs a few
//! nanoseconds and makes a wrong map a leak instead of a corruption.
//!
//! # Parallel marking
//!
//! The coordinator offers every root word itself, then drains together with
//! `mark_workers - 1` helper threads spawned when the heap was made (spawning
//! during a collection would call the system allocator, which a stopped
//! mutator may hold). Helpers are not mutators: they are never attached,
//! never signalled, and touch the heap only between the start and the end of
//! a round, which the coordinator brackets under the team's own lock — a lock
//! no mutator ever takes.
//!
//! Work moves the way Go's `gcWork` buffers move, simplified: each worker
//! owns a gray stack; a shared pool (one more stack, behind a mutex only
//! markers use) receives work when a busy worker sees that someone is idle
//! and the pool is empty. It gives up to half of its stack, taken from the
//! *bottom*: in a depth-first traversal the oldest entries are the roots of
//! the largest unexplored subgraphs, so a binary tree's few dozen stacked
//! nodes still split into two large halves. An idle worker takes from the
//! pool its share of what is there.
//!
//! Termination: a worker whose stack is empty counts itself idle (an atomic
//! increment, outside the lock). It becomes busy again only by taking work
//! from the pool, under the pool's lock, decrementing the count there. So a
//! worker that holds the pool lock and sees every worker idle and the pool
//! empty knows that no work exists anywhere and none can appear: it raises
//! `done`, and everyone leaves.
//!
//! Mark bits are set with a plain load and store when one thread marks, and
//! with a load followed by `fetch_or` when several do (two markers may race
//! to the same object; exactly one wins and scans it).
//!
//! The gray stacks live in `MAP_NORESERVE` mappings, so marking never calls
//! the system allocator. If one fills, the object is still marked but not
//! pushed, and the stack records the overflow; after the round, the
//! coordinator walks every in-use scan span and rescans its marked objects,
//! pushing whatever they reach that is unmarked, until a pass ends without
//! overflow. Slow, but no work is lost.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use memmap2::{MmapMut, MmapOptions};

use crate::arena::CARD_SHIFT;
use crate::heap::{lock, RawHeap};
use crate::span::{Span, IN_USE};

pub(crate) struct GrayStack {
    map: MmapMut,
    cap: usize,
    len: usize,
    overflowed: bool,
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
    fn slots(&mut self) -> *mut usize {
        self.map.as_mut_ptr() as *mut usize
    }

    #[inline(always)]
    fn push(&mut self, v: usize) {
        if self.len == self.cap {
            self.overflowed = true;
            return;
        }
        // SAFETY: `len < cap` and the mapping holds `cap` words.
        unsafe { *self.slots().add(self.len) = v };
        self.len += 1;
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: `len < cap` after the decrement.
        Some(unsafe { *self.slots().add(self.len) })
    }

    /// Moves the bottom `k` entries of `self` onto the top of `to` (which has
    /// room for them), and shifts the rest down.
    fn give_bottom(&mut self, to: &mut GrayStack, k: usize) {
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

    /// Moves up to `k` entries from the bottom of `self` to the end of
    /// `to` (the oldest entries: the largest unexplored subgraphs, as in
    /// `give_bottom`); returns how many.
    pub(crate) fn give_bottom_to_vec(&mut self, to: &mut Vec<usize>, k: usize) -> usize {
        let k = k.min(self.len);
        let src = self.slots();
        // SAFETY: the first `k <= len` entries are initialised; the shift
        // moves the `len - k` after them down within the mapping.
        unsafe {
            to.extend_from_slice(std::slice::from_raw_parts(src, k));
            std::ptr::copy(src.add(k), src, self.len - k);
        }
        self.len -= k;
        k
    }

    /// Moves up to `k` entries from the end of `from` onto this stack (as
    /// room allows); returns how many.
    pub(crate) fn take_from_vec(&mut self, from: &mut Vec<usize>, k: usize) -> usize {
        let k = k.min(from.len()).min(self.cap - self.len);
        for v in from.drain(from.len() - k..) {
            self.push(v);
        }
        k
    }

    /// Moves every entry to the end of `to`, and clears the overflow
    /// record into the return value.
    pub(crate) fn empty_into(&mut self, to: &mut Vec<usize>) -> bool {
        let n = self.len;
        self.give_bottom_to_vec(to, n);
        std::mem::take(&mut self.overflowed)
    }

    /// Moves the top `k` entries of `self` onto `to`.
    fn give_top(&mut self, to: &mut GrayStack, k: usize) {
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

/// Figures from one mark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MarkStats {
    /// Objects marked.
    pub objects: usize,
    /// Bytes of marked objects (slot sizes).
    pub bytes: usize,
    /// Root words that hit an object (of those offered).
    pub root_hits: usize,
    /// Root words offered.
    pub root_words: usize,
    /// Heap rescans caused by gray-stack overflow.
    pub overflow_rescans: usize,
    /// Workers that marked objects in this mark (the coordinator included).
    pub workers: usize,
    /// Batches of gray objects handed between workers.
    pub shares: usize,
    /// Dirty cards scanned (minor collections).
    pub cards: usize,
    /// Weak references cleared because their object died.
    pub weak_cleared: usize,
    /// Finalizable objects found dead, queued and resurrected.
    pub finalizers_queued: usize,
}

/// What a collection marks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CollectionKind {
    /// Everything reachable from the roots, from scratch.
    #[default]
    Full,
    /// Generational heaps: objects that survived an earlier collection stay
    /// marked (old); marking starts from the roots and from the old objects
    /// on cards the write barrier dirtied, and stops at old objects. On a
    /// heap that is not generational, a full collection runs instead.
    Minor,
}

/// The most gray entries moved in one hand-over.
const SHARE_MAX: usize = 512;

/// The state the marking workers of one heap share.
///
/// A *round* is one parallel drain: the coordinator (the thread running the
/// collection) resets the round's fields, opens the round under `ctl`,
/// works, closes it and waits until no helper is `inside`; only then does it
/// read the totals. Between rounds no helper touches anything but `ctl`.
pub(crate) struct MarkTeam {
    /// Workers in a round at most, the coordinator included. Set at
    /// creation.
    workers: usize,
    /// Workers in the current round, the coordinator included: `workers`
    /// while the world is stopped, fewer while mutators run
    /// (`Config::background_mark_percent`). Helpers numbered from this up
    /// sit the round out. Stored by the coordinator before it opens the
    /// round; read by the workers in it.
    round_workers: AtomicUsize,
    /// Round control; see [`Ctl`]. Helpers sleep on `wake` under it.
    ctl: Mutex<Ctl>,
    /// Wakes helpers for a round (or for shutdown).
    wake: Condvar,
    /// Signals the coordinator that the last helper left a round.
    left: Condvar,
    /// Gray entries handed between workers: a worker with work and an idle
    /// peer gives the bottom half of its stack here; an idle worker takes
    /// from it. Under its own lock.
    pool: Mutex<GrayStack>,
    /// A hint of `pool.len`, stored under the pool's lock after each change
    /// and read without it to decide whether to share or take (a stale
    /// value costs a lock, never an entry).
    pool_len: AtomicUsize,
    /// Workers with nothing to drain. Reset by the coordinator before a
    /// round (helpers start idle, the coordinator busy); a worker adds one
    /// when its stack empties and takes one off, under the pool's lock,
    /// when it takes entries. All workers idle with an empty pool means the
    /// round's work is done (termination detection: nothing is gray).
    idle: AtomicUsize,
    /// Set (release) by the worker that finds every worker idle and the pool
    /// empty under the pool's lock; every worker then leaves the round.
    done: AtomicBool,
    /// Set by any worker whose gray stack overflowed in the round; read by
    /// the coordinator after the round, which then rescans the heap.
    overflow: AtomicBool,
    /// Objects marked in the round, summed by each worker as it leaves;
    /// read by the coordinator after the round.
    objects: AtomicUsize,
    /// Bytes marked in the round; as `objects`.
    bytes: AtomicUsize,
    /// Workers that marked at least one object in the round; as `objects`.
    active_workers: AtomicUsize,
    /// Hand-overs to the pool in the round (a statistic); as `objects`.
    shares: AtomicUsize,
}

impl MarkTeam {
    /// Moves up to `k` entries from the pool onto `to` (a mutator assist's
    /// stack; see `assist`); returns how many. Outside rounds the pool is
    /// empty.
    pub(crate) fn give_to(&self, to: &mut GrayStack, k: usize) -> usize {
        if self.pool_len.load(Relaxed) == 0 {
            return 0;
        }
        let mut pool = lock(&self.pool);
        let k = k.min(pool.len).min(to.cap - to.len);
        if k > 0 {
            pool.give_top(to, k);
            self.pool_len.store(pool.len, Relaxed);
        }
        k
    }
}

/// Round control, under `MarkTeam::ctl`.
struct Ctl {
    /// Round number, raised by the coordinator as it opens a round, so a
    /// helper woken late never works a round twice.
    round: u64,
    /// The heap being marked (a `*const RawHeap`), while a round is open;
    /// 0 otherwise. Set and cleared by the coordinator.
    heap: usize,
    /// Whether helpers may enter the current round.
    open: bool,
    /// Helpers inside the open round; the coordinator waits for 0 after
    /// closing it before it reads the totals or lets the heap go.
    inside: usize,
    /// Set by `MarkHelpers`' drop: helpers exit.
    shutdown: bool,
}

/// The helper threads of one heap; joined on drop.
pub(crate) struct MarkHelpers {
    team: Option<Arc<MarkTeam>>,
    threads: Vec<JoinHandle<()>>,
    /// The process that spawned the helpers. In a child forked since, they
    /// do not exist: marking there is serial, and nothing waits for them.
    pid: i32,
}

impl MarkHelpers {
    /// Spawns `workers - 1` helpers, each with a gray stack of `cap` entries.
    pub fn new(workers: usize, cap: usize) -> std::io::Result<MarkHelpers> {
        if workers <= 1 {
            return Ok(MarkHelpers {
                team: None,
                threads: Vec::new(),
                pid: 0,
            });
        }
        let team = Arc::new(MarkTeam {
            workers,
            round_workers: AtomicUsize::new(workers),
            ctl: Mutex::new(Ctl {
                round: 0,
                heap: 0,
                open: false,
                inside: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            left: Condvar::new(),
            pool: Mutex::new(GrayStack::new(cap)?),
            pool_len: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            done: AtomicBool::new(false),
            overflow: AtomicBool::new(false),
            objects: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            active_workers: AtomicUsize::new(0),
            shares: AtomicUsize::new(0),
        });
        let mut helpers = MarkHelpers {
            pid: nix::unistd::getpid().as_raw(),
            team: Some(team.clone()),
            threads: Vec::new(),
        };
        for i in 1..workers {
            let local = GrayStack::new(cap)?;
            let team = team.clone();
            let h = std::thread::Builder::new()
                .name(format!("pardon-mark-{i}"))
                .spawn(move || helper_main(&team, local, i))?;
            helpers.threads.push(h);
        }
        Ok(helpers)
    }

    pub fn workers(&self) -> usize {
        self.team().map_or(1, |t| t.workers)
    }

    /// The helper team, unless this is a child forked since it was spawned.
    pub fn team(&self) -> Option<&MarkTeam> {
        self.team
            .as_deref()
            .filter(|_| nix::unistd::getpid().as_raw() == self.pid)
    }
}

impl Drop for MarkHelpers {
    fn drop(&mut self) {
        if self.team.is_some() && self.team().is_none() {
            // A forked child: the helper threads were not copied into it;
            // joining them would wait for ever.
            for h in self.threads.drain(..) {
                std::mem::forget(h);
            }
            return;
        }
        if let Some(team) = &self.team {
            lock(&team.ctl).shutdown = true;
            team.wake.notify_all();
        }
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

/// Helper `index` (1 up; the coordinator is 0).
fn helper_main(team: &MarkTeam, mut local: GrayStack, index: usize) {
    let mut seen = 0u64;
    loop {
        let heap_addr = {
            let mut c = lock(&team.ctl);
            loop {
                if c.shutdown {
                    return;
                }
                if c.open && c.round != seen {
                    if index < team.round_workers.load(Relaxed) {
                        break;
                    }
                    // Not in this round.
                    seen = c.round;
                }
                c = team.wake.wait(c).unwrap_or_else(|e| e.into_inner());
            }
            seen = c.round;
            c.inside += 1;
            c.heap
        };
        // SAFETY: the coordinator stored the address of the heap it is
        // marking before opening the round, and does not return from the
        // round (so the heap outlives it) until `inside` is back to zero.
        let heap = unsafe { &*(heap_addr as *const RawHeap) };
        local.len = 0;
        local.overflowed = false;
        let mut t = Tracer {
            heap,
            gray: &mut local,
            objects: 0,
            bytes: 0,
        };
        // A helper joins a round counted as idle (the coordinator set the
        // count so), holding nothing.
        t.work(team, true);
        let mut c = lock(&team.ctl);
        c.inside -= 1;
        if c.inside == 0 {
            team.left.notify_all();
        }
    }
}

/// One marking thread's view: a heap, its own gray stack and its counts.
struct Tracer<'a> {
    heap: &'a RawHeap,
    gray: &'a mut GrayStack,
    objects: usize,
    bytes: usize,
}

impl Tracer<'_> {
    /// Marks the object `word` points into; pushes it if it needs scanning.
    #[inline(always)]
    fn mark_ref<const PAR: bool>(&mut self, word: usize) -> Option<usize> {
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
    fn scan_object<const PAR: bool>(&mut self, base: usize, span: &Span) {
        self.scan_words::<PAR>(base, span.elemsize() / 8);
    }

    /// Scans the reference words among the `nwords` words at `base`, which
    /// lie inside one allocated object.
    #[inline(always)]
    fn scan_words<const PAR: bool>(&mut self, base: usize, nwords: usize) {
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
    fn drain<const PAR: bool>(
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
    fn work(&mut self, team: &MarkTeam, mut idle: bool) {
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

/// Marks from roots. Obtain one with [`RawHeap::marker`]; offer root words,
/// then [`Marker::finish`].
pub struct Marker<'h> {
    heap: &'h RawHeap,
    gray: MutexGuard<'h, GrayStack>,
    stats: MarkStats,
    /// A concurrent mark: mutators set mark bits too (the deletion
    /// barrier), so every mark bit is set with an atomic read-modify-write,
    /// even by a lone marker.
    concurrent: bool,
}

impl RawHeap {
    /// Starts a mark. The caller must have stopped every mutator (or own the
    /// heap alone), flushed their caches and finished sweeping.
    pub fn marker(&self) -> Marker<'_> {
        let mut gray = lock(&self.gray);
        gray.len = 0;
        gray.overflowed = false;
        Marker {
            heap: self,
            gray,
            stats: MarkStats::default(),
            concurrent: false,
        }
    }

    /// Starts a concurrent mark (see `concurrent`): as [`RawHeap::marker`],
    /// with every mark bit set atomically, since mutators shade objects
    /// while it runs.
    pub(crate) fn marker_concurrent(&self) -> Marker<'_> {
        let mut m = self.marker();
        m.concurrent = true;
        m
    }

    /// Starts a mark of `kind` (see [`CollectionKind`]): for `Minor`, first
    /// scans the old objects on dirty cards, clearing the cards. The caller
    /// must have stopped every mutator (or own the heap alone), flushed their
    /// caches and finished sweeping, and, for a full collection of a
    /// generational heap, cleared the sticky marks
    /// ([`RawHeap::collect_kind_with`] does all of it).
    pub fn marker_for(&self, kind: CollectionKind) -> Marker<'_> {
        let mut m = self.marker();
        if kind == CollectionKind::Minor && self.config.generational {
            m.scan_dirty_cards();
        }
        m
    }

    /// Threads that drain the gray objects (the coordinator included).
    pub fn mark_workers(&self) -> usize {
        self.helpers.workers()
    }
}

impl Marker<'_> {
    /// Pushes `base`, a marked object, for scanning (an overflow is
    /// recorded and recovered from, as for any push).
    pub(crate) fn push_gray(&mut self, base: usize) {
        self.gray.push(base);
    }

    fn tracer(&mut self) -> Tracer<'_> {
        Tracer {
            heap: self.heap,
            gray: &mut self.gray,
            objects: 0,
            bytes: 0,
        }
    }

    fn absorb(&mut self, objects: usize, bytes: usize) {
        self.stats.objects += objects;
        self.stats.bytes += bytes;
    }

    /// The remembered set of a minor collection: for every dirty card of an
    /// in-use span with pointers, scans the reference words inside the card
    /// of every old (marked) object overlapping it, and clears the card.
    /// Runs before any root is offered, so "marked" still means "old" (a
    /// young object marked by an earlier card is scanned twice, harmlessly).
    /// An old object that is garbage but shares a card with a written one is
    /// scanned too: what it reaches survives until the next full collection
    /// (a leak, never a corruption: every word goes through the exact lookup).
    fn scan_dirty_cards(&mut self) {
        let heap = self.heap;
        let arena = &heap.arena;
        let words = arena.card_words(heap.pages.stats().used_pages);
        let mut t = self.tracer();
        let mut cards = 0;
        for (wi, w) in words.iter().enumerate() {
            let mut bytes = w.load(Relaxed);
            if bytes == 0 {
                continue;
            }
            w.store(0, Relaxed);
            while bytes != 0 {
                let b = bytes.trailing_zeros() as usize / 8;
                bytes &= !(0xffu64 << (b * 8));
                cards += 1;
                let lo = arena.base + ((wi * 8 + b) << CARD_SHIFT);
                let hi = lo + (1 << CARD_SHIFT);
                let s = arena.span_of(lo);
                if s.is_null() {
                    continue;
                }
                let span = crate::heap::span_ref(s);
                if span.state.load(Acquire) != IN_USE || span.noscan() {
                    continue;
                }
                let (sbase, es) = (span.base(), span.elemsize());
                let end = sbase + span.nelems() * es;
                if lo < sbase || lo >= end {
                    continue;
                }
                let first = span.obj_index(lo - sbase);
                let last = span.obj_index(hi.min(end) - 1 - sbase);
                for idx in first..=last {
                    if !span.is_marked(idx) {
                        continue;
                    }
                    let obase = sbase + idx * es;
                    let from = obase.max(lo);
                    let to = (obase + es).min(hi);
                    t.scan_words::<false>(from, (to - from) / 8);
                }
            }
        }
        let (o, b) = (t.objects, t.bytes);
        self.absorb(o, b);
        self.stats.cards = cards;
    }

    /// Offers one root word (precise or conservative). Returns the base of the
    /// object it keeps alive, if any.
    #[inline]
    pub fn mark_word(&mut self, word: usize) -> Option<usize> {
        self.stats.root_words += 1;
        // Roots are offered by the coordinator alone, before helpers start.
        let (base, span, idx) = self.heap.find(word)?;
        self.stats.root_hits += 1;
        let won = if self.concurrent {
            span.try_mark(idx)
        } else {
            span.try_mark_single(idx)
        };
        if won {
            self.stats.objects += 1;
            self.stats.bytes += span.elemsize();
            if !span.noscan() {
                self.gray.push(base);
            }
        }
        Some(base)
    }

    /// Offers every aligned word of `[lo, hi)` conservatively.
    ///
    /// # Safety
    /// `[lo, hi)` must be readable memory that does not change during the call.
    pub unsafe fn mark_range(&mut self, lo: usize, hi: usize) {
        let mut p = lo.next_multiple_of(8);
        while p + 8 <= hi {
            // SAFETY: caller contract; `p` is aligned and inside the range.
            let w = unsafe { std::ptr::read(p as *const usize) };
            self.mark_word(w);
            p += 8;
        }
    }

    /// Scans everything reachable from the gray stack, on this thread alone.
    pub fn drain(&mut self) {
        let concurrent = self.concurrent;
        let mut t = self.tracer();
        if concurrent {
            t.drain::<true>(None, |_| false);
        } else {
            t.drain::<false>(None, |_| false);
        }
        let (o, b) = (t.objects, t.bytes);
        self.absorb(o, b);
    }

    /// Concurrent marking, on this thread alone: drains until the gray
    /// stack is empty (true) or `stop` says so (asked every 64 objects
    /// with the bytes marked so far in this call; false). Leaves overflow
    /// to `complete`.
    pub(crate) fn drain_until(&mut self, mut stop: impl FnMut(usize) -> bool) -> bool {
        debug_assert!(self.concurrent);
        let mut t = self.tracer();
        let emptied = t.drain::<true>(None, |t| stop(t.bytes));
        let (o, b) = (t.objects, t.bytes);
        self.absorb(o, b);
        emptied
    }

    /// Bytes marked so far by this marker and its helpers.
    pub(crate) fn marked_bytes(&self) -> usize {
        self.stats.bytes
    }

    /// Gray entries on the coordinator's stack.
    pub(crate) fn gray_len(&self) -> usize {
        self.gray.len
    }

    /// Moves up to `k` gray entries, the oldest, to `to` (a share for
    /// mutator assists).
    pub(crate) fn give_gray(&mut self, to: &mut Vec<usize>, k: usize) -> usize {
        self.gray.give_bottom_to_vec(to, k)
    }

    /// Records that gray objects were lost to an overflow elsewhere (an
    /// assist's stack): `complete` rescans the heap.
    pub(crate) fn note_overflow(&mut self) {
        self.gray.overflowed = true;
    }

    /// Drains with the helper threads, `workers` of the team in all (the
    /// coordinator included; at least 2).
    fn drain_parallel(&mut self, team: &MarkTeam, workers: usize) {
        team.pool_len.store(0, Relaxed);
        lock(&team.pool).len = 0;
        // Helpers join counted idle; the coordinator starts busy.
        team.round_workers.store(workers, Relaxed);
        team.idle.store(workers - 1, SeqCst);
        team.done.store(false, Relaxed);
        team.overflow.store(false, Relaxed);
        team.objects.store(0, Relaxed);
        team.bytes.store(0, Relaxed);
        team.active_workers.store(0, Relaxed);
        team.shares.store(0, Relaxed);
        {
            let mut c = lock(&team.ctl);
            c.round += 1;
            c.heap = self.heap as *const RawHeap as usize;
            c.open = true;
        }
        team.wake.notify_all();
        self.tracer().work(team, false);
        // Close the round and wait for every helper that entered it.
        let mut c = lock(&team.ctl);
        c.open = false;
        while c.inside > 0 {
            c = team.left.wait(c).unwrap_or_else(|e| e.into_inner());
        }
        c.heap = 0;
        drop(c);
        let (o, b) = (team.objects.load(Relaxed), team.bytes.load(Relaxed));
        self.absorb(o, b);
        self.stats.workers = team.active_workers.load(Relaxed).max(1);
        self.stats.shares = team.shares.load(Relaxed);
        if team.overflow.load(Relaxed) {
            self.gray.overflowed = true;
        }
    }

    /// Drains (in parallel when the heap has helpers), recovers from
    /// overflow, and returns the figures.
    pub fn finish(mut self) -> MarkStats {
        self.complete();
        self.stats
    }

    /// Offers, as roots, the objects `base`'s object references, without
    /// marking the object itself (so it stays unmarked if nothing else
    /// reaches it): how a finalizable object keeps what its finalizer will
    /// read alive (see `finalizer`). Scanned here rather than pushed gray,
    /// since an unmarked gray entry lost to an overflow would not be found
    /// by the rescan, which scans marked objects.
    pub(crate) fn scan_children(&mut self, base: usize) {
        let Some((base, span, _)) = self.heap.find(base) else {
            return;
        };
        if span.noscan() {
            return;
        }
        let concurrent = self.concurrent;
        let mut t = self.tracer();
        if concurrent {
            t.scan_object::<true>(base, span);
        } else {
            t.scan_object::<false>(base, span);
        }
        let (o, b) = (t.objects, t.bytes);
        self.absorb(o, b);
    }

    /// Whether the object at `addr` is marked (false if `addr` is not in an
    /// allocated object).
    pub(crate) fn is_marked(&self, addr: usize) -> bool {
        self.heap
            .find(addr)
            .is_some_and(|(_, span, idx)| span.is_marked(idx))
    }

    /// Drains everything offered so far (in parallel when the heap has
    /// helpers) and recovers from overflow; the mark can go on afterwards.
    pub(crate) fn complete(&mut self) {
        self.complete_with(usize::MAX);
    }

    /// As `complete`, with at most `workers` marking threads (the
    /// coordinator included).
    pub(crate) fn complete_with(&mut self, workers: usize) {
        let heap = self.heap;
        let before = self.stats.workers.max(1);
        self.stats.workers = 1;
        match heap.helpers.team() {
            Some(team) if self.gray.len > 0 && workers >= 2 => {
                self.drain_parallel(team, workers.min(team.workers))
            }
            _ => self.drain(),
        }
        let workers = before;
        self.stats.workers = self.stats.workers.max(workers);
        while self.gray.overflowed {
            self.gray.overflowed = false;
            self.stats.overflow_rescans += 1;
            let concurrent = self.concurrent;
            let mut t = self.tracer();
            heap.pages.for_each_in_use(&heap.arena, |span| {
                if span.noscan() {
                    return;
                }
                for idx in 0..span.nelems() {
                    if span.is_marked(idx) {
                        let base = span.base() + idx * span.elemsize();
                        if concurrent {
                            t.scan_object::<true>(base, span);
                            t.drain::<true>(None, |_| false);
                        } else {
                            t.scan_object::<false>(base, span);
                            t.drain::<false>(None, |_| false);
                        }
                    }
                }
            });
            let (o, b) = (t.objects, t.bytes);
            self.absorb(o, b);
        }
    }
}

/// Hints that the object at `addr` will be read soon.
#[inline(always)]
fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}
