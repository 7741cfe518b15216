//! The STW-latency runner: mutator threads run a kernel under one preemption
//! mode while a coordinator stops the world at a fixed interval, and the same
//! threads, in the same process, on the same data, run the reference loop in
//! between.
//!
//! One run = one kernel, one mode, one thread count:
//! 1. Build a pardon heap whose registry uses the mode's mechanism; spawn the
//!    threads; each attaches, builds its kernel state and calls the kernel in
//!    a loop, `units_per_call` units per call. Before each call it reads the
//!    run's *phase*: in a reference phase it calls the kernel compiled with no
//!    poll at all, in a mode phase the mode's instantiation (for the signal
//!    modes these are the same machine code). It logs every call: which loop,
//!    start and end, units, and the CPU time the call took.
//! 2. The coordinator (the calling thread, not attached) alternates phases:
//!    reference, mode, reference, ..., mode, reference (`phases` mode
//!    phases). A mode phase begins once every thread has started a call of
//!    the mode's loop; the coordinator then makes the phase's share of the
//!    `probes` (exactly `probes` in all): it sleeps `interval` (or longer,
//!    if the phase would otherwise end before its share of `min_window`),
//!    stops the world and immediately restarts it. For each probe it records
//!    the time to safepoint (request to the last acknowledgement seen, from
//!    `StoppedWorld::stats`), the stop-to-restart time (request to the end of
//!    the restart call), and the signals sent and re-sent. No stops are made
//!    in reference phases.
//! 3. Throughput: the paired estimator of `throughput` compares each mode
//!    phase's calls with the reference phases around it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pardon::preempt::{AckWait, BetweenCalls, EveryIteration, NoPoll, PollStrategy, StripMined};
use pardon::{Config, Heap, Preemption};

use crate::kernels::{SpinPair, ThreadCtx};
use crate::throughput::{classify, is_mode_phase, median, phase_ratios, thread_rates, Call, Log};

/// The modes, in report order.
pub const MODES: &[&str] = &["signal", "signal-handler", "poll", "poll-strip", "coop"];

/// Iterations between polls in `poll-strip`.
pub const STRIP: u32 = 1000;

/// What one run of the suite measures (its `--mode`): a [`Preemption`]
/// strategy together with where the kernel polls, or the reference (no
/// runtime work at all). Not a second name for the strategy: `poll`,
/// `poll-strip` and `coop` are one strategy ([`Preemption::Poll`]) with polls
/// in three places.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Signal, call injection.
    Signal,
    /// Signal, park in the handler.
    SignalInHandler,
    /// A poll on every back edge.
    Poll,
    /// A poll every [`STRIP`] iterations.
    PollStrip,
    /// Polls only between kernel calls.
    Coop,
    /// No stops and no polls: the throughput baseline.
    Reference,
}

