//! Weak references and finalizers: a cache of "files" whose entries are
//! weak, and a finalizer that "closes" each file once nothing uses it.
//!
//! Run with `cargo run -p pardon --example finalizers`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use pardon::{gc_object, Config, Heap, Mutator, Weak};

gc_object! {
    struct File {
        fd: AtomicI64,
    }
}

/// Opens `n` files on a thread of its own, keeps the first, and returns
/// weak references to all of them (the thread, and with it any stale copy
/// of an address on its stack, is gone when this returns).
fn open_files(
    heap: &Heap,
    n: i64,
    closed: Arc<Mutex<Vec<i64>>>,
) -> (Vec<Weak<File>>, pardon::Global<File>) {
    let heap = heap.clone();
    std::thread::spawn(move || {
        let m: Mutator = heap.attach().unwrap();
        let mut weaks = Vec::new();
        let mut first = None;
        for fd in 0..n {
            let f = m.alloc::<File>().unwrap();
            f.fd.store(100 + fd, Ordering::Relaxed);
            let closed = closed.clone();
            // The finalizer gets the file back, rooted, once it is garbage.
            m.set_finalizer(&f, move |_, f| {
                closed.lock().unwrap().push(f.fd.load(Ordering::Relaxed));
            });
            weaks.push(Weak::new(&f).unwrap());
            first.get_or_insert_with(|| pardon::Global::new(&f).unwrap());
        }
        (weaks, first.unwrap())
    })
    .join()
    .unwrap()
}

fn main() {
    let heap = Heap::new(Config {
        gc_percent: None,
        // Finalizers run where we call `run_finalizers`, for a
        // deterministic printout.
        finalizer_thread: false,
        ..Config::default()
    })
    .unwrap();
    let closed = Arc::new(Mutex::new(Vec::new()));
    let (weaks, kept) = open_files(&heap, 4, closed.clone());
    heap.collect().unwrap();
    let live: Vec<bool> = weaks.iter().map(|w| !w.is_cleared()).collect();
    println!("after a collection, live entries: {live:?}");
    let m = heap.attach().unwrap();
    let ran = m.run_finalizers();
    println!(
        "{ran} finalizers ran, closing fds {:?}",
        closed.lock().unwrap()
    );
    assert_eq!(live, [true, false, false, false]);
    assert_eq!(ran, 3);
    drop(kept);
    drop(m);
    heap.collect().unwrap();
    let m = heap.attach().unwrap();
    m.run_finalizers();
    println!(
        "after dropping the last one: closed {:?}",
        closed.lock().unwrap()
    );
    assert!(weaks.iter().all(|w| w.is_cleared()));
}
