//! The registry of attached threads: creating one, attaching and detaching
//! threads, and the [`Attached`] handle. The words a stop runs on live in
//! `handshake`; stopping, in `stop`.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{Config, ConfigError};
use crate::handshake::{current, RegistryInner, ThreadRecord, CURRENT};
use crate::state::{self, StopKind};
use crate::sys;

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

thread_local! {
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

/// The thread registry: attach threads to it, then stop and restart them.
/// Cheap to clone; all clones are the same registry.
#[derive(Clone)]
pub struct Registry {
    pub(crate) inner: Arc<RegistryInner>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("preemption", &self.inner.config.preemption)
            .field("threads", &self.thread_count())
            .finish()
    }
}

impl Registry {
    /// Creates a registry, installing the signal handler in signal mode.
    pub fn new(config: Config) -> Result<Registry, ConfigError> {
        config.validate()?;
        crate::fatal::install_hook();
        if config.preemption.signals() {
            sys::install(config.signal)
                .map_err(|e| ConfigError(format!("signal: cannot install handler: {e}")))?;
        }
        let text = sys::exe_text_range();
        if config.yield_hook.is_some() && text.0 >= text.1 {
            return Err(ConfigError(
                "yield_hook: the program's code cannot be located (dl_iterate_phdr), \
                 so no instruction could be known safe to yield at"
                    .into(),
            ));
        }
        let reg = Registry {
            inner: Arc::new(RegistryInner {
                config,
                text,
                threads: Mutex::new(Vec::new()),
                coordinator: Mutex::new(()),
                coordinator_tid: AtomicI32::new(0),
                excluding: AtomicUsize::new(0),
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
                forking: AtomicU32::new(0),
                careful: AtomicU32::new(0),
                sources: Mutex::new(Default::default()),
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

    /// Attached threads running now: neither in a safe region nor stopped.
    /// A hint for a caller choosing whether to take a CPU (pardon's
    /// concurrent marker marks flat out when fewer threads run than there
    /// are cores); stale as soon as it returns. Takes the thread-list lock,
    /// which a stop holds throughout: an attached caller waits for it as
    /// a running thread, which the stop parks meanwhile. (It used to wait
    /// inside a no-preempt region, which the stop waited for in turn: two
    /// concurrent heaps sharing a registry, or one heap and anyone else's
    /// stop, held each other for the stop's whole 30 s timeout.)
    pub fn running_threads(&self) -> usize {
        lock(&self.inner.threads)
            .iter()
            // SAFETY: records in the list are live while its lock is held.
            .map(|&p| unsafe { &*p })
            .filter(|r| r.state.load(Ordering::Relaxed) == state::RUNNING)
            .count()
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
    /// end), outside any safe region the thread is in (it leaves the region
    /// for `f`, since a stop does not wait for a thread in one); on any
    /// other thread it holds the coordinator lock, so a stop
    /// cannot begin meanwhile and one in progress ends first. For
    /// maintenance of state the stopped world relies on (a collector's lazy
    /// sweeping), which an unattached thread — never stopped — would
    /// otherwise change under a coordinator's feet. On a thread that holds
    /// this registry's [`StoppedWorld`](crate::StoppedWorld), `f` runs at
    /// once: no other stop can begin meanwhile (it used to wait for ever
    /// on the lock the world holds).
    ///
    /// Inside `f` on an unattached thread, a nested `outside_stops` runs at
    /// once (stops are kept out already), and a stop of this registry
    /// (`stop_the_world`, a collection) fails with
    /// [`StopError::ExcludingStops`](crate::StopError::ExcludingStops):
    /// both used to wait for ever on the lock this thread holds.
    pub fn outside_stops<R>(&self, f: impl FnOnce() -> R) -> R {
        if current().is_some_and(|r| std::ptr::eq(r.registry, &*self.inner)) {
            return self.no_preempt(f);
        }
        // (`world_held_by_me` only when some thread holds the world: it
        // asks the kernel for the tid.)
        if self.excluding_stops_here()
            || (self.inner.coordinator_tid.load(Ordering::SeqCst) != 0 && self.world_held_by_me())
        {
            return f();
        }
        let _g = lock(&self.inner.coordinator);
        self.inner.excluding.store(this_thread(), Ordering::SeqCst);
        /// Clears the word before the lock is released (declared after the
        /// guard, so dropped first), on return or unwinding.
        struct Clear<'a>(&'a AtomicUsize);
        impl Drop for Clear<'_> {
            fn drop(&mut self) {
                self.0.store(0, Ordering::SeqCst);
            }
        }
        let _clear = Clear(&self.inner.excluding);
        f()
    }

    /// Whether the calling thread is inside this registry's
    /// [`outside_stops`](Registry::outside_stops) as an unattached thread
    /// (holding the coordinator lock for it).
    pub(crate) fn excluding_stops_here(&self) -> bool {
        self.inner.excluding.load(Ordering::SeqCst) == this_thread()
    }

    /// Runs `f` inside a no-preempt region when the calling thread is
    /// attached to this registry (leaving a safe region it is in for the
    /// duration, waiting for a stop in progress to end), and plainly
    /// otherwise. An embedder's
    /// coordinator-side code wraps every lock that the stopped-world path
    /// also takes in this: a thread stopped while holding such a lock would
    /// deadlock the collector. Keep `f` short; a stop waits for it.
    pub fn no_preempt<R>(&self, f: impl FnOnce() -> R) -> R {
        let Some(rec) = current().filter(|r| std::ptr::eq(r.registry, &*self.inner)) else {
            return f();
        };
        if matches!(
            rec.state.load(Ordering::SeqCst),
            state::SAFE | state::SAFE_STOPPED
        ) {
            // A thread in a safe region counts as stopped: a stop would not
            // wait for its no-preempt region. Leave the region for `f` (as
            // `Attached::as_running` does) and enter it again afterwards.
            crate::safe::exit_safe_region(rec);
            struct Reenter<'a>(&'a ThreadRecord);
            impl Drop for Reenter<'_> {
                fn drop(&mut self) {
                    crate::safe::enter_safe_region(self.0);
                }
            }
            let _again = Reenter(rec);
            return self.no_preempt(f);
        }
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

    /// Runs `f`, which may block for long (waiting for a lock a
    /// coordinator holds, say), so that stops need not wait for it: inside
    /// a safe region when the calling thread is attached to this registry
    /// and plainly running (see [`Attached::safe_region`]: `f` must not
    /// touch what a stopped world relies on), and plainly otherwise.
    pub fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        match current().filter(|r| std::ptr::eq(r.registry, &*self.inner)) {
            Some(rec) => crate::safe::blocking_in(rec, f),
            None => f(),
        }
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
            pid: std::sync::atomic::AtomicI32::new(nix::unistd::getpid().as_raw()),
            stack_lo: AtomicUsize::new(stack_lo),
            stack_hi: AtomicUsize::new(stack_hi),
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
            yield_token: AtomicU64::new(0),
            yield_injected: AtomicU32::new(0),
            yield_saved_lo: AtomicUsize::new(0),
            yields: AtomicU64::new(0),
            yields_refused: AtomicU64::new(0),
            task_word: AtomicUsize::new(0),
            no_yield: AtomicU32::new(0),
            moved_to: AtomicI32::new(-1),
            moved_from: UnsafeCell::new(sys::empty_mask()),
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

/// The calling thread's identity for `RegistryInner::excluding`: the
/// address of a const-initialised thread-local, distinct for every live
/// thread and never 0, read without a system call (`outside_stops` runs
/// for every sweeping step of an unattached collector). A forked child's
/// copy of the thread sees the same address, so it keeps the lock's word.
fn this_thread() -> usize {
    thread_local! {
        static ME: u8 = const { 0 };
    }
    ME.with(|me| me as *const u8 as usize)
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

    /// The bounds `(lo, hi)` of the stack the thread runs on: read at
    /// attach, or as last set by [`Attached::set_stack_bounds`].
    pub fn stack_bounds(&self) -> (usize, usize) {
        self.record().stack_bounds()
    }

    /// The task word: 0 at attach, then whatever the thread's code last
    /// stored through [`Attached::task_word_cell`]. Coordinators see it as
    /// [`StoppedThread::task_word`](crate::StoppedThread::task_word).
    pub fn task_word(&self) -> usize {
        self.record().task_word.load(Ordering::Relaxed)
    }

    /// The cell holding the task word: one word per attached thread that
    /// this crate never interprets and every coordinator of the registry
    /// can read while the thread is stopped
    /// ([`StoppedThread::task_word`](crate::StoppedThread::task_word)). A
    /// scheduler that runs tasks on the thread saves it when it switches a
    /// task out and restores it when it switches the task back in (0 for a
    /// task's first run), so that it is always the running task's; the
    /// same value appears for a suspended task in
    /// [`SuspendedTask::word`](crate::SuspendedTask::word). pardon's heap
    /// keeps the head of the shadow-stack frame chain here, which is how
    /// the chain follows a goroutine.
    ///
    /// # Safety
    /// Coordinators of this registry may interpret the word (pardon's heap
    /// walks it as a chain of frames on the stack the thread runs on).
    /// Store only what that code expects: through the code that owns the
    /// meaning (a heap's frame API), or, for a scheduler, a value read
    /// from this cell while the same task ran, or 0 for a task that has
    /// not run.
    #[inline]
    pub unsafe fn task_word_cell(&self) -> &AtomicUsize {
        &self.record().task_word
    }

    /// Whether this handle attaches the thread to `registry` (and not to
    /// another one).
    pub fn belongs_to(&self, registry: &Registry) -> bool {
        Arc::ptr_eq(&self._registry, &registry.inner)
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
        // A record whose no-yield or no-preempt count is open is leaked
        // too: a guard (`NoYieldHere`, a coordinator's; `NoPreemptHere`)
        // will still count down in it.
        if !self.record().in_list.load(Ordering::SeqCst)
            && self.record().no_yield.load(Ordering::Relaxed) == 0
            && self.record().no_preempt.load(Ordering::Relaxed) == 0
        {
            // SAFETY: `rec` came from Box::into_raw in attach; the exit guard
            // never frees a record whose handle exists, nothing else does,
            // no registry list holds it any more, and no guard refers to it.
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
