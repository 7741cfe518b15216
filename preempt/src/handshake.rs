//! The stop handshake and the words it runs on.
//!
//! Two sides meet here. Each attached thread has a [`ThreadRecord`], reached
//! from the signal handler through the const thread-local [`CURRENT`]; each
//! registry has a [`RegistryInner`] with the world word, the epoch and the
//! count of acknowledgements a stop still waits for. The handshake is:
//!
//! 1. the coordinator raises the world word (odd: stopped), bumps the epoch,
//!    posts it as each thread's `request` and raises its `poll_flag`, then
//!    [`RegistryInner::nudge`]s it: claims a thread already stopped (safe region,
//!    still parked), or signals a running one;
//! 2. the thread (in a poll, the handler, an injected call or at the end of a
//!    no-preempt region; see `park`) publishes its registers and
//!    [`ThreadRecord::ack`]s the epoch: exactly one acknowledgement per
//!    thread and epoch, by the thread or on its behalf;
//! 3. the last acknowledgement wakes the coordinator
//!    ([`RegistryInner::wake_coordinator`]), or a parked thread on the
//!    coordinator's CPU watches for it and wakes it ([`wait_for_the_last`]);
//! 4. the restart lowers the world word and wakes every parked thread.
//!
//! Everything a thread calls here is async-signal-safe: atomics and at most
//! one futex call.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::config::Config;
use crate::state::{self, StopKind};
use crate::sys;

