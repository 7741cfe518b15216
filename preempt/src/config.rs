//! Registry settings: how threads are stopped ([`Preemption`]), how a
//! coordinator waits ([`AckWait`]), and the timings of both ([`Config`]).

use std::fmt;
use std::time::Duration;

use crate::sys;

/// How a stop reaches a running thread: the preemption strategy. One name
/// for it across pardon: the heap's `Config::preemption` is this type, and
/// every tool spells it with [`Preemption::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preemption {
    /// Signal each running thread; the handler rewrites the ucontext to call
    /// an assembly trampoline that saves every register on the thread's
    /// stack and parks there (Go's `asyncPreempt`). Polls are still honoured.
    /// The default.
    Signal,
    /// Signal each running thread and park inside the signal handler; the
    /// kernel's signal frame holds the registers (Boehm GC's way). Polls are
    /// still honoured.
    SignalInHandler,
    /// Never signal: a thread stops only at a poll, at the end of a
    /// no-preempt region, or in a safe region. Both the back-edge-polling
    /// baseline and the cooperative-only (Go 1.13) behaviour.
    Poll,
}

impl Preemption {
    /// Every strategy, in report order.
    pub const ALL: [Preemption; 3] = [
        Preemption::Signal,
        Preemption::SignalInHandler,
        Preemption::Poll,
    ];

    /// The name tools and environment settings use: `signal`,
    /// `signal-handler` or `poll`.
    pub fn name(self) -> &'static str {
        match self {
            Preemption::Signal => "signal",
            Preemption::SignalInHandler => "signal-handler",
            Preemption::Poll => "poll",
        }
    }

    /// Whether stops signal running threads.
    pub fn signals(self) -> bool {
        self != Preemption::Poll
    }
}

impl fmt::Display for Preemption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Preemption {
    type Err = ConfigError;

    /// Parses [`Preemption::name`]; `polls-only`, an older spelling of
    /// `poll`, is accepted too.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        if s == "polls-only" {
            return Ok(Preemption::Poll);
        }
        Preemption::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                ConfigError(format!(
                    "preemption: unknown strategy {s:?} (expected signal, signal-handler or poll)"
                ))
            })
    }
}

/// How a coordinator waits for the acknowledgements of a stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckWait {
    /// Spin for [`Config::spin`] (only while a CPU is free for the threads
    /// waited for), then sleep on a futex that the last acknowledgement
    /// wakes. The default.
    #[default]
    Futex,
    /// Go's `suspendG` (runtime/preempt.go), kept as a baseline to measure
    /// against: never sleep; busy-wait with PAUSE for the first 10 µs, then
    /// `sched_yield` and busy-wait again, yielding at most every 5 µs; and
    /// re-signal a thread whose signal was handled without a stop at most
    /// every 5 µs (Go's `yieldDelay/2`).
    GoSuspendG,
}

/// Registry settings. `Config::default()` is signal mode with call injection
/// on SIGURG.
#[derive(Clone, Debug)]
pub struct Config {
    /// How a stop reaches a running thread.
    pub preemption: Preemption,
    /// The preemption signal (SIGURG by default).
    pub signal: i32,
    /// How long the coordinator spins for acknowledgements before sleeping,
    /// when fewer threads are outstanding than there are CPUs (otherwise it
    /// sleeps at once: a thread it waits for needs its CPU).
    pub spin: Duration,
    /// How long the coordinator waits before it re-signals threads that have
    /// not answered and told it nothing (their signal counts as lost); the
    /// interval doubles after each unproductive round. Long by default (10 ms):
    /// with one signal outstanding per thread a signal is practically never
    /// lost, and a sleep whose timeout falls before the next scheduler tick
    /// makes the kernel reprogram the timer device twice per stop, which on a
    /// virtual machine is two exits (about 4 µs a stop on the machine of
    /// `docs/STATUS.md`). Threads that received the signal but could not stop
    /// ask for a prompt re-signal instead: see [`Config::retry`].
    pub resend_initial: Duration,
    /// How soon the coordinator re-signals a thread that received its signal
    /// where it could not stop (on a foreign stack, or without room below its
    /// stack pointer), which the handler reports; doubles with each such
    /// report up to `resend_max`. Go re-signals at most every 5 µs while it
    /// spins; this default is 50 µs.
    pub retry: Duration,
    /// The largest re-signal interval.
    pub resend_max: Duration,
    /// A thread that has kept a stop waiting this long is moved to the
    /// coordinator's CPU, which the coordinator leaves idle while it waits,
    /// and given back its affinity before the stop returns (see
    /// `migrate.rs` for when a thread is not moved). It answers a thread
    /// queued behind another task on its CPU while the coordinator's CPU
    /// idles, which Linux leaves waiting for a tick or more. `None`: never.
    /// Not used by [`AckWait::GoSuspendG`], which is Go's loop as it is.
    pub move_after: Option<Duration>,
    /// A stop that has not completed after this long fails with a report of
    /// the threads that did not answer, and the world is restarted.
    pub stop_timeout: Duration,
    /// Test hook: drop (do not send) one preemption signal in this many;
    /// 0 disables. Exercises the lost-signal path.
    pub drop_signal_every: u32,
    /// How the coordinator waits for acknowledgements.
    pub wait: AckWait,
    /// What a thread does when a yield is asked of it
    /// ([`Registry::request_yield`](crate::Registry::request_yield)) and the
    /// signal finds it at a point where it may yield: the injected call
    /// runs this with every register saved (see [`YieldHook`]). `None` (the
    /// default): yields cannot be asked. Needs a signal strategy: yields
    /// are injected calls under either, whether stops are
    /// ([`Preemption::Signal`]) or park in the handler
    /// ([`Preemption::SignalInHandler`]).
    pub yield_hook: Option<YieldHook>,
}

