//! Yields: the signal and the injected call used to switch a thread to
//! other work rather than to stop it, Go's `asyncPreempt` ending in
//! `gopreempt_m` instead of `suspendG`.
//!
//! A scheduler that runs tasks on a thread asks it to yield with
//! [`Registry::request_yield`]: the request is a token in the thread's
//! record, and the same SIGURG as a stop's. The handler injects the call to
//! the trampoline only where a switch is safe (see [`on_yield_signal`]);
//! the injected call, with every register saved on the interrupted stack,
//! runs the registry's [`YieldHook`](crate::YieldHook), which switches to
//! the scheduler and, when the task is resumed, returns into the
//! trampoline, which restores every register. A stop always takes
//! precedence: a signal that finds a stop's request pending stops the
//! thread, and the yield waits for the asker's next request.
//!
//! A refused yield (the thread in a no-preempt region, in a shared
//! library, short of stack) changes nothing; the asker asks again later,
//! as Go's `sysmon` does.

use std::num::NonZeroU64;
use std::sync::atomic::Ordering;

use crate::handshake::{current, RegistryInner, ThreadRecord};
use crate::registry::{lock, Attached, Registry};
use crate::state;
use crate::sys;

/// What [`Registry::request_yield`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YieldRequest {
    /// The thread was running; the signal was sent.
    Signalled,
    /// A signal to the thread is still on its way; its handler will see
    /// this request.
    Outstanding,
    /// The thread is not running code that can be interrupted (parked, in a
    /// safe region); the request stays posted for its next signal.
    NotRunning,
    /// No attached thread has that context word.
    NoSuchThread,
    /// The registry has no yield hook.
    Unsupported,
}

impl Registry {
    /// Asks the attached thread whose context word is `context` (see
    /// [`Registry::attach_with_context`]) to yield: at the next point where
    /// its signal finds it able to, it runs the registry's yield hook with
    /// `token`. A later request replaces the token of one not yet taken.
    /// Callable from any thread; takes the thread-list lock, so it waits
    /// while a stop is in progress.
    pub fn request_yield(&self, context: usize, token: NonZeroU64) -> YieldRequest {
        let inner = &*self.inner;
        if inner.config.yield_hook.is_none() {
            return YieldRequest::Unsupported;
        }
        let threads = lock(&inner.threads);
        let Some(rec) = threads
            .iter()
            // SAFETY: records in the list are live while its lock is held.
            .map(|&p| unsafe { &*p })
            .find(|r| r.context == context && !r.detached.load(Ordering::SeqCst))
        else {
            return YieldRequest::NoSuchThread;
        };
        rec.yield_token.store(token.get(), Ordering::SeqCst);
        // The handler clears `signal_pending` before it reads the token, so
        // if this CAS fails the signal in flight will find the token.
        if rec
            .signal_pending
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return YieldRequest::Outstanding;
        }
        if rec.state.load(Ordering::SeqCst) != state::RUNNING {
            rec.signal_pending.store(0, Ordering::SeqCst);
            return YieldRequest::NotRunning;
        }
        inner.signals_sent.fetch_add(1, Ordering::Relaxed);
        if !sys::send_signal(
            rec.pid.load(Ordering::Relaxed),
            rec.tid,
            inner.config.signal,
        ) {
            rec.signal_pending.store(0, Ordering::SeqCst);
            return YieldRequest::NotRunning;
        }
        YieldRequest::Signalled
    }
}

impl Attached {
    /// Enters a no-preempt region without a guard, for a scheduler whose
    /// region begins in one task's context and ends in another's (a switch
    /// happens inside it). Every call must be balanced by
    /// [`Attached::exit_no_preempt`] on this thread; until then stops wait
    /// for this thread and yields are refused.
    #[inline]
    pub fn enter_no_preempt(&self) {
        self.record().enter_no_preempt();
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    }

    /// Leaves a region entered by [`Attached::enter_no_preempt`]; at the
    /// outermost, parks here if a stop asked for the thread meanwhile.
    ///
    /// # Panics
    /// If the thread is in no no-preempt region.
    #[inline]
    pub fn exit_no_preempt(&self) {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        let rec = self.record();
        // One load of the depth for the check and the decrement (plain
        // load and store, as `ThreadRecord::exit_no_preempt`: only this
        // thread writes it).
        let n = rec.no_preempt.load(Ordering::Relaxed);
        assert!(n > 0, "exit_no_preempt outside a no-preempt region");
        rec.no_preempt.store(n - 1, Ordering::Relaxed);
        if n == 1 && rec.poll_flag.load(Ordering::Relaxed) != 0 {
            crate::park::poll_slow(rec);
        }
    }

