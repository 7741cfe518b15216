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
//!        [--mode signal|signal-handler] [--concurrent] [--churn SECS]
//!        [--stores SECS [--mutators 2] [--no-collections]]`
//!
//! `--stores` measures the write barrier on code that only stores
//! references (the `stores` module).

mod churn;
mod stores;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pardon::stackscan::{frame_map, with_frame, Frame, FrameMap};
use pardon::{Config, CycleStats, Heap, Preemption};
use pardon_bench::trees::{bottom_up, node_type};

/// Slot 0: the list of trees built so far; slot 1: the newest tree. Site 0
/// (building a tree): the list; site 1 (allocating its cell): both.
pub(crate) static LIST: FrameMap = frame_map!(2; [0], [0, 1]);

/// Depth of each tree in the list: 2^17 - 1 nodes, 2 MiB.
pub(crate) const TREE_DEPTH: u32 = 16;

pub(crate) struct Args {
    /// Live heap to build, MiB (split between the two mutators).
    pub(crate) live_mb: usize,
    /// Forced collections measured per configuration.
    pub(crate) collections: usize,
    /// Marking-thread counts to compare.
    pub(crate) mark_workers: Vec<usize>,
    /// How the mutators are stopped (their loop never polls).
    pub(crate) mode: String,
    /// Concurrent marking.
    pub(crate) concurrent: bool,
    /// Churn for this many seconds instead of spinning (see the module
    /// comment).
    pub(crate) churn: Option<u64>,
    /// Store references for this many seconds (see `stores`).
    pub(crate) stores: Option<u64>,
    /// Mutator threads of `--stores`.
    pub(crate) mutators: usize,
    /// `--stores` without collections.
    pub(crate) no_collections: bool,
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
        .arg(
            Arg::new("stores")
                .long("stores")
                .allow_negative_numbers(true)
                .value_parser(pardon_bench::cli::whole::<u64>(1, 3600))
                .help("Seconds of barriered reference stores only, collections back to back: the barrier's cost (see --no-collections)"),
        )
        .arg(
            Arg::new("mutators")
                .long("mutators")
                .allow_negative_numbers(true)
                .value_parser(pardon_bench::cli::whole::<usize>(1, 64))
                .default_value("2")
                .help("Mutator threads of --stores"),
        )
        .arg(
            Arg::new("no-collections")
                .long("no-collections")
                .action(ArgAction::SetTrue)
                .help("--stores with no collection (the barrier's off path)"),
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
        stores: m.get_one::<u64>("stores").copied(),
        mutators: *m.get_one::<usize>("mutators").unwrap(),
        no_collections: m.get_flag("no-collections"),
    }
}