impl Variant {
    /// Parses a mode name (one of [`MODES`]).
    pub fn parse(s: &str) -> Result<Variant, String> {
        Ok(match s {
            "signal" => Variant::Signal,
            "signal-handler" => Variant::SignalInHandler,
            "poll" => Variant::Poll,
            "poll-strip" => Variant::PollStrip,
            "coop" => Variant::Coop,
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
            Variant::Signal => "signal",
            Variant::SignalInHandler => "signal-handler",
            Variant::Poll => "poll",
            Variant::PollStrip => "poll-strip",
            Variant::Coop => "coop",
            Variant::Reference => "reference",
        }
    }

    /// How the heap's registry stops threads in this mode.
    pub fn preemption(self) -> Preemption {
        match self {
            Variant::Signal | Variant::Reference => Preemption::Signal,
            Variant::SignalInHandler => Preemption::SignalInHandler,
            Variant::Poll | Variant::PollStrip | Variant::Coop => Preemption::Poll,
        }
    }
}

/// One run's parameters.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Kernel name.
    pub kernel: &'static str,
    /// Variant.
    pub mode: Variant,
    /// Mutator threads.
    pub threads: usize,
    /// Stops to make, exactly (the reference run lasts as long as they
    /// would).
    pub probes: usize,
    /// Pause between stops.
    pub interval: Duration,
    /// Units of work per kernel call.
    pub units_per_call: u64,
    /// The shortest measuring window: stops are spaced further apart than
    /// `interval` if that is what it takes for probing to last this long
    /// (throughput needs many calls), and the reference run lasts this long.
    pub min_window: Duration,
    /// Variant phases the probing is split into, with reference phases before,
    /// between and after them (at least 1).
    pub phases: usize,
    /// The longest a `spinlock` call may last (see
    /// [`ThreadCtx::set_max_call`]); `None`: as long as its units take.
    pub max_call: Option<Duration>,
    /// How the coordinator waits for acknowledgements.
    pub wait: AckWait,
    /// Run the kernels as goroutines of a `pardon-sched` runtime with one
    /// worker a kernel, over the heap (signal mode and the reference only).
    pub goroutines: bool,
    /// Goroutine runs only: this many more goroutines, parked on a channel
    /// for the whole run (issue 21's shape: a stop must not wait for them,
    /// nor grow with their number).
    pub parked: usize,
    /// What a probe is: a bare stop and restart, or a whole concurrent
    /// collection (two stops).
    pub probe: Probe,
}

/// What the coordinator does at each probe (`--probe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Stop the world and restart it at once: time to safepoint alone.
    Stop,
    /// Run a concurrent collection (`Config::concurrent`): its two stops'
    /// times to safepoint go into `ttsp`, their lengths into `stop_first`
    /// and `stop_second`, so the table shows the whole pause.
    Collect,
}

impl Probe {
    /// The `--probe` value.
    pub fn parse(s: &str) -> Result<Probe, String> {
        match s {
            "stop" => Ok(Probe::Stop),
            "collect" => Ok(Probe::Collect),
            _ => Err(format!("unknown probe {s:?} (stop or collect)")),
        }
    }

    /// The `--probe` value's name.
    pub fn name(self) -> &'static str {
        match self {
            Probe::Stop => "stop",
            Probe::Collect => "collect",
        }
    }
}

