//! `fork()` and the registries.
//!
//! A child of `fork` has one thread, the one that forked, and a copy of
//! every registry's memory as it was at that instant: other threads' records,
//! a stop's requests, locks other threads held. Left alone, a child forked
//! while a stop was pending inherited the request and parked for ever in its
//! first allocation or detach, and a child that collected signalled its
//! parent's threads (the pid cached at attach).
//!
//! So pardon registers `pthread_atfork` handlers when the first registry is
//! created:
//!
//! - **prepare** (in the forking thread): stops the world of every live
//!   registry, with the forking thread as coordinator; that stop parks no
//!   thread inside a shared library, unless it is blocked in a system
//!   call (`RegistryInner::forking`): glibc's `fork` takes every `malloc`
//!   arena lock after this handler, and a thread parked inside `malloc`
//!   held one, which hung the fork (found in CI, 2026-12-06). That waits out any
//!   stop in progress and keeps new ones from starting, and parks every
//!   other attached thread outside its no-preempt regions, so none holds a
//!   lock the stopped world relies on (a collector's heap locks); threads
//!   that are not attached take those locks only holding the coordinator
//!   lock, which the stop holds. If a stop fails (a thread that never
//!   reaches a stop point), the coordinator lock alone is held.
//! - **parent**: restarts those worlds.
//! - **child**: makes each registry's thread list the forking thread alone
//!   (if it is attached) with the child's pid, then restarts the worlds:
//!   nobody is left to wake.
//!
//! What a child may do: exec (what `std::process::Command` does; when it
//! uses `posix_spawn` no handler runs at all), or go on with the forking
//! thread alone: attach, allocate, collect. Threads of the parent do not
//! exist in the child; their records stay allocated (memory, not soundness)
//! and their heap state is the collector's business (pardon's heap keeps
//! their handle tables as roots). Locks that *other code* held at the fork
//! (the program's own, or a thread's that was not attached) are, as POSIX
//! warns, held for ever in the child.
//!
//! A thread that forks while it holds a registry's stopped world (from
//! inside `stop_the_world`'s guard) keeps that world as it is: its child
//! then inherits the parent's thread list for that registry, which it must
//! not stop again; exec at once.
//!
//! The cost: one stop per registry per `fork` (tens of microseconds; `fork`
//! itself takes longer on a process with a large address space).

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};

use crate::handshake::{RegistryInner, ThreadRecord};
use crate::registry::{lock, Registry};
use crate::stop::StoppedWorld;

/// Every registry created in this process (dead ones are skipped and pruned).
static REGISTRIES: Mutex<Vec<Weak<RegistryInner>>> = Mutex::new(Vec::new());
static HANDLERS: Once = Once::new();

/// What prepare holds until parent or child lets go, on the forking thread.
struct Held {
    /// Borrows `reg`: declared first, so dropped (restarting the world)
    /// before it.
    world: Option<StoppedWorld<'static>>,
    /// The thread list and the coordinator lock, when the stop failed.
    threads: Option<MutexGuard<'static, Vec<*const ThreadRecord>>>,
    _coord: Option<MutexGuard<'static, ()>>,
    /// Boxed, so the borrows above stay valid while this moves.
    _reg: Box<Registry>,
}

/// The stops, and the registry list's lock (a `Registry::new` on another
/// thread may hold it at the fork).
type Prepared = (Vec<Held>, MutexGuard<'static, Vec<Weak<RegistryInner>>>);

thread_local! {
    static HELD: RefCell<Option<Prepared>> = const { RefCell::new(None) };
}

/// Records a new registry and installs the handlers once per process.
pub(crate) fn register(inner: &Arc<RegistryInner>) {
    let mut all = lock(&REGISTRIES);
    all.retain(|w| w.strong_count() > 0);
    all.push(Arc::downgrade(inner));
    drop(all);
    HANDLERS.call_once(|| {
        // SAFETY: the three handlers are `extern "C"` functions that never
        // unwind (each catches panics and aborts).
        let r = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        assert_eq!(r, 0, "pthread_atfork failed");
    });
}

/// Runs a fork handler's body; a panic cannot unwind into libc.
fn guarded(f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        // SAFETY: abort has no preconditions.
        unsafe { libc::abort() };
    }
}

extern "C" fn prepare() {
    guarded(|| {
        let regs: Vec<Registry> = lock(&REGISTRIES)
            .iter()
            .filter_map(Weak::upgrade)
            .map(|inner| Registry { inner })
            .collect();
        let mut held = Vec::with_capacity(regs.len());
        for reg in regs {
            let reg = Box::new(reg);
            // SAFETY: the box is kept in the same `Held`, whose field order
            // drops the borrowers first; the box never moves its contents.
            let r: &'static Registry = unsafe { &*(&*reg as *const Registry) };
            // A count, not a flag: another thread's fork may be stopping
            // the same registry, and must not find it lowered.
            r.inner.forking.fetch_add(1, Ordering::SeqCst);
            let stopped = r.stop_the_world();
            r.inner.forking.fetch_sub(1, Ordering::SeqCst);
            let (world, coord, threads) = match stopped {
                Ok(w) => (Some(w), None, None),
                // The forking thread holds this world already (it forks from
                // inside a stop): no stop can be in progress, and its own
                // guard holds the locks.
                Err(crate::StopError::Reentrant) => (None, None, None),
                // It forks from inside `outside_stops`: it holds the
                // coordinator lock already (and its child's copy of it, the
                // same thread-local, keeps the lock's word); the thread
                // list is taken here.
                Err(crate::StopError::ExcludingStops) => (None, None, Some(lock(&r.inner.threads))),
                Err(_) => {
                    let c = lock(&r.inner.coordinator);
                    (None, Some(c), Some(lock(&r.inner.threads)))
                }
            };
            held.push(Held {
                world,
                threads,
                _coord: coord,
                _reg: reg,
            });
        }
        let list = lock(&REGISTRIES);
        HELD.with(|h| *h.borrow_mut() = Some((held, list)));
    });
}

extern "C" fn parent() {
    guarded(|| {
        let held = HELD.with(|h| h.borrow_mut().take());
        drop(held);
    });
}

extern "C" fn child() {
    guarded(|| {
        let Some((held, list)) = HELD.with(|h| h.borrow_mut().take()) else {
            return;
        };
        drop(list);
        let pid = nix::unistd::getpid().as_raw();
        for mut h in held {
            match (&mut h.world, &mut h.threads) {
                (Some(w), _) => w.keep_only_coordinator(pid),
                (None, Some(t)) => crate::stop::keep_only_current(t, pid),
                (None, None) => {}
            }
        }
    });
}
