//! # pardon-stackscan: precise callers, a conservative interrupted frame
//!
//! A signal can stop a thread at any instruction. A precise collector would
//! need a stack map for every instruction to know which words of the
//! interrupted frame and which registers hold references there; Go found
//! that metadata cost about 5% of binary size and was nearly impossible to
//! test. Go 1.14's answer, and this crate's, is a hybrid: scan the interrupted
//! frame and the saved registers *conservatively* (any word that the heap's
//! exact lookup says points into an allocated object keeps it alive), and
//! every caller frame *precisely*, from maps recorded at call sites, the only
//! places where a caller can be.
//!
//! ## Precise frames: a shadow stack
//!
//! Rust gives us no compiler stack maps, so functions that hold references
//! across calls declare a [`Frame`]: `N` reference slots and a static
//! [`FrameMap`] with one liveness bitmap per call site ([`frame_map!`]
//! checks it at compile time). Before each call the function sets its current
//! call site ([`Frame::set_site`]); while the callee runs, only the slots live
//! at that site are roots. Frames link into a per-thread chain
//! ([`FrameChain`], one word the runtime keeps per thread) on entry and
//! unlink on exit ([`with_frame`]); linking is one release store, so the
//! chain is consistent at every instruction.
//!
//! A live slot's value is reported as it is, without asking the
//! [`ObjectFinder`]: by contract it is a reference or null. The consumer
//! must still resolve it exactly before marking (the collector's marker
//! looks up every root word anyway, to find its mark bit), so a wrong map
//! leaks the object a stale slot names rather than corrupting the heap.
//! Resolving it here too would double the cost of precise scanning.
//!
//! ## The conservative part
//!
//! For a stopped thread the runtime reports the lowest address to scan (it
//! covers the saved registers, the extended state and the red zone) and the
//! register values. [`Scanner::thread`] scans every aligned word from there
//! up to the *second-innermost* frame — the innermost frame belongs to the
//! function that was interrupted, whose current call site means nothing
//! mid-function, so it and whatever unmanaged helpers it called are scanned
//! word by word, slots included. A thread with no frames is scanned wholly
//! conservatively, as Boehm GC scans every thread. Interior pointers count;
//! the [`ObjectFinder`] decides; words pointing into the thread's own stack
//! are skipped.
//!
//! ## Why this is sound for a non-moving heap
//!
//! A conservative root may be an integer that happens to look like a pointer,
//! so the collector must never rewrite it: the object it names stays put. A
//! non-moving heap never rewrites anything, so a false root costs only
//! retention of that object until the word changes (Go's measurements: rarely
//! more than one cycle). What must hold is the other direction: every real
//! reference is either in a live slot of a caller frame, or in the
//! conservative range or a register. That is the contract below.
//!
//! ## The contract of a function with a frame
//!
//! 1. Every reference it needs after a call is in a slot that is live at that
//!    call's site, and the site is set before the call.
//! 2. References held only in Rust locals are safe only while no call to
//!    another frame-declaring function is in progress (they then lie in the
//!    interrupted range); hold them in slots across such calls.
//! 3. A slot dead at the current site is not a root even if it still holds a
//!    pointer — unless it also lies in the conservative range, as the
//!    innermost frame's slots do.

#![warn(missing_docs)]

mod frame;
mod map;
mod scan;

pub use frame::{with_frame, with_frame_slots, DynFrame, Frame, FrameChain, FrameHeader};
#[doc(hidden)]
pub use map::__build_bits;
pub use map::{words_for, FrameMap, MapError, MAX_SITES, MAX_SLOTS, WORD_BITS};
pub use scan::{ObjectFinder, RootKind, ScanStats, Scanner};
