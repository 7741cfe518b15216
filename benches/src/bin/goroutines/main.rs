//! The talk's goroutine claims on pardon-sched, in the shapes of
//! `../shared/anchors-go/sched` (run that beside this, alternating):
//!
//! - `latency`: a ticker goroutine sleeps 1 ms, `--samples` times, and
//!   records how late it wakes while `--workers` goroutines run call-free
//!   loops on `--procs` workers;
//! - `spinlock`: one worker; A takes a spinlock, starts B and yields while
//!   holding it; B spins on it with no calls. Reports the time a round, or
//!   DEADLOCK after `--timeout` (then exits with status 3, as Go's does);
//! - `fairness`: Go's `TestPingPongHog` on one worker: the ratio of a
//!   heavy pair's progress to a light pair's;
//! - `spawn`: spawn `--n` goroutines and join each through its handle
//!   (which returns its value);
//! - `spawn-wg`: spawn `--n` goroutines that each add to a counter and
//!   mark a `WaitGroup` done, then wait for the group: Go's `spawn` shape;
//! - `switch`: a ping-pong over a rendezvous channel on one worker (two
//!   switches a round); `switch-timeout` the same with every receive a
//!   `recv_timeout` that never runs out; `pair` the same on `--procs`
//!   workers, the others idle;
//! - `parked`: the resident memory of `--n` goroutines parked on a
//!   channel (stack pages touched, task, closure), from `/proc/self/statm`;
//! - `stw`: stop-the-world latency over goroutines (`Runtime::stop_the_world`,
//!   signal mode) while `--workers` goroutines run call-free loops and
//!   `--parked` more are parked on a channel, probed `--samples` times from a
//!   goroutine 1 ms apart; the shape of `../shared/anchors-go/stwprobe.go
//!   -workers W -parked N` (whose probe is `ReadMemStats`). Reports the
//!   whole stop and restart, and the time to safepoint;
//! - `gc`: full collections of a `pardon` heap over the goroutines (issue
//!   21), from an attached thread, while `--workers` goroutines run
//!   call-free loops and `--parked` more are parked holding `--frames`
//!   shadow frames each: time to safepoint, pause, and the time spent
//!   gathering roots, per collection and per parked goroutine
//!   (`pardon_bench::goroutine_heap`);
//! - `cgc`: the same with concurrent collections, whose stops read no
//!   parked goroutine's stack (they are read after the first): each stop's
//!   length beside the time to safepoint; the shape of
//!   `benches/go/gc-parked -parked N` (Go's `runtime.GC()` pauses).
//!
//! - `balance`: `--workers` goroutines each run `--n` iterations of the
//!   call-free loop on `--procs` workers; reports the time until the last
//!   ends, against the time one alone takes times workers / procs (what a
//!   perfect balance gives). With `--migrate` goroutines move between
//!   workers at slice ends; without, each stays where it started.
//! - `stuck`: a goroutine wakes another of its worker, then blocks the
//!   thread in `poll(2)` until the woken one writes a pipe: how long the
//!   woken one waits (`--samples` rounds, a call limited to `--timeout`);
//!   with `--migrate` an idle worker takes it (`sysmon`'s retake).
//!
//! `--preemption signal|poll|coop` chooses how slices end (in poll mode
//! the loops poll on every iteration); `--slice` is the time slice.
//!
//! `goroutines --mode latency [--preemption signal] [--procs 2]
//!   [--workers 4] [--samples 500] [--slice 10ms]`

mod args;
mod claims;
mod costs;
mod stops;
mod stuck;

use std::time::Duration;

use pardon_preempt::PollStrategy;
use pardon_sched::{Config, GoroutinePoll, Preemption, Runtime};
use serde_json::json;

use args::{parse_args, Args};

