//! The registry of attached threads and the per-thread record the signal
//! handler reaches without locks.

use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::state::{self, StopKind};
use crate::sys;

/// How a stopped thread's registers are captured when a signal stops it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Rewrite the ucontext to call an assembly trampoline that saves every
    /// register on the thread's stack and parks there (Go's `asyncPreempt`).
    Inject,
    /// Park inside the signal handler; the kernel's signal frame holds the
    /// registers (Boehm GC's way).
    InHandler,
}

/// How threads are stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Signal each running thread; polls are still honoured.
    Signal(Strategy),
    /// Never signal: a thread stops only at a poll, at the end of a no-preempt
    /// region, or in a safe region. Both the back-edge-polling baseline and the
    /// cooperative-only (Go 1.13) behaviour.
    PollOnly,
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
    /// How threads are stopped.
    pub mode: Mode,
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
    /// A stop that has not completed after this long fails with a report of
    /// the threads that did not answer, and the world is restarted.
    pub stop_timeout: Duration,
    /// Test hook: drop (do not send) one preemption signal in this many;
    /// 0 disables. Exercises the lost-signal path.
    pub drop_signal_every: u32,
    /// How the coordinator waits for acknowledgements.
    pub wait: AckWait,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Signal(Strategy::Inject),
            signal: libc::SIGURG,
            spin: Duration::from_micros(3),
            resend_initial: Duration::from_millis(10),
            retry: Duration::from_micros(50),
            resend_max: Duration::from_millis(20),
            stop_timeout: Duration::from_secs(30),
            drop_signal_every: 0,
            wait: AckWait::Futex,
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
        if let Mode::Signal(Strategy::Inject) = self.mode {
            if !sys::xsave_layout().has_xsave {
                return Err(ConfigError(
                    "mode: call injection needs XSAVE, which this CPU or OS does not enable; \
                     use Strategy::InHandler"
                        .into(),
                ));
            }
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

/// Why `attach` failed.
#[derive(Debug)]
pub enum AttachError {
    /// This thread is already attached to a registry.
    AlreadyAttached,
    /// The stack bounds could not be read.
    StackBounds(std::io::Error),
    /// This thread holds the registry's stopped world: attaching would wait
    /// for ever on the thread list the stop holds.
    WorldHeld,
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::AlreadyAttached => {
                write!(f, "this thread is already attached to a registry")
            }
            AttachError::WorldHeld => {
                write!(
                    f,
                    "this thread holds the stopped world: restart it before attaching"
                )
            }
            AttachError::StackBounds(e) => write!(f, "cannot read this thread's stack bounds: {e}"),
        }
    }
}
impl std::error::Error for AttachError {}

