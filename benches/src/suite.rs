//! The STW-latency runner: mutator threads run a kernel under one preemption
//! mode while a coordinator stops the world at a fixed interval.
//!
//! One run = one kernel, one mode, one thread count:
//! 1. Build a pardon heap whose registry uses the mode's mechanism; spawn the
//!    threads; each attaches, builds its kernel state and calls the kernel
//!    in a loop, `units_per_call` units per call, logging `(time, units)` at
//!    every call boundary.
//! 2. The coordinator (the calling thread, not attached) sleeps `interval`,
//!    then stops the world and immediately restarts it, `probes` times. For
//!    each probe it records the time to safepoint (request to the last
//!    acknowledgement, from `StoppedWorld::stats`), the stop-to-restart time
//!    (request to the end of the restart call), and the signals sent and
//!    re-sent.
//! 3. Throughput is measured per thread from the call boundaries inside the
//!    probing window, so the partial calls at either end do not count.
//!    `rate`: each call's units over the CPU time the thread spent on it
//!    (`CLOCK_THREAD_CPUTIME_ID`, user and system: signal delivery, the
//!    handler and `sigreturn` count; sleeping parked, or waiting for a CPU
//!    another thread holds, does not), and the median over the thread's
//!    calls. Every call of about 10 ms holds about ten stops, so the steady
//!    cost of running under a mode (polls, code the compiler could not
//!    optimise, signal handling, the caches disturbed) is in every call,
//!    while a call the host disturbed, or one a real collection landed in,
//!    does not move the median. Time spent parked, waiting for the last
//!    thread included, is the stop's latency, reported as time to
//!    safepoint, and is in `rate_wall`. `rate_wall`: units between the first
//!    and last boundary over the wall time between them, nothing subtracted
//!    and nothing left out. Both are summed over threads and compared by
//!    the caller with reference runs (no stops, no polls).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pardon::preempt::{BetweenCalls, EveryIteration, NoPoll, PollStrategy, StripMined};
use pardon::{Config, Heap, Preemption};

use crate::kernels::{SpinPair, ThreadCtx};

/// The modes, in report order.
pub const MODES: &[&str] = &["signal", "signal-handler", "poll", "poll-strip", "coop"];

/// Iterations between polls in `poll-strip`.
pub const STRIP: u32 = 1000;

/// A preemption mode under test, or the reference (no runtime work at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Signal, call injection.
    Signal,
    /// Signal, park in the handler.
    SignalHandler,
    /// A poll on every back edge.
    Poll,
    /// A poll every [`STRIP`] iterations.
    PollStrip,
    /// Polls only between kernel calls.
    Coop,
    /// No stops and no polls: the throughput baseline.
    Reference,
}

impl Mode {
    /// Parses a mode name (one of [`MODES`]).
    pub fn parse(s: &str) -> Result<Mode, String> {
        Ok(match s {
            "signal" => Mode::Signal,
            "signal-handler" => Mode::SignalHandler,
            "poll" => Mode::Poll,
            "poll-strip" => Mode::PollStrip,
            "coop" => Mode::Coop,
            _ => {
                return Err(format!(
                    "unknown mode {s:?} (expected one of {})",
                    MODES.join(", ")
                ))
            }
        })
    }

    /// The mode's name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Signal => "signal",
            Mode::SignalHandler => "signal-handler",
            Mode::Poll => "poll",
            Mode::PollStrip => "poll-strip",
            Mode::Coop => "coop",
            Mode::Reference => "reference",
        }
    }

    /// How the heap's registry stops threads in this mode.
    pub fn preemption(self) -> Preemption {
        match self {
            Mode::Signal | Mode::Reference => Preemption::Signal,
            Mode::SignalHandler => Preemption::SignalInHandler,
            Mode::Poll | Mode::PollStrip | Mode::Coop => Preemption::PollOnly,
        }
    }
}

