//! A thread stopped inside `malloc` may hold the allocator's lock for as
//! long as the world stays stopped. So code that runs in a no-preempt
//! region — where a stop waits for the thread to leave — must never call
//! the system allocator: a thread that blocked there on that lock would
//! hold the stop off until `stop_timeout`, and the collection would be
//! abandoned (or, with the default timeout, hang for 30 s).
//!
//! This binary's global allocator emulates such a lock
//! (`pardon_preempt::testing`): while it is "held", every allocation or
//! free by a thread marked as a victim waits.
//! One attached thread "holds" it (takes it, then spins in a call-free
//! loop, where the stop parks it); a victim thread then calls a heap
//! operation that allocates; a collection must still complete, whether
//! the victim waits outside any region (it is then stopped like any thread)
//! or does not allocate at all.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use pardon::{gc_object, Config, Heap, Member, Mutator, Weak};
use pardon_preempt::testing::{self as gate, Gate};

#[global_allocator]
static GATE: Gate = Gate;

gc_object! {
    struct Node {
        next: Member<Node>,
    }
}

fn heap(concurrent: bool) -> Heap {
    Heap::new(Config {
        arena_size: 1 << 30,
        gc_percent: None,
        concurrent,
        // Long enough for a loaded machine, short enough for a test: a
        // victim blocked in a region makes the stop fail after this.
        stop_timeout: Duration::from_secs(5),
        ..Config::default()
    })
    .unwrap()
}

/// From here on, the calling thread's allocations wait while the lock is
/// "held".
fn arm() {
    gate::arm();
}

/// How the lock is "held" (see [`stops_while_held`]).
#[derive(Clone, Copy, PartialEq)]
enum Hold {
    /// From before the victim runs until the stops are over: the stops
    /// start once the victim waits for the allocator, so one of them
    /// catches the holder holding it and the victim waiting for it.
    UntilStopped,
    /// In bursts of 20 ms, 5 ms apart, while stops come every millisecond
    /// and collections run back to back: for what allocates only now and
    /// then, at moments the test cannot choose.
    Bursts,
}

/// Runs `victim` on an attached thread while another attached thread
/// "holds the allocator's lock" (see [`Hold`]) and the world is stopped
/// and restarted: a stop that parks the holder while it holds the lock
/// keeps it held until the world restarts, as a thread stopped inside
/// `malloc` would. `victim` calls [`arm`] once it has made what it needs,
/// then does what must not allocate inside a region. Returns the first
/// error of a stop or a collection, if any, and how many times the victim
/// waited for the lock.
fn stops_while_held(
    heap: &Heap,
    hold: Hold,
    victim: impl FnOnce(&Mutator) + Send,
) -> (Result<(), String>, usize) {
    // The lock and the counter are the process's: one test at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    gate::reset();
    let done = AtomicBool::new(false);
    let released = AtomicBool::new(false);
    let holding = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _m = heap.attach().unwrap();
            while !released.load(SeqCst) {
                gate::hold(true);
                holding.store(true, SeqCst);
                // Stopped by the signal anywhere in here, "holding" it.
                let t0 = Instant::now();
                while !released.load(SeqCst)
                    && (hold == Hold::UntilStopped || t0.elapsed() < Duration::from_millis(20))
                {
                    std::hint::spin_loop();
                }
                gate::hold(false);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        while !holding.load(SeqCst) {
            std::thread::yield_now();
        }
        let v = s.spawn(|| {
            let m = heap.attach().unwrap();
            victim(&m);
            gate::disarm();
        });
        let r = match hold {
            Hold::UntilStopped => {
                let t0 = Instant::now();
                while gate::waits() == 0 && !v.is_finished() {
                    assert!(t0.elapsed() < Duration::from_secs(60), "the victim hung");
                    std::thread::yield_now();
                }
                // The victim waits for the lock (or never needed it): a
                // stop now must still complete.
                let r = heap
                    .registry()
                    .stop_the_world()
                    .map(drop)
                    .map_err(|e| format!("a stop failed: {e}"));
                released.store(true, SeqCst);
                r
            }
            Hold::Bursts => {
                let collector = s.spawn(|| {
                    while !done.load(SeqCst) {
                        heap.collect()
                            .map_err(|e| format!("a collection failed: {e}"))?;
                    }
                    Ok::<(), String>(())
                });
                let mut r = Ok(());
                while r.is_ok() && !v.is_finished() {
                    r = heap
                        .registry()
                        .stop_the_world()
                        .map(drop)
                        .map_err(|e| format!("a stop failed: {e}"));
                    std::thread::sleep(Duration::from_millis(1));
                }
                done.store(true, SeqCst);
                released.store(true, SeqCst);
                r.and(collector.join().unwrap())
            }
        };
        v.join().unwrap();
        (r, gate::waits())
    })
}

