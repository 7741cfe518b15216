//! The holes found by using the safe API as a newcomer and an adversary
//! would (issue 17), each as the program that found it. Every test checks
//! object contents through canaries the test wrote itself, not only the
//! collector's own verification, so it does not depend on the code under
//! test to notice its own mistake.

use std::sync::atomic::{AtomicI64, Ordering};

use pardon::{gc_object, Config, Heap, Member, Mutator, Type, TypeDesc};

fn verify_heap() -> Heap {
    Heap::new(Config {
        arena_size: 4 << 30,
        gc_percent: None,
        verify: true,
        ..Config::default()
    })
    .unwrap()
}

/// A raw node of `size` bytes: word 0 a canary, word 1 the next node.
fn node_type(heap: &Heap, size: usize) -> Type {
    heap.register_type(&TypeDesc {
        name: "node",
        size,
        align: 8,
        pointer_words: &[1],
    })
    .unwrap()
}

const CANARY: i64 = 0x5a5a_0000;

/// Builds a chain of `n` nodes reachable only from a global root, in a
/// frame that is gone by the time the caller collects.
#[inline(never)]
fn build_chain(m: &Mutator, ty: Type, n: usize) -> pardon::GlobalRootId {
    let mut next = 0usize;
    for i in (0..n).rev() {
        let a = m.alloc_raw(ty).unwrap();
        // SAFETY: a fresh object of `ty`: word 0 data, word 1 a reference.
        unsafe {
            *(a as *mut i64) = CANARY + i as i64;
            *(a as *mut usize).add(1) = next;
        }
        next = a;
    }
    m.heap().add_root(next).unwrap()
}

/// Allocates garbage that reuses every freed slot of `ty`'s class.
#[inline(never)]
fn churn(m: &Mutator, ty: Type, n: usize) {
    for _ in 0..n {
        let a = m.alloc_raw(ty).unwrap();
        std::hint::black_box(a);
    }
}

fn walk_chain(heap: &Heap, root: &pardon::GlobalRootId, n: usize) {
    let mut p = heap.root_value(root);
    for i in 0..n {
        assert_ne!(p, 0, "chain cut at node {i}");
        assert_eq!(
            heap.raw().find_object(p),
            Some(p),
            "node {i} at {p:#x} was freed while reachable"
        );
        // SAFETY: `p` is an allocated node (checked above).
        let (c, next) = unsafe { (*(p as *const i64), *(p as *const usize).add(1)) };
        assert_eq!(c, CANARY + i as i64, "node {i} at {p:#x} was reused");
        p = next;
    }
}

/// Hole 1: the inlined fast path lost the reference bits of 24-, 40- and
/// 48-byte objects whose slot straddles a 512-byte boundary.
#[test]
fn chains_of_small_raw_objects_survive_in_every_size() {
    for size in (16..=64).step_by(8) {
        let heap = Heap::new(Config {
            gc_percent: None,
            ..Config::default()
        })
        .unwrap();
        let m = heap.attach().unwrap();
        let ty = node_type(&heap, size);
        let n = 200;
        let root = build_chain(&m, ty, n);
        m.collect().unwrap();
        churn(&m, ty, 2000);
        walk_chain(&heap, &root, n);
    }
}

gc_object! {
    struct Node {
        val: AtomicI64,
        next: Member<Node>,
        check: AtomicI64,
    }
}

/// Hole 1 through the typed API, caught by verify mode's layout oracle too.
#[test]
fn typed_chains_survive_and_verify_checks_their_layout() {
    let heap = verify_heap();
    let m = heap.attach().unwrap();
    let head = m.alloc::<Node>().unwrap();
    let global = pardon::Global::new(&head).unwrap();
    drop(head);
    #[inline(never)]
    fn build(m: &Mutator, head: &pardon::Global<Node>) {
        let mut cur = head.get(m).unwrap();
        for i in 1..200 {
            let n = m.alloc::<Node>().unwrap();
            n.val.store(i, Ordering::Relaxed);
            n.check.store(-i, Ordering::Relaxed);
            cur.next.set(Some(&n));
            cur = n;
        }
    }
    build(&m, &global);
    for _ in 0..3 {
        let st = m.collect().unwrap();
        assert!(st.verified);
        for _ in 0..5000 {
            std::hint::black_box(m.alloc::<Node>().unwrap());
        }
    }
    let mut cur = global.get(&m).unwrap();
    for i in 1..200 {
        cur = cur.next.get(&m).expect("chain cut");
        assert_eq!(cur.val.load(Ordering::Relaxed), i);
        assert_eq!(cur.check.load(Ordering::Relaxed), -i);
    }
}

