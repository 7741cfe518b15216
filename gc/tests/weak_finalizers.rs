//! Weak references and finalizers: cleared exactly when their object dies,
//! run once, never inside a stop, in topological order, with resurrection;
//! under verify mode and on the generational heap. Objects are made on
//! threads that have ended before the collection that should find them
//! dead, so no stale copy of an address on a live stack (scanned
//! conservatively) keeps them alive; contents are checked through canaries
//! the test wrote itself.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use pardon::{gc_object, Config, Global, Heap, Member, Mutator, NotAnObject, Weak, WeakError};

gc_object! {
    struct Node {
        next: Member<Node>,
        value: AtomicI64,
    }
}

/// The three kinds of heap: plain, generational, concurrent.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Plain,
    Generational,
    Concurrent,
}

const KINDS: [Kind; 3] = [Kind::Plain, Kind::Generational, Kind::Concurrent];

fn heap_of(kind: Kind, finalizer_thread: bool) -> Heap {
    Heap::new(Config {
        arena_size: 1 << 30,
        gc_percent: None,
        verify: true,
        generational: kind == Kind::Generational,
        concurrent: kind == Kind::Concurrent,
        finalizer_thread,
        ..Config::default()
    })
    .unwrap()
}

fn heap_with(generational: bool, finalizer_thread: bool) -> Heap {
    let kind = if generational {
        Kind::Generational
    } else {
        Kind::Plain
    };
    heap_of(kind, finalizer_thread)
}

/// Runs `f` on a new attached thread, which ends before this returns.
fn on_thread<R: Send + 'static>(heap: &Heap, f: impl FnOnce(&Mutator) -> R + Send + 'static) -> R {
    let heap = heap.clone();
    std::thread::spawn(move || {
        let m = heap.attach().unwrap();
        f(&m)
    })
    .join()
    .unwrap()
}

/// A node with `value`, whose `next` is a node with `value + 1`.
fn pair<'m>(m: &'m Mutator, value: i64) -> pardon::Root<'m, Node> {
    let a = m.alloc::<Node>().unwrap();
    let b = m.alloc::<Node>().unwrap();
    a.value.store(value, Ordering::Relaxed);
    b.value.store(value + 1, Ordering::Relaxed);
    a.next.set(Some(&b));
    a
}

fn collect_full(heap: &Heap) {
    heap.collect().unwrap();
}

#[test]
fn weak_reads_while_reachable_and_clears_once_dead() {
    for kind in KINDS {
        let generational = kind;
        let heap = heap_of(kind, false);
        // One object kept by a global, one kept by nothing.
        let (kept, dead, global) = on_thread(&heap, |m| {
            let a = pair(m, 100);
            let b = pair(m, 200);
            (
                Weak::new(&a).unwrap(),
                Weak::new(&b).unwrap(),
                Global::new(&a).unwrap(),
            )
        });
        collect_full(&heap);
        let (kept_ok, dead_cleared) = on_thread(&heap, move |m| {
            let k = kept.get(m).map(|r| {
                let next = r.next.get(m).unwrap();
                (
                    r.value.load(Ordering::Relaxed),
                    next.value.load(Ordering::Relaxed),
                )
            });
            (k, dead.get(m).is_none() && dead.is_cleared())
        });
        assert_eq!(kept_ok, Some((100, 101)), "{generational:?}");
        assert!(
            dead_cleared,
            "{generational:?}: a dead object's weak was not cleared"
        );
        drop(global);
    }
}

#[test]
fn weak_to_an_old_object_clears_only_when_a_full_collection_frees_it() {
    let heap = heap_with(true, false);
    let (weak, global) = on_thread(&heap, |m| {
        let a = pair(m, 7);
        (Weak::new(&a).unwrap(), Global::new(&a).unwrap())
    });
    // Survives a collection: old now.
    collect_full(&heap);
    drop(global);
    // A minor collection keeps every old object, so the weak stays set and
    // the object readable.
    heap.collect_minor().unwrap();
    let weak = on_thread(&heap, move |m| {
        let r = weak
            .get(m)
            .expect("an old object survives a minor collection");
        assert_eq!(r.value.load(Ordering::Relaxed), 7);
        drop(r);
        weak
    });
    collect_full(&heap);
    assert!(
        weak.is_cleared(),
        "the full collection that frees it clears it"
    );
}

#[test]
fn weak_to_a_young_object_clears_in_a_minor_collection() {
    let heap = heap_with(true, false);
    let weak = on_thread(&heap, |m| Weak::new(&pair(m, 1)).unwrap());
    heap.collect_minor().unwrap();
    assert!(weak.is_cleared());
}

