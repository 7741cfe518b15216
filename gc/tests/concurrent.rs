//! Concurrent marking (`Config::concurrent`): mutators rewrite the heap
//! while cycles mark, and nothing reachable is freed. Verify mode checks
//! every cycle (a full re-mark at the second stop must find nothing the
//! concurrent mark missed); canaries the test wrote itself check contents.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon::{gc_object, Config, Global, Heap, Member, Mutator, Root};

gc_object! {
    struct Node {
        left: Member<Node>,
        right: Member<Node>,
        value: AtomicI64,
    }
}

fn heap() -> Heap {
    Heap::new(Config {
        arena_size: 4 << 30,
        gc_percent: None,
        verify: true,
        concurrent: true,
        ..Config::default()
    })
    .unwrap()
}

/// A complete tree of `depth` whose nodes hold `value = tag * 1_000_000 + i`.
fn tree<'m>(m: &'m Mutator, depth: u32, tag: i64, next: &mut i64) -> Root<'m, Node> {
    let n = m.alloc::<Node>().unwrap();
    n.value.store(tag * 1_000_000 + *next, Ordering::Relaxed);
    *next += 1;
    if depth > 0 {
        let l = tree(m, depth - 1, tag, next);
        n.left.set(Some(&l));
        let r = tree(m, depth - 1, tag, next);
        n.right.set(Some(&r));
    }
    n
}

/// Checks every node of `n`'s tree carries `tag`; returns the node count.
fn check(m: &Mutator, n: &Root<'_, Node>, tag: i64) -> usize {
    let v = n.value.load(Ordering::Relaxed);
    assert_eq!(
        v / 1_000_000,
        tag,
        "a node of tree {tag} reads {v:#x}: freed and reused?"
    );
    let mut count = 1;
    for child in [&n.left, &n.right] {
        if let Some(c) = child.get(m) {
            count += check(m, &c, tag);
        }
    }
    count
}

#[test]
fn a_collection_with_no_mutators_marks_like_a_stop_the_world_one() {
    let h = heap();
    let m = h.attach().unwrap();
    let mut next = 0;
    let t = tree(&m, 10, 1, &mut next);
    let g = Global::new(&t).unwrap();
    drop(t);
    for _ in 0..3 {
        let st = m.collect().unwrap();
        assert!(st.pause_start > Duration::ZERO && st.pause_end > Duration::ZERO);
    }
    let t = g.get(&m).unwrap();
    assert_eq!(check(&m, &t, 1), (1 << 11) - 1);
}

/// Trees big enough (2 x 2 x 16 Ki nodes) that marking them takes a while,
/// so that swaps land while a cycle is half-way through them.
const DEPTH: u32 = 13;

/// Mutators keep swapping subtrees between two trees and cutting and
/// re-linking them (so the only reference to a subtree moves from the heap
/// to a Root and back) while another thread collects back to back.
#[test]
fn mutators_rewiring_trees_while_cycles_mark() {
    let (cycles, _) = rewire(heap(), 64, false);
    assert!(cycles > 0);
}

/// The same with pacing on (so allocation while marking owes assists) and a
/// background share of 1 % (the coordinator marks 0.5 ms in every 25 or so
/// while the mutators run): mutator assists do most of the marking, and
/// verify mode and the canaries check what they mark.
#[test]
fn mutators_rewiring_trees_while_assists_mark() {
    rewire_with_assists(Config::default().gray_capacity);
}

/// The same with gray stacks and a shaded queue of 16 entries (the least):
/// markers, the barrier and assists (giving their leftovers back) overflow
/// all the time, and what they drop (marked, not queued) must be found by
/// the second stop's rescan.
#[test]
fn mutators_rewiring_trees_while_every_queue_overflows() {
    rewire_with_assists(16);
}