/// Hole 6: bad input is an error that names the problem.
#[test]
fn bad_types_and_configs_are_errors() {
    let heap = Heap::new(Config::default()).unwrap();
    for w in [usize::MAX / 8, usize::MAX, 3] {
        let e = heap
            .register_type(&TypeDesc {
                name: "bad",
                size: 24,
                align: 8,
                pointer_words: &[w],
            })
            .unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
    }
    let e = Heap::new(Config {
        gray_capacity: (1 << 61) - 1,
        ..Config::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("gray_capacity"), "{e}");
}

/// A thread that collects over and over until told to stop, to overlap
/// whatever the test's other thread does.
struct Collector {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Collector {
    fn start(heap: &Heap) -> Collector {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, s) = (heap.clone(), stop.clone());
        let thread = Some(std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::Relaxed) {
                h.collect().unwrap();
                n += 1;
            }
            n
        }));
        Collector { stop, thread }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Hole 2: a leaked `Mutator` whose thread exits kept its cache's spans off
/// the sweep lists with their mark bits set, so the next mark skipped their
/// objects' fields and freed the children.
#[test]
fn a_leaked_mutator_costs_memory_not_live_objects() {
    let heap = verify_heap();
    let parents = std::thread::spawn({
        let heap = heap.clone();
        move || {
            let m = heap.attach().unwrap();
            let mut roots = Vec::new();
            for _ in 0..100 {
                let p = m.alloc::<Node>().unwrap();
                roots.push(pardon::Global::new(&p).unwrap());
            }
            std::mem::forget(m);
            roots
        }
    })
    .join()
    .unwrap();
    let m = heap.attach().unwrap();
    for round in 0..4 {
        m.collect().unwrap();
        // Children allocated here, in this thread's spans, reachable only
        // through the parents (which sit in the leaked cache's spans).
        for (i, g) in parents.iter().enumerate() {
            let p = g.get(&m).unwrap();
            let c = m.alloc::<Node>().unwrap();
            c.val.store((round * 1000 + i) as i64, Ordering::Relaxed);
            p.next.set(Some(&c));
        }
        m.collect().unwrap();
        for _ in 0..20_000 {
            std::hint::black_box(m.alloc::<Node>().unwrap());
        }
        m.collect().unwrap();
        for (i, g) in parents.iter().enumerate() {
            let c = g.get(&m).unwrap().next.get(&m).unwrap();
            assert_eq!(c.val.load(Ordering::Relaxed), (round * 1000 + i) as i64);
        }
    }
}

/// Allocates linked nodes with canaries while other threads collect, then
/// checks every kept node and link.
fn churn_and_check(m: &Mutator) {
    let mut keep = Vec::new();
    for i in 0..20_000i64 {
        let n = m.alloc::<Node>().unwrap();
        n.val.store(i, Ordering::Relaxed);
        if let Some(prev) = keep.last() {
            n.next.set(Some(prev));
        }
        if i % 10 == 0 {
            keep.push(n);
        }
    }
    for (j, n) in keep.iter().enumerate() {
        assert_eq!(n.val.load(Ordering::Relaxed), j as i64 * 10);
        if j > 0 {
            let prev = n.next.get(m).unwrap();
            assert_eq!(prev.val.load(Ordering::Relaxed), (j as i64 - 1) * 10);
        }
    }
}