/// Per-thread record, allocated at attach and reachable from the signal
/// handler through a const-initialised thread-local pointer ([`CURRENT`]).
///
/// Who touches what: the *owner* is the attached thread, including its
/// signal handler and injected call (they run on it, so they never race
/// it); a *coordinator* is whichever thread holds the registry's stopped
/// world. Every field both touch is atomic, except the published registers
/// (`gprs`, the buffer behind `xsave_copy`): the owner writes them only
/// before its acknowledgement of an epoch, a coordinator reads them only
/// after seeing it (release/acquire through `acked` or `state`).
#[repr(C, align(64))]
pub(crate) struct ThreadRecord {
    /// Non-zero when a stop wants this thread: the one word a poll loads.
    /// Raised by a coordinator when it posts a request (and again on a
    /// re-send); cleared by the owner when it parks or finds no request, or
    /// by the coordinator that claims it.
    pub poll_flag: AtomicU32,
    /// Nesting depth of no-preempt regions. Written only by the owner
    /// (plain load and store: see `enter_no_preempt`); read by its handler
    /// and, for reports, by coordinators.
    pub no_preempt: AtomicU32,
    /// The state word (see `state` for the transitions, and which side
    /// makes each).
    pub state: AtomicU32,
    /// 1 while a signal sent by a coordinator has not been handled yet: set
    /// by the coordinator before `tgkill`, cleared by the owner's handler
    /// (or by the coordinator if the send fails or was not needed).
    pub signal_pending: AtomicU32,
    /// The stop epoch a coordinator asks this thread to acknowledge.
    /// Written only by coordinators, under the thread-list lock.
    pub request: AtomicU64,
    /// The last epoch this thread acknowledged (or was acknowledged for).
    /// Only ever raised, by a CAS in [`ThreadRecord::ack`], from the owner
    /// or from a coordinator acknowledging on its behalf.
    pub acked: AtomicU64,
    /// The registry this record belongs to. Set at attach, never changed;
    /// the `Attached` handle's `Arc` keeps it alive.
    pub registry: *const RegistryInner,
    /// Kernel thread id. Set at attach, never changed.
    pub tid: i32,
    /// The process id at attach, for `tgkill` (glibc's `getpid` is a system
    /// call, and a stop should not make two per thread); set anew by the
    /// forking thread in a forked child (see `fork`), read by coordinators.
    pub pid: AtomicI32,
    /// Lowest address of the stack the thread runs on. Set at attach; a
    /// scheduler that runs tasks on stacks of their own changes it (and
    /// `stack_hi`) at each switch, inside a no-preempt region
    /// ([`Attached::set_stack_bounds`](crate::Attached::set_stack_bounds)),
    /// so the handler, which reads both only outside such regions, always
    /// sees the bounds of the stack it interrupted. Coordinators read it
    /// after the thread's acknowledgement.
    pub stack_lo: AtomicUsize,
    /// One past the highest address of that stack. As `stack_lo`.
    pub stack_hi: AtomicUsize,
    /// The opaque word given at attach
    /// ([`Registry::attach_with_context`](crate::Registry::attach_with_context));
    /// never changes afterwards, so whoever created the registry can trust
    /// what it finds here. Preempt never interprets it.
    pub context: usize,
    /// Set (by the owner) when the thread is detached; the record then stays
    /// allocated for as long as its `Attached` handle exists (see
    /// `detach_record`).
    pub detached: AtomicBool,
    /// True while the record is in its registry's thread list. Cleared under
    /// the list's lock by detach, or by the restart that prunes a record
    /// detached while its own thread held the stopped world; a record still
    /// in the list is never freed (it is leaked instead).
    pub in_list: AtomicBool,
    /// How the thread stopped, as a `StopKind`. Owner writes before it
    /// acknowledges; coordinators read after.
    pub park_kind: AtomicU32,
    /// Lowest stack address to scan while stopped. As `park_kind`.
    pub scan_lo: AtomicUsize,
    /// General registers published at park. As `park_kind` (not atomic:
    /// see the type's comment).
    pub gprs: UnsafeCell<sys::Gprs>,
    /// The address of the XSAVE image published at park, or 0. As
    /// `park_kind`.
    pub xsave_ptr: AtomicUsize,
    /// The length in bytes of the image at `xsave_ptr`. As `park_kind`.
    pub xsave_len: AtomicUsize,
    /// A copy of the kernel's XSAVE image, taken by the handler when it
    /// acknowledges before the injected call (the signal frame it comes from
    /// is gone once the handler returns): `xsave_copy_len` bytes, allocated
    /// at attach, written only by the owner's handler before it
    /// acknowledges, read by a coordinator only after. Freed by `Drop`.
    pub xsave_copy: *mut u64,
    /// The size of the buffer at `xsave_copy`, in bytes. Set at attach.
    pub xsave_copy_len: usize,
    /// Non-zero between an acknowledgement made in the handler (call
    /// injection) and the injected call that sleeps for it: the world value
    /// acknowledged. Owner-only.
    pub early_world: AtomicU32,
    /// Signals handled while a request was pending. Owner writes
    /// (relaxed); anyone reads, for tests and statistics.
    pub signals_received: AtomicU64,
    /// Parks by `StopKind`. As `signals_received` (a coordinator that
    /// claims a safe-region thread counts for it; a park that the stop
    /// held before the thread's own acknowledgement counts as held, in the
    /// stop's figures, not here).
    pub parks: [AtomicU64; 6],
    /// Nanoseconds spent parked (from publishing to waking), all kinds but
    /// safe regions. As `signals_received`.
    pub parked_ns: AtomicU64,
    /// Diagnostics for stop timeouts: the epoch and world value of this
    /// thread's latest park. Owner writes, a coordinator that timed out
    /// reads.
    pub last_park_epoch: AtomicU64,
    /// See `last_park_epoch`.
    pub last_park_world: AtomicU32,
    /// Signals that found the thread where it could not stop (no-preempt
    /// region, foreign stack, no room). As `signals_received`.
    pub deferred: AtomicU64,
    /// Non-zero while a yield is asked of this thread (see `yielding`): the
    /// asker's token, which the registry's yield hook receives. Written by
    /// the asker (any thread), taken (swapped to 0) by the owner's injected
    /// call.
    pub yield_token: AtomicU64,
    /// 1 between the handler's decision that the interrupted instruction is
    /// a point where the thread may yield (and its injection of the call)
    /// and the injected call, which takes it. Owner-only (the handler runs
    /// on the owner).
    pub yield_injected: AtomicU32,
    /// Set before the yield hook is called: the lowest address of what the
    /// injected call saved on the interrupted stack (its XSAVE image, with
    /// the general registers, the red zone and the interrupted frames
    /// above it). Meaningful only while the hook runs on this thread,
    /// before it switches away. Owner-only.
    pub yield_saved_lo: AtomicUsize,
    /// Yield hooks called. Owner writes (relaxed); anyone reads.
    pub yields: AtomicU64,
    /// Yield signals that found the thread where it could not yield. As
    /// `yields`.
    pub yields_refused: AtomicU64,
    /// The running task's word: opaque here, 0 at attach. Written by the
    /// owner (a scheduler saves and restores it per task at each switch;
    /// pardon's heap keeps the head of the shadow-stack frame chain in it);
    /// read by coordinators after the thread's acknowledgement. See
    /// [`Attached::task_word_cell`](crate::Attached::task_word_cell).
    pub task_word: AtomicUsize,
    /// Nesting depth of no-yield regions
    /// ([`Attached::no_yield`](crate::Attached::no_yield)): stops are
    /// taken there, yields refused. Written only by the owner; read by its
    /// handler.
    pub no_yield: AtomicU32,
    /// The CPU a coordinator moved this thread to because it kept a stop
    /// waiting (see `migrate`), or -1. Written only by the coordinator of
    /// a stopped world, under the thread-list lock, and put back to -1
    /// (with the thread's affinity) before that stop ends.
    pub moved_to: AtomicI32,
    /// The thread's affinity before that move. As `moved_to`, whose -1
    /// means this holds nothing.
    pub moved_from: UnsafeCell<sys::CpuMask>,
}

