//! The heap over goroutines, end to end (issue 21): a `pardon` heap and a
//! signal-preempted `pardon-sched` runtime sharing one preempt registry,
//! each worker a mutator its goroutines share.
//!
//! Goroutines hold objects in shadow frames, in locals across a park, and
//! in a register only, inside a call-free loop that the time slice
//! preempts; collections run from an attached thread and from a
//! goroutine, in verification mode, with the freed slots reused in
//! between. Every object is checked afterwards through a canary the test
//! wrote, so a wrongly freed object is caught by the test, not only by the
//! collector's own verification. A second test parks thousands of
//! goroutines beside call-free loops and collects repeatedly.
//!
//! (In this crate because it is the one that depends on both the heap and
//! the scheduler: neither depends on the other.)

mod common;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pardon::stackscan::{with_frame, with_frame_slots};
use pardon::{with_mutator, Config, Preemption};
use pardon_sched::channel;

#[test]
fn goroutines_keep_their_objects_through_collections_from_anywhere() {
    keep_objects_through_collections(Preemption::Signal);
}

/// The same with stops that park a running goroutine's worker in the
/// signal handler (`SignalInHandler`): its registers are in the kernel's
/// signal frame on the goroutine's stack, scanned from the handler's frame
/// up, while the ends of time slices are still injected calls.
#[test]
fn goroutines_keep_their_objects_when_stops_park_in_the_handler() {
    keep_objects_through_collections(Preemption::SignalInHandler);
}

fn keep_objects_through_collections(preemption: Preemption) {
    const PARKED: usize = 64;
    const SPINNERS: usize = 4;
    const GARBAGE: usize = 2_000;
    let (heap, rt, ty) = setup_with(
        2,
        Duration::from_millis(1),
        Config {
            gc_percent: None,
            verify: true,
            preemption,
            ..Config::default()
        },
    );
    assert_eq!(heap.registry().config().preemption, preemption);
    let parked = Arc::new(AtomicUsize::new(0));
    let spinning = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicU32::new(0));
    let _release = ReleaseOnDrop(release.clone());
    let mut wakers = Vec::new();
    let mut joins = Vec::new();
    for i in 0..PARKED as u64 {
        let (tx, rx) = channel::channel::<()>(1);
        wakers.push(tx);
        let parked = parked.clone();
        joins.push(rt.go(move || {
            with_mutator(|m| {
                let in_local = new_masked(m, ty, 0x1000 + i);
                with_frame::<1, _>(m.frames(), &ONE, |outer| {
                    outer.set(0, new_masked(m, ty, 0x2000 + i) ^ KEY);
                    outer.set_site(0);
                    // Slots off the stack (an interpreter's, say): only the
                    // precise walk of the chain, which the task word
                    // carries across the park, finds what they hold.
                    let off_stack = Box::new([AtomicUsize::new(0)]);
                    with_frame_slots(m.frames(), &ONE, &*off_stack, |inner| {
                        put_slot(inner, new_masked(m, ty, 0x3000 + i));
                        inner.set_site(0);
                        garbage(m, ty, GARBAGE);
                        scrub();
                        // The only unmasked copy of `in_local` is on this
                        // stack across the park, as the switch left it.
                        let local = std::hint::black_box(in_local ^ KEY);
                        parked.fetch_add(1, SeqCst);
                        rx.recv().unwrap();
                        let local = std::hint::black_box(local);
                        let got = [
                            canary_of(local ^ KEY),
                            canary_of(outer.get(0) ^ KEY),
                            canary_of(inner.get(0) ^ KEY),
                        ];
                        got == [0x1000 + i, 0x2000 + i, 0x3000 + i]
                    })
                })
            })
            .expect("a goroutine runs on a worker with a mutator")
        }));
    }
    for i in 0..SPINNERS as u64 {
        let spinning = spinning.clone();
        let release = release.clone();
        joins.push(rt.go(move || {
            with_mutator(|m| {
                let masked = new_masked(m, ty, 0x4000 + i);
                spinning.fetch_add(1, SeqCst);
                let back = hold_in_r11(masked, &release);
                canary_of(back) == 0x4000 + i
            })
            .unwrap()
        }));
    }
    wait_for(&parked, PARKED, "parked goroutines");
    wait_for(&spinning, SPINNERS, "spinning goroutines");

    // Collections from an attached thread, with the freed slots reused in
    // between; the first also shows the garbage reclaimed.
    let m = heap.attach().unwrap();
    let garbage_bytes = PARKED * GARBAGE * 32;
    for round in 0..4 {
        let c = m.collect().unwrap();
        assert!(c.verified);
        assert!(
            c.suspended_tasks >= PARKED,
            "round {round}: {} goroutines reported suspended",
            c.suspended_tasks
        );
        assert!(
            c.live < garbage_bytes / 4,
            "round {round}: {} bytes live of {garbage_bytes} garbage",
            c.live
        );
        churn(&m, ty, 20_000);
    }
    // And from a goroutine.
    let from_goroutine = rt
        .block_on(move || {
            with_mutator(|m| {
                let c = m.collect().unwrap();
                churn(m, ty, 20_000);
                (c.verified, c.suspended_tasks)
            })
            .unwrap()
        })
        .unwrap();
    assert!(from_goroutine.0);
    assert!(from_goroutine.1 >= PARKED);
    let c = m.collect().unwrap();
    assert!(c.verified);
    release.store(1, SeqCst);
    for tx in &wakers {
        tx.send(()).unwrap();
    }
    for (k, j) in joins.into_iter().enumerate() {
        assert!(j.join().unwrap(), "goroutine {k} found an object reused");
    }
    // Everything is garbage now.
    let c = m.collect().unwrap();
    assert!(
        c.live < garbage_bytes / 100,
        "{} bytes live after every goroutine ended",
        c.live
    );
}