/// Hole 3: allocation inside `Mutator::blocking` ran while the thread
/// counted as stopped, under the collector's feet. It now leaves the safe
/// region for each call; so does a leaked safe-region guard.
#[test]
fn allocating_inside_a_safe_region_is_sound() {
    let heap = verify_heap();
    let collector = Collector::start(&heap);
    let m = heap.attach().unwrap();
    for _ in 0..3 {
        m.blocking(|| churn_and_check(&m));
    }
    // A leaked guard: the thread stays in the safe region for good.
    std::mem::forget(m.attached().enter_safe_region());
    churn_and_check(&m);
    m.collect().unwrap();
    churn_and_check(&m);
    // How many collections overlapped depends on the scheduler: not asserted.
    collector.finish();
}

/// Hole 2, its other face: a `Mutator` in a thread-local whose destructor
/// runs after pardon's thread-exit guard has detached the thread. Its
/// record used to be freed under it; now it is kept, and the mutator goes
/// on working while other threads collect: its roots scanned, its cache
/// flushed by every collection, and what it roots rooted atomically with
/// finding it (its stack is no longer scanned).
#[test]
fn a_mutator_outliving_its_threads_attachment_keeps_working() {
    use std::cell::RefCell;
    static DETACHED_PATH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    struct Holder(RefCell<Option<Mutator>>);
    impl Drop for Holder {
        fn drop(&mut self) {
            let Some(m) = self.0.borrow_mut().take() else {
                return;
            };
            DETACHED_PATH.store(!m.attached().is_attached(), Ordering::SeqCst);
            churn_and_check(&m);
            m.collect().unwrap();
            churn_and_check(&m);
        }
    }
    thread_local! {
        static HOLDER: Holder = const { Holder(RefCell::new(None)) };
    }
    let heap = verify_heap();
    let collector = Collector::start(&heap);
    let h = heap.clone();
    std::thread::spawn(move || {
        // Registered before pardon's exit guard, so (thread-local
        // destructors run in reverse order of registration) dropped after it.
        HOLDER.with(|_| {});
        let m = h.attach().unwrap();
        HOLDER.with(|hd| *hd.0.borrow_mut() = Some(m));
    })
    .join()
    .unwrap();
    collector.finish();
    assert!(
        DETACHED_PATH.load(Ordering::SeqCst),
        "the holder's destructor ran before the exit guard: the test did not reach its case"
    );
    heap.collect().unwrap();
}

/// Hole 4: the word a coordinator reads a thread's heap state from cannot
/// be set by safe code; a thread attached through the registry directly
/// (no `Mutator`) simply has none, and collections go on around it.
#[test]
fn threads_attached_without_a_mutator_have_no_heap_state() {
    let heap = verify_heap();
    let h = heap.clone();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let a = h.registry().attach().unwrap();
        assert_eq!(a.context(), 0);
        ready_tx.send(()).unwrap();
        a.safe_region(|| rx.recv().unwrap());
    });
    ready_rx.recv().unwrap();
    let m = heap.attach().unwrap();
    let n = m.alloc::<Node>().unwrap();
    n.val.store(7, Ordering::Relaxed);
    for _ in 0..5 {
        m.collect().unwrap();
    }
    assert_eq!(n.val.load(Ordering::Relaxed), 7);
    tx.send(()).unwrap();
    t.join().unwrap();
}

