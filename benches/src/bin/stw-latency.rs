//! The STW-latency suite: time to safepoint and mutator throughput for every
//! kernel under every preemption mode. See `docs/benchmarks.md`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, Command};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pardon::preempt::AckWait;
use pardon_bench::kernels::KERNELS;
use pardon_bench::report::{self, Row};
use pardon_bench::suite::{self, Probe, RunConfig, Variant, MODES};
use pardon_bench::{cli, floor};

/// A `spinlock` call ends after this many call-free stretches even if its
/// handoffs are not done (see `ThreadCtx::set_max_call`).
const SPINLOCK_MAX_CALL: u32 = 4;

fn cli() -> Command {
    Command::new("stw-latency")
        .about("Time to safepoint and mutator throughput: signal preemption vs back-edge polls vs cooperative-only")
        .arg(Arg::new("kernel").long("kernel").action(ArgAction::Append).value_parser(KERNELS.to_vec()).help("Kernel to run (repeatable; default: all)"))
        .arg(Arg::new("mode").long("mode").action(ArgAction::Append).value_parser(MODES.to_vec()).help("Mode to run (repeatable; default: all)"))
        .arg(Arg::new("threads").long("threads").action(ArgAction::Append).allow_negative_numbers(true).value_parser(cli::whole::<usize>(1, 1024)).help("Mutator threads (repeatable; default: cores, and 2x cores unless --quick)"))
        .arg(Arg::new("probes").long("probes").allow_negative_numbers(true).value_parser(cli::whole::<usize>(1, 10_000_000)).help("Stops per run, exactly, in every mode but coop (default 1000; 60 with --quick)"))
        .arg(Arg::new("coop-probes").long("coop-probes").allow_negative_numbers(true).value_parser(cli::whole::<usize>(1, 10_000_000)).help("Stops per coop run, exactly (default a quarter of --probes: each waits a whole stretch)"))
        .arg(Arg::new("interval").long("interval").allow_hyphen_values(true).value_parser(cli::duration).help("Time between stops, e.g. 1ms, 500us (default 1ms)"))
        .arg(Arg::new("stretch").long("stretch").allow_hyphen_values(true).value_parser(cli::duration).help("Length of one call-free kernel call (default 10ms; 5ms with --quick)"))
        .arg(Arg::new("quick").long("quick").action(ArgAction::SetTrue).help("A short run (under a minute): fewer probes, threads = cores only"))
        .arg(Arg::new("floor-samples").long("floor-samples").allow_negative_numbers(true).value_parser(cli::whole::<usize>(0, 1_000_000)).help("Samples for the machine-floor measurement made first (the kernel's cost of a cross-CPU signal, a hand-off, a wake; default 500, 100 with --quick; 0 skips it)"))
        .arg(Arg::new("wait").long("wait").value_parser(["futex", "go-suspendg"]).help("How the coordinator waits for acknowledgements: sleeping on a futex (default), or spinning and yielding like Go's suspendG (a baseline)"))
        .arg(Arg::new("runtime").long("runtime").value_parser(["threads", "goroutines"]).default_value("threads").help("Run the kernels on threads, or as goroutines of a pardon-sched runtime with a worker each, over the heap (the signal modes only; default mode then: signal)"))
        .arg(Arg::new("probe").long("probe").value_parser(["stop", "collect"]).default_value("stop").help("What each probe is: a bare stop and restart (time to safepoint), or a concurrent collection, whose two stops' lengths are reported beside it (the whole pause)"))
        .arg(Arg::new("parked").long("parked").allow_negative_numbers(true).value_parser(pardon_bench::cli::whole::<usize>(0, 1_000_000)).help("With --runtime goroutines: this many more goroutines parked on a channel during every run (a stop must not wait for them; default 0)"))
        .arg(Arg::new("json").long("json").value_parser(clap::value_parser!(PathBuf)).help("Write results as JSON (schema in docs/benchmarks.md)"))
        .arg(Arg::new("csv").long("csv").value_parser(clap::value_parser!(PathBuf)).help("Write results as CSV"))
        .arg(Arg::new("plot").long("plot").value_parser(clap::value_parser!(PathBuf)).help("Write SVG charts into this directory"))
}

