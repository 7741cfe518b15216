//! Finalizers: an action that runs once, after its object has become
//! unreachable, on a thread of pardon's (or the caller's) and never inside a
//! stop (Go's `runtime.SetFinalizer`, Boehm's `GC_register_finalizer`).
//!
//! ## The rules
//!
//! 1. **Ordering.** Every collection offers, as roots, what each registered
//!    finalizable object references — but not the object itself. So
//!    whatever a finalizer can read stays alive until it has run, and when
//!    `a` references `b` and both have finalizers, `b`'s runs only in a
//!    collection after `a`'s object is gone (topological order, as Go and
//!    Boehm's default). A cycle through a finalizable object therefore
//!    never dies: a leak, as in Go, never a dangling reference.
//! 2. **Queueing.** After the mark completes and weak references to dead
//!    objects are cleared (`weak`), each registered object the mark left
//!    unmarked is queued and marked (*resurrected*), in the same stop: it
//!    survives the coming sweep. A queued object is a root of every
//!    collection until its action has taken it.
//! 3. **Running.** The action runs on the heap's finalizer thread
//!    ([`Config::finalizer_thread`](crate::Config::finalizer_thread), the
//!    default), or on whichever thread calls
//!    [`Mutator::run_finalizers`]; never on a coordinator, never inside a
//!    stop. It receives the object rooted on that thread.
//! 4. **Resurrection.** The action may store its object anywhere reachable:
//!    it lives on as an ordinary object (weak references to it stay
//!    cleared; they were cleared when it was queued). Its finalizer has run
//!    and does not run again unless the action registers a new one. An
//!    object that is not stored anywhere is freed by the first collection
//!    after the action returned.
//! 5. **Once.** Each registration runs at most once. Registrations whose
//!    object is still alive when the heap is dropped never run (their
//!    actions are dropped), as Go does not run finalizers at exit.
//!
//! ## Locking
//!
//! The table is under a mutex that mutators take only inside
//! [`Registry::outside_stops`](pardon_preempt::Registry::outside_stops) (so
//! no thread is ever stopped holding it) and that a coordinator takes with
//! the world stopped. Nothing on the stopped-world path allocates: queueing
//! flips a flag per entry.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::collector::{Collector, Heap};
use crate::heap::{lock, RawHeap};
use crate::mark::Marker;
use crate::mutator::Mutator;
use crate::typed::{GcObject, Root};

/// The address given is not inside an allocated object of this heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotAnObject {
    /// The address given.
    pub addr: usize,
}

impl fmt::Display for NotAnObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#x} is not inside an allocated object of this heap",
            self.addr
        )
    }
}

impl std::error::Error for NotAnObject {}

/// A finalizer as the threaded heap runs it: given the running mutator and
/// the object's address (rooted by the runner for the call).
type Action = Box<dyn FnOnce(&Mutator, usize) + Send>;

/// One registration.
struct Entry {
    /// Where the object is (any address inside it).
    addr: usize,
    /// Queued: the object died and was resurrected; its action has not been
    /// taken yet.
    queued: bool,
    /// What to run; opaque to the raw heap (an `Action` on the threaded
    /// heap).
    action: Box<dyn Any + Send>,
}

/// Every registered finalizer of one heap. Under `RawHeap::finalizers`.
#[derive(Default)]
pub(crate) struct FinalizerTable {
    entries: Vec<Entry>,
    /// Entries with `queued` set.
    queued: usize,
}

impl FinalizerTable {
    /// Offers this table's roots to a mark: every queued object, and what
    /// every other registered object references (rule 1). Run by every mark
    /// and by verification's re-mark, before the mark completes.
    pub(crate) fn offer_roots(&self, m: &mut Marker<'_>) {
        for e in &self.entries {
            if e.queued {
                m.mark_word(e.addr);
            } else {
                m.scan_children(e.addr);
            }
        }
    }

    /// Queues and resurrects every registered object `m` left unmarked
    /// (rule 2). Coordinator, world stopped, after the mark completed and
    /// weak references were cleared; the mark must be completed again
    /// afterwards. Returns how many it queued. Allocates nothing.
    pub(crate) fn queue_unreachable(&mut self, m: &mut Marker<'_>) -> usize {
        let mut n = 0;
        for e in self.entries.iter_mut().filter(|e| !e.queued) {
            if !m.is_marked(e.addr) {
                e.queued = true;
                m.mark_word(e.addr);
                n += 1;
            }
        }
        self.queued += n;
        n
    }

