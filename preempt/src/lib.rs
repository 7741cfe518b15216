//! # pardon-preempt: stopping the world by signal
//!
//! A garbage collector has to stop every mutator thread before it can trust
//! what it finds on their stacks. Asking politely — a poll the compiler puts
//! on every loop back edge — costs throughput in the very loops where it
//! hurts most (Go measured 7.8% geomean; Wasmtime 14.4%), and a loop with no
//! poll stalls the whole process. Go 1.14 instead *interrupts* threads with a
//! signal, and so does this crate. It knows nothing of heaps or frames: for
//! each stopped thread it hands the collector where the stack must be scanned
//! and what the registers held.
//!
//! ## The pieces
//!
//! - A [`Registry`] of attached threads. [`Registry::attach`] records the
//!   thread's stack bounds (read once, with `pthread_getattr_np`), its kernel
//!   thread id, and allocates a per-thread record that the signal handler
//!   reaches through a const-initialised thread-local pointer: no lazy
//!   initialisation, no allocation, no lock in the handler. The returned
//!   [`Attached`] handle detaches on drop, and a thread-exit guard detaches a
//!   thread whose handle leaked.
//! - [`Registry::stop_the_world`] returns a [`StoppedWorld`] guard; dropping it
//!   restarts everyone. The caller may itself be attached (a collector runs on
//!   an allocating mutator) or not; concurrent coordinators serialise.
//!   That stop parks no thread inside a shared library (unless blocked in
//!   a waiting system call), so its holder may allocate; a collector,
//!   whose stopped-world path allocates nothing and takes no lock a
//!   mutator may hold, uses the `unsafe`
//!   [`Registry::stop_the_world_anywhere`], which parks threads wherever
//!   the signal finds them and so never waits for a long library call.
//! - The handshake, one for every route: a stop opens a new *epoch*, stores it
//!   in each thread's `request` word and raises its `poll_flag`. A thread
//!   stops by publishing its registers and lowest stack address, setting its
//!   state to `PARKED` and *acknowledging* the epoch (a CAS on its `acked`
//!   word, so each thread counts once however many routes race), then sleeps
//!   on a futex until the world's generation word changes. The coordinator
//!   counts acknowledgements, spinning a few microseconds and then sleeping on
//!   a futex (an event count) that the last acknowledger raises and wakes.
//!   When a stop asks no more threads than there are CPUs, a thread that
//!   parks on the coordinator's CPU while others are outstanding watches for
//!   the last acknowledgement (up to 30 µs) and wakes the coordinator
//!   itself: a local wake instead of an inter-processor interrupt to an idle
//!   CPU, which on a virtual machine is an exit on both sides. A thread
//!   that a stop finds still parked from the previous one (restarted but
//!   not yet woken: on a virtual machine that takes tens of microseconds) is
//!   held and acknowledged on its behalf (`PARKED -> PARKED_HELD`); it
//!   resumes only by its own CAS from `PARKED`, which fails while it is
//!   held. A thread that keeps a stop waiting for
//!   [`Config::move_after`] (200 µs) is moved to the coordinator's CPU,
//!   which the coordinator leaves idle while it sleeps, and gets its
//!   affinity back before the stop returns: Linux leaves a thread queued
//!   behind another task on its own CPU for a tick or more while another
//!   CPU idles, and the stop would wait with it (`migrate.rs`).
//! - [`AckWait::GoSuspendG`] replaces that wait with Go's `suspendG` loop,
//!   as a baseline: spin 10 µs, then yield, re-signalling a thread that
//!   handled its signal without stopping at most every 5 µs. It never
//!   sleeps, so it burns the coordinator's CPU while it waits; and each
//!   `sched_yield` moves an EEVDF task's deadline a slice later, so the
//!   threads the coordinator wakes at restart then preempt it for a slice
//!   (about 3 ms on Linux 6.18). `docs/experiments.md` has the comparison.
//! - Signals. With [`Preemption::Signal`] or
//!   [`Preemption::SignalInHandler`] a running thread gets one SIGURG (at most one
//!   outstanding: `signal_pending`, Go's `signalPending`). SIGURG because
//!   debuggers pass it, libc does not use it, a spurious one is harmless and
//!   every Unix has it. The handler is installed with `SA_SIGINFO |
//!   SA_RESTART`, without `SA_ONSTACK`, and chains to the handler that was
//!   there before for every signal that is not ours (no request pending, or a
//!   thread it does not know).
//! - The handler's safe-point check (Go's `isAsyncSafePoint`): a request is
//!   pending, the thread is not inside a no-preempt region
//!   ([`Attached::no_preempt`]), and there is enough stack below the
//!   interrupted SP. Otherwise it returns. Inside a no-preempt region the
//!   thread parks on leaving it (its `poll_flag` is up). On a foreign stack
//!   or without room, the handler asks the coordinator for a prompt re-signal
//!   (`Config::retry`, 50 µs doubling). A signal that nobody reports on is
//!   re-sent only after `Config::resend_initial` (10 ms, doubling): lost
//!   signals are rare with one outstanding per thread, and a short timeout
//!   would cost every stop two timer reprogrammings (VM exits on a VM).
//! - Two ways to suspend a signalled thread: *call injection*
//!   ([`Preemption::Signal`], the default) rewrites the
//!   ucontext so the thread, on return from the handler, calls an assembly
//!   trampoline that saves every general register, the flags and the whole
//!   XSAVE state (size from CPUID, all components XCR0 enables) on its own
//!   stack, sleeps, and restores it all bit-exactly — the path that can later
//!   switch goroutine stacks instead of parking. The handler itself
//!   publishes the interrupted registers (from the ucontext, with a copy of
//!   the kernel's XSAVE image in a per-thread buffer allocated at attach)
//!   and acknowledges before it returns: the coordinator it wakes preempts
//!   the thread on a shared CPU, so `sigreturn` and the trampoline's saves
//!   stay off the time to safepoint; *in-handler park*
//!   ([`Preemption::SignalInHandler`]) waits on
//!   the futex inside the handler, the kernel's signal frame holding the
//!   registers.
//! - Safe regions ([`Attached::safe_region`]): a thread about to block in a
//!   system call counts as stopped and is never signalled; it cannot leave the
//!   region while a stop holds it.
//! - Polls ([`Attached::poll`]) and the poll strategies loop code takes as a
//!   type parameter ([`NoPoll`], [`EveryIteration`], [`StripMined`],
//!   [`BetweenCalls`]): the baselines. [`Preemption::Poll`] never signals.
//!
//! ## The state word
//!
//! See [`state`] for the table of states and transitions.
//!
//! ## The trampoline's frame
//!
//! See the `sys::linux_x86_64::trampoline` module: why the handler leaves the
//! resume address below its own frame instead of pushing it on the
//! interrupted stack (the kernel's saved XSAVE image lies there), and the
//! layout the trampoline builds.
//!
//! ## Yields: the same signal, to switch tasks
//!
//! A scheduler that runs tasks on attached threads (pardon-sched's
//! goroutines) registers a [`YieldHook`] in the [`Config`] and asks a
//! thread to yield with [`Registry::request_yield`]: a token in its record
//! and the same signal. The handler injects the trampoline call only at a
//! point where switching tasks is safe (running, outside no-preempt
//! regions, the interrupted instruction in the executable's own code, the
//! stack pointer inside the stack the thread declared with
//! [`Attached::set_stack_bounds`]); the injected call then runs the hook
//! with every register saved, and the hook switches to the scheduler and
//! back. A stop always takes precedence. The crate still knows nothing of
//! tasks: a hook is a plain `fn(u64)`, a task's stack a pair of bounds.
//! [`Attached::no_yield`] marks code that must not be switched out (state
//! the tasks of one thread share) but may still be stopped.
//!
//! ## Tasks in a stopped world: task words and task sources
//!
//! A registry may be shared by a scheduler and a collector that stops it.
//! Two things let the collector see tasks without this crate knowing what
//! either keeps: every attached thread has a *task word*
//! ([`Attached::task_word_cell`], reported as
//! [`StoppedThread::task_word`]) that the scheduler saves and restores per
//! task at each switch (a collector keeps its frame chain there, so the
//! chain follows its task); and a scheduler adds a [`TaskSource`] to the
//! registry ([`Registry::add_task_source`]), through which a stopped world
//! reports every *suspended* task — stack bounds, saved stack pointer,
//! task word — beside its stopped threads
//! ([`StoppedWorld::for_each_suspended`], or in parts that several
//! threads read at once: [`StoppedWorld::suspended_parts`]). Suspended
//! tasks are already
//! stopped: a stop neither signals nor waits for them, so its time to
//! safepoint does not grow with their number. A coordinator that needs
//! their stacks as a stop saw them may also *defer* reading them past the
//! stop ([`StoppedWorld::defer_suspended`], [`TaskScanner`]): the source
//! then has each scanned before it runs again, so the stop's length does
//! not grow with them either.
//!
//! ## Invariants
//!
//! 1. A thread is counted stopped for epoch `e` exactly once, by the CAS of its
//!    `acked` word from below `e` to `e`.
//! 2. A thread that has acknowledged does not run mutator code until `world`
//!    changes: parked threads sleep on it (and then resume only by a CAS
//!    from `PARKED`, which fails while a later stop holds them in
//!    `PARKED_HELD`), safe-region threads are held by `SAFE_STOPPED`,
//!    exiting threads run no mutator code. A thread whose handler
//!    acknowledged for an injected call still runs `sigreturn` and the
//!    trampoline on its way to sleep: they write only below the interrupted
//!    red zone, outside the range it published for scanning.
//! 3. The coordinator holds the thread-list lock for the whole stop, so every
//!    record it looks at is live, and no thread attaches mid-stop.
//! 4. Nothing on the stopped-world path allocates or takes a lock that a
//!    stoppable thread can hold.
//! 5. A park acknowledges the epoch it reads itself, after reading the world
//!    word and before checking it again — never one its caller read earlier
//!    (the caller may have been stopped on the way by a nested park).
//! 6. Threads that are not attached are never stopped: state the stopped
//!    world relies on must be changed by them only inside
//!    [`Registry::outside_stops`], which excludes stops.
//!
//! ## Limits
//!
//! Threads must not block the preemption signal. The handler's thread-local
//! read is a plain `fs`-relative load in executables; a `dlopen`ed library
//! may use `__tls_get_addr`, which can allocate on first touch per thread, so
//! attach (which touches it) before any signal can arrive — which `attach`
//! guarantees for the attaching thread.

