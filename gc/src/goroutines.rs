//! The heap over goroutines: a goroutine runtime's workers as mutators.
//!
//! The heap knows nothing of any scheduler. It learns of goroutines
//! through three things `pardon-preempt` defines and a scheduler provides
//! (`pardon-sched` does; a test double can):
//!
//! - **one registry** ([`Heap::with_registry`]): the runtime's workers are
//!   attached to the registry the heap stops, so a collection stops them
//!   like any mutator thread — a goroutine running a call-free loop by the
//!   signal, an idle worker at once (it sleeps in a safe region);
//! - **the task word** of each attached thread, which the scheduler saves
//!   and restores per goroutine at every switch: the heap keeps the head of
//!   the shadow-stack frame chain there ([`Mutator::frames`]), so the
//!   chain follows its goroutine, and a stopped worker reports the running
//!   goroutine's chain;
//! - **a task source** the scheduler adds to the registry, through which a
//!   stopped world reports every suspended goroutine: its stack, its saved
//!   stack pointer and its saved task word. The collector scans each as it
//!   scans a stopped thread — precisely along the frame chain,
//!   conservatively from the saved stack pointer (every register the
//!   switch saved lies above it) up to the second-innermost frame — and
//!   never signals or waits for one.
//!
//! Each worker has one [`Mutator`], made by [`Heap::worker_attacher`] when
//! the worker starts, and its goroutines share it: its allocation cache is
//! the per-P cache (a worker is bound to its P, and goroutines never
//! leave the worker they first ran on, so a goroutine never sees another
//! P's cache). Sharing is sound because no goroutine is switched out while
//! it borrows the mutator's state: the cache is used inside no-preempt
//! regions, the handle table inside no-yield regions (see
//! `Mutator::with_handle_free`), and the scheduler refuses to switch in
//! either. A goroutine reaches its worker's mutator with [`with_mutator`].

use std::cell::Cell;

use pardon_preempt::Attached;

use crate::collector::Heap;
use crate::mutator::Mutator;

thread_local! {
    /// The worker mutator of this thread, or null.
    static WORKER: Cell<*const Mutator> = const { Cell::new(std::ptr::null()) };
    /// `with_mutator` calls in progress on this thread (across goroutines:
    /// a goroutine may park inside one).
    static BORROWS: Cell<usize> = const { Cell::new(0) };
}

/// A worker thread's mutator, as [`Heap::worker_attacher`] makes it: it
/// owns the thread's attachment (the scheduler asks for it through
/// `AsRef<Attached>`) and is what [`with_mutator`] lends.
pub struct WorkerMutator {
    /// Boxed, so the address `WORKER` holds stays put when this moves.
    /// `None` once dropped or leaked.
    mutator: Option<Box<Mutator>>,
}

impl std::fmt::Debug for WorkerMutator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerMutator")
            .field("mutator", &self.mutator)
            .finish()
    }
}

impl AsRef<Attached> for WorkerMutator {
    fn as_ref(&self) -> &Attached {
        match &self.mutator {
            Some(m) => m.attached(),
            None => unreachable!("a live WorkerMutator holds its mutator"),
        }
    }
}

impl Drop for WorkerMutator {
    fn drop(&mut self) {
        let Some(m) = self.mutator.take() else { return };
        let ours = WORKER.with(|w| std::ptr::eq(w.get(), &*m));
        if ours {
            WORKER.with(|w| w.set(std::ptr::null()));
        }
        if ours && BORROWS.with(|b| b.get()) != 0 {
            // Lent to a `with_mutator` call that has not returned (a
            // goroutine parked inside one when its runtime shut down, or
            // a closure that dropped this): that reference must stay
            // valid, so the mutator is leaked. Its thread detaches at exit.
            std::mem::forget(m);
        }
    }
}

impl Heap {
    /// A goroutine runtime's attach hook (`pardon-sched`'s
    /// `Config::attach`): called on each new worker thread with the
    /// context word the runtime addresses it by, it attaches the thread as
    /// a mutator of this heap and returns the attachment for the runtime
    /// to use. The heap must have been made with the runtime's registry
    /// ([`Heap::with_registry`]).
    pub fn worker_attacher(
        &self,
    ) -> impl Fn(usize) -> Result<Box<dyn AsRef<Attached>>, String> + Send + Sync + 'static {
        let heap = self.clone();
        move |context| {
            let m = heap
                .attach_as(context)
                .map_err(|e| format!("pardon: cannot attach a worker to the heap: {e}"))?;
            let b = Box::new(m);
            WORKER.with(|w| w.set(&*b));
            Ok(Box::new(WorkerMutator { mutator: Some(b) }) as Box<dyn AsRef<Attached>>)
        }
    }
}

/// Runs `f` with the mutator of the worker the caller runs on (a
/// goroutine's worker), or returns `None` on a thread that is not one.
/// The goroutines of a worker share its mutator; `f` may park or yield the
/// goroutine (the mutator stays valid: a goroutine never changes worker).
pub fn with_mutator<R>(f: impl FnOnce(&Mutator) -> R) -> Option<R> {
    let p = WORKER.with(|w| w.get());
    if p.is_null() {
        return None;
    }
    struct Lent;
    impl Drop for Lent {
        fn drop(&mut self) {
            BORROWS.with(|b| b.set(b.get() - 1));
        }
    }
    BORROWS.with(|b| b.set(b.get() + 1));
    let _lent = Lent;
    // SAFETY: `WORKER` points at the boxed mutator of this thread's live
    // `WorkerMutator` (its drop clears it first); while `BORROWS` is
    // non-zero that drop leaks the box instead of freeing it, so the
    // reference outlives `f` whatever `f` does.
    Some(f(unsafe { &*p }))
}