    /// The depth of no-preempt regions the thread is in.
    #[inline]
    pub fn no_preempt_depth(&self) -> u32 {
        self.record().no_preempt.load(Ordering::Relaxed)
    }

    /// Tells the signal handler (and stops) which stack the thread is about
    /// to run on: a scheduler calls this before it switches to a task's own
    /// stack, and again before it switches back to its own.
    ///
    /// # Safety
    /// Must be called inside a no-preempt region. From the moment the
    /// thread's depth next returns to 0 until the next call, its stack
    /// pointer must lie in `[lo, hi)`, and that range must be writable
    /// memory of the stack it runs on: the handler writes the injected
    /// call's frame below the interrupted stack pointer, down to no lower
    /// than `lo` plus the room it needs.
    #[inline]
    pub unsafe fn set_stack_bounds(&self, lo: usize, hi: usize) {
        let rec = self.record();
        debug_assert!(rec.no_preempt.load(Ordering::Relaxed) > 0);
        rec.stack_lo.store(lo, Ordering::Release);
        rec.stack_hi.store(hi, Ordering::Release);
    }

    /// Runs `f` so that the thread is never switched to another task
    /// inside it: yield signals are refused (and a scheduler's own waits
    /// refuse to run there), while stops are taken as anywhere else. For
    /// per-thread state that the tasks of one thread share and that `f`
    /// borrows mutably (a heap mutator's handle table): a region that may
    /// call the system allocator, which a no-preempt region must not (a
    /// stop could have caught another thread holding malloc's lock, and
    /// would then wait for this one for ever).
    #[inline]
    pub fn no_yield<R>(&self, f: impl FnOnce() -> R) -> R {
        let _region = crate::here::NoYieldHere::on(self.record());
        f()
    }

    /// Whether a scheduler may switch the thread's task out here: the
    /// thread is plainly running ([`Attached::is_running`]), at no-preempt
    /// depth `depth` exactly (the scheduler's own region, 1, or none, 0)
    /// and in no no-yield region. Three loads and one branch, for a
    /// scheduler's every park (which then tells the cases apart, slowly,
    /// only when this is false).
    #[inline(always)]
    pub fn may_switch_task(&self, depth: u32) -> bool {
        let rec = self.record();
        (rec.state.load(Ordering::Relaxed) ^ state::RUNNING)
            | (rec.no_preempt.load(Ordering::Relaxed) ^ depth)
            | rec.no_yield.load(Ordering::Relaxed)
            == 0
    }

    /// The depth of no-yield regions the thread is in.
    #[inline]
    pub fn no_yield_depth(&self) -> u32 {
        self.record().no_yield.load(Ordering::Relaxed)
    }

    /// Yield hooks this thread has run.
    pub fn yields(&self) -> u64 {
        self.record().yields.load(Ordering::Relaxed)
    }

    /// Inside the yield hook, on this thread and before it switches away:
    /// the lowest address of what the injected call saved on the
    /// interrupted stack. From there up lie the interrupted code's every
    /// register (the XSAVE image, then the general registers and flags),
    /// its red zone and its frames, up to the top of its stack; below it,
    /// only the injected call's and the hook's own frames. A scheduler
    /// uses it to look at what the interrupted code holds. Elsewhere its
    /// value means nothing.
    pub fn yield_saved_lo(&self) -> usize {
        self.record().yield_saved_lo.load(Ordering::Relaxed)
    }

    /// The addresses `[lo, hi)` of this thread's record, the state the
    /// registry keeps for it (its no-preempt depth among them): a pointer
    /// into it is a pointer to this thread's state.
    pub fn record_range(&self) -> (usize, usize) {
        let lo = self.rec as usize;
        (lo, lo + std::mem::size_of::<ThreadRecord>())
    }

    /// Yield signals that found this thread where it could not yield.
    #[inline]
    pub fn yields_refused(&self) -> u64 {
        self.record().yields_refused.load(Ordering::Relaxed)
    }
}