#![warn(missing_docs)]

// The modules in layers, each using only those above it, with two
// exceptions: the signal handler and the trampoline in `sys` enter `park`,
// and `registry` hands each new registry to `fork`'s process-wide hooks.
//
//   sys        the platform: signals, futexes, registers, the trampoline
//   state      the state word's values and transitions
//   config     settings
//   handshake  ThreadRecord, RegistryInner, CURRENT: request, ack, wake
//   park       a thread's side of a stop: poll, handler, injected call
//   safe       safe regions
//   fatal      the panic hook of a thread holding a stopped world
//   registry   Registry, attach and detach, Attached
//   poll       the public polling API on Attached
//   stop       a coordinator's side: stop_the_world, StoppedWorld, restart
//   fork       pthread_atfork: no fork inside a stop
//   yielding   yield requests: the signal used to switch tasks
//   here       no-yield and no-preempt regions of the calling thread
//   futex      futex wait and wake, for code built on pardon
//   tasks      suspended tasks and their sources
//   deferral   scans of suspended tasks deferred past a stop
mod config;
mod deferral;
mod fatal;
mod fork;
pub mod futex;
mod handshake;
mod here;
mod migrate;
mod park;
mod poll;
mod registry;
mod safe;
pub mod state;
mod stop;
mod sys;
mod tasks;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
mod yielding;

pub use config::{AckWait, Config, ConfigError, Preemption, YieldHook};
pub use deferral::TaskScanner;
pub use fatal::holds_stopped_world;
pub use here::{blocking_here, no_preempt_here, no_yield_here, NoPreemptHere, NoYieldHere};
pub use poll::{
    BetweenCalls, EveryIteration, NoPoll, NoPreempt, PollStrategy, Poller, SafeRegion, StripMined,
};
pub use registry::{AttachError, Attached, Registry};
pub use state::StopKind;
pub use stop::{Laggard, StopError, StopStats, StoppedThread, StoppedWorld};
pub use sys::{spill_callee_saved, Gprs, GPR_NAMES, NGPRS};
pub use tasks::{SuspendedParts, SuspendedTask, TaskSource, TaskSourceId};
pub use yielding::YieldRequest;

/// Whether the calling thread is attached to any registry.
pub fn is_attached() -> bool {
    handshake::current().is_some()
}
