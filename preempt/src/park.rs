//! Parking: the one handshake every route to a stop goes through.
//!
//! A thread that stops publishes how it stopped, the lowest stack address to
//! scan and its registers, sets `PARKED`, acknowledges the requested epoch
//! (which wakes the coordinator if it sleeps), and sleeps on the registry's
//! `world` futex word until the coordinator restarts the world. The routes
//! differ only in where the registers come from and where the thread sleeps:
//! call injection acknowledges in the signal handler, from the ucontext, and
//! sleeps in the injected call.

use std::sync::atomic::Ordering;

use crate::config::Preemption;
use crate::handshake::{current, wait_for_the_last, ThreadRecord, CURRENT};
use crate::state::{self, StopKind};
use crate::sys;

/// Publishes, acknowledges and sleeps until the world restarts; then, if the
/// next stop's request is already pending, parks again at once, from the same
/// place (the registers and stack published are still exact). Returns with
/// the thread `RUNNING`.
fn park(rec: &ThreadRecord, kind: StopKind, scan_lo: usize, xsave: (usize, usize)) {
    match publish_and_ack(rec, kind, scan_lo, xsave) {
        Some(w) => sleep_until_released(rec, w, kind, scan_lo, xsave),
        None => rec.state.store(state::RUNNING, Ordering::SeqCst),
    }
}

/// If a stop is in progress and asks for this thread: publishes how it
/// stopped, the lowest stack address to scan and the XSAVE image (the
/// caller has written `gprs`), sets `PARKED` and acknowledges. Returns the
/// world value of the stop acknowledged, or `None`, changing nothing, if
/// there was nothing to acknowledge. Async-signal-safe: atomics and at most
/// one futex wake.
///
/// The epoch acknowledged is read here, after the world word, never taken
/// from the caller: a caller that read the request and was then stopped on
/// the way in (a signal landing inside `poll_slow`, whose injected park
/// handled that stop and the next) would otherwise arrive with an epoch that
/// has already been acknowledged, park in a newer stop without acknowledging
/// it, and leave that stop waiting for it until the timeout. The world word
/// is read again after the request: if it has not moved, the request belongs
/// to this stop (a coordinator bumps the word before it posts requests, and
/// cannot end the stop without our acknowledgement).
fn publish_and_ack(
    rec: &ThreadRecord,
    kind: StopKind,
    scan_lo: usize,
    xsave: (usize, usize),
) -> Option<u32> {
    let reg = rec.registry();
    loop {
        let w = reg.world.load(Ordering::SeqCst);
        if w & 1 == 0 {
            // No stop in progress (the one that asked has ended).
            return None;
        }
        // Nothing to acknowledge: already done (by a park nested inside our
        // caller), or this stop has not reached us yet, and will signal or
        // flag us when it does.
        let e = rec.request_pending()?;
        if reg.world.load(Ordering::SeqCst) != w {
            continue;
        }
        rec.park_kind.store(kind as u32, Ordering::Relaxed);
        rec.scan_lo.store(scan_lo, Ordering::Relaxed);
        rec.xsave_ptr.store(xsave.0, Ordering::Relaxed);
        rec.xsave_len.store(xsave.1, Ordering::Relaxed);
        rec.poll_flag.store(0, Ordering::Relaxed);
        rec.last_park_epoch.store(e, Ordering::Relaxed);
        rec.last_park_world.store(w, Ordering::Relaxed);
        rec.state.store(state::PARKED, Ordering::SeqCst);
        // The coordinator of this very stop may find us `PARKED` before our
        // acknowledgement (we were woken from the previous stop and are
        // parking again for this one) and hold us, acknowledging for us:
        // sound, as everything it reads was published above, and then the
        // stop counts us as held, so the park is counted only if our own
        // acknowledgement is the one that took.
        if rec.ack(e) {
            rec.count_park(kind);
        }
        return Some(w);
    }
}