/// One run's measurements.
pub struct RunResult {
    /// Time to safepoint per stop, ns (two stops a probe when probes are
    /// collections).
    pub ttsp: Histogram<u64>,
    /// Stop request to end of restart per probe, ns (a collection probe:
    /// the whole collection, marking between the stops included).
    pub restart: Histogram<u64>,
    /// Collection probes: the first stop's length (time to safepoint
    /// included), ns; empty for bare stops.
    pub stop_first: Histogram<u64>,
    /// Collection probes: the second stop's length, as `stop_first`.
    pub stop_second: Histogram<u64>,
    /// The coordinator's CPU time per probe, stop and restart, ns.
    pub coord_cpu: Histogram<u64>,
    /// Signals sent in all probes.
    pub signals: u64,
    /// Re-sends among them.
    pub resends: u64,
    /// Threads found still parked from an earlier stop and held (see
    /// `pardon_preempt::StopStats::held`).
    pub held: u64,
    /// Stops whose sleeping coordinator was woken by a parked thread on its
    /// own CPU (`Registry::local_wakes`): how often that optimisation fired.
    pub local_wakes: u64,
    /// Stops made: one a probe, two for collection probes.
    pub stops: u64,
    /// Units per CPU second, the median over each thread's counted mode
    /// calls, summed over threads (for a reference run, its calls).
    pub rate: f64,
    /// Units per second of wall time over the same calls, summed over threads.
    pub rate_wall: f64,
    /// The median call's units per second of wall time, summed over
    /// threads: what calibration goes by, since a stretch of slow calls
    /// moves the pooled rate but not the median.
    pub call_rate_wall: f64,
    /// Throughput in units per CPU second against the reference: the median,
    /// over threads and mode phases, of the phase's rate over that of the
    /// reference phases around it (0 for a reference run; NaN when no mode
    /// call fell wholly inside a probing window, so there is nothing to
    /// compare: calls far longer than calibrated, as oversubscribed
    /// `spinlock` pairs can make them).
    pub ratio: f64,
    /// The same from wall-time rates.
    pub ratio_wall: f64,
    /// How far from 1 the same estimator lands comparing reference phases
    /// with the reference phases around them: the noise floor of `ratio`.
    pub reference_spread: f64,
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

/// The run's current phase and, per thread, the phase of the call it last
/// started.
struct Phases {
    now: AtomicU32,
    started: Vec<AtomicU32>,
}

fn worker<P: PollStrategy>(
    ctx: &mut ThreadCtx<'_>,
    n: u64,
    mut p: P,
    (phases, me): (&Phases, usize),
    stop: &AtomicBool,
    log: &mut Log,
) {
    let mut reference = NoPoll;
    while !stop.load(Ordering::Relaxed) {
        let phase = phases.now.load(Ordering::Acquire);
        phases.started[me].store(phase, Ordering::Release);
        let (start, cpu0) = (Instant::now(), thread_cpu_time());
        let units = if is_mode_phase(phase) {
            ctx.call(n, &mut p)
        } else {
            ctx.call(n, &mut reference)
        };
        let (end, cpu1) = (Instant::now(), thread_cpu_time());
        log.push(Call {
            phase,
            start,
            end,
            units,
            cpu: cpu1.saturating_sub(cpu0),
        });
        p.between_calls();
    }
    ctx.finish();
}

/// The calling thread's CPU time (user and system): `CLOCK_THREAD_CPUTIME_ID`.
fn thread_cpu_time() -> Duration {
    // This clock exists on every Linux this crate builds for; a failure
    // reads as zero.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(Duration::ZERO, Duration::from)
}

/// Calls `f` with the poll strategy of `mode` for thread `m`.
fn with_strategy(mode: Variant, m: &pardon::Mutator, f: impl FnOnce(Strategy<'_>)) {
    let poller = m.attached().poller();
    f(match mode {
        Variant::Signal | Variant::SignalInHandler | Variant::Reference => Strategy::None(NoPoll),
        Variant::Poll => Strategy::Every(EveryIteration(poller)),
        Variant::PollStrip => Strategy::Strip(StripMined::new(poller)),
        Variant::Coop => Strategy::Between(BetweenCalls(poller)),
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
    let config = Config {
        preemption: cfg.mode.preemption(),
        arena_size: 16 << 30,
        // A stop this slow is already the answer; the run reports it.
        stop_timeout: Duration::from_secs(10),
        stop_wait: cfg.wait,
        concurrent: cfg.probe == Probe::Collect,
        ..Config::default()
    };
    let (heap, rt) = if cfg.goroutines {
        if !matches!(
            cfg.mode,
            Variant::Signal | Variant::SignalInHandler | Variant::Reference
        ) {
            return Err(format!(
                "{} / {}: goroutines share a signal registry: only the signal modes \
                 (and the reference) can run as goroutines",
                cfg.kernel,
                cfg.mode.name()
            ));
        }
        let (h, rt) = crate::goroutine_heap::heap_and_runtime(
            config,
            pardon_sched::Config {
                procs: cfg.threads,
                ..pardon_sched::Config::default()
            },
        )?;
        (h, Some(rt))
    } else {
        let h = Heap::new(config).map_err(|e| format!("creating the heap: {e}"))?;
        (h, None)
    };
    if cfg.parked > 0 && rt.is_none() {
        return Err("parked goroutines need a goroutine run".into());
    }
    let _parked = match &rt {
        Some(rt) if cfg.parked > 0 => Some(crate::parked::Parked::start(rt, cfg.parked)?),
        _ => None,
    };
    // Goroutine runs: the kernel thread of each goroutine, to check that
    // each has a worker of its own (a goroutine never leaves its worker).
    let tids: Arc<Vec<std::sync::atomic::AtomicI32>> = Arc::new(
        (0..cfg.threads)
            .map(|_| std::sync::atomic::AtomicI32::new(0))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let phases = Arc::new(Phases {
        now: AtomicU32::new(0),
        started: (0..cfg.threads).map(|_| AtomicU32::new(0)).collect(),
    });
    // Each kernel says it is ready (`arrived`), then waits for `go`.
    let arrived = Arc::new(AtomicU64::new(0));
    let go = Arc::new(AtomicBool::new(false));
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
    let mut handles: Vec<Box<dyn FnOnce() -> Result<Log, String>>> = Vec::new();
    for i in 0..cfg.threads {
        let (heap, stop, arrived, go, attached, phases, tids) = (
            heap.clone(),
            stop.clone(),
            arrived.clone(),
            go.clone(),
            attached.clone(),
            phases.clone(),
            tids.clone(),
        );
        let kernel = cfg.kernel;
        let mode = cfg.mode;
        let max_call = cfg.max_call;
        let n = cfg.units_per_call;
        let pair = if kernel == "spinlock" && (i / 2 < cfg.threads / 2) {
            Some((pairs[i / 2].clone(), (i % 2) as u32))
        } else if kernel == "spinlock" {
            Some((Arc::new(SpinPair::default()), 1))
        } else {
            None
        };
        let fd = pipes.get(i).map_or(-1, |p| p[0]);
        let body = move |m: &pardon::Mutator| -> Result<Log, String> {
            attached.fetch_add(1, Ordering::Relaxed);
            tids[i].store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
            let mut ctx = ThreadCtx::new(m, kernel, i, pair, fd);
            ctx.set_max_call(max_call);
            let mut log = Log::with_capacity(4096);
            // Wait for everyone in a safe region: a stop made while
            // threads are still starting must not wait for us. (A goroutine
            // blocks its worker's thread here, so the others are taken by
            // other workers: one kernel a worker.)
            arrived.fetch_add(1, Ordering::SeqCst);
            m.blocking(|| {
                while !go.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_micros(100));
                }
            });
            let ph = (&*phases, i);
            with_strategy(mode, m, |s| match s {
                Strategy::None(p) => worker(&mut ctx, n, p, ph, &stop, &mut log),
                Strategy::Every(p) => worker(&mut ctx, n, p, ph, &stop, &mut log),
                Strategy::Strip(p) => worker(&mut ctx, n, p, ph, &stop, &mut log),
                Strategy::Between(p) => worker(&mut ctx, n, p, ph, &stop, &mut log),
            });
            Ok(log)
        };
        match &rt {
            Some(rt) => {
                let h = rt.go(move || {
                    pardon::with_mutator(body)
                        .unwrap_or_else(|| Err("a goroutine without a worker mutator".into()))
                });
                handles.push(Box::new(move || {
                    h.join()
                        .map_err(|_| "a benchmark goroutine panicked".to_string())?
                }));
            }
            None => {
                let h = std::thread::Builder::new()
                    .name(format!("{kernel}-{i}"))
                    .spawn(move || -> Result<Log, String> {
                        let m = heap.attach().map_err(|e| format!("attach: {e}"))?;
                        body(&m)
                    })
                    .map_err(|e| format!("spawning a thread: {e}"))?;
                handles.push(Box::new(move || {
                    h.join()
                        .map_err(|_| "a benchmark thread panicked".to_string())?
                }));
            }
        }
    }
    let t0 = Instant::now();
    while arrived.load(Ordering::SeqCst) < cfg.threads as u64 {
        if t0.elapsed() > Duration::from_secs(30) {
            // Goroutines: two landed on one worker, whose thread the first
            // blocks, so the second never starts (reported, not hung).
            stop.store(true, Ordering::Relaxed);
            go.store(true, Ordering::Release);
            return Err(format!(
                "{} / {}: only {} of {} kernels started in 30 s",
                cfg.kernel,
                cfg.mode.name(),
                arrived.load(Ordering::SeqCst),
                cfg.threads
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    go.store(true, Ordering::Release);
    if rt.is_some() {
        let mut seen: Vec<i32> = tids.iter().map(|t| t.load(Ordering::Relaxed)).collect();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != cfg.threads {
            stop.store(true, Ordering::Relaxed);
            return Err(format!(
                "{} / {}: {} goroutines landed on {} workers",
                cfg.kernel,
                cfg.mode.name(),
                cfg.threads,
                seen.len()
            ));
        }
    }
    // Let every thread get into its loop.
    std::thread::sleep(Duration::from_millis(20));
    let mut ttsp = hist();
    let mut restart = hist();
    let mut coord_cpu = hist();
    let (mut stop_first, mut stop_second) = (hist(), hist());
    let (mut signals, mut resends, mut held, mut stops) = (0u64, 0u64, 0u64, 0u64);
    let gc_before = heap.collections();
    let local_before = heap.registry().local_wakes();
    let t_start = Instant::now();
    let mut failure = None;
    // The mode phases' windows, by phase: from the moment every thread runs
    // the mode's loop to the end of the last probe.
    let mut windows: Vec<(u32, Instant, Instant)> = Vec::new();
    if cfg.mode == Variant::Reference {
        std::thread::sleep(cfg.min_window);
    } else {
        // Exactly `probes` stops, shared out over the phases as evenly as
        // they go (no phase without one).
        let n_phases = cfg.phases.clamp(1, cfg.probes.max(1));
        let per_phase = cfg.probes.div_ceil(n_phases);
        let phase_window = cfg.min_window / n_phases as u32;
        // Reference phases last as long as a mode phase would at the nominal
        // rate (a cooperative mode's probes take longer; its references need
        // not).
        let reference_phase = phase_window.max(
            cfg.interval
                .saturating_mul(per_phase.min(u32::MAX as usize) as u32),
        );
        std::thread::sleep(reference_phase);
        'phases: for k in 0..n_phases as u32 {
            let phase = 2 * k + 1;
            if let Err(e) = switch_phase(&phases, phase) {
                failure = Some(format!("{} / {}: {e}", cfg.kernel, cfg.mode.name()));
                break;
            }
            let w0 = Instant::now();
            let share = cfg.probes / n_phases + usize::from((k as usize) < cfg.probes % n_phases);
            // Spaced `interval` apart, or more if that is what it takes for
            // the phase to last its share of the window.
            let gap = cfg.interval.max(phase_window / share.max(1) as u32);
            let mut made = 0;
            while made < share {
                std::thread::sleep(gap);
                let (t0, c0) = (Instant::now(), thread_cpu_time());
                let probed = match cfg.probe {
                    // SAFETY: while the world is held, only its statistics
                    // (a copy) are read before it is dropped: nothing
                    // allocates or locks. The collector's kind of stop.
                    Probe::Stop => unsafe { heap.registry().stop_the_world_anywhere() }
                        .map(|world| {
                            let st = world.stats();
                            drop(world);
                            ttsp.saturating_record(st.ttsp.as_nanos().max(1) as u64);
                            resends += st.resends as u64;
                            held += st.held as u64;
                            st.signals as u64
                        })
                        .map_err(|e| e.to_string()),
                    Probe::Collect => heap
                        .collect()
                        .map(|cs| {
                            for t in [cs.ttsp, cs.ttsp_end] {
                                ttsp.saturating_record(t.as_nanos().max(1) as u64);
                            }
                            stop_first.saturating_record(cs.pause_start.as_nanos().max(1) as u64);
                            stop_second.saturating_record(cs.pause_end.as_nanos().max(1) as u64);
                            held += cs.held as u64;
                            cs.signals as u64
                        })
                        .map_err(|e| e.to_string()),
                };
                match probed {
                    Ok(sent) => {
                        let (t1, c1) = (Instant::now(), thread_cpu_time());
                        restart.saturating_record((t1 - t0).as_nanos().max(1) as u64);
                        coord_cpu.saturating_record((c1 - c0).as_nanos().max(1) as u64);
                        signals += sent;
                        stops += if cfg.probe == Probe::Collect { 2 } else { 1 };
                        made += 1;
                    }
                    Err(e) => {
                        failure = Some(format!("{} / {}: {e}", cfg.kernel, cfg.mode.name()));
                        break 'phases;
                    }
                }
            }
            windows.push((phase, w0, Instant::now()));
            phases.now.store(phase + 1, Ordering::Release);
            std::thread::sleep(reference_phase);
        }
    }
    let t_end = Instant::now();
    let collections = heap.collections() - gc_before;
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for h in handles {
        logs.push(h()?);
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
    let mut r = RunResult {
        ttsp,
        restart,
        stop_first,
        stop_second,
        coord_cpu,
        signals,
        resends,
        held,
        local_wakes: heap.registry().local_wakes() - local_before,
        stops,
        rate: 0.0,
        rate_wall: 0.0,
        call_rate_wall: 0.0,
        ratio: 0.0,
        ratio_wall: 0.0,
        reference_spread: 0.0,
        collections,
    };
    let (mut pairs, mut pairs_wall, mut nulls) = (Vec::new(), Vec::new(), Vec::new());
    for log in &logs {
        let calls = classify(log, t_start, t_end, &windows);
        let pooled: Vec<Call> = calls
            .iter()
            .filter(|c| is_mode_phase(c.phase) != (cfg.mode == Variant::Reference))
            .copied()
            .collect();
        if let Some((rate, wall)) = thread_rates(&pooled) {
            r.rate += rate;
            r.rate_wall += wall;
        }
        let mut per_call: Vec<f64> = pooled
            .iter()
            .filter(|c| c.end > c.start)
            .map(|c| c.units as f64 / (c.end - c.start).as_secs_f64())
            .collect();
        r.call_rate_wall += median(&mut per_call).unwrap_or(0.0);
        let (p, w, n) = phase_ratios(&calls);
        pairs.extend(p);
        pairs_wall.extend(w);
        nulls.extend(n);
    }
    r.ratio = median(&mut pairs).unwrap_or(f64::NAN);
    r.ratio_wall = median(&mut pairs_wall).unwrap_or(f64::NAN);
    r.reference_spread = median(&mut nulls).map_or(0.0, |x| (x - 1.0).abs());
    Ok(r)
}

/// Switches the threads to `phase`: sets the phase word and waits until
/// every thread has started a call in it (each finishes the call it is in
/// first, about one call-free stretch).
fn switch_phase(phases: &Phases, phase: u32) -> Result<(), String> {
    phases.now.store(phase, Ordering::Release);
    let t0 = Instant::now();
    while phases
        .started
        .iter()
        .any(|s| s.load(Ordering::Acquire) != phase)
    {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err("a thread did not start a call of the new phase within 10 s".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
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
        goroutines: false,
        parked: 0,
        kernel,
        mode: Variant::Reference,
        threads,
        probes: 0,
        interval: Duration::ZERO,
        units_per_call: guess,
        min_window: Duration::from_millis(300),
        phases: 1,
        max_call: None,
        wait: AckWait::Futex,
        probe: Probe::Stop,
    })?;
    // Wall rate: a call must last `stretch` of wall time (the CPU rate of a
    // kernel that blocks, `syscall`, is far higher). The median call's, not
    // the pooled rate, so that a stretch of slow calls during calibration
    // does not shorten every call of the run. (`spinlock`'s handoff rate
    // itself moves up to 6x between processes on the project's VM, likely
    // with where the host runs the two vCPUs; calibration follows that.)
    let per_thread = r.call_rate_wall / threads as f64;
    if per_thread <= 0.0 {
        return Ok(guess);
    }
    Ok(((per_thread * stretch.as_secs_f64()) as u64).max(1))
}
