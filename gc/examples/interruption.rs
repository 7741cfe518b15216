//! "Pardon the interruption": a thread spinning in a loop with no calls and
//! no polls is stopped for a collection within microseconds by a signal,
//! while a cooperative-only runtime would wait for the loop to end.
//!
//! `cargo run --release -p pardon --example interruption`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon::{gc_object, Config, Heap, Member, Preemption};

gc_object! {
    struct Cell {
        next: Member<Cell>,
    }
}

fn main() {
    for preemption in [Preemption::Signal, Preemption::SignalInHandler] {
        let heap = Heap::new(Config {
            preemption,
            ..Config::default()
        })
        .expect("heap");
        let stop = Arc::new(AtomicBool::new(false));
        let spinner = {
            let (heap, stop) = (heap.clone(), stop.clone());
            std::thread::spawn(move || {
                let _m = heap.attach().expect("attach");
                // A call-free loop: no allocation, no poll, nothing the
                // collector could wait for.
                let mut x = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1_000_000 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        x ^= x >> 29;
                    }
                }
                x
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        // An allocating thread fills the heap; its pacer triggers collections
        // that must stop the spinner each time.
        let m = heap.attach().expect("attach");
        let start = Instant::now();
        let mut keep = m.alloc::<Cell>().expect("alloc");
        for i in 0..10_000_000 {
            let c = m.alloc::<Cell>().expect("alloc");
            if i % 1000 == 0 {
                c.next.set(Some(&keep));
                keep = c;
            }
        }
        let took = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        let _ = spinner.join();
        let st = heap.stats();
        println!(
            "{preemption:?}: {} collections in {:.0} ms; time to safepoint p50 {:.1} µs, max {:.1} µs; pause p50 {:.1} µs",
            st.collections,
            took.as_secs_f64() * 1e3,
            st.ttsp_ns.value_at_quantile(0.5) as f64 / 1e3,
            st.ttsp_ns.max() as f64 / 1e3,
            st.pause_ns.value_at_quantile(0.5) as f64 / 1e3,
        );
    }
    println!("(with polls only, the spinner above would never stop: it has no poll)");
}
