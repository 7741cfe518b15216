//! The talk's claims: scheduling latency under call-free loops, the
//! spinlock that deadlocks a cooperative scheduler, and fairness
//! (`TestPingPongHog`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_sched::{channel, go, sleep, yield_now, Preemption};
use serde_json::json;

use crate::args::Args;
use crate::{emit, pct, quantiles, runtime, spin_for};

pub(crate) fn latency(a: &Args) {
    let rt = runtime(a, a.procs);
    let stop = Arc::new(AtomicBool::new(false));
    let sink = Arc::new(AtomicU64::new(0));
    let p = a.preemption;
    let spinners: Vec<_> = (0..a.workers)
        .map(|_| {
            let (stop, sink) = (stop.clone(), sink.clone());
            rt.go(move || {
                while !stop.load(SeqCst) {
                    sink.fetch_add(spin_for(p, 200_000_000), SeqCst);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    let samples = a.samples;
    let ticker = rt.go(move || {
        let mut lat = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t0 = Instant::now();
            sleep(Duration::from_millis(1));
            lat.push(t0.elapsed().saturating_sub(Duration::from_millis(1)));
        }
        lat
    });
    let start = Instant::now();
    let limit = a.timeout.max(Duration::from_millis(samples as u64 * 50));
    while !ticker.is_finished() {
        if start.elapsed() > limit {
            emit(
                a,
                format!(
                    "latency pardon preemption={} procs={} workers={} slice={:?}: the ticker \
                     made no progress for {limit:?} (starved)",
                    a.preemption, a.procs, a.workers, a.slice
                ),
                json!({"outcome": "starved", "after_ms": limit.as_millis() as u64}),
            );
            std::process::exit(3);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let lat = ticker.join().unwrap();
    stop.store(true, SeqCst);
    let s = rt.stats();
    let q = quantiles(&lat);
    emit(
        a,
        format!(
            "latency pardon preemption={} procs={} workers={} slice={:?}: wake lateness {} \
             (preemptions {}, refused {})",
            a.preemption,
            a.procs,
            a.workers,
            a.slice,
            pct(lat),
            s.preemptions,
            s.refused
        ),
        json!({"outcome": "ok", "lateness_ns": q, "preemptions": s.preemptions,
               "refused": s.refused}),
    );
    // Each spinner ends at the end of its current loop.
    for h in spinners {
        h.join().unwrap();
    }
}

pub(crate) fn spinlock(a: &Args) {
    let rt = runtime(a, 1);
    let lock = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let (l2, p2, rounds) = (lock.clone(), progress.clone(), a.rounds);
    let poll = a.preemption == Preemption::Poll;
    let start = Instant::now();
    let all = rt.go(move || {
        for _ in 0..rounds {
            let l3 = l2.clone();
            // A: takes the lock, starts B, yields while holding it.
            while l3.swap(true, SeqCst) {}
            let l4 = l3.clone();
            let b = go(move || {
                // In poll mode the spin loop polls on every try.
                while l4
                    .compare_exchange_weak(false, true, SeqCst, SeqCst)
                    .is_err()
                {
                    if poll {
                        pardon_sched::poll();
                    }
                }
                l4.store(false, SeqCst);
            });
            yield_now(); // B runs now, and spins until A runs again
            l3.store(false, SeqCst);
            b.join().unwrap();
            p2.fetch_add(1, SeqCst);
        }
    });
    let mut last = (0, Instant::now());
    while !all.is_finished() {
        std::thread::sleep(Duration::from_millis(1));
        let p = progress.load(SeqCst);
        if p != last.0 {
            last = (p, Instant::now());
        } else if last.1.elapsed() > a.timeout {
            emit(
                a,
                format!(
                    "spinlock pardon preemption={}: DEADLOCK (no progress after {:?}, {p} of {} \
                     rounds done)",
                    a.preemption, a.timeout, a.rounds
                ),
                json!({"outcome": "deadlock", "rounds_done": p,
                       "after_ms": a.timeout.as_millis() as u64}),
            );
            // The spinning goroutine holds its worker for ever; leave it.
            std::process::exit(3);
        }
    }
    all.join().unwrap();
    let el = start.elapsed();
    emit(
        a,
        format!(
            "spinlock pardon preemption={} slice={:?}: {} rounds in {:?} ({:.2} ms a round)",
            a.preemption,
            a.slice,
            a.rounds,
            el,
            el.as_secs_f64() * 1000.0 / a.rounds as f64
        ),
        json!({"outcome": "ok", "rounds_done": a.rounds,
               "round_ns": el.as_nanos() as u64 / a.rounds as u64}),
    );
}

pub(crate) fn fairness(a: &Args) {
    let rt = runtime(a, 1);
    let done = Arc::new(AtomicBool::new(false));
    let counts = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let mut handles = Vec::new();
    let mut starts = Vec::new();
    for (limit, counter) in [(1_000_000u64, &counts[0]), (1_000, &counts[1])] {
        // Unbuffered, as in Go's test: a token sent goes to the partner.
        let (tx, rx) = channel::channel::<()>(0);
        let quit = Arc::new(std::sync::atomic::AtomicU32::new(0));
        for _ in 0..2 {
            let (tx, rx, done, counter, quit) = (
                tx.clone(),
                rx.clone(),
                done.clone(),
                counter.clone(),
                quit.clone(),
            );
            let p = a.preemption;
            handles.push(rt.go(move || {
                while rx.recv().is_ok() {
                    if done.load(SeqCst) {
                        // The first of the pair to see it passes the token
                        // on, so that the other wakes and sees it too.
                        if quit.fetch_add(1, SeqCst) == 0 {
                            let _ = tx.send(());
                        }
                        break;
                    }
                    counter.fetch_add(limit, SeqCst);
                    std::hint::black_box(spin_for(p, limit));
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            }));
        }
        starts.push(tx);
    }
    // Each pair's first token, sent by a goroutine: the channels are
    // unbuffered, and in cooperative mode the light pair may never run to
    // take it, which must not block this thread.
    for tx in starts {
        rt.go(move || {
            let _ = tx.send(());
        });
    }
    std::thread::sleep(Duration::from_millis(1000));
    let (hog, light) = (counts[0].load(SeqCst), counts[1].load(SeqCst));
    done.store(true, SeqCst);
    let ratio = hog as f64 / light.max(1) as f64;
    emit(
        a,
        format!(
            "fairness pardon preemption={} slice={:?}: hog {hog}, light {light}, ratio {ratio:.2} \
             (Go's test wants [0.2, 5])",
            a.preemption, a.slice,
        ),
        json!({"outcome": if (0.2..=5.0).contains(&ratio) { "ok" } else { "unfair" },
               "hog": hog, "light": light, "ratio": ratio}),
    );
    if a.preemption == Preemption::Cooperative {
        // The hog pair may hold the worker; do not wait for it.
        std::process::exit(0);
    }
    for h in handles {
        h.join().unwrap();
    }
}

/// `balance`: how evenly `--workers` equal loops share `--procs` workers.
/// One loop runs alone first, for the yardstick (its time × workers /
/// procs); then all of them at once, each spawned from the first worker's
/// goroutine, as a program's would be.
pub(crate) fn balance(a: &Args) {
    let rt = runtime(a, a.procs);
    let (n, p, workers) = (a.n, a.preemption, a.workers);
    let alone = rt
        .block_on(move || {
            let t0 = Instant::now();
            std::hint::black_box(spin_for(p, n));
            t0.elapsed()
        })
        .unwrap();
    let before = rt.stats();
    let (all, each) = rt
        .block_on(move || {
            let t0 = Instant::now();
            let hs: Vec<_> = (0..workers)
                .map(|_| {
                    go(move || {
                        std::hint::black_box(spin_for(p, n));
                        t0.elapsed()
                    })
                })
                .collect();
            let each: Vec<Duration> = hs.into_iter().map(|h| h.join().unwrap()).collect();
            (t0.elapsed(), each)
        })
        .unwrap();
    let moves = rt.stats().migrations - before.migrations;
    let stays = rt.stats().stays - before.stays;
    let ideal = alone.mul_f64(workers as f64 / a.procs as f64);
    let ratio = all.as_secs_f64() / ideal.as_secs_f64();
    let first = each.iter().min().copied().unwrap_or_default();
    emit(
        a,
        format!(
            "balance pardon procs={} workers={workers} migrate={}: all done in {all:?}, \
             first in {first:?}; one alone {alone:?}, so a perfect balance {ideal:?} \
             ({ratio:.2} of it); {moves} moves, {stays} preemptions kept home",
            a.procs, a.migrate
        ),
        json!({"outcome": "ok", "ns_all": all.as_nanos() as u64,
               "ns_ideal": ideal.as_nanos() as u64, "ratio": ratio,
               "migrations": moves, "stays": stays}),
    );
}
