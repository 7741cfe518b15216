//! Installing the preemption signal handler, chaining to the handler that was
//! there before, and rewriting a ucontext to inject the trampoline call.
//!
//! Flags, and why:
//! - `SA_SIGINFO`: we need the `ucontext` for the interrupted registers.
//! - `SA_RESTART`: a mutator blocked in `read()` outside a safe region must not
//!   see `EINTR` because the collector wanted to look at it (Go 1.14's most
//!   reported regression).
//! - no `SA_ONSTACK`: the handler runs on the thread's own stack, so the
//!   kernel's copy of the registers lies inside the range the stack scan
//!   covers, and the injected call lands on the same stack (see
//!   `trampoline.rs`). The interrupted SP is nevertheless always read from the
//!   ucontext, never guessed from the handler's frame.
//! - no `SA_NODEFER`, and a full `sa_mask`: a second preemption signal while
//!   the handler runs is held back (POSIX then merges it), and no other handler
//!   can nest below ours while the handler has left words below its frame for
//!   the trampoline.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

use super::regs::RSP;
use super::trampoline::pardon_async_preempt;

const NSIG: usize = 65;

/// The action that was installed before ours, per signal; null until ours is
/// installed. Leaked on purpose: a handler may read it at any time.
static PREVIOUS: [AtomicPtr<libc::sigaction>; NSIG] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; NSIG];
static INSTALL_LOCK: Mutex<()> = Mutex::new(());

/// Whether our handler is the one installed for `sig` now. A program that
/// replaced it without chaining would make every stop wait out its timeout.
pub(crate) fn handler_installed(sig: i32) -> bool {
    // SAFETY: reads the current action into a zeroed struct.
    unsafe {
        let mut cur: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut cur) == 0
            && cur.sa_sigaction == on_signal as *const () as usize
    }
}

/// Installs our handler for `sig`, unless it is installed already. If the
/// program replaced it since (without chaining), it is installed again, and
/// the program's handler becomes the one chained to.
pub(crate) fn install(sig: i32) -> std::io::Result<()> {
    if sig <= 0 || sig as usize >= NSIG {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("signal number {sig} is out of range 1..{NSIG}"),
        ));
    }
    super::regs::xsave_layout();
    let _g = INSTALL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if handler_installed(sig) {
        return Ok(());
    }
    // SAFETY: sigaction structs are plain data; we pass valid pointers, and the
    // handler we install is async-signal-safe (see `on_signal`).
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let old = Box::into_raw(Box::new(old));
        // Publish the previous action before our handler can run. An action
        // published by an earlier install is leaked, never freed: a handler
        // may be reading it.
        let earlier = PREVIOUS[sig as usize].swap(old, Ordering::AcqRel);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigfillset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            let e = std::io::Error::last_os_error();
            PREVIOUS[sig as usize].store(earlier, Ordering::Release);
            return Err(e);
        }
    }
    Ok(())
}

/// The handler. Async-signal-safe: it reads a const-initialised thread-local
/// pointer (no lazy initialisation, no destructor registration), touches only
/// atomics in a record allocated at attach, makes raw syscalls, and saves and
/// restores `errno`.
///
/// Every delivery is passed on to the handler installed before ours, ours
/// included, and before ours acts (so it sees the interrupted context, not
/// the injected call). No test can tell the program's SIGURG from ours: the
/// kernel merges a pending signal with the next one of the same number, and
/// a program's `tgkill` carries the same `si_code` and `si_pid` as ours. So,
/// as Go does, the program's handler sees every SIGURG: some spurious, none
/// lost.
extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: forwarding the kernel's own arguments to the previous handler.
    unsafe { chain(sig, info, ctx) };
    // The chained handler may have changed errno; ours runs with the
    // interrupted code's.
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
    let uc = ctx as *mut libc::ucontext_t;
    // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler.
    unsafe { crate::park::on_preempt_signal(sig, uc) };
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Passes a signal to whatever was installed before us.
///
/// # Safety
/// Must be called from our handler with the kernel's arguments.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREVIOUS[sig as usize].load(Ordering::Acquire);
    if prev.is_null() {
        return;
    }
    // SAFETY: `prev` was leaked at install and is never freed.
    let prev = unsafe { &*prev };
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // SIGURG's default action is to ignore it; for a user-configured
        // signal whose default is to terminate, swallowing is the safe choice
        // in a library: document it rather than kill the process here.
        return;
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed as an SA_SIGINFO handler
        // with this exact signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the previous handler was installed as a plain handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}

/// The interrupted stack pointer, from the ucontext.
///
/// # Safety
/// `uc` must be the live ucontext of a handler on this thread.
pub(crate) unsafe fn interrupted_sp(uc: *const libc::ucontext_t) -> usize {
    // SAFETY: caller contract.
    unsafe { (*uc).uc_mcontext.gregs[RSP_INDEX] as usize }
}

