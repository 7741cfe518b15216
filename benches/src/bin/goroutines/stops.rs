//! Stopping goroutines: stop-the-world over the runtime's registry, and
//! collections of a heap over the goroutines.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_sched::{sleep, Preemption};
use serde_json::json;

use crate::args::Args;
use crate::{emit, pct, quantiles, runtime, spin_for};

pub(crate) fn stw(a: &Args) {
    if a.preemption != Preemption::Signal {
        eprintln!("goroutines: --mode stw needs --preemption signal");
        std::process::exit(2);
    }
    let rt = Arc::new(runtime(a, a.procs));
    let parked = pardon_bench::parked::Parked::start(&rt, a.parked as usize).unwrap_or_else(|e| {
        eprintln!("goroutines: stw: {e}");
        std::process::exit(1);
    });
    let sink = Arc::new(AtomicU64::new(0));
    // Spread over the workers (see `pardon_bench::spinners`).
    let spinners = pardon_bench::spinners::Spinners::start(&rt, a.workers, a.procs, move |stop| {
        while stop.load(SeqCst) == 0 {
            sink.fetch_add(spin_for(Preemption::Signal, 50_000_000), SeqCst);
        }
    })
    .unwrap_or_else(|e| {
        eprintln!("goroutines: stw: {e}");
        std::process::exit(1);
    });
    std::thread::sleep(Duration::from_millis(50));
    let (rt2, samples) = (rt.clone(), a.samples);
    let prober = rt.go(move || {
        let mut whole = Vec::with_capacity(samples);
        let mut ttsp = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t0 = Instant::now();
            let w = rt2.stop_the_world().expect("stop");
            let s = w.stats();
            drop(w);
            whole.push(t0.elapsed());
            ttsp.push(s.ttsp);
            sleep(Duration::from_millis(1));
        }
        (whole, ttsp)
    });
    let (whole, ttsp) = prober.join().unwrap();
    spinners.stop().expect("spinners");
    drop(parked);
    let (qw, qt) = (quantiles(&whole), quantiles(&ttsp));
    emit(
        a,
        format!(
            "stw pardon procs={} workers={} parked={}: stop+restart {}; ttsp {}",
            a.procs,
            a.workers,
            a.parked,
            pct(whole),
            pct(ttsp)
        ),
        json!({"outcome": "ok", "stop_restart_ns": qw, "ttsp_ns": qt}),
    );
}

/// `gc` and `cgc`: collections of a heap over the goroutines,
/// stop-the-world or concurrent.
pub(crate) fn gc(a: &Args) {
    if a.preemption != Preemption::Signal {
        eprintln!("goroutines: --mode {} needs --preemption signal", a.mode);
        std::process::exit(2);
    }
    let concurrent = a.mode == "cgc";
    let o = pardon_bench::goroutine_heap::Options {
        procs: a.procs,
        workers: a.workers,
        parked: a.parked as usize,
        frames: a.frames,
        samples: a.samples,
        slice: a.slice,
        concurrent,
    };
    let s = match pardon_bench::goroutine_heap::run(o) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("goroutines: {}: {e}", a.mode);
            std::process::exit(1);
        }
    };
    let mut roots = s.roots.clone();
    roots.sort();
    let median = roots[roots.len() / 2];
    // (A concurrent cycle's stops gather no parked goroutine's roots.)
    let per_parked =
        (a.parked > 0 && !concurrent).then(|| median.as_nanos() as f64 / a.parked as f64);
    let stops = if concurrent {
        format!(
            "; first stop {}; second stop {}; {} parked scanned after the first",
            pct(s.first.clone()),
            pct(s.second.clone()),
            s.deferred
        )
    } else {
        String::new()
    };
    emit(
        a,
        format!(
            "{} pardon procs={} workers={} parked={} frames={}: ttsp {}; pause {}; roots {}{}; {} suspended, {} marked, {} words scanned{stops}",
            a.mode,
            a.procs,
            a.workers,
            a.parked,
            a.frames,
            pct(s.ttsp.clone()),
            pct(s.pause.clone()),
            pct(s.roots.clone()),
            per_parked.map_or(String::new(), |n| format!(" ({n:.0} ns a parked goroutine)")),
            s.suspended,
            s.marked,
            s.words,
        ),
        json!({"outcome": "ok", "frames": a.frames, "ttsp_ns": quantiles(&s.ttsp),
               "pause_ns": quantiles(&s.pause), "roots_ns": quantiles(&s.roots),
               "roots_per_parked_ns": per_parked, "suspended": s.suspended,
               "marked": s.marked, "words_scanned": s.words,
               "first_stop_ns": concurrent.then(|| quantiles(&s.first)),
               "second_stop_ns": concurrent.then(|| quantiles(&s.second)),
               "deferred": concurrent.then_some(s.deferred)}),
    );
}