/// The handler's part, for a signal that found no stop's request pending:
/// injects the call to the trampoline if a yield is asked and the thread
/// may be switched where it was interrupted, that is
///
/// - it is running (not already in an injected call, parked or in a safe
///   region), outside every no-preempt region (the scheduler's own code
///   and the library critical sections built on this crate run inside
///   one) and every no-yield region;
/// - the interrupted instruction is in the executable's own code, never in
///   a shared library that may hold a lock (`sys::exe_text_range`);
/// - the interrupted stack pointer, and the handler's, are inside the
///   stack the thread declared, with room for the injected call.
///
/// # Safety
/// Must be called from the preemption signal handler with its live
/// ucontext, after `signal_pending` was cleared.
pub(crate) unsafe fn on_yield_signal(rec: &ThreadRecord, uc: *mut sys::Ucontext) {
    if rec.yield_token.load(Ordering::SeqCst) == 0 {
        return;
    }
    let reg = rec.registry();
    if reg.config.yield_hook.is_none() || rec.state.load(Ordering::SeqCst) != state::RUNNING {
        return;
    }
    let refuse = || {
        rec.yields_refused.fetch_add(1, Ordering::Relaxed);
    };
    if rec.no_preempt.load(Ordering::SeqCst) != 0 || rec.no_yield.load(Ordering::SeqCst) != 0 {
        return refuse();
    }
    // SAFETY: caller contract: `uc` is live.
    let pc = unsafe { sys::interrupted_pc(uc) };
    if pc < reg.text.0 || pc >= reg.text.1 {
        return refuse();
    }
    // SAFETY: as above.
    let sp = unsafe { sys::interrupted_sp(uc) };
    let here = sys::approx_sp();
    let (lo, hi) = rec.stack_bounds();
    let need = sys::injection_stack_need();
    if sp < lo + need || sp > hi || here < lo + need || here > hi {
        return refuse();
    }
    if !rec.begin_injection() {
        return;
    }
    // SAFETY: `uc` is live, the floor is inside the declared stack with
    // room for the trampoline, and all signals are blocked until
    // sigreturn; nothing below uses the stack.
    if !unsafe { sys::inject_call(uc, lo + need) } {
        rec.state.store(state::RUNNING, Ordering::SeqCst);
        return refuse();
    }
    rec.yield_injected.store(1, Ordering::Relaxed);
}

/// The injected call's start, when the handler injected it for a yield:
/// whether it did (then the no-preempt region the hook runs in has been
/// entered, before the thread becomes `RUNNING` again, so no second
/// injection can nest in between).
pub(crate) fn begin_injected_yield(rec: &ThreadRecord) -> bool {
    if rec.yield_injected.swap(0, Ordering::Relaxed) == 0 {
        return false;
    }
    rec.enter_no_preempt();
    true
}

/// The record of the thread a yield hook returned on. Not inlined: the
/// thread-local is read afresh, not through an address computed on the
/// thread that called the hook. A thread that is not attached (a hook that broke its contract) ends
/// the process: nothing else could restore the interrupted registers.
#[inline(never)]
fn record_after_hook(registry: *const RegistryInner) -> &'static ThreadRecord {
    match current() {
        Some(r) => {
            debug_assert!(std::ptr::eq(r.registry(), registry));
            r
        }
        None => {
            const MSG: &[u8] =
                b"pardon: a yield hook returned on a thread not attached to its registry\n";
            // SAFETY: writes bytes of a static buffer to fd 2; abort has no
            // preconditions.
            unsafe {
                libc::write(2, MSG.as_ptr().cast(), MSG.len());
                libc::abort()
            }
        }
    }
}

/// The injected call's end, after any stop it parked for: runs the hook
/// with the token, then leaves the region `begin_injected_yield` entered
/// (parking there if a stop asked meanwhile). `saved_lo`: the lowest
/// address the trampoline saved registers at (its XSAVE image).
pub(crate) fn run_injected_yield(rec: &ThreadRecord, saved_lo: usize) {
    // Taken before the hook: the record of the thread it leaves is not
    // read afterwards (that thread may have detached and freed it).
    let registry: *const RegistryInner = rec.registry();
    let token = rec.yield_token.swap(0, Ordering::SeqCst);
    if let (Some(hook), true) = (rec.registry().config.yield_hook, token != 0) {
        rec.yields.fetch_add(1, Ordering::Relaxed);
        rec.yield_saved_lo.store(saved_lo, Ordering::Relaxed);
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        (hook.function())(token);
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    }
    // The hook returns on this thread, or on another attached to the same
    // registry, inside a region of depth 1 there (its contract: a
    // scheduler that moves tasks between threads): the call goes on with
    // the record of the thread it returned on.
    let rec = record_after_hook(registry);
    if rec.exit_no_preempt() == 1 && rec.poll_flag.load(Ordering::Relaxed) != 0 {
        crate::park::poll_slow(rec);
    }
}
