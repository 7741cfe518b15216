//! Pause anatomy with a large live heap: two mutator threads each build half
//! of the live data (a list of binary trees of 16-byte nodes, the
//! binary-trees shape), then spin in a call-free loop while the main thread
//! forces collections. For each marking-thread count it reports time to
//! safepoint, mark time and whole pause separately, and the mark throughput
//! per marking thread.
//!
//! With `--concurrent`, the heap marks concurrently (`Config::concurrent`):
//! "mark" is then the marking done between the cycle's two stops, while the
//! mutators ran, and "pause" the two stops together (each includes its time
//! to safepoint), as Go's `PauseNs` counts a cycle's stops.
//!
//! With `--churn SECS`, the two mutators do not spin: they allocate garbage
//! and rewrite live pointers (swapping subtrees between their trees,
//! through the barriered `Mutator::store_word`) for SECS seconds while the
//! pacer starts the collections, as the goroutines of Go's `pause` anchor
//! do. The row then gives the pauses of those collections and the minimum
//! mutator utilisation (MMU) over windows of 1, 10 and 100 ms: each
//! mutator stamps the time every 1024 iterations, and a window's
//! utilisation is its iterations over what the mutator's best 100 ms window
//! did in as long (so a stop, an assist, a wait at the brake or a CPU lost
//! to the marker all count against it; the best window is itself not free
//! of collections, so the figure is an upper bound).
//!
//! `pause [--live-mb 100] [--collections 10] [--mark-workers 1,2]
//!        [--mode signal|signal-handler] [--concurrent] [--churn SECS]`

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pardon::stackscan::{frame_map, with_frame, Frame, FrameMap};
use pardon::{Config, CycleStats, Heap, Preemption};
use pardon_bench::trees::{bottom_up, node_type};

/// Slot 0: the list of trees built so far; slot 1: the newest tree. Site 0
/// (building a tree): the list; site 1 (allocating its cell): both.
static LIST: FrameMap = frame_map!(2; [0], [0, 1]);

/// Depth of each tree in the list: 2^17 - 1 nodes, 2 MiB.
const TREE_DEPTH: u32 = 16;

struct Args {
    /// Live heap to build, MiB (split between the two mutators).
    live_mb: usize,
    /// Forced collections measured per configuration.
    collections: usize,
    /// Marking-thread counts to compare.
    mark_workers: Vec<usize>,
    /// How the mutators are stopped (their loop never polls).
    mode: String,
    /// Concurrent marking.
    concurrent: bool,
    /// Churn for this many seconds instead of spinning (see the module
    /// comment).
    churn: Option<u64>,
}

fn parse_args() -> Args {
    use clap::{Arg, ArgAction, Command};
    let m = Command::new("pause")
        .about("Pause anatomy (TTSP, mark, pause) with a large live heap")
        .arg(
            Arg::new("live-mb")
                .long("live-mb")
                .allow_negative_numbers(true)
                .value_parser(pardon_bench::cli::whole::<usize>(1, 1 << 20))
                .default_value("100")
                .help("Live heap to build, MiB, split between the two mutators"),
        )
        .arg(
            Arg::new("collections")
                .long("collections")
                .allow_negative_numbers(true)
                .value_parser(pardon_bench::cli::whole::<usize>(1, 1_000_000))
                .default_value("10")
                .help("Forced collections measured per configuration"),
        )
        .arg(
            Arg::new("mark-workers")
                .long("mark-workers")
                .value_delimiter(',')
                .action(ArgAction::Append)
                .allow_negative_numbers(true)
                .value_parser(pardon_bench::cli::whole::<usize>(1, 64))
                .default_value("1,2")
                .help("Marking-thread counts to compare, comma-separated"),
        )
        .arg(
            Arg::new("mode")
                .long("mode")
                .value_parser(["signal", "signal-handler"])
                .default_value("signal")
                .help("How the mutators are stopped (their loop never polls, so not polls-only)"),
        )
        .arg(
            Arg::new("concurrent")
                .long("concurrent")
                .action(ArgAction::SetTrue)
                .help("Mark concurrently (two short stops per cycle)"),
        )
        .arg(
            Arg::new("churn")
                .long("churn")
                .allow_negative_numbers(true)
                .value_parser(pardon_bench::cli::whole::<u64>(1, 3600))
                .help("Seconds of garbage and pointer rewriting, paced collections, MMU (instead of spinners and forced collections)"),
        )
        .get_matches();
    Args {
        live_mb: *m.get_one::<usize>("live-mb").unwrap(),
        collections: *m.get_one::<usize>("collections").unwrap(),
        mark_workers: m
            .get_many::<usize>("mark-workers")
            .unwrap()
            .copied()
            .collect(),
        mode: m.get_one::<String>("mode").unwrap().clone(),
        concurrent: m.get_flag("concurrent"),
        churn: m.get_one::<u64>("churn").copied(),
    }
}