    /// Registered entries (queued ones included).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Takes one queued entry: its address and action.
    fn take_queued(&mut self) -> Option<(usize, Box<dyn Any + Send>)> {
        if self.queued == 0 {
            return None;
        }
        let i = self.entries.iter().position(|e| e.queued)?;
        self.queued -= 1;
        let e = self.entries.swap_remove(i);
        Some((e.addr, e.action))
    }
}

impl RawHeap {
    /// Registers the action in `action` (taking it) for the object
    /// containing `addr`, if the table has room for it without growing:
    /// `Ok(false)` (nothing taken) if it has not. Outside stops only (see
    /// the module comment), where the system allocator must not be called:
    /// grow the table first with [`RawHeap::grow_finalizers`].
    fn register_finalizer(
        &self,
        addr: usize,
        action: &mut Option<Box<dyn Any + Send>>,
    ) -> Result<bool, NotAnObject> {
        if self.find(addr).is_none() {
            return Err(NotAnObject { addr });
        }
        let mut t = lock(&self.finalizers);
        if t.entries.len() == t.entries.capacity() {
            return Ok(false);
        }
        t.entries.push(Entry {
            addr,
            queued: false,
            action: action.take().expect("an action to register"),
        });
        Ok(true)
    }

    /// Doubles the finalizer table's room, allocating (and freeing the old
    /// buffer) outside `excluding`, which runs the move with no stop in
    /// between (a no-preempt region): only moving entries happens there.
    fn grow_finalizers(&self, excluding: impl Fn(&mut dyn FnMut())) {
        let mut cap = 0;
        excluding(&mut || cap = lock(&self.finalizers).entries.capacity());
        let mut bigger: Vec<Entry> = Vec::with_capacity((cap * 2).max(16));
        excluding(&mut || {
            let mut t = lock(&self.finalizers);
            if t.entries.capacity() == cap {
                // Room for all of them: moving allocates nothing.
                bigger.append(&mut t.entries);
                std::mem::swap(&mut t.entries, &mut bigger);
            }
        });
        // The old buffer (or the unused new one), freed here.
        drop(bigger);
    }
}

/// Wakes the finalizer thread. Shared between the heap and the thread, so
/// the thread holds no reference that keeps the heap alive while it waits.
#[derive(Default)]
pub(crate) struct FinalizerSignal {
    /// (collections that queued finalizers, shut down).
    state: Mutex<(u64, bool)>,
    wake: Condvar,
}

/// The heap's side of its finalizer thread.
#[derive(Default)]
pub(crate) struct FinalizerThread {
    signal: Arc<FinalizerSignal>,
    /// The process that spawned the thread, or 0: a forked child has none.
    pid: AtomicI32,
    /// Actions that panicked on the thread (each is reported on stderr).
    pub panics: AtomicU64,
}

impl FinalizerThread {
    /// Tells the thread a collection queued finalizers.
    pub(crate) fn notify(&self) {
        let mut s = lock(&self.signal.state);
        s.0 += 1;
        self.signal.wake.notify_one();
    }
}

impl Drop for FinalizerThread {
    fn drop(&mut self) {
        // The thread may be the one dropping the heap: tell it to stop, do
        // not join it.
        lock(&self.signal.state).1 = true;
        self.signal.wake.notify_one();
    }
}

impl Collector {
    /// Starts the finalizer thread unless this process has it already.
    fn ensure_finalizer_thread(self: &Arc<Self>) {
        // From the claim to the start, as the background collector's.
        let _no_yield = pardon_preempt::no_yield_here();
        let me = std::process::id() as i32;
        let t = &self.finalizer_thread;
        if t.pid.swap(me, Ordering::SeqCst) == me {
            return;
        }
        let signal = t.signal.clone();
        let heap = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("pardon-finalizer".into())
            .spawn(move || finalizer_main(&signal, &heap));
        if let Err(e) = spawned {
            // Finalizers then wait for `Mutator::run_finalizers`.
            t.pid.store(0, Ordering::SeqCst);
            eprintln!("pardon: cannot start the finalizer thread: {e}");
        }
    }
}

