//! The tool's command line.

use std::time::Duration;

use pardon_sched::Preemption;

pub(crate) struct Args {
    pub(crate) mode: String,
    pub(crate) preemption: Preemption,
    pub(crate) procs: usize,
    pub(crate) workers: usize,
    pub(crate) samples: usize,
    pub(crate) slice: Duration,
    pub(crate) rounds: usize,
    pub(crate) timeout: Duration,
    pub(crate) n: u64,
    pub(crate) parked: u64,
    pub(crate) frames: usize,
    pub(crate) json_line: bool,
    /// Goroutines move between workers (`Runtime::with_migration`).
    pub(crate) migrate: bool,
    pub(crate) suite: bool,
    pub(crate) quick: bool,
    pub(crate) json: Option<std::path::PathBuf>,
    pub(crate) plot: Option<std::path::PathBuf>,
    pub(crate) go_stwprobe: Option<std::path::PathBuf>,
    pub(crate) go_sched: Option<std::path::PathBuf>,
    pub(crate) go_gcparked: Option<std::path::PathBuf>,
    /// `--slice` as given, for the suite's children.
    pub(crate) slice_arg: String,
}

pub(crate) fn parse_args() -> Args {
    use clap::{Arg, Command};
    let m = Command::new("goroutines")
        .about("Scheduling latency, the spinlock deadlock, fairness, spawn and switch costs")
        .arg(
            Arg::new("mode")
                .long("mode")
                .value_parser([
                    "latency",
                    "spinlock",
                    "fairness",
                    "spawn",
                    "spawn-wg",
                    "switch",
                    "switch-timeout",
                    "pair",
                    "parked",
                    "stw",
                    "gc",
                    "cgc",
                    "balance",
                    "stuck",
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
                .help("latency: goroutines in call-free loops; balance: goroutines"),
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
                .value_parser(pardon_bench::cli::whole::<u64>(1, 100_000_000_000))
                .default_value("1000000")
                .help("spawn/switch/parked: count; balance: loop iterations each goroutine runs"),
        )
        .arg(
            Arg::new("parked")
                .long("parked")
                .allow_negative_numbers(true)
                .value_parser(pardon_bench::cli::whole::<u64>(0, 10_000_000))
                .default_value("0")
                .help("stw, gc, cgc: goroutines parked on a channel meanwhile"),
        )
        .arg(
            Arg::new("frames")
                .long("frames")
                .allow_negative_numbers(true)
                .value_parser(pardon_bench::cli::whole::<usize>(1, 8))
                .default_value("4")
                .help("gc, cgc: shadow frames each parked goroutine holds"),
        )
        .arg(
            Arg::new("migrate")
                .long("migrate")
                .action(clap::ArgAction::SetTrue)
                .help("Goroutines move between workers at yields, slice ends and steals (Runtime::with_migration; any preemption mode)"),
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
        .arg(
            Arg::new("go-gcparked")
                .long("go-gcparked")
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help("--suite: Go 1.19's gc-parked binary (benches/go/gc-parked, built), run with GOMAXPROCS=2 after each cgc row with the same parked count"),
        )
        .arg(
            Arg::new("go-sched")
                .long("go-sched")
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help("--suite: Go 1.19's sched anchor (../shared/anchors-go/sched, built), run after the spawn-wg row (-mode spawn, GOMAXPROCS=2) and the switch row (-mode switch) with the same count"),
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
        migrate: m.get_flag("migrate"),
        suite: m.get_flag("suite"),
        quick: m.get_flag("quick"),
        json: m.get_one::<std::path::PathBuf>("json").cloned(),
        plot: m.get_one::<std::path::PathBuf>("plot").cloned(),
        go_stwprobe: m.get_one::<std::path::PathBuf>("go-stwprobe").cloned(),
        go_sched: m.get_one::<std::path::PathBuf>("go-sched").cloned(),
        go_gcparked: m.get_one::<std::path::PathBuf>("go-gcparked").cloned(),
        slice_arg: m
            .get_raw("slice")
            .and_then(|mut v| v.next())
            .map_or("10ms".into(), |v| v.to_string_lossy().into_owned()),
    }
}
