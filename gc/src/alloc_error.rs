//! Why an allocation failed.

use std::fmt;

/// Allocation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// The heap limit (or the arena) has no room, even after collecting.
    HeapExhausted {
        /// Bytes requested.
        requested: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The request cannot be represented (its size overflows).
    TooLarge {
        /// The element count or size that overflowed.
        requested: usize,
    },
    /// The heap limit has no room, and the collection that could have made
    /// some was abandoned: the world could not be stopped.
    CollectionAbandoned {
        /// Bytes requested.
        requested: usize,
        /// Why the stop failed ([`CollectError`](crate::CollectError)'s
        /// message).
        reason: String,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::HeapExhausted { requested, limit } => write!(
                f,
                "heap exhausted: cannot allocate {requested} bytes within the {limit}-byte limit"
            ),
            AllocError::TooLarge { requested } => {
                write!(f, "allocation of {requested} elements/bytes overflows")
            }
            AllocError::CollectionAbandoned { requested, reason } => write!(
                f,
                "heap exhausted: cannot allocate {requested} bytes, and the collection that \
                 could have freed memory was abandoned: {reason}"
            ),
        }
    }
}

impl std::error::Error for AllocError {}