/// After this thread acknowledged the stop of world value `w`: sleeps until
/// that stop (and any later one that held the thread) has ended, parks again
/// if the next stop's request is already pending, and returns with the
/// thread `RUNNING`. `kind`, `scan_lo` and `xsave` are what was published,
/// published again if it parks again.
///
/// The re-park closes a lost-wakeup race: a thread still asleep here when the
/// world restarts may get the next stop's signal before it has woken. Its
/// handler sees a thread that is not `RUNNING` and does nothing, and a loop
/// without polls would then run on until the coordinator re-sends the signal
/// a whole resend interval later (it showed as a 200-300 µs tail).
fn sleep_until_released(
    rec: &ThreadRecord,
    mut w: u32,
    kind: StopKind,
    scan_lo: usize,
    xsave: (usize, usize),
) {
    let reg = rec.registry();
    loop {
        // CLOCK_MONOTONIC through the vDSO: async-signal-safe, no allocation.
        let t0 = std::time::Instant::now();
        wait_for_the_last(reg);
        wait_for_release(rec, w);
        rec.parked_ns
            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if rec.request_pending().is_none() {
            break;
        }
        // The next stop already asked (and did not find us parked): park
        // again from the same place.
        match publish_and_ack(rec, kind, scan_lo, xsave) {
            Some(next) => w = next,
            None => break,
        }
    }
    rec.xsave_ptr.store(0, Ordering::Relaxed);
    rec.state.store(state::RUNNING, Ordering::SeqCst);
    // A request that arrives from here on finds the thread RUNNING and gets
    // its own signal.
    if rec.request_pending().is_some() && reg.world.load(Ordering::SeqCst) & 1 == 1 {
        // Arrived between the check above and the store: park now rather
        // than wait for a re-send.
        park(rec, kind, scan_lo, xsave);
    }
}

