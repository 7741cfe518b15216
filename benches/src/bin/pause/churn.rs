//! `pause --churn`: mutators that allocate garbage and rewrite live
//! pointers while the pacer starts collections; pauses and minimum mutator
//! utilisation (see the tool's module comment).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pardon::stackscan::with_frame;
use pardon::{Config, Preemption};
use pardon_bench::trees::node_type;

use crate::{Args, LIST};

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
    let cells = crate::list_cells(m, list);
    let mut stamps = Vec::with_capacity(1 << 20);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ list as u64;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Garbage.
        std::hint::black_box(m.alloc_raw(ty).expect("alloc"));
        if i.is_multiple_of(16) && cells.len() >= 2 {
            crate::swap_subtrees(m, &cells, &mut rng);
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

pub(crate) fn churn_main(args: &Args, preemption: Preemption, secs: u64) {
    println!(
        "{:>7} {:>9} {:>7} | {:>9} {:>9} {:>9} {:>5} | {:>9} {:>9} {:>5} | {:>7} {:>7} {:>7} | {:>7}",
        "markers",
        "live MiB",
        "cycles",
        "pause p50",
        "p99",
        "max",
        ">1ms",
        "ttsp p99",
        "max",
        "moved",
        "MMU 1ms",
        "10ms",
        "100ms",
        "Miters"
    );
    for &w in &args.mark_workers {
        let heap = crate::heap_or_exit(Config {
            preemption,
            mark_workers: w,
            concurrent: args.concurrent,
            ..Config::default()
        });
        let ty = node_type(&heap, 2);
        let per_thread = crate::trees_per_thread(args.live_mb, 2);
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
                            crate::build_then_wait(&m, fr, ty, per_thread, ready, go);
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
        let mut ttsps = after.ttsp_ns.clone();
        // As above.
        let _ = ttsps.subtract(&before.ttsp_ns);
        let cycles = after.collections - before.collections;
        let q = |x: f64| format!("{:.1}µs", pauses.value_at_quantile(x) as f64 / 1e3);
        let worst = |win: u64| {
            stamps
                .iter()
                .map(|s| mmu(s, win))
                .fold(f64::INFINITY, f64::min)
        };
        // Iterations (one 16-byte node allocated each), a stamp every
        // `STAMP_EVERY`.
        let iters: u64 = stamps.iter().map(|s| STAMP_EVERY * s.len() as u64).sum();
        println!(
            "{:>7} {:>9.1} {:>7} | {:>9} {:>9} {:>9} {:>5} | {:>9} {:>9} {:>5} | {:>7.2} {:>7.2} {:>7.2} | {:>7.1}",
            format!("{w}"),
            after.last.live as f64 / (1 << 20) as f64,
            cycles,
            q(0.5),
            q(0.99),
            format!("{:.1}µs", pauses.max() as f64 / 1e3),
            pauses.count_between(1_000_001, u64::MAX),
            format!("{:.1}µs", ttsps.value_at_quantile(0.99) as f64 / 1e3),
            format!("{:.1}µs", ttsps.max() as f64 / 1e3),
            after.moved - before.moved,
            worst(1_000_000),
            worst(10_000_000),
            worst(100_000_000),
            iters as f64 / 1e6,
        );
    }
}
