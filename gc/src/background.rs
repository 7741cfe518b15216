//! The background collector of a concurrent heap: paced cycles run on a
//! thread of the heap's own, so the mutator whose allocation reached the
//! trigger goes on allocating while the cycle marks (on two cores, one
//! core mutates while the other marks). While it marks, mutators that
//! allocate assist (see `assist`); one waits only at the brake: the goal,
//! reached while a cycle is still under way (see `Pacer::suspend`).
//!
//! The thread is started with the first paced cycle, is never attached (no
//! stop waits for it, and its stack is not a root), holds only a weak
//! reference to the heap between cycles, and ends when the heap is
//! dropped. In a child forked since it was started it does not exist:
//! the next request starts another.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicI32, AtomicU64};
use std::sync::{Arc, Condvar, Mutex};

use crate::collector::Collector;
use crate::heap::lock;
use crate::mark::barrier::MARK;

/// Requests and completions, shared with the thread.
#[derive(Default)]
struct State {
    /// Cycles asked for.
    requested: u64,
    /// Requests answered (a cycle ran, or was abandoned, or found another
    /// one had just run).
    answered: u64,
    /// The heap is gone.
    shutdown: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the thread (a request, or shutdown).
    work: Condvar,
    /// Wakes mutators waiting at the brake.
    done: Condvar,
}

/// The heap's side of its background collector.
#[derive(Default)]
pub(crate) struct Background {
    shared: Arc<Shared>,
    /// The process that started the thread, or 0.
    pid: AtomicI32,
    /// Paced cycles the thread ran (a statistic).
    pub cycles: AtomicU64,
}

impl Drop for Background {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_all();
        self.shared.done.notify_all();
    }
}

impl Collector {
    /// The pacer's trigger was reached on a concurrent heap: asks the
    /// background collector for a cycle, unless one is asked for already;
    /// at the brake (the goal reached while a cycle is under way), waits
    /// for it to end. Called from an allocation's slow path, outside any
    /// no-preempt region.
    pub(crate) fn paced_concurrent(self: &Arc<Self>) {
        let shared = &self.background.shared;
        let at_brake = self.pacer.at_brake(self.raw.allocated.load(Relaxed));
        if !at_brake && self.raw.phase.load(Relaxed) == MARK {
            // An assist check (see `assist`).
            self.assist();
            self.registry.outside_stops(|| {
                if self.raw.phase.load(Relaxed) == MARK {
                    self.pacer.rearm_assist(self.raw.allocated.load(Relaxed));
                }
            });
            return;
        }
        if !at_brake && !self.pacer.due(self.raw.allocated.load(Relaxed)) {
            // An assist check that found the cycle over: its end set the
            // next trigger, not reached yet.
            return;
        }
        let target = {
            let mut s = lock(&shared.state);
            if s.requested == s.answered {
                s.requested += 1;
                shared.work.notify_one();
                // No new request until the brake.
                self.pacer.await_cycle();
            } else if !at_brake {
                return;
            }
            s.requested
        };
        self.ensure_background_thread();
        if at_brake {
            self.raw.assist.brake_waits.fetch_add(1, Relaxed);
            // A stop must not wait for us meanwhile.
            self.registry.blocking(|| {
                let mut s = lock(&shared.state);
                while s.answered < target && !s.shutdown {
                    s = s.wait(&shared.done);
                }
            });
        }
    }

    fn ensure_background_thread(self: &Arc<Self>) {
        // A goroutine switched out between claiming the start and starting
        // the thread would leave the goroutines of its worker that wait at
        // the brake (blocking its thread) waiting for ever: no yields from
        // the claim to the start.
        let _no_yield = pardon_preempt::no_yield_here();
        let me = std::process::id() as i32;
        let b = &self.background;
        if b.pid.load(SeqCst) == me || b.pid.swap(me, SeqCst) == me {
            return;
        }
        let shared = b.shared.clone();
        let heap = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("pardon-gc".into())
            .spawn(move || background_main(&shared, &heap));
        if let Err(e) = spawned {
            b.pid.store(0, SeqCst);
            // Answer the request here, synchronously, rather than never.
            eprintln!("pardon: cannot start the background collector ({e}); collecting here");
            let r = crate::cycle::with_entry(|sp| self.collect_concurrent(sp));
            if r.is_err() {
                self.pacer.back_off(self.raw.allocated.load(Relaxed));
            }
            let mut s = lock(&b.shared.state);
            s.answered = s.requested;
            b.shared.done.notify_all();
        }
    }
}

fn background_main(shared: &Shared, heap: &std::sync::Weak<Collector>) {
    loop {
        {
            let mut s = lock(&shared.state);
            while s.requested == s.answered && !s.shutdown {
                s = s.wait(&shared.work);
            }
            if s.shutdown {
                return;
            }
        }
        let Some(col) = heap.upgrade() else {
            return;
        };
        let answered = lock(&shared.state).requested;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::cycle::with_entry(|sp| col.collect_concurrent(sp))
        }));
        let Ok(r) = r else {
            // A verification failure (the heap is not what it must be): no
            // mutator may go on with it, and those waiting at the brake
            // would wait for ever. The panic's message is printed already.
            eprintln!("pardon: the background collector panicked; aborting");
            std::process::abort();
        };
        match r {
            Ok(_) => {
                col.background.cycles.fetch_add(1, Relaxed);
            }
            Err(_) => col.pacer.back_off(col.raw.allocated.load(Relaxed)),
        }
        drop(col);
        let mut s = lock(&shared.state);
        s.answered = s.answered.max(answered);
        shared.done.notify_all();
    }
}