/// Hole 10: a polls-only heap with a thread that never polls. Paced
/// collections cannot stop it: each is abandoned (counted, traced), the
/// pacer backs off instead of retrying on every allocation, and an
/// allocation that finds the heap full says why it could not collect.
#[test]
fn abandoned_collections_are_reported_and_paced() {
    let heap = Heap::new(Config {
        preemption: pardon::Preemption::Poll,
        stop_timeout: std::time::Duration::from_millis(100),
        min_heap: 1 << 20,
        heap_limit: 32 << 20,
        ..Config::default()
    })
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t = {
        let (h, s, r) = (heap.clone(), stop.clone(), ready.clone());
        std::thread::spawn(move || {
            let _m = h.attach().unwrap();
            r.store(true, Ordering::SeqCst);
            // Never polls.
            while !s.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    };
    while !ready.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let m = heap.attach().unwrap();
    let ty = node_type(&heap, 64);
    let mut n = 0usize;
    let err = loop {
        match m.alloc_raw(ty) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    let st = heap.stats();
    // 32 MiB of 64-byte objects with a 1 MiB first budget that doubles:
    // about six paced attempts, and one before reporting exhaustion.
    assert!(
        (2..=12).contains(&st.abandoned),
        "{} abandoned collections",
        st.abandoned
    );
    assert_eq!(st.collections, 0);
    assert!(n > 100_000, "only {n} allocations before the error");
    match &err {
        pardon::AllocError::CollectionAbandoned { reason, .. } => {
            assert!(reason.contains("timed out"), "{reason}")
        }
        e => panic!("expected an abandoned collection, got {e}"),
    }
    assert!(err.to_string().contains("abandoned"), "{err}");
}

/// Audit: a `Global` of one heap read with a mutator of another is
/// refused with a message (the root would be in the wrong heap's table).
/// A `Member` can only be reached through a root of its own heap, and each
/// thread has one attachment, so `Member::get`/`set` across heaps needs a
/// mutator kept past its thread's detachment; they assert it all the same.
#[test]
fn a_global_read_with_another_heaps_mutator_is_refused() {
    let c = verify_heap();
    let g = std::thread::scope(|s| {
        s.spawn(|| {
            let mc = c.attach().unwrap();
            let o = mc.alloc::<Node>().unwrap();
            o.val.store(5, Ordering::Relaxed);
            pardon::Global::new(&o).unwrap()
        })
        .join()
        .unwrap()
    });
    let a = verify_heap();
    let ma = a.attach().unwrap();
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(g.get(&ma).unwrap());
    }))
    .unwrap_err();
    let msg = e.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(msg.contains("another heap"), "{msg}");
    // Both heaps are intact.
    a.collect().unwrap();
    c.collect().unwrap();
    drop(ma);
    let mc = c.attach().unwrap();
    assert_eq!(g.get(&mc).unwrap().val.load(Ordering::Relaxed), 5);
}

/// Audit: stopping the world, or collecting, on a thread that already
/// holds that heap's stopped world is an error, not a deadlock.
#[test]
fn collecting_while_holding_the_stopped_world_is_an_error() {
    let heap = verify_heap();
    let m = heap.attach().unwrap();
    let keep = m.alloc::<Node>().unwrap();
    keep.val.store(9, Ordering::Relaxed);
    let w = heap.registry().stop_the_world().unwrap();
    for e in [m.collect().unwrap_err(), heap.collect().unwrap_err()] {
        assert!(
            matches!(
                e,
                pardon::CollectError::Stop(pardon::preempt::StopError::Reentrant)
            ),
            "{e}"
        );
    }
    assert!(heap.registry().stop_the_world().is_err());
    // Allocation still works (its paced collection would be refused).
    let n = m.alloc::<Node>().unwrap();
    drop(w);
    drop(n);
    m.collect().unwrap();
    assert_eq!(keep.val.load(Ordering::Relaxed), 9);
}

/// Audit: leaking a `Root`, a `Global` or a no-preempt guard costs memory or
/// liveness, never an object. A leaked no-preempt guard keeps its thread
/// from ever stopping: collections then fail with a report naming it.
#[test]
fn leaked_roots_and_guards_cost_memory_or_liveness_only() {
    let heap = Heap::new(Config {
        verify: true,
        gc_percent: None,
        stop_timeout: std::time::Duration::from_millis(200),
        ..Config::default()
    })
    .unwrap();
    let m = heap.attach().unwrap();
    let r = m.alloc::<Node>().unwrap();
    r.val.store(1, Ordering::Relaxed);
    let addr = r.addr();
    std::mem::forget(r);
    let g = m.alloc::<Node>().unwrap();
    g.val.store(2, Ordering::Relaxed);
    let gaddr = g.addr();
    std::mem::forget(pardon::Global::new(&g).unwrap());
    drop(g);
    for _ in 0..3 {
        m.collect().unwrap();
        churn(&m, node_type(&heap, 24), 5000);
    }
    assert_eq!(heap.raw().find_object(addr), Some(addr));
    assert_eq!(heap.raw().find_object(gaddr), Some(gaddr));
    // SAFETY: both objects are allocated (checked above) Nodes.
    unsafe {
        assert_eq!((*(addr as *const Node)).val.load(Ordering::Relaxed), 1);
        assert_eq!((*(gaddr as *const Node)).val.load(Ordering::Relaxed), 2);
    }
    // A thread that leaks a no-preempt guard never stops again.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let h = heap.clone();
    let t = std::thread::spawn(move || {
        let m = h.attach().unwrap();
        std::mem::forget(m.attached().no_preempt());
        tx.send(()).unwrap();
        done_rx.recv().unwrap();
    });
    rx.recv().unwrap();
    let e = m.collect().unwrap_err();
    assert!(e.to_string().contains("no_preempt=1"), "{e}");
    done_tx.send(()).unwrap();
    t.join().unwrap();
    // Its thread exited (detached at exit): collections work again.
    m.collect().unwrap();
}

