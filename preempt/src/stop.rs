//! Stopping and restarting the world.
//!
//! The coordinator:
//! 1. takes the coordinator lock (serialising coordinators; an attached caller
//!    waits in a safe region so that another coordinator can stop it), then
//!    the thread-list lock, which it keeps until the restart, so no thread can
//!    attach or finish detaching mid-stop;
//! 2. opens a new epoch and makes `world` odd;
//! 3. for each other thread, stores the epoch in `request` and raises
//!    `poll_flag`, then looks at its state: a thread in a safe region is
//!    claimed (`SAFE -> SAFE_STOPPED`) and acknowledged on its behalf, so
//!    is one still parked from an earlier stop that it has not yet woken
//!    from (`PARKED -> PARKED_HELD`), an exiting thread is acknowledged, a
//!    running one is signalled once (`signal_pending` 0 -> 1; at most one
//!    signal outstanding per thread);
//! 4. adds the number of threads it asked to the `outstanding` count (each
//!    acknowledgement subtracts one), and waits: spins for `Config::spin`
//!    (only if fewer threads are outstanding than there are CPUs, else one
//!    of them needs the coordinator's CPU), then sleeps on the
//!    `coordinator_seq` event count with a timeout, woken only by the last
//!    acknowledgement or by a handler whose thread could not stop where the
//!    signal found it. Such a report brings the next re-signal
//!    forward to `Config::retry` (doubling with each report); otherwise
//!    threads that have not answered are re-signalled after
//!    `resend_initial`, doubling up to `resend_max`, until `stop_timeout`.
//!
//! Nothing on this path allocates or takes a lock a mutator may hold: the
//! thread list's lock is only taken by attach and detach, neither of which
//! can be stopped while holding it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use crate::config::AckWait;
use crate::handshake::{current, outstanding, Nudged, ThreadRecord};
use crate::migrate;
use crate::registry::{lock, Registry};
use crate::state::{self, StopKind};
use crate::sys;

/// Figures for one stop.
#[derive(Clone, Copy, Debug, Default)]
pub struct StopStats {
    /// Time from the request to the last acknowledgement (time to safepoint).
    pub ttsp: Duration,
    /// Threads that had to be stopped (excluding the coordinator).
    pub threads: usize,
    /// Signals sent, first sends and re-sends.
    pub signals: u32,
    /// Re-sends among them.
    pub resends: u32,
    /// Threads found still parked from an earlier stop (not yet resumed) and
    /// held for this one without a signal.
    pub held: u32,
    /// Threads that kept the stop waiting for
    /// [`Config::move_after`](crate::Config::move_after) and were moved to
    /// the coordinator's CPU (given back their affinity before the stop
    /// returned).
    pub moved: u32,
}

impl StopStats {
    /// Counts what a nudge did; `resend` counts a signal as a re-send.
    fn count(&mut self, nudged: Nudged, resend: bool) {
        match nudged {
            Nudged::Nothing => {}
            Nudged::Held => self.held += 1,
            Nudged::Signalled => {
                self.signals += 1;
                self.resends += u32::from(resend);
            }
        }
    }
}

/// A thread that did not answer a stop in time.
#[derive(Clone, Debug)]
pub struct Laggard {
    /// Kernel thread id.
    pub tid: i32,
    /// Its state word, by name.
    pub state: &'static str,
    /// Whether a signal was still outstanding.
    pub signal_pending: bool,
    /// Depth of its no-preempt region.
    pub no_preempt: u32,
    /// The last epoch it acknowledged, and the one it was asked for.
    pub acked: u64,
    /// See `acked`.
    pub requested: u64,
    /// The epoch and world value of its latest park.
    pub last_park: (u64, u32),
    /// The epoch of the stop that timed out, and the world value during it.
    pub stop: (u64, u32),
}

