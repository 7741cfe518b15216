//! # pardon-sched: goroutines for pardon
//!
//! An M:N runtime in Go's shape, preempted by the same SIGURG and call
//! injection as `pardon-preempt`: goroutines (stackful tasks) run on
//! `procs` worker threads, each with a local run queue and a `next` slot,
//! beside a global queue; a `sysmon` thread ends time slices. It knows
//! nothing of heaps (a heap will learn of goroutines through a narrow
//! interface: issue 21).
//!
//! ## Layers
//!
//! - **Stacks** ([`Stack`], [`StackPool`]): fixed `MAP_NORESERVE`
//!   reservations with a guard page, pooled. pardon's heap scans
//!   interrupted frames conservatively, so stacks cannot be moved (Go's
//!   grow by copying, which needs exact maps of every frame); a
//!   reservation costs only the pages a goroutine touches. An overflow
//!   faults in the guard page and the process ends with "goroutine stack
//!   overflow".
//! - **The context switch** ([`Context`], [`switch`]): fifteen
//!   instructions of our own (`sys/linux_x86_64/switch.rs`) that save the
//!   callee-saved registers on the running stack, swap stack pointers and
//!   jump (a `ret` into another context mispredicts every time). Chosen
//!   over `corosensei` 0.3 (3.9 ns a round trip against our 6.9-7.2 ns,
//!   `cargo bench -p pardon-bench --bench switch`) because the switch is
//!   entered from the preemption trampoline's frame, which a coroutine
//!   library's API does not allow.
//! - **The scheduler** ([`Runtime`], [`go`], [`JoinHandle`],
//!   [`yield_now`]): run queues and stealing (`queue`), workers, their
//!   scheduler loop and switches (`worker`), `sysmon` (`sysmon`). A
//!   goroutine's closure and result live in its task (`join`), and
//!   finished tasks are reused with
//!   their stacks, so a spawn allocates nothing in the steady state; an
//!   idle worker spins a few microseconds before it sleeps, and steals in
//!   batches. Goroutines wait without
//!   blocking their worker in [`JoinHandle::join`], [`WaitGroup`],
//!   [`Mutex`], [`Condvar`], [`sleep`] (a timer thread wakes sleepers),
//!   [`channel`]s (with `try_send`, `try_recv`, `send_timeout` and
//!   `recv_timeout`),
//!   [`after`] (a channel that receives the time once, Go's
//!   `time.After`), and [`blocking`] (a closure run on a pool thread).
//!
//! ## Time slices: three modes
//!
//! A goroutine that has run for [`Config::time_slice`] while others wait
//! is switched out to the back of its worker's queue. How
//! ([`Preemption`]):
//!
//! - **Signal**: `sysmon` asks the worker's preempt record to yield; the
//!   handler injects a call to the trampoline, which saves every register
//!   on the goroutine's stack and runs this crate's yield hook, which
//!   switches to the scheduler. Resumed later, the hook returns and the
//!   trampoline restores every register: the goroutine goes on at the
//!   interrupted instruction (Go's `asyncPreempt`). Only at *async-safe
//!   points*: outside no-preempt regions (the runtime's own code and its
//!   locks are inside one) and at an instruction of the program's own code,
//!   never in a shared library such as libc, which may hold a lock. A
//!   refused request is made again at `sysmon`'s next round.
//! - **Poll**: `sysmon` raises a flag that [`poll`] (and the
//!   [`GoroutinePoll`] and [`GoroutineStripMined`] loop strategies) reads.
//! - **Cooperative**: no `sysmon`; goroutines give up their worker only
//!   where they wait or yield (Go up to 1.13).
//!
//! ## Nothing allocates where a stop must wait
//!
//! The scheduler runs in a no-preempt region throughout, and the runtime
//! takes its locks in such regions. A stop of the registry (a collector's,
//! `Runtime::stop_the_world`, a `fork`'s) waits for a worker to leave its
//! region, while the threads it has already stopped stay where it caught
//! them, perhaps inside `malloc` with the allocator's lock held. So no
//! region calls the allocator: goroutines queue and wait on lists linked
//! through themselves (`linked`), value buffers are grown before the
//! region that fills them (`room`), and what must allocate in the
//! scheduler (freeing a dead goroutine, growing a worker's task list) runs
//! in a window at depth 0 where a stop may park the worker.
//!
//! ## Migration, and what signal preemption costs in Rust
//!
//! By default a goroutine runs only on the worker it first ran on. Rust
//! code may keep a thread-local's address across any call, and some values
//! are bound to their thread (a `std` `MutexGuard`), so a goroutine resumed
//! on another thread could reach another thread's data from safe code.
//! Load is balanced when goroutines start, by stealing those that have not
//! run. The `unsafe` [`Runtime::with_migration`] moves goroutines as Go
//! does, at yields and slice ends, through the global queue, and a worker
//! without work steals woken goroutines from the others once their worker
//! has let go of them (`Task::released`), for code that keeps the promise
//! its contract states (no thread-local state at all); three equal loops
//! on two workers then finish together, and a worker blocked in a system
//! call made directly gives up the goroutines queued behind it (`sysmon`
//! marks it stuck and wakes a thief, Go's `retake`). This crate's own
//! code finds its worker afresh at every lookup (a TLS word only assembly
//! reads, `sys::tls`) and after every switch. A goroutine preempted by the
//! signal between such a lookup and the use it makes of it (entering the
//! worker's no-preempt region, say) must not resume elsewhere: the yield
//! hook reads its saved registers and its stack for a pointer into its
//! worker's state, conservatively, and keeps it home that time if it finds
//! one.
//!
//! The goroutines of one worker share its thread-locals. At cooperative
//! switch points that is what safe Rust already allows (any call may run
//! other code that uses them), so cooperative and polling runtimes are
//! safe to make. A goroutine preempted by signal is switched out between
//! two arbitrary instructions, which safe Rust assumes cannot happen on a
//! thread; so a signal-preempted runtime is made by the `unsafe`
//! [`Runtime::with_signal_preemption`], whose contract lists what goroutine
//! code must not do (share thread-local state, print through std's locked
//! handles, use an allocator with thread caches in the program's own code).
//! The runtime's own per-thread state is used only inside no-preempt
//! regions. Go has no such problem because Go code has no thread-locals.
//!
//! ## Sharing a registry: a heap over goroutines
//!
//! [`Runtime::with_registry`] runs the workers on a preempt registry that
//! other code also stops — a garbage-collected heap — made with
//! [`registry_config`]. This crate still knows nothing of heaps; it gives
//! whoever stops the registry three things, all defined by
//! `pardon-preempt`: each worker attached through an embedder's hook
//! ([`Config::attach`], [`Attacher`]: pardon's `Heap::worker_attacher`
//! makes each worker a heap mutator its goroutines share); each worker's
//! *task word*, saved and restored per goroutine at every switch (pardon
//! keeps its frame chain there); and a *task source* through which a
//! stopped world reports every goroutine that is not running — its stack,
//! its saved stack pointer (every register the switch saved lies above
//! it) and its task word — so that parked goroutines are scanned without
//! being woken. The source can also *defer* those scans past a stop
//! (`deferred`): a concurrent collector's stop then reads no parked stack,
//! and each goroutine parked at it is scanned before it runs again, by
//! its worker or by the collector's pass. A thread outside the runtime but
//! attached to the registry takes the runtime's locks in its own
//! no-preempt region, so that no stop parks it holding one a worker waits
//! for. A goroutine does not wait or yield inside a safe region, a
//! no-preempt region or a no-yield region (it panics, saying which).
//!
//! ## Not yet
//!
//! Ms decoupled from Ps (a blocking call hands its P over in Go; here the
//! call moves to a pool thread instead, see [`blocking`]; a migrating
//! runtime's idle workers take a stuck worker's goroutines, but a runtime
//! that does not migrate leaves them there until the call returns);
//! sharing a registry in poll or cooperative mode; migrating with a shared
//! registry. See docs/STATUS.md.

#![warn(missing_docs)]

mod attach;
mod blocking;
pub mod channel;
mod config;
mod context;
mod deferred;
mod fork;
mod join;
mod linked;
mod lock;
mod overflow;
mod park;
mod poll;
mod queue;
mod region;
mod room;
mod runtime;
mod sleepers;
mod stack;
mod suspended;
mod sync;
mod sys;
mod sysmon;
mod task;
mod timer;
mod worker;

pub use attach::{registry_config, AttachFn, Attacher};
pub use blocking::blocking;
pub use config::{Config, Preemption, RuntimeError};
pub use context::{switch, Context};
pub use join::JoinHandle;
pub use poll::{poll, GoroutinePoll, GoroutineStripMined};
pub use runtime::{go, yield_now, Runtime, RuntimeStats};
pub use stack::{Stack, StackError, StackPool, GUARD, MIN_STACK};
pub use sync::{Condvar, Mutex, MutexGuard, WaitGroup};
pub use timer::{after, sleep};
