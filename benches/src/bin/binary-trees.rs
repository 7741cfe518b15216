//! binary-trees, the Benchmarks Game definition and output, on a pardon heap.
//!
//! `binary-trees N [--mode signal|signal-handler|poll] [--threads T]
//! [--runtime threads|goroutines]`:
//! prints the standard output for depth N, then a summary (time, collections,
//! median and longest pause, peak RSS). Without `--mode` it prints the standard
//! output of a run in signal mode, then one summary line per mode, each from a
//! run in a process of its own (so each has its own peak RSS).
//! `PARDON_GENERATIONAL=1` runs every mode on a generational heap (the
//! summary then counts minor collections); the program needs no write
//! barrier, as trees are built bottom-up. `--runtime goroutines` builds
//! each depth's trees in T goroutines of a `pardon-sched` runtime with T
//! workers sharing the heap's registry (signal mode only), instead of T
//! threads.

use std::time::Instant;

use pardon::stackscan::{frame_map, with_frame, FrameMap};
use pardon_bench::trees::{self, bottom_up, check, node_type};

static HOLD: FrameMap = frame_map!(1; [0]);

struct Args {
    n: u32,
    mode: Option<String>,
    threads: usize,
    goroutines: bool,
    summary_only: bool,
}

/// Parses the command line; returns the arguments and those to pass on to
/// the per-mode runs.
fn parse() -> (Args, Vec<String>) {
    use clap::{Arg, ArgAction, Command};
    let m = Command::new("binary-trees")
        .about("binary-trees (the Benchmarks Game) on a pardon heap: the standard output for depth N, then a summary line. Without --mode, runs once more per mode, each in its own process.")
        .arg(Arg::new("depth").value_name("N").allow_negative_numbers(true).value_parser(pardon_bench::cli::whole::<u32>(0, 30)).default_value("10").help("Depth of the trees (at most 30)"))
        .arg(Arg::new("mode").long("mode").value_parser(trees::GC_MODE_NAMES.to_vec()).help("How the heap stops mutators (polls-only is poll's former name)"))
        .arg(Arg::new("threads").long("threads").allow_negative_numbers(true).value_parser(pardon_bench::cli::whole::<u32>(1, 1024)).help("Worker threads (default: the cores)"))
        .arg(Arg::new("runtime").long("runtime").value_parser(["threads", "goroutines"]).default_value("threads").help("Whether the workers are threads or goroutines (signal mode only)"))
        .arg(Arg::new("summary-only").long("summary-only").action(ArgAction::SetTrue).help("Print the summary line only"))
        .get_matches();
    let n = *m.get_one::<u32>("depth").expect("defaulted");
    let threads = m.get_one::<u32>("threads").copied();
    let goroutines = m
        .get_one::<String>("runtime")
        .is_some_and(|r| r == "goroutines");
    let mut passthrough = vec![n.to_string()];
    if goroutines {
        passthrough.extend(["--runtime".to_string(), "goroutines".to_string()]);
    }
    if let Some(t) = threads {
        passthrough.extend(["--threads".to_string(), t.to_string()]);
    }
    let args = Args {
        n,
        mode: m.get_one::<String>("mode").cloned(),
        threads: threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |t| t as usize,
        ),
        goroutines,
        summary_only: m.get_flag("summary-only"),
    };
    (args, passthrough)
}

fn main() {
    let (args, passthrough) = parse();
    let (mode_name, preemption) = match trees::gc_mode(args.mode.as_deref().unwrap_or("signal")) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("binary-trees: {e}");
            std::process::exit(1);
        }
    };
    let (heap, rt) =
        match trees::heap_and_runtime(preemption, args.goroutines.then_some(args.threads)) {
            Ok(hr) => hr,
            Err(e) => {
                eprintln!("binary-trees: {e}");
                std::process::exit(1);
            }
        };
    let ty = node_type(&heap, 2);
    let start = Instant::now();
    let min_depth = 4;
    let max_depth = args.n.max(min_depth + 2);
    let mut out = String::new();
    let m = heap.attach().expect("attach");
    {
        let stretch = max_depth + 1;
        let c = with_frame::<1, _>(m.frames(), &HOLD, |fr| {
            fr.set(0, bottom_up(&m, ty, stretch));
            check(fr.get(0))
        });
        out += &format!("stretch tree of depth {stretch}\t check: {c}\n");
    }
    with_frame::<1, _>(m.frames(), &HOLD, |long| {
        long.set(0, bottom_up(&m, ty, max_depth));
        let depths: Vec<u32> = (min_depth..=max_depth).step_by(2).collect();
        let results: Vec<(u32, u64, u64)> = m.blocking(|| {
            // The main mutator waits in a safe region while workers run.
            depths
                .iter()
                .map(|&d| {
                    let iterations = 1u64 << (max_depth - d + min_depth);
                    let per = iterations.div_ceil(args.threads as u64);
                    if let Some(rt) = &rt {
                        let hs: Vec<_> = (0..args.threads as u64)
                            .map(|t| {
                                rt.go(move || {
                                    pardon::with_mutator(|w| {
                                        let lo = t * per;
                                        let hi = ((t + 1) * per).min(iterations);
                                        let mut sum = 0;
                                        for _ in lo..hi {
                                            sum += with_frame::<1, _>(w.frames(), &HOLD, |fr| {
                                                fr.set(0, bottom_up(w, ty, d));
                                                check(fr.get(0))
                                            });
                                        }
                                        sum
                                    })
                                    .expect("a goroutine runs on a worker")
                                })
                            })
                            .collect();
                        let total = hs.into_iter().map(|h| h.join().expect("goroutine")).sum();
                        return (d, iterations, total);
                    }
                    let total: u64 = std::thread::scope(|s| {
                        let hs: Vec<_> = (0..args.threads as u64)
                            .map(|t| {
                                let heap = heap.clone();
                                s.spawn(move || {
                                    let w = heap.attach().expect("attach");
                                    let lo = t * per;
                                    let hi = ((t + 1) * per).min(iterations);
                                    let mut sum = 0;
                                    for _ in lo..hi {
                                        sum += with_frame::<1, _>(w.frames(), &HOLD, |fr| {
                                            fr.set(0, bottom_up(&w, ty, d));
                                            check(fr.get(0))
                                        });
                                    }
                                    sum
                                })
                            })
                            .collect();
                        hs.into_iter().map(|h| h.join().expect("worker")).sum()
                    });
                    (d, iterations, total)
                })
                .collect()
        });
        for (d, iterations, total) in results {
            out += &format!("{iterations}\t trees of depth {d}\t check: {total}\n");
        }
        out += &format!(
            "long lived tree of depth {max_depth}\t check: {}\n",
            check(long.get(0))
        );
    });
    drop(m);
    drop(rt);
    let summary = trees::summarize(
        if args.goroutines {
            "signal/goroutines"
        } else {
            mode_name
        },
        &heap,
        start,
    );
    if !args.summary_only {
        print!("{out}");
    }
    // Goroutines run in signal mode only: one summary.
    let all_modes = args.mode.is_none() && !args.summary_only && !args.goroutines;
    if !all_modes {
        println!("{}", summary.line());
    } else {
        if let Err(e) = trees::run_all_modes(&passthrough) {
            eprintln!("binary-trees: {e}");
            std::process::exit(1);
        }
    }
}