/// The assists' workload: a paced heap with a 1 % background share and
/// gray stacks of `gray_capacity` entries, rewired until an assist has run.
fn rewire_with_assists(gray_capacity: usize) {
    let h = Heap::new(Config {
        arena_size: 4 << 30,
        gc_percent: Some(100),
        verify: true,
        concurrent: true,
        background_mark_percent: 1,
        gray_capacity,
        ..Config::default()
    })
    .unwrap();
    let (cycles, assist_units) = rewire(h, 4, true);
    eprintln!("{cycles} cycles, {assist_units} assist units");
    assert!(cycles > 0);
    // Coverage, not speed: the mutators go on (up to a minute) until an
    // assist has run, which on any machine comes within seconds (every 64
    // KiB allocated while marking with the debt unpaid runs one).
    assert!(
        assist_units > 0,
        "no assist ran in a minute: the test covers nothing"
    );
}

/// The rewiring workload on `h`, two mutators, a garbage tree every
/// `garbage_every` rounds, for 3 s and 2000 rounds at least (and, with
/// `until_assisted`, until an assist unit has run, or a minute); returns
/// the cycles run and the assist units they counted.
fn rewire(h: Heap, garbage_every: u64, until_assisted: bool) -> (usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicUsize::new(0));
    let assist_units = Arc::new(AtomicUsize::new(0));
    let collector = {
        let (h, stop, cycles, units) = (
            h.clone(),
            stop.clone(),
            cycles.clone(),
            assist_units.clone(),
        );
        std::thread::spawn(move || loop {
            // At least one cycle, however late this thread gets a CPU.
            let st = h.collect().unwrap();
            cycles.fetch_add(1, Ordering::Relaxed);
            units.fetch_add(st.assist_units, Ordering::Relaxed);
            if stop.load(Ordering::Relaxed) {
                break;
            }
        })
    };
    let workers: Vec<_> = (0..2i64)
        .map(|w| {
            let (h, units) = (h.clone(), assist_units.clone());
            std::thread::spawn(move || {
                let m = h.attach().unwrap();
                let mut next = 0;
                let a = tree(&m, DEPTH, 10 + w, &mut next);
                let b = tree(&m, DEPTH, 10 + w, &mut next);
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ w as u64;
                let t0 = Instant::now();
                let mut rounds = 0;
                let mut inserted = 0;
                let more = |rounds: u64| {
                    t0.elapsed() < Duration::from_secs(3)
                        || rounds < 2000
                        || (until_assisted
                            && units.load(Ordering::Relaxed) == 0
                            && t0.elapsed() < Duration::from_secs(60))
                };
                while more(rounds) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    // Walk down a random path in each tree.
                    let mut x = a.clone();
                    let mut y = b.clone();
                    for d in 0..(1 + rng % 6) {
                        let go_left = (rng >> d) & 1 == 0;
                        let nx = if go_left {
                            x.left.get(&m)
                        } else {
                            x.right.get(&m)
                        };
                        let ny = if go_left {
                            y.right.get(&m)
                        } else {
                            y.left.get(&m)
                        };
                        match (nx, ny) {
                            (Some(nx), Some(ny)) => {
                                x = nx;
                                y = ny;
                            }
                            _ => break,
                        }
                    }
                    // Swap x's left subtree with y's right one: for a
                    // moment each is referenced only from a Root.
                    let xl = x.left.get(&m);
                    let yr = y.right.get(&m);
                    // Half the time the old references are deleted by
                    // storing null first, half the time by overwriting:
                    // both paths of the barrier.
                    if rounds % 2 == 0 {
                        x.left.set(None);
                        y.right.set(None);
                    }
                    // Garbage now and then, so the heap churns.
                    if rounds % garbage_every == 0 {
                        let mut g = 0;
                        drop(tree(&m, 4, 99, &mut g));
                    }
                    if rounds % 16 == 0 {
                        // A new node takes yr's place under x and holds it:
                        // an object allocated while marking, linked into
                        // the live trees (allocated black).
                        let n = m.alloc::<Node>().unwrap();
                        n.value
                            .store((10 + w) * 1_000_000 + next, Ordering::Relaxed);
                        next += 1;
                        n.left.set(yr.as_ref());
                        x.left.set(Some(&n));
                        inserted += 1;
                    } else {
                        x.left.set(yr.as_ref());
                    }
                    y.right.set(xl.as_ref());
                    rounds += 1;
                    if rounds % 5000 == 0 {
                        let n = check(&m, &a, 10 + w) + check(&m, &b, 10 + w);
                        assert_eq!(n, 2 * ((2 << DEPTH) - 1) + inserted, "nodes lost");
                    }
                }
                let n = check(&m, &a, 10 + w) + check(&m, &b, 10 + w);
                assert_eq!(n, 2 * ((2 << DEPTH) - 1) + inserted);
                rounds
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    collector.join().unwrap();
    (
        cycles.load(Ordering::Relaxed),
        assist_units.load(Ordering::Relaxed),
    )
}

/// An explicit concurrent collection sweeps before it returns (as Go's
/// `runtime.GC`): every span its marking left garbage in is swept, so
/// nothing is left for the next cycle's start to sweep, and the spans its
/// garbage filled are free again by the time `collect` returns.
#[test]
fn an_explicit_collection_sweeps_before_it_returns() {
    let heap = heap();
    let m = heap.attach().unwrap();
    let keep = tree(&m, 10, 7, &mut 0);
    for _ in 0..20 {
        drop(tree(&m, 12, 9, &mut 0));
    }
    let c = m.collect().unwrap();
    assert!(c.verified);
    assert!(c.spans_swept_after > 0, "{c:?}");
    assert_eq!(
        heap.raw().finish_sweep(),
        0,
        "spans were left unswept after collect returned"
    );
    let after = heap.raw().stats().span_bytes;
    assert!(
        after < c.heap_before / 2,
        "{after} span bytes after collect, {} before it: the garbage's spans not freed",
        c.heap_before
    );
    assert_eq!(check(&m, &keep, 7), 2047);
}

/// Two concurrent heaps sharing one preempt registry (what
/// `Heap::with_registry` allows), each with two mutators that build,
/// collect and check chains, while a fifth thread stops the registry's
/// world itself now and then. A background marker asked the registry how
/// many threads ran from inside a no-preempt region, waiting there for
/// the thread-list lock that the other heap's (or anyone's) stop holds
/// throughout, and that stop waited for the region: each held the other
/// for the stop's whole timeout (a collection failed with `Timeout` after
/// 30 s, in the first run of a reproduction). Such a wait lasts the
/// whole stop timeout and then fails the stop, so the generous 20 s here
/// (room for a loaded machine) fails the test all the same.
#[test]
fn two_heaps_on_one_registry_and_outside_stops() {
    let registry = pardon::preempt::Registry::new(pardon::preempt::Config {
        stop_timeout: Duration::from_secs(20),
        ..Default::default()
    })
    .unwrap();
    let make = || {
        Heap::with_registry(
            Config {
                gc_percent: Some(50),
                verify: true,
                concurrent: true,
                ..Config::default()
            },
            registry.clone(),
        )
        .unwrap()
    };
    let (a, b) = (make(), make());
    let done = Arc::new(AtomicBool::new(false));
    let stopper = {
        let (registry, done) = (registry.clone(), done.clone());
        std::thread::spawn(move || {
            // At least one stop, however late this thread first runs.
            let mut stops = 0;
            loop {
                drop(registry.stop_the_world().expect("an outside stop"));
                stops += 1;
                if done.load(Ordering::Relaxed) {
                    break stops;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        })
    };
    let workers: Vec<_> = [(a.clone(), 1), (b.clone(), 2), (a, 3), (b, 4)]
        .into_iter()
        .map(|(heap, tag)| {
            std::thread::spawn(move || {
                let m = heap.attach().unwrap();
                for round in 0..1000 {
                    let mut next = 0;
                    let t = tree(&m, 6, tag, &mut next);
                    for _ in 0..500 {
                        drop(m.alloc::<Node>().unwrap());
                    }
                    if round % 5 == 0 {
                        m.collect().unwrap_or_else(|e| panic!("heap {tag}: {e}"));
                    }
                    assert_eq!(check(&m, &t, tag), 127, "heap {tag}: tree broken");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert!(stopper.join().unwrap() > 0);
}