impl Drop for ThreadRecord {
    fn drop(&mut self) {
        let words = self.xsave_copy_len / 8;
        // SAFETY: `xsave_copy` came from `Box::into_raw` of a boxed slice of
        // `words` u64s at attach, and is freed only here, once.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.xsave_copy, words)) });
    }
}

// SAFETY: all shared mutable fields are atomics except `gprs` and the buffer
// behind `xsave_copy`, which are only written by the owner before its
// release-acknowledgement and only read by a coordinator after acquiring it,
// and `moved_from`, which only the coordinator holding the thread-list lock
// touches; so there is no concurrent access.
unsafe impl Sync for ThreadRecord {}
// SAFETY: as above; the raw registry pointer is to a `RegistryInner` kept
// alive by an `Arc` in the owning `Attached`.
unsafe impl Send for ThreadRecord {}

impl ThreadRecord {
    /// Enters a no-preempt region. Only the owner writes the depth, and the
    /// signal handler, the only code that can run between this load and
    /// store on the same thread, only reads it, so no locked
    /// read-modify-write is needed (this is on every allocation).
    #[inline(always)]
    pub(crate) fn enter_no_preempt(&self) {
        let n = self.no_preempt.load(Ordering::Relaxed);
        self.no_preempt.store(n + 1, Ordering::Relaxed);
    }

    /// Leaves a no-preempt region; returns the depth before leaving. See
    /// [`ThreadRecord::enter_no_preempt`].
    #[inline(always)]
    pub(crate) fn exit_no_preempt(&self) -> u32 {
        let n = self.no_preempt.load(Ordering::Relaxed);
        self.no_preempt.store(n - 1, Ordering::Relaxed);
        n
    }

