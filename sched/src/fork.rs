//! `fork()` and runtimes.
//!
//! A child of `fork` has one thread, the one that forked: a runtime's
//! workers, `sysmon`, the timer thread and the blocking pool are gone, and
//! whatever they were running with them. Left alone, a goroutine spawned
//! in the child would never run, a join would wait for ever, and dropping
//! the runtime would wait for threads that do not exist. So a
//! `pthread_atfork` child handler (registered with the first runtime)
//! raises a fork generation; a runtime remembers the generation it was
//! made in, and in a child:
//!
//! - spawning on it, or joining a goroutine that has not finished, panics
//!   with a message saying why (a panic, not a hang);
//! - dropping it joins no thread;
//! - `blocking` and `sleep` start their helper threads afresh.
//!
//! (With signal preemption the workers are attached to a preempt registry,
//! whose own fork handling stops them while the process forks: busy ones
//! park, idle ones sleep in a safe region.)

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Once;

static GENERATION: AtomicU64 = AtomicU64::new(0);
static HANDLER: Once = Once::new();

extern "C" fn in_child() {
    GENERATION.fetch_add(1, SeqCst);
}

/// Registers the child handler, once per process.
pub(crate) fn install() {
    HANDLER.call_once(|| {
        // SAFETY: registers a handler that only increments an atomic,
        // which is async-signal-safe, as a child handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

/// How many times this process is a forked child of the process that
/// registered the handler (0 in the original process).
pub(crate) fn generation() -> u64 {
    GENERATION.load(SeqCst)
}

/// Panics if `made_in` is not this process's generation.
#[track_caller]
pub(crate) fn check(made_in: u64, what: &str) {
    if made_in != generation() {
        panic!(
            "pardon-sched: {what} in a forked child: the runtime's threads do not exist in \
             this process (make a new runtime in the child)"
        );
    }
}
