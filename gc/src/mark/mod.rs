//! Marking: gray stacks in their own mappings, precise scanning of heap
//! objects from their heap bits, parallel draining with work sharing,
//! overflow handled by rescanning the heap, and the concurrent mark with
//! its barrier and assists.
//!
//! # Files
//!
//! - `gray`: a gray stack (marked, not yet scanned objects).
//! - `tracer`: one marking thread's loop (mark, push, scan, share).
//! - `team`: the helper threads and a parallel round's shared state.
//! - `marker`: what a collection drives (roots, remembered set, draining,
//!   overflow recovery).
//! - `barrier`: the deletion barrier and allocating black.
//! - `concurrent`: one concurrent cycle, its two stops and its verify.
//! - `assist`: the background share and mutator assists.
//! - `stacks`: parked goroutines' stacks scanned after the first stop.
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

pub(crate) mod assist;
pub(crate) mod barrier;
pub(crate) mod concurrent;
mod gray;
mod marker;
pub(crate) mod stacks;
mod team;
mod tracer;

pub(crate) use gray::GrayStack;
pub use marker::Marker;
pub(crate) use team::MarkHelpers;

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