/// Builds `trees` trees of `TREE_DEPTH` into the list held in `fr`'s slot
/// 0 (slot 1 holds each new tree while its cell is allocated; cleared at
/// the end).
pub(crate) fn build_list(m: &pardon::Mutator, fr: &Frame<'_, 2>, ty: pardon::Type, trees: usize) {
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

/// Trees of `TREE_DEPTH` each of `threads` mutators builds so that they
/// hold `live_mb` MiB together.
pub(crate) fn trees_per_thread(live_mb: usize, threads: usize) -> usize {
    let tree_bytes = ((1usize << (TREE_DEPTH + 1)) - 1) * 16;
    (live_mb << 20).div_ceil(threads * tree_bytes).max(1)
}

/// The heap of a run, or the tool's exit with the reason.
pub(crate) fn heap_or_exit(config: Config) -> Heap {
    Heap::new(config).unwrap_or_else(|e| {
        eprintln!("pause: {e}");
        std::process::exit(1)
    })
}

/// A measuring mutator's start: builds its share of the live heap into
/// `fr`'s slot 0, says so on `ready`, and waits for `go`.
pub(crate) fn build_then_wait(
    m: &pardon::Mutator,
    fr: &Frame<'_, 2>,
    ty: pardon::Type,
    trees: usize,
    ready: &AtomicUsize,
    go: &AtomicBool,
) {
    build_list(m, fr, ty, trees);
    ready.fetch_add(1, Ordering::SeqCst);
    while !go.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The cells of the list of trees at `list`.
pub(crate) fn list_cells(m: &pardon::Mutator, list: usize) -> Vec<usize> {
    let mut cells = Vec::new();
    let mut c = list;
    while c != 0 {
        cells.push(c);
        c = m.load_word(c, 1).expect("a list cell");
    }
    cells
}

/// Swaps a subtree of one random tree's root with one of another's (or
/// the same one's), through the barriered raw API: four loads, two
/// stores. For a moment each subtree is referenced only from this frame.
pub(crate) fn swap_subtrees(m: &pardon::Mutator, cells: &[usize], rng: &mut u64) {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let r = *rng;
    let a = cells[(r % cells.len() as u64) as usize];
    let b = cells[((r >> 32) % cells.len() as u64) as usize];
    let (ta, tb) = (m.load_word(a, 0).unwrap(), m.load_word(b, 0).unwrap());
    let (wa, wb) = ((r >> 8) as usize & 1, (r >> 9) as usize & 1);
    let (sa, sb) = (m.load_word(ta, wa).unwrap(), m.load_word(tb, wb).unwrap());
    // SAFETY: raw tree nodes, whose reference words hold null or a node;
    // sa and sb stay in this frame until stored. (Swapping two words of
    // one node, when a == b, is a swap all the same.)
    unsafe {
        m.store_word(ta, wa, sb).unwrap();
        m.store_word(tb, wb, sa).unwrap();
    }
    std::hint::black_box((sa, sb));
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

/// The `q` quantile by nearest rank (the smallest value at least a
/// fraction `q` of the values do not exceed): with fewer than 100 values,
/// p99 is the max.
fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
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
    let per_thread = trees_per_thread(args.live_mb, 2);
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
    if let Some(secs) = args.stores {
        return stores::stores_main(&args, preemption, secs);
    }
    if let Some(secs) = args.churn {
        return churn::churn_main(&args, preemption, secs);
    }
    println!(
        "{:>7} {:>9} {:>10} | {:>9} {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>12} {:>12}",
        "markers",
        "live MiB",
        "objects",
        "ttsp p50",
        "p99",
        "max",
        "mark p50",
        "max",
        "pause p50",
        "p99",
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
        let (t99, p99) = (quantile(&mut r.ttsp, 0.99), quantile(&mut r.pause, 0.99));
        let rate = r.objects as f64 / m50.as_secs_f64() / 1e6;
        println!(
            "{:>7} {:>9.1} {:>10} | {:>9} {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>12.1} {:>12.1}",
            format!("{}/{}", r.used, r.workers),
            r.live as f64 / (1 << 20) as f64,
            r.objects,
            format!("{:.1}µs", t50.as_secs_f64() * 1e6),
            format!("{:.1}µs", t99.as_secs_f64() * 1e6),
            format!("{:.1}µs", tmax.as_secs_f64() * 1e6),
            us(m50),
            us(mmax),
            us(p50),
            us(p99),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest rank, against values counted by hand.
    #[test]
    fn quantiles_are_nearest_ranks() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&x| Duration::from_millis(x))
                .collect::<Vec<_>>()
        };
        let mut hundred = ms(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(quantile(&mut hundred, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&mut hundred, 0.5), Duration::from_millis(50));
        let mut twenty = ms(&(1..=20).collect::<Vec<_>>());
        assert_eq!(quantile(&mut twenty, 0.99), Duration::from_millis(20));
        let mut one = ms(&[7]);
        assert_eq!(quantile(&mut one, 0.99), Duration::from_millis(7));
        assert_eq!(quantile(&mut one, 0.0), Duration::from_millis(7));
    }
}