pub(crate) fn runtime(a: &Args, procs: usize) -> Runtime {
    let c = Config {
        procs,
        preemption: a.preemption,
        time_slice: a.slice,
        ..Config::default()
    };
    let rt = if a.migrate {
        // SAFETY: as below; besides, they hold nothing bound to their
        // thread across a yield or a poll.
        unsafe { Runtime::with_migration(c) }
    } else if a.preemption == Preemption::Signal {
        // SAFETY: the goroutines of this tool use no thread-locals, never
        // print (results go back to the main thread, which prints), and
        // allocate through the system allocator.
        unsafe { Runtime::with_signal_preemption(c) }
    } else {
        Runtime::new(c)
    };
    rt.unwrap_or_else(|e| {
        eprintln!("goroutines: {e}");
        std::process::exit(2)
    })
}

/// The Go anchor's call-free loop, one back edge a multiply-add; in poll
/// mode each back edge polls.
#[inline(never)]
fn spin<P: PollStrategy>(n: u64, poll: &mut P) -> u64 {
    let mut x = 1u64;
    for i in 0..n {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        poll.tick();
    }
    x
}

struct Quiet;
impl PollStrategy for Quiet {
    #[inline(always)]
    fn tick(&mut self) {}
    #[inline(always)]
    fn between_calls(&mut self) {}
}

pub(crate) fn spin_for(preemption: Preemption, n: u64) -> u64 {
    if preemption == Preemption::Poll {
        spin(n, &mut GoroutinePoll)
    } else {
        spin(n, &mut Quiet)
    }
}

/// `{"p50", "p99", "max"}` of `lat`, in nanoseconds.
pub(crate) fn quantiles(lat: &[Duration]) -> serde_json::Value {
    let mut v: Vec<u64> = lat.iter().map(|d| d.as_nanos() as u64).collect();
    v.sort_unstable();
    let q = |p: f64| v[(p * (v.len() - 1) as f64) as usize];
    json!({"p50": q(0.5), "p99": q(0.99), "max": v[v.len() - 1]})
}

/// Prints a run's result: its text line, or with `--json-line` one JSON
/// object (the run's settings and `result`), which `--suite` reads.
pub(crate) fn emit(a: &Args, text: String, result: serde_json::Value) {
    if a.json_line {
        let line = json!({
            "mode": a.mode,
            "preemption": a.preemption.name(),
            "procs": a.procs,
            "workers": a.workers,
            "migrate": a.migrate,
            "parked": a.parked,
            "slice_ns": a.slice.as_nanos() as u64,
            "result": result,
        });
        println!("{line}");
    } else {
        println!("{text}");
    }
}

pub(crate) fn pct(mut lat: Vec<Duration>) -> String {
    lat.sort();
    let q = |p: f64| lat[(p * (lat.len() - 1) as f64) as usize];
    let us = |d: Duration| d.as_nanos() as f64 / 1000.0;
    format!(
        "p50_us={:.1} p99_us={:.1} max_us={:.1}",
        us(q(0.5)),
        us(q(0.99)),
        us(lat[lat.len() - 1])
    )
}

fn main() {
    let a = parse_args();
    if a.suite {
        let cfg = pardon_bench::goroutine_suite::SuiteConfig {
            quick: a.quick,
            slice_arg: a.slice_arg.clone(),
            slice: a.slice,
            json: a.json.clone(),
            plot: a.plot.clone(),
            go_stwprobe: a.go_stwprobe.clone(),
            go_sched: a.go_sched.clone(),
            go_gcparked: a.go_gcparked.clone(),
        };
        if let Err(e) = pardon_bench::goroutine_suite::run(&cfg) {
            eprintln!("goroutines: {e}");
            std::process::exit(1);
        }
        return;
    }
    match a.mode.as_str() {
        "latency" => claims::latency(&a),
        "spinlock" => claims::spinlock(&a),
        "fairness" => claims::fairness(&a),
        "spawn" => costs::spawn(&a),
        "spawn-wg" => costs::spawn_wg(&a),
        "switch" => costs::switch(&a, false, 1),
        "switch-timeout" => costs::switch(&a, true, 1),
        "pair" => costs::switch(&a, false, a.procs),
        "parked" => costs::parked(&a),
        "stw" => stops::stw(&a),
        "gc" | "cgc" => stops::gc(&a),
        "balance" => claims::balance(&a),
        "stuck" => stuck::stuck(&a),
        _ => unreachable!("checked by clap"),
    }
}
