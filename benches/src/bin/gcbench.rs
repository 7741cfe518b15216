//! GCBench (Boehm, Ellis and Kovac's benchmark, after Hans Boehm's C and Java
//! versions) on a pardon heap: a stretch tree, a long-lived tree and array,
//! then trees of growing depth built top-down and bottom-up.
//!
//! `gcbench [--mode signal|signal-handler|poll] [--scale S] [--runtime
//! threads|goroutines]`: `--scale` shrinks the depths for quick runs
//! (default 0 = the published sizes: stretch 18, long-lived 16, array of
//! 500,000 doubles, trees 4..16); `--runtime goroutines` runs the program
//! in a goroutine of a one-worker `pardon-sched` runtime sharing the
//! heap's registry (signal mode only).

use std::time::Instant;

use pardon::stackscan::{frame_map, with_frame, FrameMap};
use pardon::{Mutator, Type, TypeDesc};
use pardon_bench::trees::{self, bottom_up, check, node_type, populate};

static HOLD: FrameMap = frame_map!(2; [0, 1]);

fn tree_size(depth: u32) -> u64 {
    (1u64 << (depth + 1)) - 1
}

/// The depths of one run.
#[derive(Clone, Copy)]
struct Sizes {
    scale: u32,
    stretch_depth: u32,
    long_depth: u32,
    array_len: usize,
    min_depth: u32,
    max_depth: u32,
}

fn main() {
    use clap::{Arg, ArgAction, Command};
    let m = Command::new("gcbench")
        .about("GCBench (Boehm, Ellis and Kovac) on a pardon heap. Without --mode, runs once more per mode, each in its own process.")
        .arg(Arg::new("mode").long("mode").value_parser(trees::GC_MODE_NAMES.to_vec()).help("How the heap stops mutators (polls-only is poll's former name)"))
        .arg(Arg::new("scale").long("scale").allow_negative_numbers(true).value_parser(pardon_bench::cli::whole::<u32>(0, 10)).default_value("0").help("Shrink every depth by S for quick runs (0 = the published sizes)"))
        .arg(Arg::new("runtime").long("runtime").value_parser(["threads", "goroutines"]).default_value("threads").help("Run on the calling thread or in a goroutine (signal mode only)"))
        .arg(Arg::new("summary-only").long("summary-only").action(ArgAction::SetTrue).help("Print the summary line only"))
        .get_matches();
    let mode = m.get_one::<String>("mode").cloned();
    let scale = *m.get_one::<u32>("scale").expect("defaulted");
    let summary_only = m.get_flag("summary-only");
    let goroutines = m
        .get_one::<String>("runtime")
        .is_some_and(|r| r == "goroutines");
    let passthrough = vec!["--scale".to_string(), scale.to_string()];
    let (mode_name, preemption) = match trees::gc_mode(mode.as_deref().unwrap_or("signal")) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("gcbench: {e}");
            std::process::exit(1);
        }
    };
    let z = Sizes {
        scale,
        stretch_depth: 18 - scale,
        long_depth: 16 - scale,
        array_len: 500_000usize >> scale,
        min_depth: 4,
        max_depth: 16 - scale,
    };
    let (heap, rt) = match trees::heap_and_runtime(preemption, goroutines.then_some(1)) {
        Ok(hr) => hr,
        Err(e) => {
            eprintln!("gcbench: {e}");
            std::process::exit(1);
        }
    };
    // Node: left, right, i, j (Java ints; here two words, for alignment).
    let ty = node_type(&heap, 4);
    let doubles = heap
        .register_type(&TypeDesc {
            name: "f64",
            size: 8,
            align: 8,
            pointer_words: &[],
        })
        .expect("f64 type");
    let start = Instant::now();
    let out = match &rt {
        Some(rt) => rt
            .block_on(move || {
                pardon::with_mutator(|m| run(m, ty, doubles, z)).expect("a worker's mutator")
            })
            .expect("the goroutine"),
        None => run(&heap.attach().expect("attach"), ty, doubles, z),
    };
    drop(rt);
    let summary = trees::summarize(
        if goroutines {
            "signal/goroutines"
        } else {
            mode_name
        },
        &heap,
        start,
    );
    if !summary_only {
        print!("{out}");
        println!("Completed in {} msec", summary.time.as_millis());
    }
    // Goroutines run in signal mode only: one summary.
    let all_modes = mode.is_none() && !summary_only && !goroutines;
    if !all_modes {
        println!("{}", summary.line());
    } else if let Err(e) = trees::run_all_modes(&passthrough) {
        eprintln!("gcbench: {e}");
        std::process::exit(1);
    }
}

/// The benchmark proper, on mutator `m`; returns its report. Exits (3) if
/// the long-lived data was damaged.
fn run(m: &Mutator, ty: Type, doubles: Type, z: Sizes) -> String {
    let Sizes {
        scale,
        stretch_depth,
        long_depth,
        array_len,
        min_depth,
        max_depth,
    } = z;
    let mut out = String::new();
    out += &format!(" Stretching memory with a binary tree of depth {stretch_depth}\n");
    with_frame::<2, _>(m.frames(), &HOLD, |fr| {
        fr.set(0, bottom_up(m, ty, stretch_depth));
        fr.set(0, 0);
        out += &format!(" Creating a long-lived binary tree of depth {long_depth}\n");
        let long = m.alloc_raw(ty).expect("allocation");
        fr.set(0, long);
        populate(m, ty, long_depth, long);
        out += &format!(" Creating a long-lived array of {array_len} doubles\n");
        let array = m.alloc_raw_array(doubles, array_len).expect("allocation");
        fr.set(1, array);
        for i in 0..array_len / 2 {
            // SAFETY: `array` is a live array of `array_len` f64s, rooted by
            // slot 1; `i < array_len`.
            unsafe { *(array as *mut f64).add(i) = 1.0 / i as f64 };
        }
        for d in (min_depth..=max_depth).step_by(2) {
            let iters = 2 * tree_size(stretch_depth) / tree_size(d);
            out += &format!("Creating {iters} trees of depth {d}\n");
            let t = Instant::now();
            for _ in 0..iters {
                let n = m.alloc_raw(ty).expect("allocation");
                with_frame::<2, _>(m.frames(), &HOLD, |tmp| {
                    tmp.set(0, n);
                    populate(m, ty, d, n);
                });
            }
            out += &format!(
                "\tTop down construction took {} msec\n",
                t.elapsed().as_millis()
            );
            let t = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(bottom_up(m, ty, d));
            }
            out += &format!(
                "\tBottom up construction took {} msec\n",
                t.elapsed().as_millis()
            );
        }
        let long = fr.get(0);
        // SAFETY: as above, rooted by slot 1 and 1000 < array_len at every scale.
        let probe = unsafe { *(fr.get(1) as *const f64).add(1000 >> scale) };
        if check(long) != tree_size(long_depth) || probe != 1.0 / (1000 >> scale) as f64 {
            eprintln!(
                "gcbench: the long-lived data was damaged (tree {} of {}, array {probe})",
                check(long),
                tree_size(long_depth)
            );
            std::process::exit(3);
        }
    });
    out
}
