//! How a worker attaches to the preempt registry: by itself, or through an
//! embedder's hook ([`Attacher`]) that keeps per-thread state of its own in
//! the attachment (a heap's mutator), on a registry the embedder shares
//! ([`Runtime::with_registry`](crate::Runtime::with_registry)).
//!
//! The scheduler knows nothing of what the hook keeps. It checks what it is
//! given — an attachment of the calling thread, to the runtime's registry,
//! with the context word the runtime addresses the worker by — and uses
//! only that: no-preempt regions, stack bounds, the task word it switches
//! per goroutine.

use std::fmt;
use std::sync::Arc;

use pardon_preempt::{Attached, Registry};

/// The hook's signature: given the context word to attach with, attach
/// the calling thread to the runtime's registry and return what owns the
/// attachment (dropped, detaching, when the worker ends).
pub type AttachFn = dyn Fn(usize) -> Result<Box<dyn AsRef<Attached>>, String> + Send + Sync;

/// An embedder's hook that attaches each worker thread (see the module
/// documentation); `pardon`'s `Heap::worker_attacher` makes one.
#[derive(Clone)]
pub struct Attacher(Arc<AttachFn>);

impl Attacher {
    /// Wraps a hook.
    pub fn new(
        f: impl Fn(usize) -> Result<Box<dyn AsRef<Attached>>, String> + Send + Sync + 'static,
    ) -> Attacher {
        Attacher(Arc::new(f))
    }
}

impl fmt::Debug for Attacher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Attacher(..)")
    }
}

/// The preempt settings a registry shared with a runtime must have
/// ([`Runtime::with_registry`](crate::Runtime::with_registry)): a signal
/// strategy and the scheduler's yield hook, over `base`'s other settings.
/// `base`'s strategy is kept if it signals: stops then stop a running
/// goroutine by an injected call ([`Preemption::Signal`]) or in the
/// handler ([`Preemption::SignalInHandler`]), while the ends of time
/// slices are injected calls either way. A polling `base` gets
/// [`Preemption::Signal`].
///
/// [`Preemption::Signal`]: pardon_preempt::Preemption::Signal
/// [`Preemption::SignalInHandler`]: pardon_preempt::Preemption::SignalInHandler
pub fn registry_config(base: pardon_preempt::Config) -> pardon_preempt::Config {
    let preemption = if base.preemption.signals() {
        base.preemption
    } else {
        pardon_preempt::Preemption::Signal
    };
    pardon_preempt::Config {
        preemption,
        yield_hook: Some(our_hook()),
        ..base
    }
}

/// The scheduler's yield hook.
fn our_hook() -> pardon_preempt::YieldHook {
    // SAFETY: `on_yield` switches the interrupted goroutine out only on a
    // worker of a runtime that attached it to its registry itself, which
    // only the `unsafe` constructors do (`with_signal_preemption`,
    // `with_registry`), whose contract is what goroutine code must not do
    // when switched out between two arbitrary instructions; on any other
    // thread (a plain thread attached to such a registry, a worker of a
    // cooperative or polling runtime that its code attached by hand) it
    // returns at once, touching nothing. It returns on the calling thread
    // (signal-preempted goroutines never leave their worker) and does not
    // unwind.
    unsafe { pardon_preempt::YieldHook::new(crate::worker::on_yield) }
}

/// Whether `registry` was made with [`registry_config`].
pub(crate) fn has_our_hook(registry: &Registry) -> bool {
    registry
        .config()
        .yield_hook
        .is_some_and(|h| std::ptr::fn_addr_eq(h.function(), our_hook().function()))
        && registry.config().preemption.signals()
}

/// The context word of worker `index`: never 0, which is left to the
/// other threads of a shared registry (a heap's own mutators), so a yield
/// meant for a worker never goes to one of them.
pub(crate) fn context_of(index: usize) -> usize {
    index + 1
}

/// A worker's attachment, owned.
pub(crate) struct Holder {
    _owner: Box<dyn AsRef<Attached>>,
    /// `owner.as_ref()`, once: the box neither moves nor is touched
    /// mutably while the holder lives, so the reference it lent stays
    /// valid for that long.
    attached: *const Attached,
}

struct Own(Attached);

impl AsRef<Attached> for Own {
    fn as_ref(&self) -> &Attached {
        &self.0
    }
}

impl Holder {
    /// The attachment.
    #[inline(always)]
    pub(crate) fn get(&self) -> &Attached {
        // SAFETY: see `attached`; `self` keeps the owner alive.
        unsafe { &*self.attached }
    }

    fn new(owner: Box<dyn AsRef<Attached>>) -> Holder {
        let attached: *const Attached = (*owner).as_ref();
        Holder {
            _owner: owner,
            attached,
        }
    }

    /// Attaches the calling thread as worker `index` of a runtime over
    /// `registry`: by the hook if there is one, checking what it returns.
    pub(crate) fn attach(
        registry: &Registry,
        hook: Option<&Attacher>,
        index: usize,
    ) -> Result<Holder, String> {
        let ctx = context_of(index);
        let h = match hook {
            None => {
                // SAFETY: the context word addresses this worker's yields
                // (`sysmon`); nothing else stops this registry.
                let a = unsafe { registry.attach_with_context(ctx) }
                    .map_err(|e| format!("worker {index} cannot attach: {e}"))?;
                Holder::new(Box::new(Own(a)))
            }
            Some(hook) => {
                let owner = (hook.0)(ctx).map_err(|e| format!("worker {index}: {e}"))?;
                let h = Holder::new(owner);
                let a = h.get();
                let problem = if !a.belongs_to(registry) {
                    Some("an attachment to another registry")
                } else if a.tid() != nix::unistd::gettid().as_raw() {
                    Some("another thread's attachment")
                } else if a.context() != ctx {
                    Some("an attachment with another context word")
                } else if !a.is_attached() {
                    Some("a detached attachment")
                } else {
                    None
                };
                if let Some(p) = problem {
                    return Err(format!("worker {index}: the attach hook returned {p}"));
                }
                h
            }
        };
        Ok(h)
    }
}