#[test]
fn thousands_of_parked_goroutines_beside_call_free_loops() {
    const PARKED: usize = 10_000;
    let (heap, rt, ty) = setup(2, Duration::from_millis(10));
    let parked = Arc::new(AtomicUsize::new(0));
    let spinning = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicU32::new(0));
    let _release = ReleaseOnDrop(release.clone());
    let (tx, rx) = channel::unbounded::<()>();
    let rx = Arc::new(rx);
    let mut joins = Vec::new();
    for i in 0..PARKED as u64 {
        let parked = parked.clone();
        let rx = rx.clone();
        joins.push(rt.go(move || {
            with_mutator(|m| {
                let off_stack = Box::new([AtomicUsize::new(0)]);
                with_frame_slots(m.frames(), &ONE, &*off_stack, |fr| {
                    // A two-node chain held by the frame, whose slot is
                    // off the stack: found only by walking the chain.
                    put_chain(m, ty, fr, 0x10_0000 + 2 * i);
                    fr.set_site(0);
                    scrub();
                    parked.fetch_add(1, SeqCst);
                    rx.recv().unwrap();
                    chain_ok(fr, 0x10_0000 + 2 * i)
                })
            })
            .unwrap()
        }));
    }
    for i in 0..4u64 {
        let spinning = spinning.clone();
        let release = release.clone();
        joins.push(rt.go(move || {
            with_mutator(|m| {
                let masked = new_masked(m, ty, 0x4000 + i);
                spinning.fetch_add(1, SeqCst);
                canary_of(hold_in_r11(masked, &release)) == 0x4000 + i
            })
            .unwrap()
        }));
    }
    wait_for(&parked, PARKED, "parked goroutines");
    wait_for(&spinning, 4, "spinning goroutines");
    let m = heap.attach().unwrap();
    for _ in 0..3 {
        let c = m.collect().unwrap();
        assert!(c.verified);
        assert!(c.suspended_tasks >= PARKED);
        // Two nodes a parked goroutine, at least.
        assert!(c.marked_objects >= 2 * PARKED);
        churn(&m, ty, 50_000);
    }
    release.store(1, SeqCst);
    for _ in 0..PARKED {
        tx.send(()).unwrap();
    }
    for (k, j) in joins.into_iter().enumerate() {
        assert!(j.join().unwrap(), "goroutine {k} found an object reused");
    }
}

#[test]
fn a_goroutine_cannot_wait_where_its_worker_state_is_borrowed() {
    let (_heap, rt, _ty) = setup(1, Duration::from_millis(10));
    // Inside a heap safe region (a mutator's `blocking`), the worker's
    // other goroutines would run while stops count the thread stopped.
    let r = rt.block_on(|| with_mutator(|m| m.blocking(pardon_sched::yield_now)));
    let msg = r.expect_err("a wait inside a safe region must be refused");
    let msg = msg.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(msg.contains("safe region"), "{msg}");
    // The runtime goes on.
    assert_eq!(rt.block_on(|| 7).unwrap(), 7);
}

