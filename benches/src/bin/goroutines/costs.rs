//! What goroutines cost: a spawn (with handles, or Go's `WaitGroup`
//! shape), a switch over a rendezvous channel, and a parked goroutine's
//! resident memory.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use pardon_sched::{channel, go};

use crate::args::Args;
use serde_json::json;

use crate::{emit, runtime};

/// The host's core-to-core round trip (`pardon_bench::floor`), in ns, or
/// `None` with one CPU (or if it could not be measured: said on stderr).
/// The spawn rows hand every goroutine from one worker to the other, so
/// their figures move with it: each reports it before and after.
fn core_to_core() -> Option<u64> {
    pardon_bench::floor::core_to_core_ns(pardon_bench::floor::CORE_TO_CORE_TRIPS).unwrap_or_else(
        |e| {
            eprintln!("goroutines: {e}");
            None
        },
    )
}

/// The text for a spawn row's core-to-core round trips.
fn c2c_text(before: Option<u64>, after: Option<u64>) -> String {
    let ns = |n: Option<u64>| n.map_or("n/a".to_string(), |n| n.to_string());
    format!(
        "core-to-core round trip {} ns before, {} after",
        ns(before),
        ns(after)
    )
}

pub(crate) fn spawn(a: &Args) {
    let c2c_before = core_to_core();
    let rt = runtime(a, a.procs);
    let n = a.n;
    let t0 = Instant::now();
    let sum = rt
        .block_on(move || {
            let hs: Vec<_> = (0..n).map(|i| go(move || i)).collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        })
        .unwrap();
    let el = t0.elapsed();
    assert_eq!(sum, n * (n - 1) / 2);
    drop(rt);
    let c2c_after = core_to_core();
    let each = el.as_nanos() as f64 / n as f64;
    emit(
        a,
        format!(
            "spawn pardon procs={}: {n} goroutines in {el:?} ({each:.0} ns each; {})",
            a.procs,
            c2c_text(c2c_before, c2c_after)
        ),
        json!({"outcome": "ok", "n": n, "ns_each": each,
               "core_to_core_ns": [c2c_before, c2c_after]}),
    );
}

/// Go's `spawn`: a `WaitGroup`, no values, no handles kept.
pub(crate) fn spawn_wg(a: &Args) {
    static SINK: AtomicU64 = AtomicU64::new(0);
    let c2c_before = core_to_core();
    let rt = runtime(a, a.procs);
    let n = a.n;
    let el = rt
        .block_on(move || {
            let wg = pardon_sched::WaitGroup::new();
            let t0 = Instant::now();
            for _ in 0..n {
                wg.add(1);
                let wg = wg.clone();
                go(move || {
                    SINK.fetch_add(1, SeqCst);
                    wg.done();
                });
            }
            wg.wait();
            t0.elapsed()
        })
        .unwrap();
    assert_eq!(SINK.load(SeqCst), n);
    drop(rt);
    let c2c_after = core_to_core();
    let each = el.as_nanos() as f64 / n as f64;
    emit(
        a,
        format!(
            "spawn-wg pardon procs={}: {n} goroutines in {el:?} ({each:.0} ns each; {})",
            a.procs,
            c2c_text(c2c_before, c2c_after)
        ),
        json!({"outcome": "ok", "n": n, "ns_each": each,
               "core_to_core_ns": [c2c_before, c2c_after]}),
    );
}

/// `switch`, and with `timed` (`switch-timeout`) every receive a
/// `recv_timeout` of a second that never runs out (an alarm armed and
/// settled each time the receiver waits).
/// `switch` (one worker), `switch-timeout`, and `pair`: the same
/// ping-pong on `--procs` workers, where the others are idle (a migrating
/// runtime must not split the pair: `sysmon` retakes only a worker that
/// has not switched for a while).
pub(crate) fn switch(a: &Args, timed: bool, procs: usize) {
    let rt = runtime(a, procs);
    let before = rt.stats();
    let n = a.n;
    let el = rt
        .block_on(move || {
            let (atx, arx) = channel::channel::<u64>(0);
            let (btx, brx) = channel::channel::<u64>(0);
            let recv = move |rx: &channel::Receiver<u64>| {
                if timed {
                    rx.recv_timeout(Duration::from_secs(1)).ok()
                } else {
                    rx.recv().ok()
                }
            };
            let echo = go(move || {
                while let Some(v) = recv(&arx) {
                    if btx.send(v).is_err() {
                        break;
                    }
                }
            });
            let t0 = Instant::now();
            for i in 0..n {
                atx.send(i).unwrap();
                assert_eq!(recv(&brx), Some(i));
            }
            let el = t0.elapsed();
            drop(atx);
            echo.join().unwrap();
            el
        })
        .unwrap();
    let each = el.as_nanos() as f64 / (2 * n) as f64;
    let s = rt.stats();
    let (retakes, moves) = (s.retakes - before.retakes, s.migrations - before.migrations);
    emit(
        a,
        format!(
            "{} pardon procs={procs} migrate={}: {n} round trips in {el:?} ({each:.0} ns a switch); \
             {retakes} retakes, {moves} moves",
            a.mode, a.migrate
        ),
        json!({"outcome": "ok", "n": n, "ns_a_switch": each, "retakes": retakes,
               "migrations": moves}),
    );
}

/// Resident bytes of this process.
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("statm's resident field");
    // SAFETY: sysconf takes an integer.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

pub(crate) fn parked(a: &Args) {
    let rt = runtime(a, a.procs);
    let n = a.n;
    // Warm the allocator and the stack pool's first pages.
    rt.block_on(|| ()).unwrap();
    let before = resident();
    let (tx, rx) = channel::unbounded::<()>();
    let wg = pardon_sched::WaitGroup::new();
    let started = pardon_sched::WaitGroup::new();
    let mut handles = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let (rx, started) = (rx.clone(), started.clone());
        started.add(1);
        handles.push(rt.go(move || {
            started.done();
            let _ = rx.recv();
        }));
    }
    started.wait();
    let during = resident();
    for _ in 0..n {
        tx.send(()).unwrap();
    }
    for h in handles {
        h.join().unwrap();
    }
    drop(wg);
    let each = (during.saturating_sub(before)) as f64 / n as f64;
    emit(
        a,
        format!(
            "parked pardon procs={}: {n} goroutines parked on a channel: {each:.0} bytes \
             resident each ({} MiB in all)",
            a.procs,
            during.saturating_sub(before) >> 20
        ),
        json!({"outcome": "ok", "n": n, "bytes_each": each}),
    );
}
