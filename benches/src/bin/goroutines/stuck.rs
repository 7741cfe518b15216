//! `stuck`: how long a goroutine woken by another of its worker waits when
//! the waker then blocks the worker's thread in a system call made
//! directly (`poll(2)` on a pipe, not through `pardon_sched::blocking`).
//! The woken one is what ends the call: it writes the pipe. Go hands the
//! P of a goroutine in a system call to another M after 20 µs (`sysmon`'s
//! `retake`); a migrating pardon runtime has `sysmon` mark the worker
//! stuck and an idle worker steal the goroutine; a runtime that does not
//! migrate keeps it queued behind the call, here until the call's limit
//! (`--timeout`) runs out.
//!
//! `--samples` rounds on `--procs` workers; only rounds in which both
//! goroutines were on one thread when the call began say anything, and
//! only those are reported (the wait from the wake-up to the woken
//! goroutine running), with how many of them waited out the limit. In a
//! migrating runtime the waker first yields (a few times at most) until
//! it runs on the woken one's thread.

use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_sched::channel::channel;
use pardon_sched::{go, yield_now};
use serde_json::json;

use crate::args::Args;
use crate::{emit, pct, quantiles, runtime};

/// The calling thread's id, from the kernel (no thread-local involved:
/// goroutines of a migrating runtime may use none).
fn tid() -> i64 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

/// Blocks in `poll(2)` until `fd` is readable or `limit` has passed.
fn poll_readable(fd: i32, limit: Duration) {
    let end = Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, 60_000) as i32;
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, ms) } > 0 {
            return;
        }
        // Timed out (looked at above) or interrupted (the preemption
        // signal, refused in a system call): wait on.
    }
}

/// Whether `fd` is readable now.
fn readable(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout does not block.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

pub(crate) fn stuck(a: &Args) {
    let rt = runtime(a, a.procs);
    let (samples, limit, migrate) = (a.samples, a.timeout, a.migrate);
    let before = rt.stats();
    let waits = rt
        .block_on(move || {
            let mut fds = [0i32; 2];
            // SAFETY: pipe writes two descriptors into the array.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            let (r, w) = (fds[0], fds[1]);
            let (wake_tx, wake_rx) = channel::<Instant>(1);
            let (parked_tx, parked_rx) = channel::<i64>(1);
            let woken_on = Arc::new(AtomicI64::new(0));
            let woken = woken_on.clone();
            let b = go(move || {
                let mut waits = Vec::new();
                loop {
                    // Where it parks: its home, where a wake-up queues it.
                    if parked_tx.send(tid()).is_err() {
                        break;
                    }
                    let Ok(sent) = wake_rx.recv() else { break };
                    waits.push(sent.elapsed());
                    woken.store(tid(), SeqCst);
                    // SAFETY: writes one byte from a live buffer.
                    assert_eq!(unsafe { libc::write(w, b"x".as_ptr().cast(), 1) }, 1);
                }
                waits
            });
            let mut same = Vec::new();
            for _ in 0..samples {
                let b_home = parked_rx.recv().unwrap();
                // (B parks in `recv` right after its send, or is about
                // to: its home does not change in between.) In a migrating
                // runtime, a yield may take this goroutine to B's thread,
                // where a round says something: a few tries.
                let mut tries = 0;
                while migrate && tid() != b_home && tries < 100 {
                    yield_now();
                    tries += 1;
                }
                let here = tid();
                wake_tx.send(Instant::now()).unwrap();
                poll_readable(r, limit);
                // A round that waited out the limit lets B run here (it may
                // be queued behind this goroutine), then takes the byte.
                while !readable(r) {
                    yield_now();
                }
                let mut byte = 0u8;
                // SAFETY: reads one byte into a live buffer (readable now).
                let got = unsafe { libc::read(r, (&mut byte as *mut u8).cast(), 1) };
                assert_eq!(got, 1);
                same.push(b_home == here);
            }
            drop(wake_tx);
            drop(parked_rx);
            let waits = b.join().unwrap();
            for fd in fds {
                // SAFETY: our own descriptors, closed once.
                unsafe { libc::close(fd) };
            }
            waits
                .into_iter()
                .zip(same)
                .filter_map(|(d, s)| s.then_some(d))
                .collect::<Vec<Duration>>()
        })
        .unwrap();
    let after = rt.stats();
    let n = waits.len();
    let stalled = waits.iter().filter(|d| **d >= limit).count();
    if n == 0 {
        emit(
            a,
            format!("stuck pardon: no round had both goroutines on one thread in {samples}"),
            json!({"outcome": "none", "rounds": 0}),
        );
        return;
    }
    emit(
        a,
        format!(
            "stuck pardon preemption={} procs={} migrate={} slice={:?}: {n} of {samples} rounds \
             on one thread, woken goroutine waited {}; {stalled} waited out the {limit:?} limit; \
             {} retakes, {} moves",
            a.preemption,
            a.procs,
            a.migrate,
            a.slice,
            pct(waits.clone()),
            after.retakes - before.retakes,
            after.migrations - before.migrations,
        ),
        json!({"outcome": "ok", "rounds": n, "stalled": stalled, "ns": quantiles(&waits),
               "retakes": after.retakes - before.retakes}),
    );
}