/// Why a stop failed.
#[derive(Clone, Debug)]
pub enum StopError {
    /// Some threads did not acknowledge within `Config::stop_timeout`; the
    /// world has been restarted.
    Timeout {
        /// How long the coordinator waited.
        waited: Duration,
        /// The threads that did not answer.
        laggards: Vec<Laggard>,
    },
    /// The calling thread already holds this registry's stopped world.
    Reentrant,
    /// The calling thread is inside this registry's
    /// [`Registry::outside_stops`](crate::Registry::outside_stops) (as an
    /// unattached thread, holding the lock that keeps stops out).
    ExcludingStops,
    /// Signal mode, but the preemption signal's handler is not ours: the
    /// program replaced it without chaining, so no thread could be stopped
    /// by signal. Checked before any thread is asked to stop.
    HandlerReplaced {
        /// The signal number.
        signal: i32,
    },
}

impl fmt::Display for StopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopError::Reentrant => write!(
                f,
                "this thread already holds the stopped world (a stop inside a stop would wait \
                 for ever)"
            ),
            StopError::ExcludingStops => write!(
                f,
                "this thread is inside Registry::outside_stops, which keeps stops out until it \
                 returns (a stop there would wait for ever)"
            ),
            StopError::HandlerReplaced { signal } => write!(
                f,
                "the handler of signal {signal} (pardon's preemption signal) was replaced \
                 without chaining to pardon's; no thread can be stopped by signal. Install \
                 your handler before creating the heap or registry (pardon chains to it), or \
                 chain to the previous handler, or use polls-only mode"
            ),
            StopError::Timeout { waited, laggards } => {
                write!(f, "stop timed out after {waited:?}; not stopped:")?;
                for l in laggards {
                    write!(
                        f,
                        " [tid {} {} signal_pending={} no_preempt={} acked={} requested={} last_park={:?} stop={:?}]",
                        l.tid, l.state, l.signal_pending, l.no_preempt, l.acked, l.requested, l.last_park, l.stop
                    )?;
                }
                Ok(())
            }
        }
    }
}
impl std::error::Error for StopError {}

/// The stopped world. Every attached thread other than the coordinator is
/// parked, in a safe region, or exiting, until this guard is dropped (or
/// [`StoppedWorld::resume`] is called). Not `Send`: the coordinator restarts.
pub struct StoppedWorld<'r> {
    reg: &'r Registry,
    threads: Option<MutexGuard<'r, Vec<*const ThreadRecord>>>,
    _coord: Option<MutexGuard<'r, ()>>,
    me: Option<&'r ThreadRecord>,
    stats: StopStats,
    /// Dropped after the restart (fields drop after `Drop::drop`).
    _holding: crate::fatal::Holding,
    /// The coordinator's no-yield region (if it is attached): dropped last,
    /// after `_coord` (so it is never switched out holding that lock) and
    /// after `_holding`, whose thread-local count another task of the
    /// thread would otherwise update between its read and its write.
    _no_yield: crate::here::NoYieldHere,
    _not_send: PhantomData<*const ()>,
}

/// One stopped thread, as the collector needs it.
#[derive(Clone, Copy)]
pub struct StoppedThread<'w> {
    rec: &'w ThreadRecord,
}

impl fmt::Debug for StoppedThread<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoppedThread")
            .field("tid", &self.tid())
            .field("kind", &self.kind())
            .field("scan_lo", &format_args!("{:#x}", self.scan_lo()))
            .finish()
    }
}