/// The interrupted instruction's address, from the ucontext.
///
/// # Safety
/// `uc` must be the live ucontext of a handler on this thread.
pub(crate) unsafe fn interrupted_pc(uc: *const libc::ucontext_t) -> usize {
    // SAFETY: caller contract.
    unsafe { (*uc).uc_mcontext.gregs[RIP_INDEX] as usize }
}

/// RAX in the ucontext: for a system call the kernel will restart, its
/// number.
///
/// # Safety
/// `uc` must be the live ucontext of a handler on this thread.
pub(crate) unsafe fn interrupted_rax(uc: *const libc::ucontext_t) -> u64 {
    // SAFETY: caller contract.
    unsafe { (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] as u64 }
}

/// Whether `nr` is a system call that waits for something outside the
/// process (I/O, a futex, a timer, a child), where a thread holds no lock
/// of the library that made the call.
pub(crate) fn is_waiting_syscall(nr: u64) -> bool {
    const WAITING: [libc::c_long; 27] = [
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_select,
        libc::SYS_pselect6,
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_nanosleep,
        libc::SYS_clock_nanosleep,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_recvfrom,
        libc::SYS_recvmsg,
        libc::SYS_sendto,
        libc::SYS_sendmsg,
        libc::SYS_connect,
        libc::SYS_wait4,
        libc::SYS_waitid,
        libc::SYS_pause,
        libc::SYS_futex,
        libc::SYS_rt_sigtimedwait,
        // What the kernel leaves in RAX to resume a timed wait (a futex or
        // `poll` with a timeout, `nanosleep`) that a signal interrupted: a
        // thread blocked in one looked busy in libc, and a careful stop
        // waited out its timeout.
        libc::SYS_restart_syscall,
    ];
    WAITING.iter().any(|&w| w as u64 == nr)
}

const RSP_INDEX: usize = libc::REG_RSP as usize;
const RIP_INDEX: usize = libc::REG_RIP as usize;
const _: () = assert!(RSP == 7);

/// How far below the live stack pointer of the handler the resume words are
/// left. Everything the handler does after writing them (publishing its stop
/// and acknowledging it: atomics and one futex wake; returning through its
/// callers; restoring errno) runs in frames that start above the writing
/// point and reach at most a few hundred bytes below it, and even
/// unoptimised builds stay far inside this margin.
const SCRATCH_GAP: usize = 4096;

/// The signal context the kernel hands a handler.
pub(crate) type Ucontext = libc::ucontext_t;

/// The least stack the in-handler strategy needs below the handler's frame
/// to park there (the park's own frames and a futex call).
pub(crate) const PARK_STACK_NEED: usize = 4096;

/// The System V x86-64 red zone: the 128 bytes below RSP that a leaf
/// function may use without moving RSP, so part of the interrupted frame.
pub(crate) const RED_ZONE: usize = 128;

/// Rewrites the ucontext so that, on return from the handler, the thread calls
/// the trampoline as if from the interrupted instruction. The resume RIP and
/// interrupted RSP are written `SCRATCH_GAP` bytes below the current stack
/// pointer, in the same asm block that reads it, so no frame of this handler
/// can overlap them. Returns false, changing nothing, if that would go below
/// `floor`.
///
/// # Safety
/// `uc` must be the live ucontext of a handler on this thread, `floor` at or
/// above the lowest usable address of this thread's stack, and no other
/// handler may run on this thread before `sigreturn` (our `sa_mask` blocks
/// all signals). Until the handler returns, nothing it calls after this may
/// use the stack more than `SCRATCH_GAP` bytes below this call's frame.
pub(crate) unsafe fn inject_call(uc: *mut libc::ucontext_t, floor: usize) -> bool {
    // SAFETY: caller contract: gregs is live.
    let g = unsafe { &mut (*uc).uc_mcontext.gregs };
    let rip = g[RIP_INDEX];
    let rsp = g[RSP_INDEX];
    let here: usize;
    // SAFETY: reads RSP only.
    unsafe {
        std::arch::asm!("mov {}, rsp", out(reg) here, options(nomem, nostack, preserves_flags))
    };
    if here < floor + SCRATCH_GAP + 64 {
        return false;
    }
    let scratch: usize;
    // SAFETY: writes 16 bytes at (RSP - SCRATCH_GAP) & !15, which the check
    // above keeps inside this thread's stack and which lies below every frame
    // the handler still uses.
    unsafe {
        std::arch::asm!(
            "lea {s}, [rsp - {gap}]",
            "and {s}, -16",
            "mov [{s}], {rip}",
            "mov [{s} + 8], {rsp}",
            s = out(reg) scratch,
            rip = in(reg) rip,
            rsp = in(reg) rsp,
            gap = const SCRATCH_GAP,
            options(nostack, preserves_flags),
        )
    };
    g[RSP_INDEX] = scratch as i64;
    g[RIP_INDEX] = pardon_async_preempt as *const () as usize as i64;
    true
}
