//! The per-thread state word and its transitions.
//!
//! | value            | meaning                                                       | set by                     |
//! |------------------|---------------------------------------------------------------|----------------------------|
//! | `RUNNING`        | running mutator code; must be asked to stop                   | the thread                 |
//! | `PREEMPTING`     | the handler is injecting the trampoline call, or injected it with nothing to acknowledge yet | the handler (CAS from RUNNING) |
//! | `PARKED`         | stopped and acknowledged; its registers are published          | the thread                 |
//! | `SAFE`           | inside a safe region: counts as stopped, gets no signal        | the thread (CAS from RUNNING) |
//! | `SAFE_STOPPED`   | in a safe region *and* claimed by a stop: cannot leave         | a coordinator, or the thread entering with a request pending |
//! | `EXITING`        | detaching; reports no roots; counts as stopped                 | the thread                 |
//! | `COORDINATING`   | this thread is the coordinator of the current stop             | the thread                 |
//! | `PARKED_HELD`    | parked for an earlier stop, not yet resumed, and claimed by the current one | a coordinator (CAS from PARKED) |
//!
//! Transitions:
//!
//! ```text
//!  RUNNING --handler--> PREEMPTING --handler acknowledges--> PARKED --resume (in the trampoline)--> RUNNING
//!                       PREEMPTING --trampoline, no request seen by the handler--> PARKED or RUNNING
//!  RUNNING --poll, in-handler park, no-preempt exit--> PARKED --resume--> RUNNING
//!                      PARKED --coordinator (CAS)--> PARKED_HELD --restart--> PARKED
//!  RUNNING --enter--> SAFE --exit--> RUNNING
//!                      SAFE --coordinator (CAS)--> SAFE_STOPPED --restart--> SAFE
//!  RUNNING --detach--> EXITING
//!  RUNNING/SAFE --stop_the_world on this thread--> COORDINATING --restart--> RUNNING
//! ```
//!
//! Only three transitions are made by a thread other than the owner, all by
//! CAS: the handler's `RUNNING -> PREEMPTING` (it runs on the owner thread,
//! but asynchronously) and the coordinator's `SAFE <-> SAFE_STOPPED` and
//! `PARKED <-> PARKED_HELD`. A thread leaving a safe region CASes `SAFE ->
//! RUNNING`; if a coordinator claimed it first, the CAS fails and the thread
//! sleeps until the world restarts. Likewise a parked thread, once the stop
//! it parked for has ended, resumes by a CAS `PARKED -> RUNNING`: a stop that
//! began before the thread got round to it (on a virtual machine, waking a
//! thread on an idle CPU takes tens of microseconds) finds it still parked,
//! with its registers and stack untouched since it published them, and
//! claims it instead of signalling it and waiting for it to wake and park
//! again (Go's `suspendG` does the same with a goroutine that is still
//! `_Gpreempted`).

/// Running mutator code.
pub const RUNNING: u32 = 0;
/// The handler injected the trampoline call; not parked yet.
pub const PREEMPTING: u32 = 1;
/// Stopped, acknowledged, registers published.
pub const PARKED: u32 = 2;
/// In a safe region.
pub const SAFE: u32 = 3;
/// In a safe region and held there by a stop in progress.
pub const SAFE_STOPPED: u32 = 4;
/// Detaching.
pub const EXITING: u32 = 5;
/// The coordinator of the current stop.
pub const COORDINATING: u32 = 6;
/// Parked for an earlier stop and held, before it resumed, by the current one.
pub const PARKED_HELD: u32 = 7;

/// The held form of a state in which a coordinator may claim a thread as
/// already stopped (`SAFE -> SAFE_STOPPED`, `PARKED -> PARKED_HELD`).
pub(crate) fn held(s: u32) -> Option<u32> {
    match s {
        SAFE => Some(SAFE_STOPPED),
        PARKED => Some(PARKED_HELD),
        _ => None,
    }
}

/// The inverse of [`held`], applied when the world restarts.
pub(crate) fn released(s: u32) -> Option<u32> {
    match s {
        SAFE_STOPPED => Some(SAFE),
        PARKED_HELD => Some(PARKED),
        _ => None,
    }
}

/// A readable name for a state value, for diagnostics.
pub fn state_name(s: u32) -> &'static str {
    match s {
        RUNNING => "running",
        PREEMPTING => "preempting",
        PARKED => "parked",
        SAFE => "safe-region",
        SAFE_STOPPED => "safe-region (held)",
        EXITING => "exiting",
        COORDINATING => "coordinating",
        PARKED_HELD => "parked (held)",
        _ => "invalid",
    }
}

/// How a stopped thread came to be stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum StopKind {
    /// Parked in the injected trampoline call (the default strategy).
    Injected = 1,
    /// Parked inside the signal handler.
    InHandler = 2,
    /// Parked at a cooperative poll (or on leaving a no-preempt region).
    Poll = 3,
    /// Blocked inside a safe region.
    SafeRegion = 4,
    /// The coordinator itself.
    Coordinator = 5,
}

impl StopKind {
    pub(crate) fn from_u32(v: u32) -> StopKind {
        match v {
            1 => StopKind::Injected,
            2 => StopKind::InHandler,
            3 => StopKind::Poll,
            5 => StopKind::Coordinator,
            _ => StopKind::SafeRegion,
        }
    }

    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            StopKind::Injected => "injected",
            StopKind::InHandler => "in-handler",
            StopKind::Poll => "poll",
            StopKind::SafeRegion => "safe-region",
            StopKind::Coordinator => "coordinator",
        }
    }
}