impl<'w> StoppedThread<'w> {
    /// Kernel thread id.
    pub fn tid(&self) -> i32 {
        self.rec.tid
    }
    /// How it stopped.
    pub fn kind(&self) -> StopKind {
        StopKind::from_u32(self.rec.park_kind.load(Ordering::Relaxed))
    }
    /// The lowest stack address to scan: it covers the red zone and whatever
    /// saved state lies on the stack (the kernel's signal frame for a thread
    /// parked in its handler). Registers and vector state are reported by
    /// [`StoppedThread::gprs`] and [`StoppedThread::for_each_vector_word`]
    /// in every case; an injected thread's are copies taken by its handler.
    pub fn scan_lo(&self) -> usize {
        self.rec.scan_lo.load(Ordering::Relaxed)
    }
    /// The stack bounds `(lo, hi)`.
    pub fn stack_bounds(&self) -> (usize, usize) {
        self.rec.stack_bounds()
    }
    /// The general registers (in [`crate::GPR_NAMES`] order). For a thread
    /// stopped at a poll or in a safe region only the callee-saved ones and
    /// RSP are captured; the rest read as zero.
    pub fn gprs(&self) -> &'w crate::Gprs {
        // SAFETY: the thread published them before acknowledging, and does not
        // write them again until the world restarts, which needs `&mut` of the
        // StoppedWorld this borrow comes from.
        unsafe { &*self.rec.gprs.get() }
    }
    /// Calls `f` with every 64-bit word of saved vector state (XMM, and the
    /// YMM, opmask and ZMM components the CPU has enabled), for threads
    /// stopped by a signal.
    pub fn for_each_vector_word(&self, f: impl FnMut(u64)) {
        let ptr = self.rec.xsave_ptr.load(Ordering::Relaxed);
        let len = self.rec.xsave_len.load(Ordering::Relaxed);
        // SAFETY: a non-zero xsave_ptr points at the image the parked thread
        // saved on its own stack (or the kernel's signal frame), valid until it
        // resumes, which cannot happen while this StoppedWorld is alive.
        unsafe { sys::for_each_vector_word(ptr, len, f) }
    }
    /// The context word the thread attached with
    /// ([`Registry::attach_with_context`](crate::Registry::attach_with_context)).
    pub fn context(&self) -> usize {
        self.rec.context
    }
    /// The thread's task word as it stopped: the running task's (see
    /// [`Attached::task_word_cell`](crate::Attached::task_word_cell)).
    pub fn task_word(&self) -> usize {
        self.rec.task_word.load(Ordering::Acquire)
    }
}

impl StoppedWorld<'_> {
    /// The registry whose world this is.
    pub(crate) fn registry(&self) -> &Registry {
        self.reg
    }

    /// Figures for this stop.
    pub fn stats(&self) -> StopStats {
        self.stats
    }

    /// The stopped threads (exiting ones, which report no roots, excluded).
    /// The coordinator is included, as [`StopKind::Coordinator`], if attached.
    pub fn threads(&self) -> impl Iterator<Item = StoppedThread<'_>> + '_ {
        self.threads
            .as_ref()
            .into_iter()
            .flat_map(|v| v.iter())
            .map(|&p| {
                // SAFETY: records in the list are live while we hold its lock.
                unsafe { &*p }
            })
            .filter(|r| r.state.load(Ordering::SeqCst) != state::EXITING)
            .map(|rec| StoppedThread { rec })
    }

    /// Restarts the world (same as dropping the guard).
    pub fn resume(self) {}

    fn restart(&mut self) {
        let Some(threads) = self.threads.take() else {
            return;
        };
        let inner = &self.reg.inner;
        for &p in threads.iter() {
            // SAFETY: live while the lock is held.
            let r = unsafe { &*p };
            // Only a coordinator moves a thread out of a held state, so the
            // value loaded stays until our CAS.
            let s = r.state.load(Ordering::SeqCst);
            if let Some(free) = state::released(s) {
                let _ = r
                    .state
                    .compare_exchange(s, free, Ordering::SeqCst, Ordering::SeqCst);
            }
        }
        inner.world.fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(&inner.world, i32::MAX);
        if let Some(me) = self.me {
            me.state.store(state::RUNNING, Ordering::SeqCst);
        }
        inner.coordinator_tid.store(0, Ordering::SeqCst);
        inner.careful.store(0, Ordering::SeqCst);
        // Records detached by this very thread while it held the world.
        let mut threads = threads;
        threads.retain(|&p| {
            // SAFETY: live while in the list (see `ThreadRecord::in_list`).
            let r = unsafe { &*p };
            let keep = !r.detached.load(Ordering::SeqCst);
            if !keep {
                r.in_list.store(false, Ordering::SeqCst);
            }
            keep
        });
        drop(threads);
    }
}