#[test]
fn registering_a_finalizer_does_not_allocate_inside_a_region() {
    for concurrent in [false, true] {
        let h = heap(concurrent);
        let (r, waited) = stops_while_held(&h, Hold::UntilStopped, |m| {
            let objs: Vec<_> = (0..20).map(|_| m.alloc::<Node>().unwrap().addr()).collect();
            arm();
            // A capture-free closure is boxed without allocating; what the
            // registration allocates (its box, the table's growth) must be
            // done before its region.
            for &o in &objs {
                m.set_finalizer_raw(o, |_, _| {}).unwrap();
            }
        });
        assert!(r.is_ok(), "concurrent={concurrent}: {}", r.unwrap_err());
        assert!(waited > 0, "the victim never met the held lock");
    }
}

#[test]
fn cloning_a_weak_reference_does_not_allocate_inside_a_region() {
    let h = heap(false);
    let (r, waited) = stops_while_held(&h, Hold::UntilStopped, |m| {
        let obj = m.alloc::<Node>().unwrap();
        let w = Weak::new(&obj).unwrap();
        let mut clones = std::mem::ManuallyDrop::new(Vec::with_capacity(20_000));
        arm();
        // A new chunk of the weak table every 256 clones.
        for _ in 0..20_000 {
            clones.push(w.clone());
        }
    });
    assert!(r.is_ok(), "{}", r.unwrap_err());
    assert!(waited > 0, "the victim never met the held lock");
}

#[test]
fn the_barrier_and_new_spans_do_not_allocate_inside_a_region() {
    // While a concurrent cycle marks, every store into a live object shades
    // the reference it overwrites (the deletion barrier), and a cache that
    // takes a span records it: neither may grow a vector in its region.
    let h = heap(true);
    let (r, _) = stops_while_held(&h, Hold::Bursts, |m| {
        // A list long enough that marking it takes a while, reachable only
        // through `keep`: the marker goes from the head, the stores below
        // work near the tail, where nodes are still unmarked.
        const N: usize = 100_000;
        let keep = m.alloc::<Node>().unwrap();
        let mut addrs = Vec::with_capacity(N);
        let mut prev = m.alloc::<Node>().unwrap();
        keep.next.set(Some(&prev));
        addrs.push(prev.addr());
        for _ in 1..N {
            let n = m.alloc::<Node>().unwrap();
            prev.next.set(Some(&n));
            addrs.push(n.addr());
            prev = n;
        }
        drop(prev);
        arm();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            for k in N - 2000..N - 1 {
                // Stores each tail node's own successor again: the list is
                // unchanged, and the successor, replaced, is shaded if the
                // marker has not reached it.
                // SAFETY: both are nodes of the list `keep` holds, and word
                // 0 of a Node is its `next` reference.
                unsafe { m.store_word(addrs[k], 0, addrs[k + 1]).unwrap() };
            }
            // Fresh spans taken while marking are recorded (16-byte nodes:
            // a new span every 512).
            for _ in 0..64 {
                std::hint::black_box(m.alloc::<Node>().unwrap());
            }
        }
        drop(keep);
    });
    assert!(r.is_ok(), "{}", r.unwrap_err());
    assert_eq!(h.stats().abandoned, 0);
}

#[test]
fn running_finalizers_does_not_allocate_inside_a_region() {
    let h = Heap::new(Config {
        arena_size: 1 << 30,
        gc_percent: None,
        finalizer_thread: false,
        stop_timeout: Duration::from_secs(5),
        ..Config::default()
    })
    .unwrap();
    // Objects with finalizers, made and dropped on a thread that has ended,
    // so the collection finds them dead and queues their finalizers.
    let hc = h.clone();
    std::thread::spawn(move || {
        let m = hc.attach().unwrap();
        let ty = hc
            .register_type(&pardon::TypeDesc {
                name: "leaf",
                size: 16,
                align: 8,
                pointer_words: &[],
            })
            .unwrap();
        for _ in 0..4 {
            let a = m.alloc_raw(ty).unwrap();
            m.set_finalizer_raw(a, |_, _| {}).unwrap();
        }
    })
    .join()
    .unwrap();
    h.collect().unwrap();
    let ran = AtomicUsize::new(0);
    let (r, waited) = stops_while_held(&h, Hold::UntilStopped, |m| {
        // A fresh thread's handle table is empty: rooting the first queued
        // object takes a chunk of handles, which must be allocated before
        // the region that takes the entry and roots it.
        arm();
        ran.store(m.run_finalizers(), SeqCst);
    });
    assert!(r.is_ok(), "{}", r.unwrap_err());
    assert!(waited > 0, "the victim never met the held lock");
    assert_eq!(ran.load(SeqCst), 4);
}