/// Audit: handles dropped in any order, the heap's last handle dropped
/// before its mutators and globals, attaching twice.
#[test]
fn drop_order_and_double_attach() {
    let heap = verify_heap();
    let m = heap.attach().unwrap();
    assert!(heap.attach().is_err(), "a thread attaches once");
    assert!(verify_heap().attach().is_err(), "to one heap at a time");
    let a = m.alloc::<Node>().unwrap();
    let b = m.alloc::<Node>().unwrap();
    let c = m.alloc::<Node>().unwrap();
    a.next.set(Some(&b));
    let g = pardon::Global::new(&a).unwrap();
    drop(heap);
    drop(b);
    m.collect().unwrap();
    drop(a);
    drop(c);
    m.collect().unwrap();
    assert!(g.get(&m).unwrap().next.get(&m).is_some());
    drop(m);
    drop(g);
}

/// Audit: a panic inside `blocking` leaves the safe region on the way out;
/// the thread goes on, and collections from elsewhere are unaffected.
#[test]
fn a_panic_inside_blocking_leaves_the_safe_region() {
    let heap = verify_heap();
    let collector = Collector::start(&heap);
    let m = heap.attach().unwrap();
    for _ in 0..20 {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            m.blocking(|| {
                let n = m.alloc::<Node>().unwrap();
                n.val.store(3, Ordering::Relaxed);
                panic!("inside blocking");
            })
        }));
        assert!(r.is_err());
        assert!(m.attached().is_running());
        churn_and_check(&m);
    }
    collector.finish();
}

/// Audit: attaching, or dropping a mutator, on a thread that holds the
/// stopped world: an error and a deferred detach, not a self-deadlock.
#[test]
fn attach_and_detach_while_holding_the_stopped_world() {
    let heap = verify_heap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let w = heap.registry().stop_the_world().unwrap();
            let e = heap.attach().unwrap_err();
            assert!(matches!(e, pardon::preempt::AttachError::WorldHeld), "{e}");
            drop(w);
            let m = heap.attach().unwrap();
            let n = m.alloc::<Node>().unwrap();
            n.val.store(4, Ordering::Relaxed);
            let g = pardon::Global::new(&n).unwrap();
            drop(n);
            let w = heap.registry().stop_the_world().unwrap();
            drop(m); // detaches while holding the world
            drop(w); // the restart prunes the record
            assert!(!pardon::preempt::is_attached());
            let m = heap.attach().unwrap();
            m.collect().unwrap();
            assert_eq!(g.get(&m).unwrap().val.load(Ordering::Relaxed), 4);
        });
    });
    assert_eq!(heap.registry().thread_count(), 0);
}

/// A full global-root table is a typed error that says so (it was a
/// `String`), and removing a root makes room again.
#[test]
fn a_full_root_table_is_a_typed_error() {
    let heap = Heap::new(Config::default()).unwrap();
    let mut ids = Vec::new();
    let err = loop {
        match heap.add_root(0) {
            Ok(id) => ids.push(id),
            Err(e) => break e,
        }
        assert!(ids.len() <= 1 << 24, "the table never filled");
    };
    assert_eq!(err.capacity, ids.len());
    assert!(err.to_string().contains("full"), "{err}");
    heap.remove_root(ids.pop().unwrap());
    assert!(heap.add_root(0).is_ok());
}