    /// The handler's claim before it injects the trampoline call:
    /// `RUNNING -> PREEMPTING`. False if the thread is not running (already
    /// injected, parked, in a safe region).
    #[inline]
    pub(crate) fn begin_injection(&self) -> bool {
        self.state
            .compare_exchange(
                state::RUNNING,
                state::PREEMPTING,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    /// The bounds of the stack the thread runs on (see `stack_lo`).
    #[inline]
    pub(crate) fn stack_bounds(&self) -> (usize, usize) {
        (
            self.stack_lo.load(Ordering::Acquire),
            self.stack_hi.load(Ordering::Acquire),
        )
    }

    pub(crate) fn registry(&self) -> &RegistryInner {
        // SAFETY: the `Attached` that owns this record holds an Arc to it.
        unsafe { &*self.registry }
    }

    /// Whether a stop has asked for this thread and it has not answered yet.
    #[inline]
    pub(crate) fn request_pending(&self) -> Option<u64> {
        let r = self.request.load(Ordering::SeqCst);
        (r > self.acked.load(Ordering::SeqCst)).then_some(r)
    }

    /// Acknowledges epoch `e` once: by this thread or on its behalf. Returns
    /// whether this call was the one that acknowledged.
    pub(crate) fn ack(&self, e: u64) -> bool {
        let mut cur = self.acked.load(Ordering::SeqCst);
        while cur < e {
            match self
                .acked
                .compare_exchange(cur, e, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    let reg = self.registry();
                    // Only the last acknowledgement wakes the coordinator:
                    // each wake of a sleeping thread costs microseconds (an
                    // IPI, and on a VM an exit), and an early one would only
                    // send it back to sleep. `<= 1` rather than `== 1`: a
                    // decrement from the previous stop that lands after this
                    // stop reset the count makes it end below zero.
                    let prev = reg.outstanding.fetch_sub(1, Ordering::SeqCst) as i32;
                    if prev <= 1 {
                        reg.wake_coordinator();
                    }
                    return true;
                }
                Err(v) => cur = v,
            }
        }
        false
    }

    /// Publishes where the calling thread stops itself at a call (a poll, a
    /// safe region, coordinating a stop): its callee-saved registers and
    /// stack pointer, which a coordinator scans from. Returns that stack
    /// pointer. Inlined, so the registers are the caller's. Owner only,
    /// before the state change or acknowledgement after which a coordinator
    /// reads them.
    #[inline(always)]
    pub(crate) fn publish_call_registers(&self) -> usize {
        let mut regs = [0u64; sys::NGPRS];
        sys::spill_callee_saved(&mut regs);
        // SAFETY: owner-only write; coordinators read `gprs` only after the
        // state change or acknowledgement that follows (release/acquire).
        unsafe { *self.gprs.get() = regs };
        sys::stack_pointer(&regs)
    }

    pub(crate) fn count_park(&self, kind: StopKind) {
        self.parks[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

thread_local! {
    /// This thread's record, or null. Const-initialised and without a
    /// destructor, so reading it from a signal handler never runs lazy
    /// initialisation or allocates.
    pub(crate) static CURRENT: Cell<*const ThreadRecord> = const { Cell::new(std::ptr::null()) };
}

/// The record of the calling thread, if it is attached.
#[inline]
pub(crate) fn current() -> Option<&'static ThreadRecord> {
    let p = CURRENT.with(|c| c.get());
    // SAFETY: a non-null CURRENT points to a live record: detach clears it
    // before freeing the record, on this same thread.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Shared registry state.
pub(crate) struct RegistryInner {
    pub config: Config,
    /// The executable's own code, `[lo, hi)`, where a yield may be taken
    /// (`yielding`) and where a fork's stop may park a thread (see
    /// `forking`); `(0, 0)` if it could not be found. Set at creation.
    pub text: (usize, usize),
    /// Attached threads. Held by a coordinator for the whole stop; taken by
    /// attach and detach. No thread that can be stopped holds it (see `stop`).
    pub threads: Mutex<Vec<*const ThreadRecord>>,
    /// Serialises coordinators.
    pub coordinator: Mutex<()>,
    /// The tid of the thread holding this registry's stopped world, or 0.
    /// Written by that thread (set after taking `coordinator`, cleared at
    /// restart before releasing it); read by any thread to refuse a
    /// re-entrant stop, which would wait for ever on `coordinator`.
    pub coordinator_tid: AtomicI32,
    /// Which unattached thread is inside `Registry::outside_stops`, holding
    /// `coordinator` for it (`registry::this_thread`, no system call; a
    /// forked child's copy of the thread has the same value), or 0.
    /// Written by that thread only (set after taking the lock, cleared
    /// before releasing it); read to let a nested `outside_stops` run at
    /// once and to refuse a stop there, each of which would otherwise wait
    /// for ever on `coordinator`.
    pub excluding: AtomicUsize,
    /// Futex word: odd while the world is stopped.
    pub world: AtomicU32,
    /// Stop epochs; the current one is the one being acknowledged.
    pub epoch: AtomicU64,
    /// Acknowledgements the current stop still waits for, as an `i32`. The
    /// coordinator zeroes it before posting requests and adds the number it
    /// posted afterwards; each acknowledgement subtracts one, and the one that
    /// brings it to zero (or below) wakes the coordinator.
    pub outstanding: AtomicU32,
    /// Futex word the coordinator sleeps on: an event count, raised by the
    /// last acknowledgement and by a request for a prompt re-signal. The
    /// coordinator reads it before its final checks, so an event after them
    /// changes the word and the sleep does not start (no lost wake-up).
    pub coordinator_seq: AtomicU32,
    /// Non-zero while the coordinator sleeps (or is about to): only then do
    /// events make the wake system call.
    pub coordinator_sleeping: AtomicU32,
    /// Set by a signal handler that could not stop its thread where the signal
    /// found it (see [`Config::retry`]); the coordinator clears it.
    pub retry_asked: AtomicU32,
    /// Online CPUs when the registry was created.
    pub cpus: usize,
    /// Per stop: non-zero when it stops no more threads than there are CPUs,
    /// so that a thread waiting on the coordinator's CPU (see
    /// `park::wait_for_the_last`) cannot be holding up an outstanding one.
    pub spin_for_last: AtomicU32,
    /// The CPU the coordinator went to sleep on.
    pub coordinator_cpu: AtomicI32,
    /// Non-zero while a parked thread on the coordinator's CPU watches for the
    /// last acknowledgement, and will wake the coordinator itself.
    pub local_waker: AtomicU32,
    /// Stops whose coordinator was woken that way (a statistic).
    pub local_wakes: AtomicU64,
    /// Signals sent, for the drop-one-in-N hook and statistics.
    pub signals_sent: AtomicU64,
    /// The task sources added to this registry (see `tasks`). Changed
    /// only inside `outside_stops` (so never while a world is stopped, and
    /// never by a thread a stop could catch holding it); read by the
    /// coordinator of a stopped world.
    pub sources: Mutex<crate::tasks::Sources>,
    /// How many `fork` prepare handlers are stopping this registry's
    /// world now (forks on several threads overlap). Such a stop must not park a thread inside a shared library
    /// (libc): glibc's `fork` takes every `malloc` arena lock right after
    /// the prepare handlers, and a thread parked inside `malloc` holds
    /// one. The handler then defers, as in a no-preempt region, unless
    /// the thread is blocked in a system call (see `park::fork_may_park`).
    pub forking: AtomicU32,
    /// 1 while a stop made by the safe [`Registry::stop_the_world`] is in
    /// progress or held, 0 otherwise (written by its coordinator, under the
    /// coordinator lock; read by the signal handler). Its coordinator may
    /// run any code while it holds the world, allocation included, so such
    /// a stop parks no thread where it may hold a shared library's lock
    /// (`malloc`'s arena lock: a coordinator that allocated waited for ever
    /// on a thread parked inside `malloc`); the handler defers as for a
    /// fork (see `park::fork_may_park`). The collector's stops, which run
    /// no such code, park anywhere (`stop_the_world_anywhere`).
    ///
    /// [`Registry::stop_the_world`]: crate::Registry::stop_the_world
    pub careful: AtomicU32,
}

impl RegistryInner {
    /// Tells the coordinator the last acknowledgement has come. Async-signal-
    /// safe: a few atomics and, if it sleeps and no thread on its CPU is
    /// watching for this (`local_waker`), one system call.
    pub(crate) fn wake_coordinator(&self) {
        self.raise(true);
    }

    /// Raises `coordinator_seq` and wakes a sleeping coordinator, unless
    /// `defer` and a watcher on its CPU will (it watches only for the last
    /// acknowledgement, so other events must not defer to it).
    fn raise(&self, defer: bool) {
        self.coordinator_seq.fetch_add(1, Ordering::SeqCst);
        if self.coordinator_sleeping.load(Ordering::SeqCst) != 0
            && !(defer && self.local_waker.load(Ordering::SeqCst) != 0)
        {
            sys::futex_wake(&self.coordinator_seq, 1);
        }
    }

    /// Called by a handler whose thread could not stop where the signal found
    /// it: asks the coordinator to re-signal soon rather than at its long
    /// lost-signal timeout.
    pub(crate) fn ask_retry(&self) {
        self.retry_asked.store(1, Ordering::SeqCst);
        self.raise(false);
    }
}

// SAFETY: the raw record pointers in `threads` are only dereferenced under the
// `threads` lock, while the records are guaranteed live (detach removes a
// record under the same lock before freeing it).
unsafe impl Send for RegistryInner {}
// SAFETY: as above.
unsafe impl Sync for RegistryInner {}

/// How long a parked thread on the coordinator's CPU watches for the last
/// acknowledgement before it goes to sleep and leaves the wake to the
/// acknowledger. About the time a signal takes to reach a running thread on
/// another CPU of a virtual machine; beyond it, the stop is in its tail anyway.
const WATCH_FOR_LAST: std::time::Duration = std::time::Duration::from_micros(30);

/// Called right after this thread acknowledged. If the coordinator sleeps on
/// this thread's CPU, other threads are still outstanding, and the stop asked
/// for no more threads than there are CPUs (so none of those is queued behind
/// us on this CPU), watch for the last acknowledgement for up to
/// [`WATCH_FOR_LAST`] and wake the coordinator from here.
///
/// Why: the coordinator shares a CPU with one of the threads it stops, which
/// can only answer once the coordinator sleeps; when that thread has parked,
/// the CPU goes idle, and the last acknowledgement, from another CPU, must
/// wake it with an inter-processor interrupt, which on a virtual machine is
/// an exit on both sides (about 8 µs one way on the machine of
/// docs/STATUS.md). Watching keeps the CPU busy and makes the wake a local
/// one. `local_waker` tells the acknowledger to skip its own wake; the
/// handover is race-free because each side writes its word before reading
/// the other's (all `SeqCst`): a watcher that gives up clears `local_waker`
/// and then looks at the count, so either it sees the last acknowledgement
/// and wakes, or the acknowledger sees the flag cleared and wakes.
///
/// Async-signal-safe (atomics, the vDSO clock, `sched_getcpu` from the rseq
/// area or the vDSO, one futex call).
pub(crate) fn wait_for_the_last(reg: &RegistryInner) {
    if reg.spin_for_last.load(Ordering::SeqCst) == 0
        || reg.outstanding.load(Ordering::SeqCst) as i32 <= 0
        || reg.coordinator_sleeping.load(Ordering::SeqCst) == 0
        || sys::current_cpu() != reg.coordinator_cpu.load(Ordering::SeqCst)
    {
        return;
    }
    reg.local_waker.store(1, Ordering::SeqCst);
    let t0 = std::time::Instant::now();
    while reg.outstanding.load(Ordering::SeqCst) as i32 > 0 && t0.elapsed() < WATCH_FOR_LAST {
        std::hint::spin_loop();
    }
    reg.local_waker.store(0, Ordering::SeqCst);
    if reg.outstanding.load(Ordering::SeqCst) as i32 <= 0 {
        // The last acknowledgement raised `coordinator_seq` already, and may
        // have skipped its wake because of our flag.
        reg.local_wakes.fetch_add(1, Ordering::Relaxed);
        sys::futex_wake(&reg.coordinator_seq, 1);
    }
}

/// The threads of `threads` that have not acknowledged epoch `e`, the
/// coordinator `me` excepted. `threads` is the registry's list, borrowed
/// from its held lock.
pub(crate) fn outstanding<'a>(
    threads: &'a [*const ThreadRecord],
    me: Option<&'a ThreadRecord>,
    e: u64,
) -> impl Iterator<Item = &'a ThreadRecord> + 'a {
    threads
        .iter()
        // SAFETY: a record stays allocated while it is in the list, and the
        // list cannot change while its lock is held: `threads` is borrowed
        // from the guard, so the lock is held while these references live.
        .map(|&p| unsafe { &*p })
        .filter(move |r| {
            !me.is_some_and(|m| std::ptr::eq(m, *r)) && r.acked.load(Ordering::SeqCst) < e
        })
}

/// What [`RegistryInner::nudge`] did, for the stop's statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nudged {
    /// Nothing: acknowledged already, or a signal is outstanding.
    Nothing,
    /// Claimed while still parked from an earlier stop.
    Held,
    /// Signalled (or the test hook dropped the signal).
    Signalled,
}

impl RegistryInner {
    /// Makes sure thread `r` is on its way to stopping for epoch `e`: claims it
    /// if it is in a safe region or still parked from an earlier stop,
    /// acknowledges it if it is exiting, otherwise signals it (in signal mode)
    /// unless a signal is already outstanding.
    pub(crate) fn nudge(
        &self,
        r: &ThreadRecord,
        e: u64,
        signal_mode: bool,
        resend: bool,
    ) -> Nudged {
        let inner = self;
        loop {
            let s = r.state.load(Ordering::SeqCst);
            if let Some(held) = state::held(s) {
                // In a safe region, or parked for an earlier stop and not
                // resumed yet (its registers and stack are as it published
                // them): stopped already. Claim it; it cannot leave that state
                // until our restart.
                if r.state
                    .compare_exchange(s, held, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    if r.ack(e) {
                        r.poll_flag.store(0, Ordering::SeqCst);
                        if s == state::SAFE {
                            r.count_park(StopKind::SafeRegion);
                        } else {
                            return Nudged::Held;
                        }
                    }
                    return Nudged::Nothing;
                }
                continue;
            }
            match s {
                state::SAFE_STOPPED | state::PARKED_HELD | state::EXITING | state::COORDINATING => {
                    r.ack(e);
                    return Nudged::Nothing;
                }
                _ => break,
            }
        }
        if r.acked.load(Ordering::SeqCst) >= e {
            return Nudged::Nothing;
        }
        if resend {
            // Belt and braces for threads that stop only at polls: make sure
            // the flag a poll reads is still up (a stale flag is harmless:
            // the poll finds no request and clears it).
            r.poll_flag.store(1, Ordering::SeqCst);
        }
        if !signal_mode {
            return Nudged::Nothing;
        }
        // With a signal already outstanding, send another only on a resend: it
        // has been outstanding for a whole resend interval and counts as lost.
        if r.signal_pending
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
            && !resend
        {
            return Nudged::Nothing;
        }
        if r.state.load(Ordering::SeqCst) != state::RUNNING {
            // It parked or entered a safe region meanwhile; no signal needed.
            r.signal_pending.store(0, Ordering::SeqCst);
            return Nudged::Nothing;
        }
        let n = inner.signals_sent.fetch_add(1, Ordering::Relaxed) + 1;
        let every = inner.config.drop_signal_every as u64;
        if every != 0 && n.is_multiple_of(every) {
            return Nudged::Signalled; // test hook: this signal is "lost"
        }
        if !sys::send_signal(r.pid.load(Ordering::Relaxed), r.tid, inner.config.signal) {
            r.signal_pending.store(0, Ordering::SeqCst);
        }
        Nudged::Signalled
    }
}