/// Builds `trees` trees of `TREE_DEPTH` into the list held in `fr`'s slot
/// 0 (slot 1 holds each new tree while its cell is allocated; cleared at
/// the end).
fn build_list(m: &pardon::Mutator, fr: &Frame<'_, 2>, ty: pardon::Type, trees: usize) {
    for _ in 0..trees {
        fr.set_site(0);
        fr.set(1, bottom_up(m, ty, TREE_DEPTH));
        fr.set_site(1);
        let cell = m.alloc_raw(ty).expect("alloc") as *mut usize;
        // SAFETY: a fresh 16-byte node: word 0 is the tree, word 1 the
        // rest of the list (both live in the frame).
        unsafe {
            *cell = fr.get(1);
            *cell.add(1) = fr.get(0);
        }
        fr.set(0, cell as usize);
    }
    fr.set(1, 0);
}

struct Row {
    workers: usize,
    live: usize,
    objects: usize,
    ttsp: Vec<Duration>,
    mark: Vec<Duration>,
    pause: Vec<Duration>,
    used: usize,
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run(args: &Args, preemption: Preemption, workers: usize) -> Result<Row, String> {
    let heap = Heap::new(Config {
        preemption,
        mark_workers: workers,
        gc_percent: None,
        concurrent: args.concurrent,
        ..Config::default()
    })
    .map_err(|e| e.to_string())?;
    let ty = node_type(&heap, 2);
    let tree_bytes = ((1usize << (TREE_DEPTH + 1)) - 1) * 16;
    let per_thread = (args.live_mb << 20).div_ceil(2 * tree_bytes).max(1);
    let ready = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut cycles: Vec<CycleStats> = Vec::new();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (heap, ready, stop) = (heap.clone(), &ready, &stop);
            s.spawn(move || {
                let m = heap.attach().expect("attach");
                with_frame::<2, _>(m.frames(), &LIST, |fr| {
                    build_list(&m, fr, ty, per_thread);
                    ready.fetch_add(1, Ordering::SeqCst);
                    // A loop without calls or polls: only a signal stops it.
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    std::hint::black_box(x);
                });
            });
        }
        while ready.load(Ordering::SeqCst) < 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        for _ in 0..args.collections + 1 {
            std::thread::sleep(Duration::from_millis(10));
            match heap.collect() {
                Ok(c) => cycles.push(c),
                Err(e) => eprintln!("pause: {e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    // The first collection also frees the building's garbage: skip it.
    let measured = &cycles[1.min(cycles.len())..];
    if measured.is_empty() {
        return Err("no collection completed".into());
    }
    let last = measured[measured.len() - 1];
    Ok(Row {
        workers,
        live: last.live,
        objects: last.marked_objects,
        ttsp: measured.iter().map(|c| c.ttsp).collect(),
        mark: measured
            .iter()
            .map(|c| {
                if args.concurrent {
                    c.concurrent_mark
                } else {
                    c.mark
                }
            })
            .collect(),
        pause: measured.iter().map(|c| c.pause).collect(),
        used: measured.iter().map(|c| c.mark_workers).max().unwrap_or(1),
    })
}

fn main() {
    let args = parse_args();
    let preemption = match args.mode.as_str() {
        "signal" => Preemption::Signal,
        "signal-handler" => Preemption::SignalInHandler,
        other => {
            eprintln!("pause: --mode {other:?}: expected signal or signal-handler (the mutators never poll)");
            std::process::exit(1);
        }
    };
    if args.collections == 0 || args.mark_workers.iter().any(|&w| w == 0 || w > 256) {
        eprintln!("pause: --collections must be positive and --mark-workers between 1 and 256");
        std::process::exit(1);
    }
    if let Some(secs) = args.churn {
        return churn_main(&args, preemption, secs);
    }
    println!(
        "{:>7} {:>9} {:>10} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} | {:>12} {:>12}",
        "markers",
        "live MiB",
        "objects",
        "ttsp p50",
        "max",
        "mark p50",
        "max",
        "pause p50",
        "max",
        "Mobj/s",
        "Mobj/s/core"
    );
    let us = |d: Duration| {
        if d < Duration::from_millis(10) {
            format!("{:.1}µs", d.as_secs_f64() * 1e6)
        } else {
            format!("{:.1}ms", d.as_secs_f64() * 1e3)
        }
    };
    let mut serial_mark = None;
    for &w in &args.mark_workers {
        let mut r = match run(&args, preemption, w) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("pause: {e}");
                std::process::exit(1);
            }
        };
        let (tmax, mmax, pmax) = (
            *r.ttsp.iter().max().unwrap(),
            *r.mark.iter().max().unwrap(),
            *r.pause.iter().max().unwrap(),
        );
        let (t50, m50, p50) = (
            median(&mut r.ttsp),
            median(&mut r.mark),
            median(&mut r.pause),
        );
        let rate = r.objects as f64 / m50.as_secs_f64() / 1e6;
        println!(
            "{:>7} {:>9.1} {:>10} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} | {:>12.1} {:>12.1}",
            format!("{}/{}", r.used, r.workers),
            r.live as f64 / (1 << 20) as f64,
            r.objects,
            format!("{:.1}µs", t50.as_secs_f64() * 1e6),
            format!("{:.1}µs", tmax.as_secs_f64() * 1e6),
            us(m50),
            us(mmax),
            us(p50),
            us(pmax),
            rate,
            rate / r.workers as f64,
        );
        if w == 1 {
            serial_mark = Some(m50);
        } else if let Some(s) = serial_mark {
            println!(
                "        mark speed-up with {w} threads: {:.2}x",
                s.as_secs_f64() / m50.as_secs_f64()
            );
        }
    }
}

/// Iterations between two time stamps of a churning mutator.
const STAMP_EVERY: u64 = 1024;

/// A churning mutator's loop (see the module comment) until `stop`: returns
/// its time stamps, nanoseconds from `t0`, one every `STAMP_EVERY`
/// iterations. `list` is the frame slot holding its list of trees.
fn churn(
    m: &pardon::Mutator,
    ty: pardon::Type,
    list: usize,
    t0: std::time::Instant,
    stop: &AtomicBool,
) -> Vec<u64> {
    let mut cells = Vec::new();
    let mut c = list;
    while c != 0 {
        cells.push(c);
        c = m.load_word(c, 1).expect("a list cell");
    }
    let mut stamps = Vec::with_capacity(1 << 20);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ list as u64;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Garbage.
        std::hint::black_box(m.alloc_raw(ty).expect("alloc"));
        if i.is_multiple_of(16) && cells.len() >= 2 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let a = cells[(rng % cells.len() as u64) as usize];
            let b = cells[((rng >> 32) % cells.len() as u64) as usize];
            // Swap a subtree of one tree's root with one of the other's:
            // for a moment each is referenced only from this frame.
            let (ta, tb) = (m.load_word(a, 0).unwrap(), m.load_word(b, 0).unwrap());
            let (wa, wb) = ((rng >> 8) as usize & 1, (rng >> 9) as usize & 1);
            let (sa, sb) = (m.load_word(ta, wa).unwrap(), m.load_word(tb, wb).unwrap());
            // SAFETY: raw tree nodes, whose reference words hold null or a
            // node; sa and sb stay in this frame until stored.
            unsafe {
                m.store_word(ta, wa, sb).unwrap();
                m.store_word(tb, wb, sa).unwrap();
            }
            std::hint::black_box((sa, sb));
        }
        i += 1;
        if i.is_multiple_of(STAMP_EVERY) {
            stamps.push(t0.elapsed().as_nanos() as u64);
        }
    }
    stamps
}