pardon::gc_object! {
    struct Link {
        next: pardon::Member<Link>,
        value: std::sync::atomic::AtomicI64,
    }
}

/// Builds a list of 64 nodes after a head, goroutine `g`'s values in
/// them, calling `every_16th` after every 16th node, then walks it back
/// checking every value and the length; returns the head.
fn linked_list(
    m: &pardon::Mutator,
    g: i64,
    mut every_16th: impl FnMut(),
) -> Result<pardon::Root<'_, Link>, String> {
    let head = m.alloc::<Link>().unwrap();
    head.value.store(g, SeqCst);
    let mut tail = head.clone();
    for i in 1..=64i64 {
        let n = m.alloc::<Link>().unwrap();
        n.value.store(g * 1_000_000 + i, SeqCst);
        tail.next.set(Some(&n));
        tail = n;
        if i % 16 == 0 {
            every_16th();
        }
    }
    let (mut cur, mut i) = (head.next.get(m), 1i64);
    while let Some(n) = cur {
        if n.value.load(SeqCst) != g * 1_000_000 + i {
            return Err(format!("goroutine {g}: node {i} damaged"));
        }
        i += 1;
        cur = n.next.get(m);
    }
    if i != 65 {
        return Err(format!("goroutine {g}: list cut at {i}"));
    }
    Ok(head)
}

/// Three goroutines on one worker share its mutator — one allocation
/// cache, one handle table — while a 50 µs slice preempts them wherever
/// the signal finds them: in allocation fast and slow paths, in the card
/// barrier of a generational heap, in handle-table changes. A switch
/// inside any of them would hand the next goroutine a cache or table
/// half-way through a change. Collections run meanwhile in verify mode;
/// every goroutine checks every list it built through the values it
/// wrote.
#[test]
fn goroutines_preempted_amid_allocations_and_barriers_share_one_cache() {
    use pardon::Config;
    use std::sync::atomic::AtomicBool;
    let (heap, rt, _ty) = setup_with(
        1,
        Duration::from_micros(50),
        Config {
            generational: true,
            verify: true,
            gc_percent: Some(50),
            min_heap: 1 << 20,
            ..Config::default()
        },
    );
    let raw = heap
        .register_type(&pardon::TypeDesc {
            name: "words",
            size: 8,
            align: 8,
            pointer_words: &[],
        })
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = (0..3i64)
        .map(|g| {
            let done = done.clone();
            rt.go(move || {
                with_mutator(|m| {
                    let mut rounds = 0u64;
                    while !done.load(SeqCst) || rounds == 0 {
                        linked_list(m, g, || {
                            // A slow path: an array.
                            std::hint::black_box(m.alloc_raw_array(raw, 100).unwrap());
                        })?;
                        rounds += 1;
                    }
                    Ok::<_, String>(rounds)
                })
                .unwrap()
            })
        })
        .collect();
    // Collections from an attached thread until the goroutines have been
    // preempted often, or for at most 60 s (on a machine so loaded that
    // the slices are seldom preempted, the test is weaker, not failed).
    // `done` is set however this thread leaves (a failed assertion would
    // otherwise leave the goroutines looping, and the runtime's drop
    // waiting for them). A collection here may come back unverified: the
    // goroutines' paced collections run too, and one that ran while this
    // one waited for the world stands for it (its stats are then empty);
    // a verification that fails panics in whichever coordinator ran it.
    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }
    let finish = SetOnDrop(done.clone());
    let m = heap.attach().unwrap();
    let t0 = std::time::Instant::now();
    while rt.stats().preemptions < 300 && t0.elapsed() < Duration::from_secs(60) {
        m.collect().unwrap();
        m.blocking(|| std::thread::sleep(Duration::from_millis(2)));
    }
    drop(finish);
    for h in hs {
        let rounds = h.join().unwrap().unwrap();
        assert!(rounds > 0);
    }
    // With the goroutines done, nothing else collects: this one runs, and
    // verifies.
    assert!(m.collect().unwrap().verified);
}

