//! `sysmon`: the thread (with no P, never running goroutines) that ends
//! time slices, Go's `sysmon` → `retake` → `preemptone`.
//!
//! Every round it reads each worker's slice counter (`Proc::tick`). A
//! slice it sees for the first time is noted with the time; one it has
//! seen running for `time_slice` or longer is asked to end: in signal mode
//! by a yield request to the worker's preempt record (the signal and the
//! injected call), in poll mode by the worker's `want_yield` flag. A
//! refused request (the goroutine in a no-preempt region or in a shared
//! library) is simply made again the next round.
//!
//! In a migrating runtime it also notices a worker that has not switched
//! goroutines for 20 µs with goroutines queued behind it (one running
//! long, or blocked in a system call it made directly rather than through
//! `blocking`): it marks the worker stuck, which lets a thief take even
//! the worker's `next` goroutine, and wakes an idle worker to steal (Go's
//! `retake` hands such a P to another M; here the goroutines go). A worker
//! it finds with goroutines queued at a new switch count is looked at
//! again 20 µs later rather than a round later.
//!
//! Go's `sysmon` notices a slice only at its own rounds, which stretch to
//! 10 ms, so a goroutine may run for up to two of them (20 ms) before it
//! is preempted; ours rounds every eighth of a slice, between 20 µs and
//! 500 µs, while anything runs, so a slice ends at most a round late.
//! While nothing runs it sleeps longer, doubling to 10 ms, and the first
//! worker to start a goroutine wakes it.

use std::num::NonZeroU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Preemption;
use crate::queue::Shared;

/// The round while goroutines run, for a given slice.
pub(crate) fn busy_period(slice: Duration) -> Duration {
    (slice / 8).clamp(Duration::from_micros(20), Duration::from_micros(500))
}

/// How long a migrating runtime's worker may go without switching, with
/// goroutines queued behind it, before `sysmon` lets other workers take
/// them (Go retakes the P of a goroutine in a system call after 20 µs).
const RETAKE_AFTER: Duration = Duration::from_micros(20);

/// Rounds `sysmon` makes every `RETAKE_AFTER` after a retake (Go: 50).
const QUICK_ROUNDS: u32 = 50;

/// The longest sleep while nothing runs.
const IDLE_MAX: Duration = Duration::from_millis(10);

pub(crate) fn sysmon_main(shared: Arc<Shared>) {
    // Rounds on time, even while every CPU runs a worker.
    crate::sys::favour_wakeups();
    let slice = shared.config.time_slice;
    let period = busy_period(slice);
    let migrate = shared.config.migrate;
    let n = shared.procs.len();
    // Per worker: the slice last seen, and when it was first seen.
    let mut seen: Vec<(u64, Instant)> = vec![(0, Instant::now()); n];
    // Per worker of a migrating runtime: its switch count last seen, and
    // when it was first seen.
    let mut switched: Vec<(u64, Instant)> = vec![(0, Instant::now()); n];
    // Whether the last round was a quick second look (see below).
    let mut looked_again = false;
    // Rounds since the last retake (Go's `idle` count in `sysmon`).
    let mut since_retake = u32::MAX;
    let mut delay = period;
    loop {
        if shared.shutdown.load(SeqCst) {
            return;
        }
        let seq = shared.sysmon_seq.load(SeqCst);
        let now = Instant::now();
        let mut any = false;
        let mut look_again = false;
        let mut retook = false;
        for (i, p) in shared.procs.iter().enumerate() {
            if p.running.load(Acquire) == 0 {
                continue;
            }
            any = true;
            if migrate && p.queued() > 0 {
                // Goroutines wait behind this worker: is it stuck (no
                // switch for `RETAKE_AFTER`)? Switches, not slices: a pair
                // handing off to each other runs in one slice, and is not
                // stuck.
                let sw = p.switches.load(Acquire);
                if switched[i].0 != sw {
                    switched[i] = (sw, now);
                    look_again = true;
                } else if p.stuck.load(Relaxed) != sw.wrapping_add(1) {
                    if now.duration_since(switched[i].1) >= RETAKE_AFTER {
                        // Let a thief have them, `next` too (see
                        // `Proc::stuck`), and wake one to take them: once
                        // for each time it is found stuck. (With every
                        // worker busy there is none to wake, and nothing
                        // to hurry for.)
                        p.stuck.store(sw.wrapping_add(1), Release);
                        if shared.wake_a_sleeper() {
                            p.retakes.fetch_add(1, Relaxed);
                            retook = true;
                        }
                    } else {
                        look_again = true;
                    }
                }
            }
            let tick = p.tick.load(Acquire);
            if seen[i].0 != tick {
                seen[i] = (tick, now);
                continue;
            }
            if shared.config.preemption == Preemption::Cooperative
                || now.duration_since(seen[i].1) < slice
            {
                continue;
            }
            let Some(token) = NonZeroU64::new(tick) else {
                continue;
            };
            p.asks.fetch_add(1, Relaxed);
            match shared.config.preemption {
                Preemption::Signal => {
                    if let Some(reg) = &shared.registry {
                        reg.request_yield(crate::attach::context_of(i), token);
                    }
                }
                Preemption::Poll => p.want_yield.store(tick, Relaxed),
                Preemption::Cooperative => {}
            }
        }
        if any {
            // A worker with goroutines waiting behind it, seen for the
            // first time at this switch count: looked at again after
            // `RETAKE_AFTER` rather than a whole round, so a stuck one is
            // found within about half a round and 20 µs. Not twice in a
            // row (a busy worker's queue is often not empty, and its count
            // moves between two looks): at most two looks a round.
            //
            // After a retake, as Go's `sysmon` does, it looks every
            // `RETAKE_AFTER` for `QUICK_ROUNDS` rounds, then twice as long
            // each round until its period: a program whose goroutines block
            // in system calls again and again has them retaken in tens of
            // microseconds, and one that does not pays nothing.
            since_retake = if retook {
                0
            } else {
                since_retake.saturating_add(1)
            };
            let after_retake = if since_retake < QUICK_ROUNDS {
                RETAKE_AFTER
            } else {
                let doublings = (since_retake - QUICK_ROUNDS).min(16);
                RETAKE_AFTER.saturating_mul(1 << doublings)
            };
            let quick = if look_again && !looked_again {
                RETAKE_AFTER
            } else {
                period
            };
            delay = period.min(after_retake).min(quick);
            looked_again = look_again && delay < period;
        } else {
            delay = (delay * 2).min(IDLE_MAX);
            // Checked by every worker that starts a goroutine.
            shared.sysmon_idle.store(1, SeqCst);
            if shared.procs.iter().any(|p| p.running.load(SeqCst) != 0) {
                // Started while we looked: watch it from now on.
                shared.sysmon_idle.store(0, SeqCst);
                delay = period;
            }
        }
        pardon_preempt::futex::wait(&shared.sysmon_seq, seq, Some(delay));
        shared.sysmon_idle.store(0, SeqCst);
    }
}