#[test]
fn clones_forgets_and_drops_in_any_order() {
    let heap = heap_with(false, false);
    let (w, g) = on_thread(&heap, |m| {
        let a = pair(m, 5);
        (Weak::new(&a).unwrap(), Global::new(&a).unwrap())
    });
    let w2 = w.clone();
    std::mem::forget(w.clone());
    assert!(format!("{w2:?}").starts_with("Weak(0x"));
    drop(w);
    collect_full(&heap);
    assert!(!w2.is_cleared());
    drop(g);
    collect_full(&heap);
    assert!(w2.is_cleared());
    assert_eq!(format!("{w2:?}"), "Weak(cleared)");
    let w3 = w2.clone();
    assert!(w3.is_cleared());
    // The slot freed by `w` is reused by a new weak, which reads its own
    // object.
    let w4 = on_thread(&heap, |m| {
        let a = pair(m, 9);
        let w = Weak::new(&a).unwrap();
        assert_eq!(w.get(m).unwrap().value.load(Ordering::Relaxed), 9);
        w
    });
    collect_full(&heap);
    assert!(w4.is_cleared());
}

#[test]
fn raw_weak_references_and_bad_addresses() {
    let heap = heap_with(false, false);
    let not_heap = &heap as *const Heap as usize;
    assert_eq!(
        heap.add_weak(not_heap),
        Err(WeakError::NotAnObject { addr: not_heap })
    );
    let id = on_thread(&heap, move |m| {
        let a = m.alloc::<Node>().unwrap();
        // An interior address works too.
        let id = m.heap().add_weak(a.addr() + 8).unwrap();
        assert_eq!(m.weak_get(&id), a.addr() + 8);
        let r = m.set_finalizer_raw(not_heap, |_, _| {});
        assert_eq!(r, Err(NotAnObject { addr: not_heap }));
        id
    });
    collect_full(&heap);
    assert_eq!(heap.weak_value(&id), 0);
    heap.remove_weak(id);
}

/// Finalizer thread: runs once, after the object died, off the stop, with
/// the object and what it references intact; a panicking finalizer does
/// not stop the thread.
#[test]
fn finalizers_run_once_on_the_finalizer_thread() {
    let heap = heap_with(false, true);
    let (tx, rx) = mpsc::channel::<(i64, i64, bool)>();
    let weak = on_thread(&heap, move |m| {
        let boom = pair(m, 0);
        m.set_finalizer(&boom, |_, _| panic!("a finalizer that panics"));
        let a = pair(m, 40);
        m.set_finalizer(&a, move |m, r| {
            let next = r.next.get(m).unwrap();
            let in_stop = m.heap().registry().world_held_by_me();
            tx.send((
                r.value.load(Ordering::Relaxed),
                next.value.load(Ordering::Relaxed),
                in_stop,
            ))
            .unwrap();
        });
        Weak::new(&a).unwrap()
    });
    collect_full(&heap);
    assert!(
        weak.is_cleared(),
        "weak references clear when the finalizer is queued"
    );
    // Liveness only: the finalizer thread wakes once notified.
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the finalizer ran");
    assert_eq!(got, (40, 41, false));
    // Never again, whatever collections follow.
    for _ in 0..3 {
        collect_full(&heap);
    }
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    assert_eq!(on_thread(&heap, |m| m.pending_finalizers()), 0);
}

/// `a -> b`, both finalizable: `b`'s finalizer waits until `a` is gone;
/// what a queued object references survives collections until its
/// finalizer runs.
#[test]
fn finalizers_run_in_topological_order() {
    for kind in KINDS {
        let generational = kind;
        let heap = heap_of(kind, false);
        let order = Arc::new(Mutex::new(Vec::new()));
        let o = order.clone();
        on_thread(&heap, move |m| {
            let a = pair(m, 10);
            let b = a.next.get(m).unwrap();
            let oa = o.clone();
            m.set_finalizer(&a, move |m, r| {
                let b = r.next.get(m).unwrap();
                oa.lock().unwrap().push((
                    10,
                    r.value.load(Ordering::Relaxed),
                    b.value.load(Ordering::Relaxed),
                ));
            });
            m.set_finalizer(&b, move |_, r| {
                o.lock()
                    .unwrap()
                    .push((11, r.value.load(Ordering::Relaxed), 0));
            });
        });
        // Several collections between queueing and running: the queued
        // object and what it references stay intact meanwhile (verify mode
        // poisons freed slots).
        for _ in 0..3 {
            collect_full(&heap);
        }
        let ran = on_thread(&heap, |m| m.run_finalizers());
        assert_eq!(ran, 1, "{generational:?}: only the referrer's finalizer");
        assert_eq!(*order.lock().unwrap(), vec![(10, 10, 11)]);
        collect_full(&heap);
        let ran = on_thread(&heap, |m| m.run_finalizers());
        assert_eq!(ran, 1, "{generational:?}");
        assert_eq!(*order.lock().unwrap(), vec![(10, 10, 11), (11, 11, 0)]);
        assert_eq!(on_thread(&heap, |m| m.pending_finalizers()), 0);
    }
}

