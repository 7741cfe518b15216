//! # pardon: an embeddable non-moving mark-sweep heap
//!
//! (The full essay is written with the collector; see `docs/design.md`.)

#![warn(missing_docs)]

mod arena;
mod config;
mod heap;
mod mark;
mod pageheap;
pub mod sizeclass;
mod span;
mod types;

pub use config::{Config, ConfigError};
pub use heap::{AllocError, HeapStats, RawHeap, ThreadCache, POISON};
pub use mark::{MarkStats, Marker};
pub use types::{Type, TypeDesc, TypeError, MAX_TYPE_WORDS};