impl Drop for StoppedWorld<'_> {
    fn drop(&mut self) {
        self.restart();
    }
}

impl StoppedWorld<'_> {
    /// In a forked child: the other threads do not exist. Keeps only the
    /// coordinator (if attached) in the thread list, with the child's pid.
    pub(crate) fn keep_only_coordinator(&mut self, pid: i32) {
        if let Some(t) = self.threads.as_mut() {
            keep_only_current(t, pid);
        }
    }
}

/// In a forked child: keeps only the calling thread's record in `threads`
/// (the registry's list, locked), giving it the child's pid. The others'
/// records are leaked: their threads are not in this process.
/// `d` after `t`; when that is past what an `Instant` can hold (a
/// `Config` duration of `Duration::MAX`, a user's "never"), a century
/// after `t`, which no stop waits for. Adding the duration itself would
/// panic in the coordinator, with the world stopped.
fn later(t: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    // A century fits: `Instant` counts seconds since boot in an i64.
    t.checked_add(d)
        .or_else(|| t.checked_add(CENTURY))
        .unwrap_or(t)
}

pub(crate) fn keep_only_current(threads: &mut Vec<*const ThreadRecord>, pid: i32) {
    let me = current().map_or(std::ptr::null(), |r| r as *const ThreadRecord);
    threads.retain(|&p| std::ptr::eq(p, me));
    if let Some(r) = current() {
        r.pid.store(pid, Ordering::Relaxed);
    }
}