/// Goroutines of one worker, preempted every 50 µs, allocating on a
/// concurrent heap whose collections they trigger themselves: the one
/// asking the background collector for a cycle, coordinating one or
/// assisting it with gray objects in hand must never be switched out (the
/// others of its worker would then wait on the request's lock, the
/// cycle's lock or at the allocation brake, blocking the thread the cycle
/// needs to go on). Every goroutine builds and checks lists for two
/// seconds and at least 2,000 of them, keeping the last `keep`; all must finish within the
/// watchdog's minute. `background_percent` is the background marking's
/// share: small, and the assists do much of the marking.
fn concurrent_cycles_on_one_worker(keep: usize, background_percent: u32) {
    use pardon::Config;
    use std::sync::atomic::AtomicBool;
    let (heap, rt, _ty) = setup_with(
        1,
        Duration::from_micros(50),
        Config {
            concurrent: true,
            verify: true,
            gc_percent: Some(50),
            min_heap: 1 << 20,
            background_mark_percent: background_percent,
            ..Config::default()
        },
    );
    let hs: Vec<_> = (0..3i64)
        .map(|g| {
            rt.go(move || {
                with_mutator(|m| {
                    let t0 = std::time::Instant::now();
                    let mut kept = Vec::new();
                    // Two seconds, and at least 2,000 lists (some 4 MB,
                    // past the 1 MiB minimum heap: cycles happen however
                    // slow the machine).
                    let mut rounds = 0;
                    while t0.elapsed() < Duration::from_secs(2) || rounds < 2000 {
                        rounds += 1;
                        let head = linked_list(m, g, || {})?;
                        // Lists live on, so cycles have marking to do.
                        kept.push(head);
                        if kept.len() > keep {
                            kept.swap_remove(0);
                        }
                    }
                    Ok::<_, String>(())
                })
                .unwrap()
            })
        })
        .collect();
    let t0 = std::time::Instant::now();
    let stuck = AtomicBool::new(false);
    while !hs.iter().all(|h| h.is_finished()) {
        if t0.elapsed() > Duration::from_secs(60) {
            stuck.store(true, SeqCst);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if stuck.load(SeqCst) {
        // The goroutines cannot be joined; leave them (and the runtime,
        // whose drop would wait for them) behind.
        std::mem::forget(rt);
        panic!("the goroutines did not finish within a minute");
    }
    for h in hs {
        h.join().unwrap().unwrap();
    }
    assert!(heap.stats().collections > 0);
}

/// Many short cycles (little live data, the default background share):
/// many requests to the background collector, brakes now and then.
#[test]
fn goroutines_trigger_concurrent_cycles_on_one_worker() {
    concurrent_cycles_on_one_worker(64, 25);
}

/// Longer cycles marked mostly by the goroutines' assists.
#[test]
fn goroutines_assist_concurrent_cycles_on_one_worker() {
    concurrent_cycles_on_one_worker(1000, 1);
}

/// A runtime sharing the heap's registry, dropped while its goroutines
/// allocate, hold chains in their frames, check them and yield, and while
/// an attached thread collects (verified) back to back before, across and
/// after the drop. The drop takes the runtime's task source out of the
/// registry and ends its workers in the middle of that; the collections
/// must go on verifying, no goroutine that does end may find a chain
/// freed under it, and every join from outside returns.
#[test]
fn a_runtime_dropped_while_the_heap_collects() {
    for round in 0..3u64 {
        let (heap, rt, ty) = setup(2, Duration::from_millis(1));
        let stop = Arc::new(AtomicU32::new(0));
        let collector = {
            let (heap, stop) = (heap.clone(), stop.clone());
            std::thread::spawn(move || {
                let m = heap.attach().unwrap();
                let mut n = 0u64;
                while stop.load(SeqCst) == 0 {
                    let c = m.collect().expect("a collection failed");
                    assert!(c.verified, "round {round}: a collection did not verify");
                    churn(&m, ty, 2_000);
                    n += 1;
                }
                n
            })
        };
        let joins: Vec<_> = (0..8u64)
            .map(|g| {
                rt.go(move || {
                    with_mutator(|m| {
                        let slots = Box::new([AtomicUsize::new(0)]);
                        with_frame_slots(m.frames(), &ONE, &*slots, |fr| {
                            for k in 0..10_000_000u64 {
                                let c = (g << 32) | (k << 1);
                                put_chain(m, ty, fr, c);
                                fr.set_site(0);
                                garbage(m, ty, 50);
                                pardon_sched::yield_now();
                                if !chain_ok(fr, c) {
                                    return false;
                                }
                            }
                            true
                        })
                    })
                    .expect("a goroutine runs on a worker with a mutator")
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30));
        drop(rt);
        // Collections go on after the drop, then stop.
        std::thread::sleep(Duration::from_millis(30));
        stop.store(1, SeqCst);
        let collections = collector.join().expect("the collector panicked");
        assert!(collections > 0, "round {round}: no collection ran");
        let mut unfinished = 0;
        for (g, j) in joins.into_iter().enumerate() {
            // The goroutine's end, or the error that its runtime is gone.
            match j.join() {
                Ok(ok) => assert!(ok, "round {round}: goroutine {g} found its chain freed"),
                Err(_) => unfinished += 1,
            }
        }
        // Ten million steps each do not end in 30 ms, on any machine: the
        // drop caught them.
        assert!(
            unfinished > 0,
            "round {round}: every goroutine ended before the drop"
        );
        let m = heap.attach().unwrap();
        assert!(m.collect().unwrap().verified);
    }
}

/// Stops of the shared registry by someone other than the heap (the
/// runtime's `stop_the_world`, from a thread outside it, every 200 µs)
/// between the heap's collections (from an attached thread every 2 ms, and
/// paced ones), on a plain and on a concurrent heap, while eight
/// goroutines build typed chains, yield holding them, and check every
/// link. A heap's waits must not meet another coordinator's stop: such a
/// wait lasts the whole stop timeout (20 s here) and fails the stop, and
/// the test. (The
/// one such wait found, a background marker waiting for the registry's
/// thread list inside a no-preempt region, did not show here in three
/// release runs of the old code; its regression test is
/// `gc/tests/concurrent.rs`'s `two_heaps_on_one_registry_and_outside_stops`.
/// This one is coverage: no earlier test stopped a shared registry from
/// outside the heap while it collected.)
#[test]
fn the_runtimes_stops_between_the_heaps_collections() {
    use std::sync::atomic::AtomicBool;
    for concurrent in [false, true] {
        let (heap, rt) = pardon_bench::goroutine_heap::heap_and_runtime(
            Config {
                gc_percent: Some(50),
                verify: true,
                concurrent,
                stop_timeout: Duration::from_secs(20),
                ..Config::default()
            },
            pardon_sched::Config {
                procs: 2,
                time_slice: Duration::from_millis(1),
                ..Default::default()
            },
        )
        .unwrap();
        let rt = Arc::new(rt);
        let done = Arc::new(AtomicBool::new(false));
        let stopper = {
            let (rt, done) = (rt.clone(), done.clone());
            std::thread::spawn(move || {
                // At least one stop, however late this thread first runs.
                let mut stops = 0;
                loop {
                    drop(rt.stop_the_world().expect("the runtime's stop"));
                    stops += 1;
                    if done.load(SeqCst) {
                        break stops;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        };
        let collector = {
            let (heap, done) = (heap.clone(), done.clone());
            std::thread::spawn(move || {
                let m = heap.attach().unwrap();
                while !done.load(SeqCst) {
                    m.collect().expect("a collection");
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        let goroutines: Vec<_> = (0..8i64)
            .map(|tag| {
                rt.go(move || {
                    for _ in 0..1500 {
                        with_mutator(|m| {
                            let head = m.alloc::<Link>().unwrap();
                            let mut cur = head.clone();
                            for i in 0..50 {
                                let n = m.alloc::<Link>().unwrap();
                                n.value.store(tag * 1000 + i, SeqCst);
                                cur.next.set(Some(&n));
                                cur = n;
                            }
                            drop(cur);
                            pardon_sched::yield_now();
                            let (mut at, mut i) = (head.next.get(m), 0);
                            while let Some(n) = at {
                                assert_eq!(n.value.load(SeqCst), tag * 1000 + i, "link {i}");
                                i += 1;
                                at = n.next.get(m);
                            }
                            assert_eq!(i, 50, "goroutine {tag}: a chain cut short");
                        })
                        .expect("a worker's mutator");
                    }
                })
            })
            .collect();
        for g in goroutines {
            g.join().unwrap();
        }
        done.store(true, SeqCst);
        assert!(stopper.join().unwrap() > 0, "the runtime never stopped");
        collector.join().unwrap();
    }
}
