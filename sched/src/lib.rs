//! # pardon-sched: goroutines for pardon (in progress)
//!
//! The goal (issue 20) is an M:N runtime in Go's shape: goroutines
//! (stackful tasks) run on worker threads (Ms) through logical processors
//! (Ps) with local run queues and work stealing, preempted by the same
//! SIGURG and call injection as `pardon-preempt`, both for fairness (a
//! goroutine that has run for a time slice is moved to the back of the
//! queue) and for stopping the world. This crate will know nothing of
//! heaps; a heap learns of goroutines through a narrow interface.
//!
//! What exists so far are the two layers everything else stands on:
//!
//! - **Stacks** ([`Stack`], [`StackPool`]): fixed `MAP_NORESERVE`
//!   reservations with a guard page, pooled. pardon's heap scans
//!   interrupted frames conservatively, so stacks cannot be moved (Go's
//!   stacks grow by copying, which needs exact maps of every frame); a
//!   reservation costs only the pages a task touches.
//! - **The context switch** ([`Context`], [`switch`]): fifteen
//!   instructions of our own assembly (`sys/linux_x86_64/switch.rs`) that
//!   save the System V callee-saved registers (rbx, rbp, r12-r15) on the
//!   running stack, store the stack pointer, load another, and jump (not
//!   return: a `ret` into another context mispredicts every time) to where
//!   that one left off. Floating-point control state is the thread's, not
//!   switched (as with corosensei and Go). Why our own rather than
//!   `corosensei` 0.3: a goroutine must resume on whichever thread runs it
//!   next, and corosensei's `Coroutine` is `!Send` by design; the switch
//!   must also be entered from the preemption trampoline's frame later.
//!   The price, measured (`cargo bench -p pardon-bench --bench switch`):
//!   a round trip (two switches) takes 6.9-7.2 ns against corosensei's 3.9 ns
//!   here, small beside a scheduler's run-queue work.
//!
//! On them, a first **cooperative runtime** ([`Runtime`], [`go`],
//! [`JoinHandle`], [`yield_now`]): `procs` workers, each with a local run
//! queue, a global queue, stealing goroutines that have not run yet from
//! another worker's queue, idle workers asleep on a futex with no lost
//! wake-up; a goroutine stays on the worker it first ran on (Rust code may
//! keep a thread-local's address across a call, and `!Send` values such as
//! a `std` `MutexGuard` are tied to their thread, so migrating a running
//! goroutine would let safe code reach another thread's data); a goroutine that joins
//! is parked (its worker runs others) by a state word that never lets it
//! be queued twice or resumed before its context is saved (`task`); a
//! panic unwinds only its goroutine and is the join's error.
//!
//! Goroutines wait without blocking their worker in [`JoinHandle::join`],
//! [`WaitGroup::wait`], [`Mutex::lock`], [`Condvar::wait`], [`sleep`] (a timer thread wakes
//! sleepers) and on [`channel`]s (bounded, unbounded, rendezvous).
//!
//! A goroutine that overflows its stack faults in the guard page and the
//! process ends with "goroutine stack overflow" (`overflow`); a plain
//! thread's overflow still gets std's report.
//!
//! Not yet: Ms decoupled from Ps (system-call hand-off), preemption by
//! signal (fairness, stopping the world), the heap over goroutines. See docs/STATUS.md.

#![warn(missing_docs)]

pub mod channel;
mod config;
mod context;
mod overflow;
mod poll;
mod queue;
mod region;
mod runtime;
mod stack;
mod sync;
mod sys;
mod sysmon;
mod task;
mod worker;

pub use config::{Config, Preemption, RuntimeError};
pub use context::{switch, Context};
pub use poll::{poll, GoroutinePoll, GoroutineStripMined};
pub use runtime::{go, yield_now, JoinHandle, Runtime, RuntimeStats};
pub use stack::{Stack, StackError, StackPool, GUARD, MIN_STACK};
pub use sync::{sleep, Condvar, Mutex, MutexGuard, WaitGroup};
