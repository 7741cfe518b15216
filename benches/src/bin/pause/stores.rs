//! `pause --stores SECS`: what the write barrier costs code that mostly
//! stores references. The mutators build the live heap, then do nothing but
//! swap subtrees between their trees through the barriered raw API
//! (`Mutator::store_word`, two stores and four loads a swap, no
//! allocation), while the main thread runs collections back to back (or
//! none, with `--no-collections`). Each mutator counts its swaps; the row
//! gives the swaps per second of all mutators together, the cycles, and the
//! share of the time the heap spent marking.
//!
//! Compared alternating, on one heap kind at a time:
//! - concurrent, no collections: the barrier's off path (a load and a
//!   branch on the phase word);
//! - concurrent, back-to-back cycles: every store while marking logs the
//!   value it overwrites (the deletion barrier's on path), and the marker
//!   threads share the CPUs;
//! - stop-the-world, back-to-back collections: no barrier work, but the
//!   mutators stand still for each whole mark.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pardon::stackscan::with_frame;
use pardon::{Config, Preemption};
use pardon_bench::trees::node_type;

use crate::{Args, LIST};

/// Swaps subtrees between the trees of the list at `list` until `stop`;
/// returns how many.
fn swap_loop(m: &pardon::Mutator, list: usize, stop: &AtomicBool) -> u64 {
    let cells = crate::list_cells(m, list);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ list as u64;
    let mut swaps = 0u64;
    while !stop.load(Ordering::Relaxed) {
        crate::swap_subtrees(m, &cells, &mut rng);
        swaps += 1;
    }
    swaps
}

pub(crate) fn stores_main(args: &Args, preemption: Preemption, secs: u64) {
    let mutators = args.mutators;
    println!(
        "{:>9} {:>8} {:>9} {:>7} {:>8} | {:>9} {:>9} | {:>12}",
        "heap", "mutators", "live MiB", "cycles", "marking", "pause p50", "max", "Mswaps/s"
    );
    let heap = crate::heap_or_exit(Config {
        preemption,
        mark_workers: args.mark_workers[0],
        gc_percent: None,
        concurrent: args.concurrent,
        ..Config::default()
    });
    let ty = node_type(&heap, 2);
    let per_thread = crate::trees_per_thread(args.live_mb, mutators);
    let ready = AtomicUsize::new(0);
    let go = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let mut marking = Duration::ZERO;
    let mut pauses = Vec::new();
    let mut elapsed = Duration::ZERO;
    std::thread::scope(|s| {
        for _ in 0..mutators {
            let (heap, ready, go, stop, total) = (heap.clone(), &ready, &go, &stop, &total);
            s.spawn(move || {
                let m = heap.attach().expect("attach");
                with_frame::<2, _>(m.frames(), &LIST, |fr| {
                    crate::build_then_wait(&m, fr, ty, per_thread, ready, go);
                    total.fetch_add(swap_loop(&m, fr.get(0), stop), Ordering::SeqCst);
                });
            });
        }
        while ready.load(Ordering::SeqCst) < mutators {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The building's garbage goes first, uncounted.
        let _ = heap.collect();
        let t0 = Instant::now();
        go.store(true, Ordering::SeqCst);
        let end = t0 + Duration::from_secs(secs);
        while Instant::now() < end {
            if args.no_collections {
                std::thread::sleep(end - Instant::now());
                break;
            }
            match heap.collect() {
                Ok(c) => {
                    marking += if args.concurrent {
                        c.concurrent_mark
                    } else {
                        c.mark
                    };
                    pauses.push(c.pause);
                }
                Err(e) => eprintln!("pause: {e}"),
            }
        }
        stop.store(true, Ordering::SeqCst);
        elapsed = t0.elapsed();
    });
    pauses.sort();
    let us =
        |d: Option<&Duration>| d.map_or("-".into(), |d| format!("{:.1}µs", d.as_secs_f64() * 1e6));
    println!(
        "{:>9} {:>8} {:>9.1} {:>7} {:>7.0}% | {:>9} {:>9} | {:>12.2}",
        if args.concurrent { "concurrent" } else { "stw" },
        mutators,
        heap.stats().last.live as f64 / (1 << 20) as f64,
        pauses.len(),
        100.0 * marking.as_secs_f64() / elapsed.as_secs_f64(),
        us(pauses.get(pauses.len() / 2)),
        us(pauses.last()),
        total.load(Ordering::SeqCst) as f64 / elapsed.as_secs_f64() / 1e6,
    );
}