/// The lowest utilisation over windows of `w` ns of a stamp series (see
/// the module comment), against the best rate over 100 ms windows. A
/// window starting at a stamp counts the stamps after it (the work done
/// inside it), so a window in which the mutator did nothing counts 0.
fn mmu(stamps: &[u64], w: u64) -> f64 {
    let best = best_count(stamps, 100_000_000) as f64 / 100_000_000.0;
    let (Some(&first), Some(&last)) = (stamps.first(), stamps.last()) else {
        return f64::NAN;
    };
    if best == 0.0 || last - first < w {
        return f64::NAN;
    }
    let mut worst = f64::INFINITY;
    let mut hi = 0;
    for (lo, &t) in stamps.iter().enumerate() {
        if t + w > last {
            break;
        }
        while hi < stamps.len() && stamps[hi] <= t + w {
            hi += 1;
        }
        worst = worst.min((hi - lo - 1) as f64 / (w as f64 * best));
    }
    worst.min(1.0)
}

/// The most stamps in any window of `w` ns.
fn best_count(stamps: &[u64], w: u64) -> usize {
    let mut best = 0;
    let mut hi = 0;
    for (lo, &t) in stamps.iter().enumerate() {
        while hi < stamps.len() && stamps[hi] < t + w {
            hi += 1;
        }
        best = best.max(hi - lo);
    }
    best
}