/// Audit: a raw global root or weak reference id of one heap, used with
/// another, is refused with a message. Slots are numbered per heap, so
/// the other heap's `remove_root` freed the slot of one of its own
/// `Global`s: the object was unrooted while the `Global` still named it
/// (reproduced: `get` found it gone), and the next `Global` made would
/// have shared the slot and read its object as the first one's type. The
/// ids own their slots (neither `Clone` nor `Copy`), so removing one twice
/// does not compile (the doctests of `GlobalRootId` and `WeakId`).
#[test]
fn raw_ids_of_another_heap_are_refused() {
    let other = verify_heap();
    let foreign_root = other.add_root(0).unwrap();
    let foreign_weak = {
        let mo = other.attach().unwrap();
        let o = mo.alloc::<Node>().unwrap();
        let id = other.add_weak(o.addr()).unwrap();
        drop(o);
        id
    };
    let heap = verify_heap();
    let m = heap.attach().unwrap();
    let o = m.alloc::<Node>().unwrap();
    o.val.store(7, Ordering::Relaxed);
    let global = pardon::Global::new(&o).unwrap();
    let weak = pardon::Weak::new(&o).unwrap();
    drop(o);
    let refused = |f: &dyn Fn()| {
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_err();
        let msg = e.downcast_ref::<&str>().copied().unwrap_or_default();
        assert!(msg.contains("another heap"), "{msg}");
    };
    refused(&|| heap.set_root(&foreign_root, 0));
    refused(&|| {
        heap.root_value(&foreign_root);
    });
    refused(&|| {
        heap.weak_value(&foreign_weak);
    });
    refused(&|| {
        m.weak_get(&foreign_weak);
    });
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        heap.remove_root(foreign_root)
    }));
    assert!(e.is_err(), "another heap's root id was accepted");
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        heap.remove_weak(foreign_weak)
    }));
    assert!(e.is_err(), "another heap's weak id was accepted");
    // The global still holds the object, and the weak reference still
    // reads it, through collections and reuse of freed slots.
    for _ in 0..3 {
        m.collect().unwrap();
        churn(&m, node_type(&heap, 32), 2000);
    }
    assert_eq!(global.get(&m).unwrap().val.load(Ordering::Relaxed), 7);
    assert_eq!(weak.get(&m).unwrap().val.load(Ordering::Relaxed), 7);
}

/// Audit: `Heap::raw` lends a view, not the raw heap (whose collection and
/// allocation entry points know nothing of the heap's threads: a raw
/// collection with no roots freed a rooted object, and a standalone
/// `ThreadCache` on another thread made the collector find spans swept
/// out of turn; both reproduced, now they do not compile: the doctests of
/// `RawView`). The view's sweeping and scavenging exclude stops, as the
/// collector's own do: a thread that is never stopped sweeps and
/// scavenges in a loop while this one allocates, roots, collects in
/// verify mode and checks every rooted object's canary. (The raw heap's
/// unscoped `finish_sweep` in the view's place passed it three times too:
/// the window is one span's sweep at the instant a stop begins, after the
/// collector's own sweep has taken nearly every span. What this test
/// holds is that the view's sweeping, under collections, keeps every
/// rooted object.)
#[test]
fn the_raw_views_sweeping_waits_for_collections() {
    let heap = verify_heap();
    let ty = node_type(&heap, 32);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = {
        let heap = heap.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut swept = 0;
            while !done.load(Ordering::Relaxed) {
                swept += heap.raw().finish_sweep();
                heap.raw().scavenge();
            }
            swept
        })
    };
    let m = heap.attach().unwrap();
    for round in 0..200u64 {
        let objs: Vec<_> = (0..500u64)
            .map(|i| {
                let o = m.alloc::<Node>().unwrap();
                o.val.store((round << 32 | i) as i64, Ordering::Relaxed);
                o
            })
            .collect();
        // Garbage in many spans, for the sweeper to take after the flip.
        churn(&m, ty, 20_000);
        m.collect().unwrap();
        for (i, o) in objs.iter().enumerate() {
            assert_eq!(
                o.val.load(Ordering::Relaxed),
                (round << 32 | i as u64) as i64,
                "round {round}: rooted object {i} was freed"
            );
        }
    }
    done.store(true, Ordering::Relaxed);
    sweeper.join().unwrap();
}
