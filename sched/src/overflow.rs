//! The stack-overflow report: a goroutine that runs off the bottom of its
//! stack faults in the guard page, and a SIGSEGV/SIGBUS handler says so
//! ("goroutine stack overflow") and aborts, rather than leave the fault to
//! a handler that knows only thread stacks (std's reports "thread has
//! overflowed its stack" for those) or to the default action. Faults
//! anywhere else are passed on to the handler installed before.
//!
//! The handler runs on the thread's alternate signal stack (std gives one
//! to every thread it starts, the workers included), and reads only a
//! const-initialised thread-local (the running goroutine's guard page,
//! set by the worker before each switch into one), so it is
//! async-signal-safe: no allocation, no lock.

use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Once;

thread_local! {
    /// The guard page of the goroutine this worker is running: [lo, hi),
    /// or (0, 0) while it runs its scheduler.
    static GUARD: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Records the guard page of the goroutine about to run on this thread.
pub(crate) fn set_guard(lo: usize, hi: usize) {
    GUARD.with(|g| g.set((lo, hi)));
}

static PREV_SEGV: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());
static PREV_BUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());

/// Installs the handler once per process.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (sig, prev) in [(libc::SIGSEGV, &PREV_SEGV), (libc::SIGBUS, &PREV_BUS)] {
            // SAFETY: sigaction structs are plain data; the handler is
            // async-signal-safe (see the module comment); the previous
            // action is kept (leaked) for the handler to chain to.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_fault as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut sa.sa_mask);
                let old = Box::into_raw(Box::new(std::mem::zeroed::<libc::sigaction>()));
                if libc::sigaction(sig, &sa, old) == 0 {
                    prev.store(old, Ordering::Release);
                } else {
                    drop(Box::from_raw(old));
                }
            }
        }
    });
}

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let (lo, hi) = GUARD.with(|g| g.get());
    if (lo..hi).contains(&addr) {
        const MSG: &[u8] = b"pardon-sched: goroutine stack overflow (it ran into its stack's guard page; raise Config::stack_size); aborting\n";
        // SAFETY: write(2) and abort(3) are async-signal-safe.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::abort();
        }
    }
    let prev = if sig == libc::SIGSEGV {
        PREV_SEGV.load(Ordering::Acquire)
    } else {
        PREV_BUS.load(Ordering::Acquire)
    };
    // SAFETY: `prev` is null or the action installed before ours, leaked.
    unsafe { chain(sig, info, ctx, prev) };
}

/// Passes a fault that is not a goroutine's overflow to the handler that
/// was there before; with none (or the default action), restores the
/// default and returns, so the faulting instruction faults again and the
/// process gets the default outcome.
///
/// # Safety
/// Called from the fault handler with its arguments; `prev` is null or a
/// valid, never-freed action.
unsafe fn chain(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
    prev: *const libc::sigaction,
) {
    let h = if prev.is_null() {
        libc::SIG_DFL
    } else {
        // SAFETY: caller contract: a non-null `prev` is a valid action.
        unsafe { (*prev).sa_sigaction }
    };
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // SAFETY: resetting a disposition is async-signal-safe.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
        return;
    }
    // SAFETY: caller contract: `prev` is valid here.
    let flags = unsafe { (*prev).sa_flags };
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: an SA_SIGINFO handler has this signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a plain handler has this signature.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}