fn churn_main(args: &Args, preemption: Preemption, secs: u64) {
    println!(
        "{:>7} {:>9} {:>7} | {:>9} {:>9} {:>9} | {:>7} {:>7} {:>7}",
        "markers", "live MiB", "cycles", "pause p50", "p99", "max", "MMU 1ms", "10ms", "100ms"
    );
    for &w in &args.mark_workers {
        let heap = match Heap::new(Config {
            preemption,
            mark_workers: w,
            concurrent: args.concurrent,
            ..Config::default()
        }) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("pause: {e}");
                std::process::exit(1);
            }
        };
        let ty = node_type(&heap, 2);
        let tree_bytes = ((1usize << (TREE_DEPTH + 1)) - 1) * 16;
        let per_thread = (args.live_mb << 20).div_ceil(2 * tree_bytes).max(1);
        let ready = AtomicUsize::new(0);
        let go = AtomicBool::new(false);
        let stop = AtomicBool::new(false);
        let t0 = std::time::Instant::now();
        let mut before = None;
        let stamps: Vec<Vec<u64>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let (heap, ready, go, stop) = (heap.clone(), &ready, &go, &stop);
                    s.spawn(move || {
                        let m = heap.attach().expect("attach");
                        with_frame::<2, _>(m.frames(), &LIST, |fr| {
                            build_list(&m, fr, ty, per_thread);
                            ready.fetch_add(1, Ordering::SeqCst);
                            while !go.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            churn(&m, ty, fr.get(0), t0, stop)
                        })
                    })
                })
                .collect();
            while ready.load(Ordering::SeqCst) < 2 {
                std::thread::sleep(Duration::from_millis(5));
            }
            // The building's collections are not counted.
            let _ = heap.collect();
            before = Some(heap.stats());
            go.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(secs));
            stop.store(true, Ordering::SeqCst);
            hs.into_iter().map(|h| h.join().expect("mutator")).collect()
        });
        let (before, after) = (before.expect("stats"), heap.stats());
        let mut pauses = after.pause_ns.clone();
        // Histograms of the same bounds: cannot fail.
        let _ = pauses.subtract(&before.pause_ns);
        let cycles = after.collections - before.collections;
        let q = |x: f64| format!("{:.1}µs", pauses.value_at_quantile(x) as f64 / 1e3);
        let worst = |win: u64| {
            stamps
                .iter()
                .map(|s| mmu(s, win))
                .fold(f64::INFINITY, f64::min)
        };
        println!(
            "{:>7} {:>9.1} {:>7} | {:>9} {:>9} {:>9} | {:>7.2} {:>7.2} {:>7.2}",
            format!("{w}"),
            after.last.live as f64 / (1 << 20) as f64,
            cycles,
            q(0.5),
            q(0.99),
            format!("{:.1}µs", pauses.max() as f64 / 1e3),
            worst(1_000_000),
            worst(10_000_000),
            worst(100_000_000),
        );
    }
}