/// A scheduler's entry from an injected call: called on the interrupted
/// thread, on the stack it was running on, with the asker's token, after
/// the trampoline has saved every register there and inside a no-preempt
/// region of depth exactly 1 (raised for the hook, lowered when it
/// returns). The hook may switch to another context on the same thread and
/// come back later; when it returns, the interrupted code resumes with
/// every register as it was. It is called only where the interrupted
/// instruction lies in the executable's own code (not in a shared library
/// such as libc, which may hold a lock), outside no-preempt regions, with
/// room on the stack.
///
/// The hook returns on the thread that called it or, for a scheduler
/// that moves tasks between threads, on another thread attached to the
/// same registry, inside a no-preempt region of depth exactly 1 of that
/// thread's (as a switch from that thread's scheduler leaves it) and with
/// the bounds of the stack it runs on set there; the injected call then
/// goes on with that thread's record, and puts the interrupted code's
/// `errno` there. During the hook, [`Attached::yield_saved_lo`](crate::Attached::yield_saved_lo)
/// says where the interrupted code's registers were saved. The hook must
/// not unwind: a panic that leaves it aborts the process.
///
/// Made only by the `unsafe` [`YieldHook::new`]: the hook runs between two
/// arbitrary instructions of the thread's code, where safe Rust assumes
/// nothing else runs on that thread: a hook that takes a thread-local
/// `Cell<Option<Box<_>>>` which the interrupted code is half-way through
/// taking frees the box twice.
///
/// ```compile_fail
/// // A hook cannot be made without `unsafe`.
/// let hook = pardon_preempt::YieldHook(|_token| {});
/// ```
#[derive(Clone, Copy, Debug)]
pub struct YieldHook(fn(token: u64));

impl YieldHook {
    /// A yield hook that calls `hook` with the asker's token.
    ///
    /// # Safety
    ///
    /// `hook` runs on an attached thread between two arbitrary
    /// instructions of the program's own code (outside no-preempt regions),
    /// whenever anyone holding the registry asks
    /// ([`Registry::request_yield`](crate::Registry::request_yield) is
    /// safe). Whatever it does, and whatever code it switches the thread to
    /// before it returns, must be sound there: it must not touch state the
    /// interrupted code may be in the middle of changing — the thread's
    /// thread-locals, anything the interrupted code borrows or holds a lock
    /// on — nor let other code do so. It must return as the type's
    /// documentation says (on the calling thread, or on another attached
    /// to the same registry at depth 1) and must not unwind.
    pub const unsafe fn new(hook: fn(token: u64)) -> YieldHook {
        YieldHook(hook)
    }

    /// The function it calls.
    pub fn function(self) -> fn(token: u64) {
        self.0
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            preemption: Preemption::Signal,
            signal: libc::SIGURG,
            spin: Duration::from_micros(3),
            resend_initial: Duration::from_millis(10),
            retry: Duration::from_micros(50),
            resend_max: Duration::from_millis(20),
            stop_timeout: Duration::from_secs(30),
            move_after: Some(Duration::from_micros(200)),
            drop_signal_every: 0,
            wait: AckWait::Futex,
            yield_hook: None,
        }
    }
}

impl Config {
    /// Checks the settings, naming the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.signal <= 0 || self.signal >= 65 {
            return Err(ConfigError(format!(
                "signal: {} is not a valid signal number (1..=64)",
                self.signal
            )));
        }
        if [
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGILL,
        ]
        .contains(&self.signal)
        {
            return Err(ConfigError(format!(
                "signal: {} cannot be used for preemption (it is uncatchable or a fault signal)",
                self.signal
            )));
        }
        if self.resend_initial.is_zero() || self.resend_max < self.resend_initial {
            return Err(ConfigError(
                "resend_initial/resend_max: need 0 < resend_initial <= resend_max".into(),
            ));
        }
        if self.retry.is_zero() || self.retry > self.resend_max {
            return Err(ConfigError("retry: need 0 < retry <= resend_max".into()));
        }
        if self.stop_timeout < self.resend_initial {
            return Err(ConfigError(
                "stop_timeout: must be at least resend_initial".into(),
            ));
        }
        if self.yield_hook.is_some() && !self.preemption.signals() {
            return Err(ConfigError(format!(
                "yield_hook: yields are injected calls, which need a signal strategy \
                 (signal or signal-handler), not {}",
                self.preemption
            )));
        }
        if self.preemption == Preemption::Signal && !sys::xsave_layout().has_xsave {
            return Err(ConfigError(
                "preemption: call injection needs XSAVE, which this CPU or OS does not \
                 enable; use Preemption::SignalInHandler"
                    .into(),
            ));
        }
        if self.yield_hook.is_some() && !sys::xsave_layout().has_xsave {
            return Err(ConfigError(
                "yield_hook: yields are injected calls, which need XSAVE, which this CPU \
                 or OS does not enable"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A `Config` field holds a value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid preempt config: {}", self.0)
    }
}
impl std::error::Error for ConfigError {}
