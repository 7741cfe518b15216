//! # pardon: an embeddable non-moving mark-sweep heap
//!
//! (The full essay is written with the collector; see `docs/design.md`.)

#![warn(missing_docs)]

mod arena;
mod collector;
mod config;
mod heap;
mod mark;
mod pageheap;
mod roots;
pub mod sizeclass;
mod span;
mod stats;
mod typed;
mod types;

pub use collector::{
    CollectError, GlobalRootId, Heap, HeapError, Mutator, Preemption, DEFAULT_STOP_TIMEOUT,
};
pub use config::{Config, ConfigError};
pub use heap::{AllocError, HeapStats, RawHeap, ThreadCache, POISON};
pub use mark::{MarkStats, Marker};
pub use pardon_preempt as preempt;
pub use pardon_stackscan as stackscan;
pub use stats::{CycleStats, GcStats};
pub use typed::{__register, GcField, GcObject, Global, Member, Root, ZeroValid};
pub use types::{Type, TypeDesc, TypeError, MAX_TYPE_WORDS};
