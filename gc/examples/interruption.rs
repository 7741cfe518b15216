//! "Pardon the interruption": one thread runs a call-free loop (about 300 ms
//! per call, polling only between calls) while another allocates and
//! collects. With signal preemption each collection stops the loop within
//! microseconds; with polls only, each one waits for the loop to reach its
//! next poll. Prints the collector thread's time and the stops in each mode.
//!
//! `cargo run --release -p pardon --example interruption`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon::preempt::{BetweenCalls, PollStrategy};
use pardon::{gc_object, Config, Heap, Member, Preemption};

gc_object! {
    struct Cell {
        next: Member<Cell>,
    }
}

/// One call: a long loop with no calls and no polls inside.
#[inline(never)]
fn stretch(n: u64, mut x: u64) -> u64 {
    for _ in 0..n {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        x ^= x >> 29;
    }
    x
}

fn main() {
    // Calibrate a call of about 300 ms.
    let t = Instant::now();
    std::hint::black_box(stretch(10_000_000, 1));
    let per_ms = 10_000_000.0 / t.elapsed().as_secs_f64() / 1e3;
    let n = (per_ms * 300.0) as u64;
    for preemption in [Preemption::Signal, Preemption::Poll] {
        let heap = Heap::new(Config {
            preemption,
            ..Config::default()
        })
        .expect("heap");
        let stop = Arc::new(AtomicBool::new(false));
        let looper = {
            let (heap, stop) = (heap.clone(), stop.clone());
            std::thread::spawn(move || {
                let m = heap.attach().expect("attach");
                let mut p = BetweenCalls(m.attached().poller());
                let mut x = 1;
                while !stop.load(Ordering::Relaxed) {
                    x = stretch(n, x);
                    p.between_calls();
                }
                x
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let m = heap.attach().expect("attach");
        let start = Instant::now();
        let keep = m.alloc::<Cell>().expect("alloc");
        for _ in 0..5 {
            for _ in 0..100_000 {
                std::hint::black_box(m.alloc::<Cell>().expect("alloc"));
            }
            m.collect().expect("collect");
        }
        let took = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        drop(keep);
        drop(m);
        let _ = looper.join();
        let st = heap.stats();
        println!(
            "{:<8} 5 collections took {:>7.1} ms; time to safepoint p50 {:>9.1} µs, max {:>9.1} µs",
            format!("{preemption:?}:"),
            took.as_secs_f64() * 1e3,
            st.ttsp_ns.value_at_quantile(0.5) as f64 / 1e3,
            st.ttsp_ns.max() as f64 / 1e3,
        );
    }
}