/// Per-thread record, allocated at attach and reachable from the signal
/// handler through a const-initialised thread-local pointer. Every field the
/// handler or a coordinator touches is atomic; `gprs` is written by the owner
/// only while it is not yet acknowledged and read by the coordinator only
/// after the acknowledgement (release/acquire through `acked`).
#[repr(C, align(64))]
pub(crate) struct ThreadRecord {
    /// Non-zero when a stop wants this thread: the one word a poll loads.
    pub poll_flag: AtomicU32,
    /// Nesting depth of no-preempt regions. Written only by the owner thread
    /// (read by the handler on that thread and, for reports, by
    /// coordinators).
    pub no_preempt: AtomicU32,
    /// The state word (see `state`).
    pub state: AtomicU32,
    /// 1 while a signal sent by a coordinator has not been handled yet.
    pub signal_pending: AtomicU32,
    /// The stop epoch a coordinator asks this thread to acknowledge.
    pub request: AtomicU64,
    /// The last epoch this thread acknowledged (or was acknowledged for).
    pub acked: AtomicU64,
    /// The registry this record belongs to.
    pub registry: *const RegistryInner,
    pub tid: i32,
    /// The process id at attach, for `tgkill` (glibc's `getpid` is a system
    /// call, and a stop should not make two per thread); set anew in a
    /// forked child (see `fork`).
    pub pid: std::sync::atomic::AtomicI32,
    pub stack_lo: usize,
    pub stack_hi: usize,
    /// The opaque word given at attach
    /// ([`Registry::attach_with_context`]); never changes afterwards, so
    /// whoever created the registry can trust what it finds here. Preempt
    /// never interprets it.
    pub context: usize,
    /// Set (by the owner) when the thread is detached; the record then stays
    /// allocated for as long as its `Attached` handle exists (see
    /// `detach_record`).
    pub detached: std::sync::atomic::AtomicBool,
    /// True while the record is in its registry's thread list. Cleared under
    /// the list's lock by detach, or by the restart that prunes a record
    /// detached while its own thread held the stopped world; a record still
    /// in the list is never freed (it is leaked instead).
    pub in_list: std::sync::atomic::AtomicBool,
    /// How the thread stopped, as a `StopKind`.
    pub park_kind: AtomicU32,
    /// Lowest stack address to scan while stopped.
    pub scan_lo: AtomicUsize,
    /// General registers published at park.
    pub gprs: UnsafeCell<sys::Gprs>,
    /// The XSAVE image published at park, or 0.
    pub xsave_ptr: AtomicUsize,
    pub xsave_len: AtomicUsize,
    /// A copy of the kernel's XSAVE image, taken by the handler when it
    /// acknowledges before the injected call (the signal frame it comes from
    /// is gone once the handler returns): `xsave_copy_len` bytes, allocated
    /// at attach, written only by the owner's handler before it
    /// acknowledges, read by a coordinator only after.
    pub xsave_copy: *mut u64,
    pub xsave_copy_len: usize,
    /// Non-zero between an acknowledgement made in the handler (call
    /// injection) and the injected call that sleeps for it: the world value
    /// acknowledged. Owner-only.
    pub early_world: AtomicU32,
    /// Counters, for tests and statistics.
    pub signals_received: AtomicU64,
    pub parks: [AtomicU64; 6],
    /// Nanoseconds spent parked (from publishing to waking), all kinds but
    /// safe regions.
    pub parked_ns: AtomicU64,
    /// Diagnostics for stop timeouts: the epoch and world value of this
    /// thread's latest park.
    pub last_park_epoch: AtomicU64,
    /// See `last_park_epoch`.
    pub last_park_world: AtomicU32,
    pub deferred: AtomicU64,
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
// so there is no concurrent access.
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
    /// Detaches at thread exit if the `Attached` handle was leaked.
    static EXIT_GUARD: ExitGuard = const { ExitGuard };
}

struct ExitGuard;
impl Drop for ExitGuard {
    fn drop(&mut self) {
        let rec = CURRENT.with(|c| c.get());
        if !rec.is_null() {
            // The `Attached` handle was leaked, or lives in a thread-local
            // whose destructor has not run yet: detach (a dead thread must
            // not hold up stops) and leave the record to the handle.
            // SAFETY: the record is live until its handle frees it, and only
            // the owner thread (this one) detaches.
            unsafe { detach_record(rec) };
        }
    }
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

/// The thread registry: attach threads to it, then stop and restart them.
/// Cheap to clone; all clones are the same registry.
#[derive(Clone)]
pub struct Registry {
    pub(crate) inner: Arc<RegistryInner>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("mode", &self.inner.config.mode)
            .field("threads", &self.thread_count())
            .finish()
    }
}