/// Checks, before a run of minutes, that the outputs can be written: each
/// file is created (empty) and each directory made now.
fn check_outputs(args: &clap::ArgMatches) -> Result<(), String> {
    for key in ["json", "csv"] {
        if let Some(p) = args.get_one::<PathBuf>(key) {
            std::fs::File::create(p).map_err(|e| format!("--{key} {}: {e}", p.display()))?;
        }
    }
    if let Some(dir) = args.get_one::<PathBuf>("plot") {
        std::fs::create_dir_all(dir).map_err(|e| format!("--plot {}: {e}", dir.display()))?;
    }
    Ok(())
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("stw-latency: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), String> {
    let args = cli().get_matches();
    check_outputs(&args)?;
    let quick = args.get_flag("quick");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernels: Vec<&'static str> = match args.get_many::<String>("kernel") {
        Some(v) => v
            .map(|k| {
                *KERNELS
                    .iter()
                    .find(|x| **x == k.as_str())
                    .expect("validated by clap")
            })
            .collect(),
        None => KERNELS.to_vec(),
    };
    let goroutines = args
        .get_one::<String>("runtime")
        .is_some_and(|r| r == "goroutines");
    let modes: Vec<Variant> = match args.get_many::<String>("mode") {
        Some(v) => v.map(|m| Variant::parse(m)).collect::<Result<_, _>>()?,
        None if goroutines => vec![Variant::Signal, Variant::SignalInHandler],
        None => MODES
            .iter()
            .map(|m| Variant::parse(m).expect("known"))
            .collect(),
    };
    if goroutines {
        if let Some(m) = modes
            .iter()
            .find(|m| !matches!(m, Variant::Signal | Variant::SignalInHandler))
        {
            return Err(format!(
                "--runtime goroutines: mode {} cannot run as goroutines (the runtime and the \
                 heap share a signal registry): use --mode signal or signal-handler",
                m.name()
            ));
        }
    }
    let threads: Vec<usize> = match args.get_many::<usize>("threads") {
        Some(v) => v.copied().collect(),
        None if quick => vec![cores],
        None => vec![cores, 2 * cores],
    };
    let probes = args
        .get_one::<usize>("probes")
        .copied()
        .unwrap_or(if quick { 60 } else { 1000 });
    let coop_probes = args
        .get_one::<usize>("coop-probes")
        .copied()
        .unwrap_or(probes.div_ceil(4));
    let interval = args
        .get_one::<Duration>("interval")
        .copied()
        .unwrap_or(Duration::from_millis(1));
    let stretch = args
        .get_one::<Duration>("stretch")
        .copied()
        .unwrap_or(Duration::from_millis(if quick { 5 } else { 10 }));

    let probe = Probe::parse(args.get_one::<String>("probe").expect("has a default"))?;
    let parked = args.get_one::<usize>("parked").copied().unwrap_or(0);
    if parked > 0 && !goroutines {
        return Err("--parked needs --runtime goroutines".into());
    }
    let wait_name = args
        .get_one::<String>("wait")
        .map_or("futex", |s| s.as_str());
    let wait = if wait_name == "go-suspendg" {
        AckWait::GoSuspendG
    } else {
        AckWait::Futex
    };
    let mut machine = report::machine();
    let floor_samples = args
        .get_one::<usize>("floor-samples")
        .copied()
        .unwrap_or(if quick { 100 } else { 500 });
    let floor = if floor_samples == 0 {
        None
    } else {
        Some(floor::measure(floor_samples)?)
    };
    if let Some(f) = &floor {
        machine["floor"] = f.to_json();
    }
    eprintln!(
        "stw-latency: {} on {} cores; {} kernels x {} modes x threads {:?}; {probes} probes ({}) every {interval:?}; call-free stretch {stretch:?}; coordinator waits by {wait_name}",
        machine["cpu"].as_str().unwrap_or("?"),
        cores,
        kernels.len(),
        modes.len(),
        threads,
        probe.name()
    );
    let total = (kernels.len() * threads.len() * (modes.len() + 1)) as u64;
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed_precise} {msg}")
                .map_err(|e| e.to_string())?,
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut rows = Vec::new();
    for &t in &threads {
        for &k in &kernels {
            bar.set_message(format!("{k} x{t}: calibrating"));
            let n = suite::calibrate(k, t, stretch)?;
            bar.inc(1);
            // Throughput needs many calls per thread inside the window.
            let min_window = stretch * 40;
            // Each run interleaves its own reference phases with the mode's
            // (see `suite`): about 100 probes a phase, 2 to 10 phases.
            let phases = (probes / 100).clamp(2, 10);
            for &m in &modes {
                bar.set_message(format!("{k} x{t}: {}", m.name()));
                // Cooperative stops wait a whole stretch each: fewer probes.
                let p = if m == Variant::Coop {
                    coop_probes
                } else {
                    probes
                };
                let r = match suite::run(&RunConfig {
                    kernel: k,
                    mode: m,
                    threads: t,
                    probes: p,
                    interval,
                    units_per_call: n,
                    min_window,
                    phases,
                    max_call: Some(stretch * SPINLOCK_MAX_CALL),
                    wait,
                    goroutines,
                    parked,
                    probe,
                }) {
                    Ok(r) => r,
                    Err(e) => {
                        // Reported as a result (a cooperative-only stop that
                        // never completes is a finding), not the end of the suite.
                        bar.suspend(|| eprintln!("stw-latency: {e}"));
                        rows.push(Row {
                            kernel: k.to_string(),
                            mode: m.name().to_string(),
                            threads: t,
                            stops: 0,
                            ttsp: suite::empty_histogram(),
                            restart: suite::empty_histogram(),
                            stop_first: suite::empty_histogram(),
                            stop_second: suite::empty_histogram(),
                            coord_cpu: suite::empty_histogram(),
                            signals_per_stop: 0.0,
                            resends_per_stop: 0.0,
                            held_per_stop: 0.0,
                            local_wakes_per_stop: 0.0,
                            ratio: f64::NAN,
                            ratio_wall: f64::NAN,
                            reference_spread: 0.0,
                            units_per_call: n,
                            collections: 0,
                            error: Some(e),
                        });
                        bar.inc(1);
                        continue;
                    }
                };
                let stops = r.stops.max(1) as f64;
                rows.push(Row {
                    kernel: k.to_string(),
                    mode: m.name().to_string(),
                    threads: t,
                    stops: r.stops,
                    ttsp: r.ttsp,
                    restart: r.restart,
                    stop_first: r.stop_first,
                    stop_second: r.stop_second,
                    coord_cpu: r.coord_cpu,
                    signals_per_stop: r.signals as f64 / stops,
                    resends_per_stop: r.resends as f64 / stops,
                    held_per_stop: r.held as f64 / stops,
                    local_wakes_per_stop: r.local_wakes as f64 / stops,
                    ratio: r.ratio,
                    ratio_wall: r.ratio_wall,
                    reference_spread: r.reference_spread,
                    units_per_call: n,
                    collections: r.collections,
                    error: None,
                });
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    if let Some(f) = &floor {
        println!("{}", f.summary());
    }
    print!("{}", report::table(&rows));
    let config = serde_json::json!({
        "kernels": kernels,
        "modes": modes.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "threads": threads,
        "probes": probes,
        "coop_probes": coop_probes,
        "interval_us": interval.as_micros() as u64,
        "stretch_ms": stretch.as_secs_f64() * 1e3,
        "quick": quick,
        "wait": wait_name,
        "runtime": if goroutines { "goroutines" } else { "threads" },
        "parked": parked,
        "probe": probe.name(),
    });
    if let Some(path) = args.get_one::<PathBuf>("json") {
        let doc = serde_json::json!({
            "schema": 1,
            "machine": machine,
            "config": config,
            "results": rows.iter().map(report::row_json).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if let Some(path) = args.get_one::<PathBuf>("csv") {
        std::fs::write(path, report::csv(&rows)?)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if let Some(dir) = args.get_one::<PathBuf>("plot") {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let unit = if goroutines { "goroutines" } else { "threads" };
        for &t in &threads {
            for (name, svg) in [
                (
                    format!("ttsp-{t}{unit}.svg"),
                    report::svg_ttsp(&rows, t, unit),
                ),
                (
                    format!("throughput-{t}{unit}.svg"),
                    report::svg_throughput(&rows, t, unit),
                ),
            ] {
                let p = dir.join(name);
                std::fs::write(&p, svg).map_err(|e| format!("writing {}: {e}", p.display()))?;
            }
        }
    }
    Ok(())
}