/// A finalizer that stores its object: it lives on as an ordinary object,
/// its weak references stay cleared, its finalizer does not run again, and
/// once dropped it is freed.
#[test]
fn resurrection() {
    for kind in [Kind::Plain, Kind::Concurrent] {
        resurrection_on(heap_of(kind, false));
    }
}

fn resurrection_on(heap: Heap) {
    let runs = Arc::new(AtomicUsize::new(0));
    let keep: Arc<Mutex<Option<Global<Node>>>> = Arc::new(Mutex::new(None));
    let (r2, k2) = (runs.clone(), keep.clone());
    let weak = on_thread(&heap, move |m| {
        let a = pair(m, 70);
        m.set_finalizer(&a, move |_, r| {
            r2.fetch_add(1, Ordering::SeqCst);
            *k2.lock().unwrap() = Some(Global::new(&r).unwrap());
        });
        Weak::new(&a).unwrap()
    });
    collect_full(&heap);
    assert!(weak.is_cleared());
    assert_eq!(on_thread(&heap, |m| m.run_finalizers()), 1);
    for _ in 0..3 {
        collect_full(&heap);
    }
    assert_eq!(on_thread(&heap, |m| m.run_finalizers()), 0);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let g = Arc::new(keep.lock().unwrap().take().unwrap());
    let g2 = g.clone();
    let (v, fresh) = on_thread(&heap, move |m| {
        let r = g2.get(m).unwrap();
        let next = r.next.get(m).unwrap();
        let v = (
            r.value.load(Ordering::Relaxed),
            next.value.load(Ordering::Relaxed),
        );
        (v, Weak::new(&r).unwrap())
    });
    assert_eq!(
        v,
        (70, 71),
        "the resurrected object and its child are intact"
    );
    assert!(weak.is_cleared(), "its old weak references stay cleared");
    assert!(!fresh.is_cleared());
    drop(g);
    collect_full(&heap);
    assert!(fresh.is_cleared(), "dropped again, it is freed");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Many threads register finalizers and weak references and drop their
/// objects while others collect back to back (verify mode checks every
/// mark, and that no weak reference outlives its object): every finalizer
/// runs exactly once and reads its canary.
#[test]
fn concurrent_registration_and_collection() {
    for kind in [Kind::Plain, Kind::Concurrent] {
        registration_and_collection_on(heap_of(kind, false));
    }
}

fn registration_and_collection_on(heap: Heap) {
    let ran = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    const THREADS: usize = 3;
    const PER: usize = 300;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (heap, done) = (heap.clone(), done.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !done.load(Ordering::SeqCst) || n < 10 {
                heap.collect().unwrap();
                n += 1;
            }
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (heap, ran, bad) = (heap.clone(), ran.clone(), bad.clone());
            std::thread::spawn(move || {
                let m = heap.attach().unwrap();
                let mut weaks = Vec::new();
                for i in 0..PER {
                    let v = (t * PER + i) as i64 * 2;
                    let a = pair(&m, v);
                    let (ran, bad2) = (ran.clone(), bad.clone());
                    m.set_finalizer(&a, move |m, r| {
                        let next = r.next.get(m).unwrap();
                        if r.value.load(Ordering::Relaxed) != v
                            || next.value.load(Ordering::Relaxed) != v + 1
                        {
                            bad2.fetch_add(1, Ordering::SeqCst);
                        }
                        ran.fetch_add(1, Ordering::SeqCst);
                    });
                    weaks.push((Weak::new(&a).unwrap(), v));
                    // Read some weak references back while collections run.
                    for (w, v) in weaks.iter().rev().take(4) {
                        if let Some(r) = w.get(&m) {
                            if r.value.load(Ordering::Relaxed) != *v {
                                bad.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    m.run_finalizers();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    collector.join().unwrap();
    // Everything is dead now; two collections queue what is left.
    for _ in 0..2 {
        collect_full(&heap);
    }
    on_thread(&heap, |m| m.run_finalizers());
    // Every object is freed now: verification checks no weak reference
    // names one.
    collect_full(&heap);
    assert_eq!(bad.load(Ordering::SeqCst), 0);
    assert_eq!(ran.load(Ordering::SeqCst), THREADS * PER);
}