impl Registry {
    /// Creates a registry, installing the signal handler in signal mode.
    pub fn new(config: Config) -> Result<Registry, ConfigError> {
        config.validate()?;
        crate::fatal::install_hook();
        if let Mode::Signal(_) = config.mode {
            sys::install(config.signal)
                .map_err(|e| ConfigError(format!("signal: cannot install handler: {e}")))?;
        }
        let reg = Registry {
            inner: Arc::new(RegistryInner {
                config,
                threads: Mutex::new(Vec::new()),
                coordinator: Mutex::new(()),
                coordinator_tid: AtomicI32::new(0),
                world: AtomicU32::new(0),
                epoch: AtomicU64::new(0),
                outstanding: AtomicU32::new(0),
                coordinator_seq: AtomicU32::new(0),
                coordinator_sleeping: AtomicU32::new(0),
                retry_asked: AtomicU32::new(0),
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
                spin_for_last: AtomicU32::new(0),
                coordinator_cpu: AtomicI32::new(-1),
                local_waker: AtomicU32::new(0),
                local_wakes: AtomicU64::new(0),
                signals_sent: AtomicU64::new(0),
            }),
        };
        crate::fork::register(&reg.inner);
        Ok(reg)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Whether the calling thread holds this registry's stopped world
    /// (then it must not stop the world again, nor wait for anything a stop
    /// excludes).
    pub fn world_held_by_me(&self) -> bool {
        self.inner.coordinator_tid.load(Ordering::SeqCst) == sys::gettid()
    }

    /// Number of attached threads.
    pub fn thread_count(&self) -> usize {
        lock(&self.inner.threads).len()
    }

    /// Total preemption signals sent so far.
    pub fn signals_sent(&self) -> u64 {
        self.inner.signals_sent.load(Ordering::Relaxed)
    }

    /// Stops so far whose sleeping coordinator was woken by a parked thread on
    /// its own CPU rather than by the last acknowledgement's system call (see
    /// the crate documentation).
    pub fn local_wakes(&self) -> u64 {
        self.inner.local_wakes.load(Ordering::Relaxed)
    }

    /// Runs `f` so that no stop of this registry's world overlaps it. On an
    /// attached thread that is a no-preempt region (a stop waits for it to
    /// end); on any other thread it holds the coordinator lock, so a stop
    /// cannot begin meanwhile and one in progress ends first. For
    /// maintenance of state the stopped world relies on (a collector's lazy
    /// sweeping), which an unattached thread — never stopped — would
    /// otherwise change under a coordinator's feet. Must not be called by a
    /// thread that holds a [`StoppedWorld`](crate::StoppedWorld).
    pub fn outside_stops<R>(&self, f: impl FnOnce() -> R) -> R {
        if current().is_some_and(|r| std::ptr::eq(r.registry, &*self.inner)) {
            return self.no_preempt(f);
        }
        let _g = lock(&self.inner.coordinator);
        f()
    }

    /// Runs `f` inside a no-preempt region when the calling thread is
    /// attached to this registry, and plainly otherwise. An embedder's
    /// coordinator-side code wraps every lock that the stopped-world path
    /// also takes in this: a thread stopped while holding such a lock would
    /// deadlock the collector. Keep `f` short; a stop waits for it.
    pub fn no_preempt<R>(&self, f: impl FnOnce() -> R) -> R {
        let Some(rec) = current().filter(|r| std::ptr::eq(r.registry, &*self.inner)) else {
            return f();
        };
        rec.enter_no_preempt();
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        struct End(*const ThreadRecord);
        impl Drop for End {
            fn drop(&mut self) {
                std::sync::atomic::compiler_fence(Ordering::SeqCst);
                // `f` cannot detach this thread (detach needs the `Attached`,
                // which is borrowed or owned elsewhere), but check rather than
                // trust: only touch the record if it is still ours.
                let Some(rec) = current().filter(|r| std::ptr::eq(*r, self.0)) else {
                    return;
                };
                let prev = rec.exit_no_preempt();
                if prev == 1 && rec.poll_flag.load(Ordering::Relaxed) != 0 {
                    crate::park::poll_slow(rec);
                }
            }
        }
        let _end = End(rec);
        f()
    }

    /// Attaches the calling thread. The returned handle detaches on drop, and
    /// the thread is detached at exit even if the handle is leaked.
    pub fn attach(&self) -> Result<Attached, AttachError> {
        // SAFETY: a context of 0 promises nothing.
        unsafe { self.attach_with_context(0) }
    }

    /// [`Registry::attach`], recording `context`, an opaque word that every
    /// coordinator sees for this thread ([`StoppedThread::context`]) and
    /// that nothing can change afterwards. A collector keeps its per-thread
    /// state there (pardon's heap does).
    ///
    /// # Safety
    /// Whoever stops this registry's world may interpret the word: the
    /// caller must give the value that code expects for this thread. A
    /// registry used only by its creator's code has no other callers; 0 is
    /// always allowed.
    ///
    /// [`StoppedThread::context`]: crate::StoppedThread::context
    pub unsafe fn attach_with_context(&self, context: usize) -> Result<Attached, AttachError> {
        if self.world_held_by_me() {
            return Err(AttachError::WorldHeld);
        }
        if current().is_some() {
            return Err(AttachError::AlreadyAttached);
        }
        let (stack_lo, stack_hi) = sys::current_stack_bounds().map_err(AttachError::StackBounds)?;
        let copy_words = (sys::xsave_layout().size as usize).max(512).div_ceil(8);
        let xsave_copy_len = copy_words * 8;
        let xsave_copy = Box::into_raw(vec![0u64; copy_words].into_boxed_slice()) as *mut u64;
        let rec = Box::new(ThreadRecord {
            poll_flag: AtomicU32::new(0),
            no_preempt: AtomicU32::new(0),
            state: AtomicU32::new(state::RUNNING),
            signal_pending: AtomicU32::new(0),
            request: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            registry: Arc::as_ptr(&self.inner),
            tid: sys::gettid(),
            // SAFETY: getpid has no preconditions and cannot fail.
            pid: std::sync::atomic::AtomicI32::new(unsafe { libc::getpid() }),
            stack_lo,
            stack_hi,
            context,
            detached: std::sync::atomic::AtomicBool::new(false),
            in_list: std::sync::atomic::AtomicBool::new(true),
            park_kind: AtomicU32::new(0),
            scan_lo: AtomicUsize::new(0),
            gprs: UnsafeCell::new([0; sys::NGPRS]),
            xsave_ptr: AtomicUsize::new(0),
            xsave_len: AtomicUsize::new(0),
            xsave_copy,
            xsave_copy_len,
            early_world: AtomicU32::new(0),
            signals_received: AtomicU64::new(0),
            parks: Default::default(),
            parked_ns: AtomicU64::new(0),
            last_park_epoch: AtomicU64::new(0),
            last_park_world: AtomicU32::new(0),
            deferred: AtomicU64::new(0),
        });
        let ptr: *const ThreadRecord = Box::into_raw(rec);
        // Everything that may allocate or block happens before the record is
        // in the list: once it is, a stop waits for this thread, which can
        // only park once CURRENT points at its record. Registering the exit
        // guard's destructor may call malloc, and a thread stopped inside
        // malloc holds its arena lock: done after the push, it deadlocked the
        // stress test (the new thread slept on that lock, invisible to the
        // signal handler, while the stop waited for it).
        EXIT_GUARD.with(|_| {});
        CURRENT.with(|c| c.set(ptr));
        {
            let mut threads = lock(&self.inner.threads);
            // A stop cannot be in progress while we hold the lock, so the new
            // thread starts with nothing to acknowledge: mark every epoch so far
            // as seen.
            let e = self.inner.epoch.load(Ordering::SeqCst);
            // SAFETY: `ptr` came from Box::into_raw just above.
            unsafe { (*ptr).acked.store(e, Ordering::SeqCst) };
            threads.push(ptr);
        }
        Ok(Attached {
            rec: ptr,
            _registry: self.inner.clone(),
            _not_send: PhantomData,
        })
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A thread's attachment to a registry. Not `Send`: it must be dropped on the
/// thread it belongs to. Dropping it detaches the thread.
pub struct Attached {
    pub(crate) rec: *const ThreadRecord,
    _registry: Arc<RegistryInner>,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for Attached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attached")
            .field("tid", &self.record().tid)
            .finish()
    }
}

impl Attached {
    #[inline(always)]
    pub(crate) fn record(&self) -> &ThreadRecord {
        // SAFETY: the record lives until this handle's drop (or the exit
        // guard) detaches it; both run on this thread, after our last use.
        unsafe { &*self.rec }
    }

    /// The kernel thread id.
    pub fn tid(&self) -> i32 {
        self.record().tid
    }

    /// The context word given at attach (0 for [`Registry::attach`]).
    pub fn context(&self) -> usize {
        self.record().context
    }

    /// Whether the thread still counts in its registry's stops: false once
    /// it was detached at thread exit (a thread-local destructor that runs
    /// after pardon's may still hold this handle).
    pub fn is_attached(&self) -> bool {
        !self.record().detached.load(Ordering::Relaxed)
    }

    /// Whether the thread is plainly running: attached, and neither in a
    /// safe region nor coordinating a stop. One load; for fast paths that
    /// must take a slower road otherwise (see [`Attached::as_running`]).
    #[inline(always)]
    pub fn is_running(&self) -> bool {
        self.record().state.load(Ordering::Relaxed) == state::RUNNING
    }

    /// The thread's stack bounds `(lo, hi)`, read once at attach.
    pub fn stack_bounds(&self) -> (usize, usize) {
        (self.record().stack_lo, self.record().stack_hi)
    }

    /// Preemption signals this thread's handler has received.
    pub fn signals_received(&self) -> u64 {
        self.record().signals_received.load(Ordering::Relaxed)
    }

    /// How many times this thread parked by `kind`.
    pub fn parks(&self, kind: StopKind) -> u64 {
        self.record().parks[kind as usize].load(Ordering::Relaxed)
    }

    /// Total time this thread has spent parked for stops (not counting safe
    /// regions): what a benchmark subtracts to get the time it could run.
    pub fn parked_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.record().parked_ns.load(Ordering::Relaxed))
    }