/// Sleeps until the stop this thread parked in (world value `w`) has ended
/// and no later stop holds it, then leaves `PARKED` for `RUNNING`.
///
/// A later stop may have begun before this thread woke: its coordinator then
/// found the thread `PARKED` and claimed it (`PARKED -> PARKED_HELD`),
/// acknowledging for it, since its published registers and stack are still
/// exact. The thread's own CAS `PARKED -> RUNNING` fails, and it waits for
/// that stop to end too (the restart puts `PARKED` back before it moves the
/// world word). The world value waited on is always read before the CAS that
/// failed, so a restart that lands in between changes the word and the wait
/// returns at once.
fn wait_for_release(rec: &ThreadRecord, mut w: u32) {
    let reg = rec.registry();
    loop {
        let now = reg.world.load(Ordering::SeqCst);
        if now == w {
            sys::futex_wait(&reg.world, w, None);
            continue;
        }
        if rec
            .state
            .compare_exchange(
                state::PARKED,
                state::RUNNING,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        {
            return;
        }
        // Held by the stop in progress (or one that has just ended).
        w = now;
    }
}

/// The signal handler's decision. Returns whether the signal was ours (sent
/// by a coordinator, or arriving while a request is pending); a signal that is
/// not ours is passed on to the previously installed handler.
///
/// # Safety
/// Must be called from the preemption signal handler with its live ucontext.
pub(crate) unsafe fn on_preempt_signal(sig: i32, uc: *mut sys::Ucontext) -> bool {
    let p = CURRENT.with(|c| c.get());
    if p.is_null() {
        return false;
    }
    // SAFETY: CURRENT is non-null only while the record is live, and the
    // record is freed on this thread, which is busy running this handler.
    let rec = unsafe { &*p };
    let reg = rec.registry();
    if reg.config.signal != sig {
        return false;
    }
    let was_sent = rec.signal_pending.swap(0, Ordering::SeqCst) == 1;
    if rec.request_pending().is_none() {
        if reg.config.preemption.signals() {
            // A yield is an injected call under either signal strategy.
            // SAFETY: forwarded contract; `signal_pending` is cleared.
            unsafe { crate::yielding::on_yield_signal(rec, uc) };
        }
        return was_sent;
    }
    rec.signals_received.fetch_add(1, Ordering::Relaxed);
    let preemption = reg.config.preemption;
    if !preemption.signals() {
        return true;
    }
    if rec.state.load(Ordering::SeqCst) != state::RUNNING {
        // Already injected, or in a safe region: nothing more to do.
        return true;
    }
    if rec.no_preempt.load(Ordering::SeqCst) != 0 {
        // An unsafe point: the thread parks itself when it leaves the region
        // (poll_flag is set); the coordinator re-signals meanwhile.
        rec.deferred.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    let careful = (reg.forking.load(Ordering::SeqCst) | reg.careful.load(Ordering::SeqCst)) != 0;
    // SAFETY: caller contract: `uc` is the live ucontext.
    if careful && !unsafe { fork_may_park(reg, uc) } {
        // Possibly holding a libc lock that `fork` takes next, or that the
        // coordinator of a safe stop may take: not here.
        rec.deferred.fetch_add(1, Ordering::Relaxed);
        reg.ask_retry();
        return true;
    }
    // SAFETY: caller contract: `uc` is the live ucontext.
    let sp = unsafe { sys::interrupted_sp(uc) };
    let here = sys::approx_sp();
    let (stack_lo, stack_hi) = rec.stack_bounds();
    match preemption {
        Preemption::Signal => {
            let need = sys::injection_stack_need();
            if sp < stack_lo + need || sp > stack_hi || here > stack_hi {
                // Not on our stack (foreign code on an alternate stack) or not
                // enough room below it: leave the thread alone, and ask for
                // another signal soon.
                rec.deferred.fetch_add(1, Ordering::Relaxed);
                reg.ask_retry();
                return true;
            }
            if !rec.begin_injection() {
                return true;
            }
            // The thread stops here, not in the trampoline: read what it
            // was running with out of the ucontext before that is rewritten,
            // and acknowledge before returning. On the coordinator's own CPU
            // the thread that acknowledges last is preempted by the
            // coordinator it wakes, so every step taken before the
            // acknowledgement (sigreturn, the trampoline's saves) would be
            // time to safepoint; the trampoline then only sleeps.
            // SAFETY: `uc` is live for the whole handler.
            let gprs = unsafe { sys::gprs_from_ucontext(uc) };
            // SAFETY: as above.
            let (image, image_len) = unsafe { sys::xsave_from_ucontext(uc) };
            let copied = image_len.min(rec.xsave_copy_len);
            // SAFETY: `uc` is live, the floor is inside this thread's stack
            // with room for the trampoline below the scratch words, and all
            // signals are blocked until sigreturn. What runs after it here
            // (copies, atomics, one futex wake) stays far inside the scratch
            // gap.
            if !unsafe { sys::inject_call(uc, stack_lo + need) } {
                rec.state.store(state::RUNNING, Ordering::SeqCst);
                rec.deferred.fetch_add(1, Ordering::Relaxed);
                reg.ask_retry();
                return true;
            }
            // SAFETY: owner-only writes before acknowledgement (see
            // ThreadRecord): the thread is PREEMPTING, which no stop claims,
            // so no coordinator reads these now. `image` is the kernel's
            // image in the live signal frame, at least `copied` bytes, and
            // the copy buffer holds `xsave_copy_len` bytes; memcpy is
            // async-signal-safe.
            unsafe {
                *rec.gprs.get() = gprs;
                if image != 0 {
                    std::ptr::copy_nonoverlapping(
                        image as *const u8,
                        rec.xsave_copy as *mut u8,
                        copied,
                    );
                }
            }
            let xsave = if image != 0 {
                (rec.xsave_copy as usize, copied)
            } else {
                (0, 0)
            };
            // The red zone is the lowest part of the interrupted frame.
            let scan_lo = sp - sys::RED_ZONE;
            if let Some(w) = publish_and_ack(rec, StopKind::Injected, scan_lo, xsave) {
                rec.early_world.store(w, Ordering::Relaxed);
            }
            // Otherwise the stop has ended or has not asked yet: the
            // trampoline, finding the thread PREEMPTING, parks for a request
            // that is pending by then or lets it run.
        }
        Preemption::SignalInHandler => {
            if here < stack_lo + sys::PARK_STACK_NEED || here > stack_hi {
                rec.deferred.fetch_add(1, Ordering::Relaxed);
                reg.ask_retry();
                return true;
            }
            // SAFETY: `uc` is live for the whole handler, which outlives the park.
            let gprs = unsafe { sys::gprs_from_ucontext(uc) };
            // SAFETY: only the owner thread writes `gprs`, and the coordinator
            // reads it only after our acknowledgement.
            unsafe { *rec.gprs.get() = gprs };
            // SAFETY: as above, `uc` is live.
            let xsave = unsafe { sys::xsave_from_ucontext(uc) };
            // Everything from the handler's frame up is scanned: the kernel's
            // signal frame (registers, XSAVE image) and the red zone lie there.
            park(rec, StopKind::InHandler, here & !7, xsave);
        }
        // Returned above: a registry that never signals leaves a signal to
        // the program's handler.
        Preemption::Poll => {}
    }
    true
}

/// Whether a fork's stop may park the thread where the signal found it:
/// in the program's own code, or blocked in one of the system calls that
/// wait for something outside the process (`read`, `futex`, `poll`, ...)
/// anywhere. Inside a library otherwise it may hold a lock `fork` takes
/// (see `RegistryInner::forking`); being in a system call is not enough:
/// glibc's `free` returns memory with `madvise` while it holds its arena
/// lock, and a thread parked there hung the fork. A blocked call is
/// recognised as the kernel leaves one it will restart: the interrupted
/// instruction is the `syscall` itself and RAX the call's number; one the
/// kernel will not restart (a timed wait) by the instruction after it with
/// RAX at -EINTR. If the program's code is unknown, any place is allowed,
/// as before.
///
/// # Safety
/// `uc` must be the live ucontext of a handler on this thread.
unsafe fn fork_may_park(reg: &crate::handshake::RegistryInner, uc: *mut sys::Ucontext) -> bool {
    let (lo, hi) = reg.text;
    if lo >= hi {
        return true;
    }
    // SAFETY: caller contract.
    let pc = unsafe { sys::interrupted_pc(uc) };
    if (lo..hi).contains(&pc) {
        return true;
    }
    const SYSCALL: [u8; 2] = [0x0f, 0x05];
    // SAFETY: `pc` is the address the thread was executing, in a mapped,
    // readable code page (x86-64 Linux maps code readable); two bytes are
    // read only where both lie in that page.
    let at_syscall =
        pc & 4095 <= 4094 && unsafe { std::ptr::read_volatile(pc as *const [u8; 2]) } == SYSCALL;
    // SAFETY: caller contract.
    let rax = unsafe { sys::interrupted_rax(uc) };
    if at_syscall && sys::is_waiting_syscall(rax) {
        return true;
    }
    // A wait the kernel does not restart (a futex or `poll` with a timeout,
    // `nanosleep`) returns EINTR when the signal arrives: the interrupted
    // instruction is the one after the `syscall`, and RAX holds -EINTR,
    // which only a call that was blocked in an interruptible wait returns.
    // (Seen: a thread in `recv_timeout` looked busy in libc every time, and
    // a careful stop waited out its timeout.)
    const EINTR: u64 = (-(libc::EINTR as i64)) as u64;
    // SAFETY: the two bytes before `pc` are the instruction the thread has
    // just executed, in a mapped, readable code page (or two).
    rax == EINTR
        && pc >= 2
        && unsafe { std::ptr::read_volatile((pc - 2) as *const [u8; 2]) } == SYSCALL
}

/// Called from the trampoline with every register saved on this stack.
///
/// # Safety
/// `frame` and `xsave` must be the trampoline's frame and XSAVE image.
pub(crate) unsafe fn park_injected(frame: &sys::TrampolineFrame, xsave: usize) {
    let Some(rec) = current() else { return };
    let yielding = crate::yielding::begin_injected_yield(rec);
    let w = rec.early_world.swap(0, Ordering::Relaxed);
    if w != 0 {
        // The handler acknowledged already, from the ucontext: sleep on what
        // it published (this frame holds the same values).
        let scan_lo = rec.scan_lo.load(Ordering::Relaxed);
        let image = (
            rec.xsave_ptr.load(Ordering::Relaxed),
            rec.xsave_len.load(Ordering::Relaxed),
        );
        sleep_until_released(rec, w, StopKind::Injected, scan_lo, image);
    } else {
        // SAFETY: owner-only write before acknowledgement (see ThreadRecord).
        unsafe { *rec.gprs.get() = frame.to_gprs() };
        match rec.request_pending() {
            Some(_) => park(
                rec,
                StopKind::Injected,
                xsave,
                (xsave, sys::xsave_layout().size as usize),
            ),
            None => rec.state.store(state::RUNNING, Ordering::SeqCst),
        }
    }
    if yielding {
        crate::yielding::run_injected_yield(rec, xsave);
    }
}

/// The slow path of a poll, and of leaving a no-preempt region with a request
/// pending: spill the callee-saved registers and park.
#[cold]
#[inline(never)]
pub(crate) fn poll_slow(rec: &ThreadRecord) {
    if rec.no_preempt.load(Ordering::Relaxed) != 0 {
        return;
    }
    if rec.request_pending().is_none() {
        // A stale flag. Clear it, then look again: a coordinator stores the
        // request before the flag, so if its request is not seen now, its
        // flag store comes after ours and the flag stays set. (Clearing
        // without the second look could erase a new stop's flag, and in
        // polls-only mode nothing would set it again.)
        rec.poll_flag.store(0, Ordering::SeqCst);
        if rec.request_pending().is_none() {
            return;
        }
    }
    let scan_lo = rec.publish_call_registers();
    park(rec, StopKind::Poll, scan_lo, (0, 0));
}