impl Registry {
    /// Stops every attached thread except the caller and returns a guard over
    /// the stopped world. The caller may be attached (it is reported as the
    /// coordinator) or not. Concurrent callers serialise.
    ///
    /// No thread is parked inside a shared library (libc), unless blocked
    /// in a system call that waits (`read`, `futex`, `poll`, ...): a thread
    /// found there is asked again until it is back in the program's own
    /// code. So the holder of the world may allocate (a thread parked
    /// inside `malloc` holds its arena's lock: a coordinator that allocated
    /// waited for ever, reproduced with `MALLOC_ARENA_MAX=1`). It must still
    /// not wait for a lock of the program's own that an attached thread may
    /// hold (a `Mutex` of its own, the standard output's lock behind
    /// `println!`): that thread is parked until the world restarts. The
    /// price: a thread that spends nearly all its time in library code (a
    /// spin on `yield_now`) is caught only in its moments in its own, and
    /// may delay the stop by milliseconds.
    pub fn stop_the_world(&self) -> Result<StoppedWorld<'_>, StopError> {
        self.stop(true)
    }

    /// [`Registry::stop_the_world`] that parks threads wherever a signal
    /// finds them outside no-preempt regions, inside libc too: the stop a
    /// collector makes, which must not wait for a thread in a long library
    /// call to come back.
    ///
    /// # Safety
    /// Until the returned world is dropped, the calling thread must not
    /// call anything that may take a lock an attached thread may hold: the
    /// system allocator (no allocation or deallocation), the standard
    /// streams, the dynamic loader, thread-locals with lazy
    /// initialisation, any lock of the program's own that attached threads
    /// take. A thread parked holding one of them would wait for the restart
    /// while the caller waits for it.
    pub unsafe fn stop_the_world_anywhere(&self) -> Result<StoppedWorld<'_>, StopError> {
        self.stop(false)
    }

    /// The stop itself; `careful`: see `RegistryInner::careful`.
    fn stop(&self, careful: bool) -> Result<StoppedWorld<'_>, StopError> {
        let inner = &*self.inner;
        if self.world_held_by_me() {
            return Err(StopError::Reentrant);
        }
        if self.excluding_stops_here() {
            return Err(StopError::ExcludingStops);
        }
        if inner.config.preemption.signals() && !sys::handler_installed(inner.config.signal) {
            return Err(StopError::HandlerReplaced {
                signal: inner.config.signal,
            });
        }
        let me = current().filter(|r| std::ptr::eq(r.registry, inner));
        // Never switched to another task (a goroutine's yield) while this
        // thread holds the coordinator lock or the stopped world: see
        // `NoYieldHere::on`. On the thread's own record whatever registry
        // it belongs to: a goroutine of a runtime on one registry stopping
        // another (a heap of its own) was switched out by its runtime's
        // signal holding that world, and the next goroutine of its thread
        // to stop it got `Reentrant` (the thread's, not the goroutine's,
        // and the stopped-world count that makes a panic abort was the
        // thread's too).
        let no_yield = crate::here::NoYieldHere::on(
            current().map_or(std::ptr::null(), |r| r as *const ThreadRecord),
        );
        // Another coordinator may stop us while we wait for the lock: wait in
        // a safe region.
        let coord = match me {
            Some(r) => {
                crate::safe::enter_safe_region(r);
                let g = lock(&inner.coordinator);
                crate::safe::exit_safe_region(r);
                g
            }
            None => lock(&inner.coordinator),
        };
        let threads = lock(&inner.threads);
        inner.coordinator_tid.store(sys::gettid(), Ordering::SeqCst);
        // Before any request: a thread asked for this stop reads it.
        inner.careful.store(careful as u32, Ordering::SeqCst);
        // From here until the restart, a panic on this thread aborts with a
        // message rather than wait on a lock a stopped thread holds (see
        // `fatal`).
        let holding = crate::fatal::Holding::new();
        if let Some(r) = me {
            // We are the owner and the coordinator.
            let sp = r.publish_call_registers();
            r.scan_lo.store(sp, Ordering::Relaxed);
            r.park_kind
                .store(StopKind::Coordinator as u32, Ordering::Relaxed);
            r.xsave_ptr.store(0, Ordering::Relaxed);
            r.state.store(state::COORDINATING, Ordering::SeqCst);
        }
        let start = Instant::now();
        inner.outstanding.store(0, Ordering::SeqCst);
        inner.retry_asked.store(0, Ordering::SeqCst);
        let e = inner.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        inner.world.fetch_add(1, Ordering::SeqCst);
        let signal_mode = inner.config.preemption.signals();
        let mut stats = StopStats::default();
        for &p in threads.iter() {
            // SAFETY: live while the lock is held.
            let r = unsafe { &*p };
            if me.is_some_and(|m| std::ptr::eq(m, r)) {
                continue;
            }
            stats.threads += 1;
            r.request.store(e, Ordering::SeqCst);
            r.poll_flag.store(1, Ordering::SeqCst);
            stats.count(self.inner.nudge(r, e, signal_mode, false), false);
        }
        inner
            .spin_for_last
            .store((stats.threads <= inner.cpus) as u32, Ordering::SeqCst);
        inner
            .outstanding
            .fetch_add(stats.threads as u32, Ordering::SeqCst);
        let mut world = StoppedWorld {
            reg: self,
            threads: Some(threads),
            _coord: Some(coord),
            _no_yield: no_yield,
            me,
            stats,
            _holding: holding,
            _not_send: PhantomData,
        };
        let waited = self.wait_acks(&mut world, e, start);
        let ttsp = start.elapsed();
        if world.stats.moved > 0 {
            migrate::restore_moved(world.threads.as_ref().expect("threads held"));
        }
        match waited {
            Ok(()) => {
                world.stats.ttsp = ttsp;
                Ok(world)
            }
            Err(waited) => {
                // Collect the laggards (the world is still half stopped, but
                // this is the failure path: allocate only after restarting).
                let mut raw: Vec<Laggard> = Vec::new();
                let threads = world.threads.as_ref().expect("threads held");
                let stop = (e, inner.world.load(Ordering::SeqCst));
                let blank = Laggard {
                    tid: 0,
                    state: "",
                    signal_pending: false,
                    no_preempt: 0,
                    acked: 0,
                    requested: 0,
                    last_park: (0, 0),
                    stop,
                };
                let mut buf = [const { None::<Laggard> }; 64];
                let mut k = 0;
                for r in outstanding(threads, world.me, e) {
                    if k < buf.len() {
                        buf[k] = Some(Laggard {
                            tid: r.tid,
                            state: state::state_name(r.state.load(Ordering::SeqCst)),
                            signal_pending: r.signal_pending.load(Ordering::SeqCst) != 0,
                            no_preempt: r.no_preempt.load(Ordering::SeqCst),
                            acked: r.acked.load(Ordering::SeqCst),
                            requested: r.request.load(Ordering::SeqCst),
                            last_park: (
                                r.last_park_epoch.load(Ordering::Relaxed),
                                r.last_park_world.load(Ordering::Relaxed),
                            ),
                            ..blank
                        });
                        k += 1;
                    }
                    // Withdraw the request so that a late signal does nothing.
                    r.ack(e);
                    r.poll_flag.store(0, Ordering::SeqCst);
                }
                drop(world);
                raw.extend(buf.into_iter().flatten());
                Err(StopError::Timeout {
                    waited,
                    laggards: raw,
                })
            }
        }
    }

    /// Waits until every thread acknowledged `e`; Err(waited) on timeout.
    fn wait_acks(
        &self,
        world: &mut StoppedWorld<'_>,
        e: u64,
        start: Instant,
    ) -> Result<(), Duration> {
        let inner = &*self.inner;
        let cfg = &inner.config;
        if cfg.wait == AckWait::GoSuspendG {
            return self.wait_acks_go(world, e, start);
        }
        let signal_mode = cfg.preemption.signals();
        let threads: &[*const ThreadRecord] = world.threads.as_ref().expect("held");
        let me = world.me;
        let remaining = || outstanding(threads, me, e).count();
        // Spin only if every outstanding thread can be running on another
        // CPU: with as many outstanding as CPUs, one of them waits for ours
        // (on 2 CPUs with 2 spinning threads, always), and spinning would
        // only delay it.
        let spin_until = if remaining() < inner.cpus {
            later(start, cfg.spin)
        } else {
            start
        };
        loop {
            if remaining() == 0 {
                return Ok(());
            }
            if Instant::now() >= spin_until {
                break;
            }
            std::hint::spin_loop();
        }
        let mut interval = cfg.resend_initial;
        let mut retry = cfg.retry;
        let mut next_resend = later(Instant::now(), interval);
        // When to move the threads still outstanding to this CPU (see
        // `migrate`); `None` once done, or if never.
        let mut move_at = cfg.move_after.map(|d| later(start, d));
        loop {
            if remaining() == 0 {
                return Ok(());
            }
            let now = Instant::now();
            let waited = now - start;
            if waited >= cfg.stop_timeout {
                return Err(waited);
            }
            if move_at.is_some_and(|t| now >= t) {
                move_at = None;
                world.stats.moved += migrate::move_laggards(threads, me, e);
                continue;
            }
            if inner.retry_asked.swap(0, Ordering::SeqCst) != 0 {
                // A thread got its signal where it could not stop: signal
                // again soon, backing off if it keeps happening; but not
                // in a careful stop, whose threads in library code can
                // only be caught in the moments they spend in their own
                // (a thread spinning on `yield_now` is in `sched_yield`
                // nearly always: with the back-off such a stop took 0.2
                // ms to 3 s, or timed out).
                next_resend = next_resend.min(later(now, retry));
                if inner.careful.load(Ordering::Relaxed) == 0 {
                    retry = retry.saturating_mul(2).min(cfg.resend_max);
                }
            }
            if now >= next_resend {
                for r in outstanding(threads, me, e) {
                    world
                        .stats
                        .count(self.inner.nudge(r, e, signal_mode, true), true);
                }
                interval = interval.saturating_mul(2).min(cfg.resend_max);
                next_resend = later(Instant::now(), interval);
                continue;
            }
            let wake_at = move_at.map_or(next_resend, |t| t.min(next_resend));
            let sleep = (wake_at - now).min(cfg.stop_timeout - waited);
            // Sleep until the last acknowledgement (see `ThreadRecord::ack`)
            // or a request to retry. Both raise `coordinator_seq` before they
            // look at `coordinator_sleeping`: read after they did, the checks
            // below see their effect; before, the futex word has changed and
            // the wait returns at once.
            let seen = inner.coordinator_seq.load(Ordering::SeqCst);
            inner
                .coordinator_cpu
                .store(sys::current_cpu(), Ordering::SeqCst);
            inner.coordinator_sleeping.store(1, Ordering::SeqCst);
            if remaining() != 0 && inner.retry_asked.load(Ordering::SeqCst) == 0 {
                sys::futex_wait(&inner.coordinator_seq, seen, Some(sleep));
            }
            inner.coordinator_sleeping.store(0, Ordering::SeqCst);
        }
    }

    /// [`AckWait::GoSuspendG`]: Go's `suspendG` waiting loop, as a baseline.
    /// Go busy-waits with `procyield(10)` for the first `yieldDelay` (10 µs),
    /// then calls `osyield()` and sets the next yield 5 µs ahead; and it
    /// re-signals (`preemptM`) only a thread whose previous signal was
    /// handled without a stop (`preemptGen` advanced), at most every 5 µs.
    /// Here a handled signal is one whose `signal_pending` flag the handler
    /// has cleared. The blind re-send of the futex path stays, for signals
    /// that are lost (never handled), which Go's loop would wait on forever.
    fn wait_acks_go(
        &self,
        world: &mut StoppedWorld<'_>,
        e: u64,
        start: Instant,
    ) -> Result<(), Duration> {
        const YIELD_DELAY: Duration = Duration::from_micros(10);
        let inner = &*self.inner;
        let cfg = &inner.config;
        let signal_mode = cfg.preemption.signals();
        let threads: &[*const ThreadRecord] = world.threads.as_ref().expect("held");
        let me = world.me;
        let mut next_yield = start + YIELD_DELAY;
        let mut next_preempt = start + YIELD_DELAY / 2;
        let mut interval = cfg.resend_initial;
        let mut next_resend = later(start, interval);
        loop {
            if outstanding(threads, me, e).next().is_none() {
                return Ok(());
            }
            let now = Instant::now();
            let waited = now - start;
            if waited >= cfg.stop_timeout {
                return Err(waited);
            }
            // Re-signal requests from handlers are covered by the 5 µs rule.
            inner.retry_asked.store(0, Ordering::SeqCst);
            if now >= next_resend {
                for r in outstanding(threads, me, e) {
                    world
                        .stats
                        .count(self.inner.nudge(r, e, signal_mode, true), true);
                }
                interval = interval.saturating_mul(2).min(cfg.resend_max);
                next_resend = later(now, interval);
            } else if now >= next_preempt {
                for r in outstanding(threads, me, e) {
                    // A thread with no signal outstanding got one and did not
                    // stop: `nudge` sends another (and nothing otherwise).
                    let nudged = self.inner.nudge(r, e, signal_mode, false);
                    world.stats.count(nudged, nudged == Nudged::Signalled);
                }
                next_preempt = now + YIELD_DELAY / 2;
            }
            if now < next_yield {
                for _ in 0..10 {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
                next_yield = Instant::now() + YIELD_DELAY / 2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::later;
    use std::time::{Duration, Instant};

    #[test]
    fn later_adds_what_fits_and_puts_never_a_century_off() {
        let t = Instant::now();
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_secs(3600),
        ] {
            assert_eq!(later(t, d), t + d);
        }
        for d in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
            let far = later(t, d);
            assert!(
                far >= t + Duration::from_secs(99 * 365 * 24 * 3600),
                "{d:?}"
            );
        }
    }
}