    /// Signals that found the thread at an unsafe point (a no-preempt region
    /// or too little stack) and were turned into a deferred request.
    pub fn deferred(&self) -> u64 {
        self.record().deferred.load(Ordering::Relaxed)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if CURRENT.with(|c| c.get()) == self.rec {
            // SAFETY: we are on the owner thread and the record is live.
            unsafe { detach_record(self.rec) };
        }
        // Detached now, here or earlier by the exit guard (which leaves the
        // record to us, its last user). A record detached while this thread
        // held the stopped world stays in the list until the restart prunes
        // it: it is leaked then, as the restart reads it.
        if !self.record().in_list.load(Ordering::SeqCst) {
            // SAFETY: `rec` came from Box::into_raw in attach; the exit guard
            // never frees a record whose handle exists, nothing else does,
            // and no registry list holds it any more.
            drop(unsafe { Box::from_raw(self.rec as *mut ThreadRecord) });
        }
    }
}

/// Detaches a record: removes it from its registry, so stops no longer
/// count it, and clears `CURRENT`. Does not free it: the `Attached` handle
/// does, when dropped; a leaked handle leaks its record (memory, never
/// soundness).
///
/// # Safety
/// Must run on the record's owner thread, with `rec` live and current.
pub(crate) unsafe fn detach_record(rec: *const ThreadRecord) {
    // SAFETY: caller contract.
    let r = unsafe { &*rec };
    // Leave any safe region first (waiting out a stop that holds us in it).
    if matches!(
        r.state.load(Ordering::SeqCst),
        state::SAFE | state::SAFE_STOPPED
    ) {
        crate::safe::exit_safe_region(r);
    }
    // From here on we report no roots and count as stopped.
    r.state.store(state::EXITING, Ordering::SeqCst);
    if let Some(e) = r.request_pending() {
        r.poll_flag.store(0, Ordering::Relaxed);
        r.ack(e);
    }
    let reg = r.registry();
    if reg.coordinator_tid.load(Ordering::SeqCst) == sys::gettid() {
        // This thread holds the stopped world, and with it the thread list:
        // the restart prunes the record (it counts as stopped meanwhile).
        r.detached.store(true, Ordering::SeqCst);
    } else {
        // Blocks while a stop is in progress; the coordinator has counted us.
        let mut threads = lock(&reg.threads);
        threads.retain(|&p| p != rec);
        r.in_list.store(false, Ordering::SeqCst);
        r.detached.store(true, Ordering::SeqCst);
    }
    // A signal that lands from here on finds CURRENT null and is passed on
    // as not ours; the record stays allocated until its handle is dropped.
    CURRENT.with(|c| c.set(std::ptr::null()));
}