/// One run's parameters.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Kernel name.
    pub kernel: &'static str,
    /// Mode.
    pub mode: Mode,
    /// Mutator threads.
    pub threads: usize,
    /// Stops to make (the reference run lasts as long as they would).
    pub probes: usize,
    /// Pause between stops.
    pub interval: Duration,
    /// Units of work per kernel call.
    pub units_per_call: u64,
    /// The shortest measuring window: probing goes on past `probes` stops
    /// until it has lasted this long (throughput needs many calls), and the
    /// reference run lasts this long.
    pub min_window: Duration,
}

/// One run's measurements.
pub struct RunResult {
    /// Time to safepoint per probe, ns.
    pub ttsp: Histogram<u64>,
    /// Stop request to end of restart per probe, ns.
    pub restart: Histogram<u64>,
    /// Signals sent in all probes.
    pub signals: u64,
    /// Re-sends among them.
    pub resends: u64,
    /// Probes made.
    pub stops: u64,
    /// Units per CPU second, the median over each thread's calls, summed
    /// over threads.
    pub rate: f64,
    /// Units per second of wall time, summed over threads.
    pub rate_wall: f64,
    /// Collections the heap ran on its own (the `alloc` kernel's pacer).
    pub collections: u64,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// An empty histogram with the suite's bounds (for failed runs).
pub fn empty_histogram() -> Histogram<u64> {
    hist()
}

/// Per-thread log of call boundaries: (time, cumulative units, the thread's
/// CPU time so far).
type Log = Vec<(Instant, u64, Duration)>;

fn worker<P: PollStrategy>(
    ctx: &mut ThreadCtx<'_>,
    n: u64,
    mut p: P,
    stop: &AtomicBool,
    log: &mut Log,
) {
    let mut total = 0;
    log.push((Instant::now(), 0, thread_cpu_time()));
    while !stop.load(Ordering::Relaxed) {
        total += ctx.call(n, &mut p);
        p.between_calls();
        log.push((Instant::now(), total, thread_cpu_time()));
    }
    ctx.finish();
}

/// The calling thread's CPU time (user and system): `CLOCK_THREAD_CPUTIME_ID`.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; this clock exists on every Linux
    // this crate builds for, and on failure `ts` stays zero.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Calls `f` with the poll strategy of `mode` for thread `m`.
fn with_strategy(mode: Mode, m: &pardon::Mutator, f: impl FnOnce(Strategy<'_>)) {
    let poller = m.attached().poller();
    f(match mode {
        Mode::Signal | Mode::SignalHandler | Mode::Reference => Strategy::None(NoPoll),
        Mode::Poll => Strategy::Every(EveryIteration(poller)),
        Mode::PollStrip => Strategy::Strip(StripMined::new(poller)),
        Mode::Coop => Strategy::Between(BetweenCalls(poller)),
    })
}

enum Strategy<'a> {
    None(NoPoll),
    Every(EveryIteration<'a>),
    Strip(StripMined<'a, STRIP>),
    Between(BetweenCalls<'a>),
}

/// Runs one configuration.
pub fn run(cfg: &RunConfig) -> Result<RunResult, String> {
    let heap = Heap::new(Config {
        preemption: cfg.mode.preemption(),
        arena_size: 16 << 30,
        // A stop this slow is already the answer; the run reports it.
        stop_timeout: Duration::from_secs(10),
        ..Config::default()
    })
    .map_err(|e| format!("creating the heap: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(cfg.threads + 1));
    let attached = Arc::new(AtomicU64::new(0));
    // spinlock: threads pair up (an odd one out pairs with nobody and gives up
    // at once, doing no work); syscall: a pipe per thread and a feeder.
    let pairs: Vec<Arc<SpinPair>> = (0..cfg.threads.div_ceil(2))
        .map(|_| Arc::default())
        .collect();
    let mut pipes = Vec::new();
    if cfg.kernel == "syscall" {
        for _ in 0..cfg.threads {
            let mut fds = [0i32; 2];
            // SAFETY: `fds` is a two-int array, as pipe(2) requires.
            if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
                return Err(format!("pipe: {}", std::io::Error::last_os_error()));
            }
            pipes.push(fds);
        }
    }
    let feeder = (cfg.kernel == "syscall").then(|| {
        let writers: Vec<i32> = pipes.iter().map(|p| p[1]).collect();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for &w in &writers {
                    // SAFETY: writes one byte from a live static buffer to a
                    // pipe write end this thread owns until it closes it.
                    unsafe { libc::write(w, b"x".as_ptr().cast(), 1) };
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            for &w in &writers {
                // SAFETY: closing our own write end once: readers see EOF.
                unsafe { libc::close(w) };
            }
        })
    });
    let mut handles = Vec::new();
    for i in 0..cfg.threads {
        let (heap, stop, ready, attached) =
            (heap.clone(), stop.clone(), ready.clone(), attached.clone());
        let kernel = cfg.kernel;
        let mode = cfg.mode;
        let n = cfg.units_per_call;
        let pair = if kernel == "spinlock" && (i / 2 < cfg.threads / 2) {
            Some((pairs[i / 2].clone(), (i % 2) as u32))
        } else if kernel == "spinlock" {
            Some((Arc::new(SpinPair::default()), 1))
        } else {
            None
        };
        let fd = pipes.get(i).map_or(-1, |p| p[0]);
        handles.push(
            std::thread::Builder::new()
                .name(format!("{kernel}-{i}"))
                .spawn(move || -> Result<Log, String> {
                    let m = heap.attach().map_err(|e| format!("attach: {e}"))?;
                    attached.fetch_add(1, Ordering::Relaxed);
                    let mut ctx = ThreadCtx::new(&m, kernel, i, pair, fd);
                    let mut log = Log::with_capacity(4096);
                    // Wait for everyone in a safe region: a stop made while
                    // threads are still starting must not wait for us.
                    m.blocking(|| ready.wait());
                    with_strategy(mode, &m, |s| match s {
                        Strategy::None(p) => worker(&mut ctx, n, p, &stop, &mut log),
                        Strategy::Every(p) => worker(&mut ctx, n, p, &stop, &mut log),
                        Strategy::Strip(p) => worker(&mut ctx, n, p, &stop, &mut log),
                        Strategy::Between(p) => worker(&mut ctx, n, p, &stop, &mut log),
                    });
                    Ok(log)
                })
                .map_err(|e| format!("spawning a thread: {e}"))?,
        );
    }
    ready.wait();
    // Let every thread get into its loop.
    std::thread::sleep(Duration::from_millis(20));
    let mut ttsp = hist();
    let mut restart = hist();
    let (mut signals, mut resends, mut stops) = (0u64, 0u64, 0u64);
    let gc_before = heap.collections();
    let t_start = Instant::now();
    let mut failure = None;
    if cfg.mode == Mode::Reference {
        std::thread::sleep(cfg.min_window);
    } else {
        while (stops as usize) < cfg.probes || t_start.elapsed() < cfg.min_window {
            std::thread::sleep(cfg.interval);
            let t0 = Instant::now();
            match heap.registry().stop_the_world() {
                Ok(world) => {
                    let st = world.stats();
                    drop(world);
                    let t1 = Instant::now();
                    ttsp.saturating_record(st.ttsp.as_nanos().max(1) as u64);
                    restart.saturating_record((t1 - t0).as_nanos().max(1) as u64);
                    signals += st.signals as u64;
                    resends += st.resends as u64;
                    stops += 1;
                }
                Err(e) => {
                    failure = Some(format!("{} / {}: {e}", cfg.kernel, cfg.mode.name()));
                    break;
                }
            }
        }
    }
    let t_end = Instant::now();
    let collections = heap.collections() - gc_before;
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for h in handles {
        logs.push(
            h.join()
                .map_err(|_| "a benchmark thread panicked".to_string())??,
        );
    }
    if let Some(f) = feeder {
        let _ = f.join();
    }
    for p in &pipes {
        // SAFETY: closing the read ends we opened, after every reader joined.
        unsafe { libc::close(p[0]) };
    }
    if let Some(f) = failure {
        return Err(f);
    }
    let (mut rate, mut rate_wall) = (0.0, 0.0);
    for log in &logs {
        let inside: Vec<_> = log
            .iter()
            .copied()
            .filter(|(t, _, _)| *t >= t_start && *t <= t_end)
            .collect();
        if let Some((r, w)) = thread_rates(&inside) {
            rate += r;
            rate_wall += w;
        }
    }
    Ok(RunResult {
        ttsp,
        restart,
        signals,
        resends,
        stops,
        rate,
        rate_wall,
        collections,
    })
}

/// One thread's `(rate, rate_wall)` from its call boundaries inside the
/// probing window (see the module comment); `None` with fewer than two.
fn thread_rates(inside: &[(Instant, u64, Duration)]) -> Option<(f64, f64)> {
    let (first, last) = (inside.first()?, inside.last()?);
    if last.0 <= first.0 {
        return None;
    }
    let rate_wall = (last.1 - first.1) as f64 / (last.0 - first.0).as_secs_f64();
    // The rate of each call: its units over the CPU time it took; the
    // thread's rate is the median.
    let mut per_call: Vec<f64> = inside
        .windows(2)
        .filter_map(|w| {
            let cpu = w[1].2.saturating_sub(w[0].2).as_secs_f64();
            (cpu > 0.0).then(|| (w[1].1 - w[0].1) as f64 / cpu)
        })
        .collect();
    if per_call.is_empty() {
        return None;
    }
    per_call.sort_by(f64::total_cmp);
    let k = per_call.len();
    let rate = if k % 2 == 1 {
        per_call[k / 2]
    } else {
        (per_call[k / 2 - 1] + per_call[k / 2]) / 2.0
    };
    Some((rate, rate_wall))
}

/// Measures how many units one call needs to last about `stretch`: runs the
/// kernel with no polls and no stops for a short while and scales.
pub fn calibrate(kernel: &'static str, threads: usize, stretch: Duration) -> Result<u64, String> {
    let guess = match kernel {
        "syscall" => 20,
        "spinlock" => 20_000,
        "alloc" => 50_000,
        "chase" => 100_000,
        _ => 1_000_000,
    };
    let r = run(&RunConfig {
        kernel,
        mode: Mode::Reference,
        threads,
        probes: 0,
        interval: Duration::ZERO,
        units_per_call: guess,
        min_window: Duration::from_millis(300),
    })?;
    // Wall rate: a call must last `stretch` of wall time (the CPU rate of a
    // kernel that blocks, `syscall`, is far higher).
    let per_thread = r.rate_wall / threads as f64;
    if per_thread <= 0.0 {
        return Ok(guess);
    }
    Ok(((per_thread * stretch.as_secs_f64()) as u64).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_rate_is_the_median_call_per_cpu_second_and_the_wall_rate_is_all_in() {
        let t0 = Instant::now();
        // Calls of 1000 units every 10 ms of wall time and 8 ms of CPU,
        // except the third, which took 50 ms of wall time and 30 of CPU
        // (disturbed).
        let mut log = Vec::new();
        let (mut t, mut cpu) = (t0, Duration::ZERO);
        for i in 0..6u64 {
            log.push((t, 1000 * i, cpu));
            t += if i == 2 { ms(50) } else { ms(10) };
            cpu += if i == 2 { ms(30) } else { ms(8) };
        }
        let (rate, wall) = thread_rates(&log).unwrap();
        assert!((rate - 1000.0 / 0.008).abs() < 1.0, "rate {rate}");
        // 5000 units over 90 ms.
        assert!((wall - 5000.0 / 0.090).abs() < 1.0, "wall {wall}");
    }

    #[test]
    fn too_few_boundaries_give_no_rate() {
        let t0 = Instant::now();
        assert!(thread_rates(&[]).is_none());
        assert!(thread_rates(&[(t0, 0, Duration::ZERO)]).is_none());
    }
}
