//! A signal-preempted runtime over a registry of its own, its workers
//! attached by a hook (the shape `Runtime::with_registry` is for, which a
//! heap sharing the registry would use): for the tests that stop that
//! registry themselves.

use std::time::Duration;

use pardon_preempt::{Attached, Registry};
use pardon_sched::{Attacher, Config, Runtime};

/// A worker's attachment, made by the hook below.
pub struct Own(pub Attached);

impl AsRef<Attached> for Own {
    fn as_ref(&self) -> &Attached {
        &self.0
    }
}

/// `procs` signal-preempted workers with slices of `time_slice`, over a
/// registry of their own whose stops fail after 5 s (long enough for a
/// loaded machine, short enough for a test); `on_attach` runs on each
/// worker as it attaches.
///
/// The caller's goroutines must keep the contract of
/// `Runtime::with_registry` (no thread-locals of their own, no std lock
/// held where they could be preempted): the tests using this do.
pub fn runtime(procs: usize, time_slice: Duration, on_attach: fn()) -> (Runtime, Registry) {
    let registry = Registry::new(pardon_sched::registry_config(pardon_preempt::Config {
        stop_timeout: Duration::from_secs(5),
        ..Default::default()
    }))
    .unwrap();
    let r = registry.clone();
    let attach = Attacher::new(move |ctx| {
        on_attach();
        // SAFETY: the runtime addresses its worker's yields by `ctx`, as
        // the hook's contract asks; nothing else uses that word here.
        let a = unsafe { r.attach_with_context(ctx) }.map_err(|e| e.to_string())?;
        Ok(Box::new(Own(a)) as Box<dyn AsRef<Attached>>)
    });
    let config = Config {
        procs,
        time_slice,
        attach: Some(attach),
        ..Config::default()
    };
    // SAFETY: the callers' goroutines keep the contract (see above).
    let rt = unsafe { Runtime::with_registry(config, registry.clone()) }.unwrap();
    (rt, registry)
}