fn finalizer_main(signal: &FinalizerSignal, heap: &std::sync::Weak<Collector>) {
    let mut seen = 0;
    loop {
        {
            let mut s = lock(&signal.state);
            while s.0 == seen && !s.1 {
                s = s.wait(&signal.wake);
            }
            if s.1 {
                return;
            }
            seen = s.0;
        }
        let Some(collector) = heap.upgrade() else {
            return;
        };
        let heap = Heap { collector };
        let Ok(m) = heap.attach() else {
            continue;
        };
        loop {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.run_finalizers()));
            match r {
                Ok(_) => break,
                Err(_) => {
                    heap.collector
                        .finalizer_thread
                        .panics
                        .fetch_add(1, Ordering::Relaxed);
                    eprintln!("pardon: a finalizer panicked; the finalizer thread goes on");
                }
            }
        }
    }
}

impl Mutator {
    /// Runs `f` once `r`'s object has become unreachable, with the object
    /// rooted again (see the module's rules: it may be resurrected). Runs on
    /// the heap's finalizer thread, or in [`Mutator::run_finalizers`].
    /// Several finalizers may be registered for one object; each runs once.
    ///
    /// `f` must not hold what keeps the object alive (a [`Global`](crate::Global)
    /// of it, say), or it never runs.
    pub fn set_finalizer<T: GcObject>(
        &self,
        r: &Root<'_, T>,
        f: impl for<'a> FnOnce(&'a Mutator, Root<'a, T>) + Send + 'static,
    ) {
        let action: Action = Box::new(move |m: &Mutator, addr: usize| {
            // SAFETY: the runner roots the object (a T of this heap, queued
            // and resurrected by the collector) for this call.
            let root = unsafe { Root::<T>::from_addr(m, addr) };
            f(m, root)
        });
        let r = self.register(r.addr(), action);
        debug_assert!(r.is_ok(), "a rooted object is allocated");
    }

    /// The raw form of [`Mutator::set_finalizer`]: `f` receives the address
    /// it was registered with, valid (rooted) for the call.
    pub fn set_finalizer_raw(
        &self,
        addr: usize,
        f: impl FnOnce(&Mutator, usize) + Send + 'static,
    ) -> Result<(), NotAnObject> {
        self.register(addr, Box::new(f))
    }

    fn register(&self, addr: usize, action: Action) -> Result<(), NotAnObject> {
        let col = &self.heap.collector;
        // Boxed here: the region below must not call the system allocator
        // (a stop may have caught the thread holding its lock).
        let mut action: Option<Box<dyn Any + Send>> = Some(Box::new(action));
        // Checked and recorded with no stop in between.
        while !col
            .registry
            .outside_stops(|| col.raw.register_finalizer(addr, &mut action))?
        {
            col.raw.grow_finalizers(|f| col.registry.outside_stops(f));
        }
        if col.raw.config.finalizer_thread {
            col.ensure_finalizer_thread();
        }
        Ok(())
    }

    /// Runs, on this thread, every finalizer whose object has died; returns
    /// how many ran. A finalizer that panics unwinds out of this call (the
    /// ones not run yet stay queued).
    pub fn run_finalizers(&self) -> usize {
        let col = &self.heap.collector;
        let mut ran = 0;
        loop {
            // A free handle slot first, so that rooting below allocates
            // nothing inside its region (a stop may have caught the thread
            // holding the allocator's lock).
            self.reserve_handle();
            // Taken and rooted with no stop in between: once taken, the
            // entry no longer roots the object.
            let next = col.registry.outside_stops(|| {
                let (addr, action) = lock(&col.raw.finalizers).take_queued()?;
                Some((self.insert_handle(addr), addr, action))
            });
            let Some((slot, addr, action)) = next else {
                return ran;
            };
            struct Unroot<'a>(&'a Mutator, usize);
            impl Drop for Unroot<'_> {
                fn drop(&mut self) {
                    self.0.pop_handle(self.1);
                }
            }
            let _unroot = Unroot(self, slot);
            // The threaded heap registers only `Action`s.
            if let Ok(action) = action.downcast::<Action>() {
                (*action)(self, addr);
                ran += 1;
            }
        }
    }

    /// Finalizers registered and not yet run (queued ones included).
    pub fn pending_finalizers(&self) -> usize {
        let col = &self.heap.collector;
        col.registry
            .outside_stops(|| lock(&col.raw.finalizers).len())
    }
}
