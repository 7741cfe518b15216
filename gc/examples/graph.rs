//! Several threads build and rewire object graphs on one heap with the typed
//! API, while collections run; a global root shares one object between them.
//!
//! `cargo run --release -p pardon --example graph`

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use pardon::{gc_object, Config, Global, Heap, Member, Root};

gc_object! {
    struct Node {
        left: Member<Node>,
        right: Member<Node>,
        value: AtomicI64,
    }
}

fn main() {
    let heap = Heap::new(Config::default()).expect("heap");
    let m = heap.attach().expect("attach");
    let shared = m.alloc::<Node>().expect("alloc");
    shared.value.store(42, Ordering::Relaxed);
    let global = Arc::new(Global::new(&shared).expect("global root"));
    drop(shared);
    // The main thread waits in a safe region while the workers run.
    let sums: Vec<i64> = m.blocking(|| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let (heap, global) = (heap.clone(), global.clone());
                std::thread::spawn(move || {
                    let m = heap.attach().expect("attach");
                    let mut roots: Vec<Root<'_, Node>> = Vec::new();
                    for i in 0..200_000i64 {
                        let n = m.alloc::<Node>().expect("alloc");
                        n.value.store(i, Ordering::Relaxed);
                        if let Some(prev) = roots.last() {
                            n.left.set(Some(prev));
                        }
                        if i % 3 == 0 {
                            n.right.set(global.get(&m).as_ref());
                        }
                        if roots.len() == 64 {
                            roots.remove(0);
                        }
                        roots.push(n);
                    }
                    // Walk the chain that is still rooted.
                    let mut sum = 0;
                    let mut cur = roots.last().cloned();
                    while let Some(n) = cur {
                        sum += n.value.load(Ordering::Relaxed);
                        cur = n.left.get(&m);
                    }
                    println!(
                        "worker {t}: chain sum {sum}, {} collections so far",
                        heap.collections()
                    );
                    sum
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    assert_eq!(global.get(&m).unwrap().value.load(Ordering::Relaxed), 42);
    let st = heap.stats();
    println!(
        "{} collections; pause p50 {:.1} µs, max {:.1} µs; sums {sums:?}",
        st.collections,
        st.pause_ns.value_at_quantile(0.5) as f64 / 1e3,
        st.pause_ns.max() as f64 / 1e3
    );
}
