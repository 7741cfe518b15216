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
//!   switches a round);
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
//!   (`pardon_bench::goroutine_heap`).
//!
//! `--preemption signal|poll|coop` chooses how slices end (in poll mode
//! the loops poll on every iteration); `--slice` is the time slice.
//!
//! `goroutines --mode latency [--preemption signal] [--procs 2]
//!   [--workers 4] [--samples 500] [--slice 10ms]`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_preempt::PollStrategy;
use pardon_sched::{channel, go, sleep, yield_now, Config, GoroutinePoll, Preemption, Runtime};
use serde_json::json;

struct Args {
    mode: String,
    preemption: Preemption,
    procs: usize,
    workers: usize,
    samples: usize,
    slice: Duration,
    rounds: usize,
    timeout: Duration,
    n: u64,
    parked: u64,
    frames: usize,
    json_line: bool,
    suite: bool,
    quick: bool,
    json: Option<std::path::PathBuf>,
    plot: Option<std::path::PathBuf>,
    go_stwprobe: Option<std::path::PathBuf>,
    /// `--slice` as given, for the suite's children.
    slice_arg: String,
}

fn parse_args() -> Args {
    use clap::{Arg, Command};
    let m = Command::new("goroutines")
        .about("Scheduling latency, the spinlock deadlock, fairness, spawn and switch costs")
        .arg(
            Arg::new("mode")
                .long("mode")
                .value_parser([
                    "latency", "spinlock", "fairness", "spawn", "spawn-wg", "switch", "parked",
                    "stw", "gc",
                ])
                .default_value("latency"),
        )
        .arg(
            Arg::new("preemption")
                .long("preemption")
                .value_parser(["signal", "poll", "coop"])
                .default_value("signal")
                .help("How time slices end"),
        )
        .arg(
            Arg::new("procs")
                .long("procs")
                .allow_negative_numbers(true)
                .value_parser(pardon_bench::cli::whole::<usize>(1, 1024))
                .default_value("2")
                .help("Workers (GOMAXPROCS); spinlock, fairness and switch use 1"),
        )
        .arg(
            Arg::new("workers")
                .long("workers")
                .allow_negative_numbers(true)
                .value_parser(pardon_bench::cli::whole::<usize>(0, 4096))
                .default_value("4")
                .help("latency: goroutines in call-free loops"),
        )
        .arg(
            Arg::new("samples")
                .long("samples")
                .allow_negative_numbers(true)
                .value_parser(pardon_bench::cli::whole::<usize>(1, 10_000_000))
                .default_value("500")
                .help("latency: ticker samples"),
        )
        .arg(
            Arg::new("slice")
                .long("slice")
                .allow_hyphen_values(true)
                .value_parser(pardon_bench::cli::duration)
                .default_value("10ms")
                .help("Time slice (Go's forcePreemptNS is 10 ms)"),
        )
        .arg(
            Arg::new("rounds")
                .long("rounds")
                .allow_negative_numbers(true)
                .value_parser(pardon_bench::cli::whole::<usize>(1, 1_000_000))
                .default_value("20")
                .help("spinlock: rounds"),
        )
        .arg(
            Arg::new("timeout")
                .long("timeout")
                .allow_hyphen_values(true)
                .value_parser(pardon_bench::cli::duration)
                .default_value("10s")
                .help("spinlock: no progress for this long is a deadlock"),
        )
        .arg(
            Arg::new("n")
                .long("n")
                .allow_negative_numbers(true)
                .value_parser(pardon_bench::cli::whole::<u64>(1, 100_000_000))
                .default_value("1000000")
                .help("spawn/switch/parked: count"),
        )
        .arg(
            Arg::new("parked")
                .long("parked")
                .allow_negative_numbers(true)
                .value_parser(pardon_bench::cli::whole::<u64>(0, 10_000_000))
                .default_value("0")
                .help("stw, gc: goroutines parked on a channel meanwhile"),
        )
        .arg(
            Arg::new("frames")
                .long("frames")
                .allow_negative_numbers(true)
                .value_parser(pardon_bench::cli::whole::<usize>(1, 8))
                .default_value("4")
                .help("gc: shadow frames each parked goroutine holds"),
        )
        .arg(
            Arg::new("json-line")
                .long("json-line")
                .action(clap::ArgAction::SetTrue)
                .help("Print the result as one JSON object instead of a text line"),
        )
        .arg(
            Arg::new("suite")
                .long("suite")
                .action(clap::ArgAction::SetTrue)
                .help("Run the goroutine rows: latency, spinlock and fairness per preemption mode, and stw with 0, 10k and 100k parked, each in a child process"),
        )
        .arg(
            Arg::new("quick")
                .long("quick")
                .action(clap::ArgAction::SetTrue)
                .help("--suite: fewer samples and parked goroutines"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help("--suite: write the results as JSON to this file"),
        )
        .arg(
            Arg::new("plot")
                .long("plot")
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help("--suite: write stw-vs-parked.svg (stop and time to safepoint against parked goroutines) into this directory"),
        )
        .arg(
            Arg::new("go-stwprobe")
                .long("go-stwprobe")
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help("--suite: Go 1.19's stwprobe binary (../shared/anchors-go/stwprobe.go, built), run with GOMAXPROCS=2 after each stw row with the same parked count, for the Go rows and the plot"),
        )
        .get_matches();
    let preemption: Preemption = m
        .get_one::<String>("preemption")
        .unwrap()
        .parse()
        .expect("checked by clap");
    Args {
        mode: m.get_one::<String>("mode").unwrap().clone(),
        preemption,
        procs: *m.get_one("procs").unwrap(),
        workers: *m.get_one("workers").unwrap(),
        samples: *m.get_one("samples").unwrap(),
        slice: *m.get_one("slice").unwrap(),
        rounds: *m.get_one("rounds").unwrap(),
        timeout: *m.get_one("timeout").unwrap(),
        n: *m.get_one("n").unwrap(),
        parked: *m.get_one("parked").unwrap(),
        frames: *m.get_one("frames").unwrap(),
        json_line: m.get_flag("json-line"),
        suite: m.get_flag("suite"),
        quick: m.get_flag("quick"),
        json: m.get_one::<std::path::PathBuf>("json").cloned(),
        plot: m.get_one::<std::path::PathBuf>("plot").cloned(),
        go_stwprobe: m.get_one::<std::path::PathBuf>("go-stwprobe").cloned(),
        slice_arg: m
            .get_raw("slice")
            .and_then(|mut v| v.next())
            .map_or("10ms".into(), |v| v.to_string_lossy().into_owned()),
    }
}

fn runtime(a: &Args, procs: usize) -> Runtime {
    let c = Config {
        procs,
        preemption: a.preemption,
        time_slice: a.slice,
        ..Config::default()
    };
    let rt = if a.preemption == Preemption::Signal {
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

fn spin_for(preemption: Preemption, n: u64) -> u64 {
    if preemption == Preemption::Poll {
        spin(n, &mut GoroutinePoll)
    } else {
        spin(n, &mut Quiet)
    }
}

/// `{"p50", "p99", "max"}` of `lat`, in nanoseconds.
fn quantiles(lat: &[Duration]) -> serde_json::Value {
    let mut v: Vec<u64> = lat.iter().map(|d| d.as_nanos() as u64).collect();
    v.sort_unstable();
    let q = |p: f64| v[(p * (v.len() - 1) as f64) as usize];
    json!({"p50": q(0.5), "p99": q(0.99), "max": v[v.len() - 1]})
}

/// Prints a run's result: its text line, or with `--json-line` one JSON
/// object (the run's settings and `result`), which `--suite` reads.
fn emit(a: &Args, text: String, result: serde_json::Value) {
    if a.json_line {
        let line = json!({
            "mode": a.mode,
            "preemption": a.preemption.name(),
            "procs": a.procs,
            "workers": a.workers,
            "parked": a.parked,
            "slice_ns": a.slice.as_nanos() as u64,
            "result": result,
        });
        println!("{line}");
    } else {
        println!("{text}");
    }
}

fn pct(mut lat: Vec<Duration>) -> String {
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

fn latency(a: &Args) {
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

fn spinlock(a: &Args) {
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

fn fairness(a: &Args) {
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

fn spawn(a: &Args) {
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
    println!(
        "spawn pardon procs={}: {n} goroutines in {el:?} ({:.0} ns each)",
        a.procs,
        el.as_nanos() as f64 / n as f64
    );
}

/// Go's `spawn`: a `WaitGroup`, no values, no handles kept.
fn spawn_wg(a: &Args) {
    static SINK: AtomicU64 = AtomicU64::new(0);
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
    println!(
        "spawn-wg pardon procs={}: {n} goroutines in {el:?} ({:.0} ns each)",
        a.procs,
        el.as_nanos() as f64 / n as f64
    );
}

fn switch(a: &Args) {
    let rt = runtime(a, 1);
    let n = a.n;
    let el = rt
        .block_on(move || {
            let (atx, arx) = channel::channel::<u64>(0);
            let (btx, brx) = channel::channel::<u64>(0);
            let echo = go(move || {
                while let Ok(v) = arx.recv() {
                    if btx.send(v).is_err() {
                        break;
                    }
                }
            });
            let t0 = Instant::now();
            for i in 0..n {
                atx.send(i).unwrap();
                assert_eq!(brx.recv().unwrap(), i);
            }
            let el = t0.elapsed();
            drop(atx);
            echo.join().unwrap();
            el
        })
        .unwrap();
    println!(
        "switch pardon procs=1: {n} round trips in {el:?} ({:.0} ns a switch)",
        el.as_nanos() as f64 / (2 * n) as f64
    );
}

fn stw(a: &Args) {
    if a.preemption != Preemption::Signal {
        eprintln!("goroutines: --mode stw needs --preemption signal");
        std::process::exit(2);
    }
    let rt = Arc::new(runtime(a, a.procs));
    let (tx, rx) = channel::unbounded::<()>();
    let parked: Vec<_> = (0..a.parked)
        .map(|_| {
            let rx = rx.clone();
            rt.go(move || {
                let _ = rx.recv();
            })
        })
        .collect();
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
    drop(tx);
    for h in parked {
        h.join().unwrap();
    }
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

/// `gc`: collections of a heap over the goroutines.
fn gc(a: &Args) {
    if a.preemption != Preemption::Signal {
        eprintln!("goroutines: --mode gc needs --preemption signal");
        std::process::exit(2);
    }
    let o = pardon_bench::goroutine_heap::Options {
        procs: a.procs,
        workers: a.workers,
        parked: a.parked as usize,
        frames: a.frames,
        samples: a.samples,
        slice: a.slice,
    };
    let s = match pardon_bench::goroutine_heap::run(o) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("goroutines: gc: {e}");
            std::process::exit(1);
        }
    };
    let mut roots = s.roots.clone();
    roots.sort();
    let median = roots[roots.len() / 2];
    let per_parked = (a.parked > 0).then(|| median.as_nanos() as f64 / a.parked as f64);
    emit(
        a,
        format!(
            "gc pardon procs={} workers={} parked={} frames={}: ttsp {}; pause {}; roots {}{}; {} suspended, {} marked, {} words scanned",
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
               "marked": s.marked, "words_scanned": s.words}),
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

fn parked(a: &Args) {
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
    println!(
        "parked pardon procs={}: {n} goroutines parked on a channel: {:.0} bytes resident each \
         ({} MiB in all)",
        a.procs,
        (during.saturating_sub(before)) as f64 / n as f64,
        during.saturating_sub(before) >> 20
    );
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
        };
        if let Err(e) = pardon_bench::goroutine_suite::run(&cfg) {
            eprintln!("goroutines: {e}");
            std::process::exit(1);
        }
        return;
    }
    match a.mode.as_str() {
        "latency" => latency(&a),
        "spinlock" => spinlock(&a),
        "fairness" => fairness(&a),
        "spawn" => spawn(&a),
        "spawn-wg" => spawn_wg(&a),
        "switch" => switch(&a),
        "parked" => parked(&a),
        "stw" => stw(&a),
        "gc" => gc(&a),
        _ => unreachable!("checked by clap"),
    }
}
