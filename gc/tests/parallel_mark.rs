//! Parallel marking marks exactly what serial marking marks, on graphs large
//! enough for work to move between workers: a deep binary tree (whose gray
//! stack never holds more than a few dozen entries, the hard case for work
//! sharing) and a random graph with cycles and unreachable parts. Worker
//! counts above the core count and a tiny gray stack (forcing overflow
//! rescans while helpers run) are included.

use std::collections::HashSet;

use pardon::{Config, RawHeap, ThreadCache, TypeDesc};

struct Graph {
    heap: RawHeap,
    cache: ThreadCache,
    nodes: Vec<usize>,
    edges: Vec<[Option<usize>; 3]>,
    roots: Vec<usize>,
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn build(workers: usize, gray_capacity: usize, seed: u64) -> Graph {
    let heap = RawHeap::new(Config {
        arena_size: 1 << 30,
        mark_workers: workers,
        gray_capacity,
        ..Config::default()
    })
    .unwrap();
    let node = heap
        .register_type(&TypeDesc {
            name: "node3",
            size: 32,
            align: 8,
            pointer_words: &[0, 1, 2],
        })
        .unwrap();
    let mut cache = ThreadCache::new();
    let mut nodes = Vec::new();
    let new_node = |cache: &mut ThreadCache, nodes: &mut Vec<usize>| {
        nodes.push(cache.alloc(&heap, node).unwrap().as_ptr() as usize);
    };
    // A complete binary tree of depth 16 (131071 nodes), children in
    // fields 0 and 1.
    let depth = 16;
    let first = nodes.len();
    for _ in 0..(1usize << (depth + 1)) - 1 {
        new_node(&mut cache, &mut nodes);
    }
    let mut edges_fix = Vec::new();
    for i in 0..(1usize << depth) - 1 {
        edges_fix.push((first + i, 0, first + 2 * i + 1));
        edges_fix.push((first + i, 1, first + 2 * i + 2));
    }
    // A random graph of 60000 nodes, three random fields each (some empty),
    // cycles included.
    let rfirst = nodes.len();
    let n = 60_000;
    for _ in 0..n {
        new_node(&mut cache, &mut nodes);
    }
    let mut s = seed | 1;
    for i in 0..n {
        for f in 0..3 {
            if !xorshift(&mut s).is_multiple_of(4) {
                edges_fix.push((rfirst + i, f, rfirst + (xorshift(&mut s) as usize % n)));
            }
        }
    }
    let mut edges = vec![[None; 3]; nodes.len()];
    for (a, f, b) in edges_fix {
        edges[a][f] = Some(b);
        // SAFETY: `nodes[a]` is an allocated 32-byte object; field `f < 3`.
        unsafe { *((nodes[a] + f * 8) as *mut usize) = nodes[b] };
    }
    let mut roots = vec![first];
    for _ in 0..20 {
        roots.push(rfirst + xorshift(&mut s) as usize % n);
    }
    Graph {
        heap,
        cache,
        nodes,
        edges,
        roots,
    }
}

fn reachable(g: &Graph) -> HashSet<usize> {
    let mut seen = HashSet::new();
    let mut stack = g.roots.clone();
    while let Some(o) = stack.pop() {
        if seen.insert(o) {
            stack.extend(g.edges[o].iter().flatten().copied());
        }
    }
    seen
}

fn check(workers: usize, gray_capacity: usize) {
    let mut g = build(workers, gray_capacity, 0x5eed_0000 + workers as u64);
    assert_eq!(g.heap.mark_workers(), workers);
    let live = reachable(&g);
    let roots: Vec<usize> = g.roots.iter().map(|&r| g.nodes[r]).collect();
    for round in 0..3 {
        let Graph { heap, cache, .. } = &mut g;
        let st = heap.collect_with(&mut [cache], |m| {
            for &w in &roots {
                m.mark_word(w);
            }
        });
        assert_eq!(
            st.objects,
            live.len(),
            "workers {workers}, round {round}: marked count differs from the reachable set"
        );
        assert_eq!(st.bytes, live.len() * 32);
        if workers > 1 {
            assert!(
                st.shares > 0,
                "workers {workers}: no work was ever handed over"
            );
        }
        if gray_capacity < 64 {
            assert!(st.overflow_rescans > 0);
        }
        g.heap.finish_sweep();
        for (i, &p) in g.nodes.iter().enumerate() {
            assert_eq!(
                g.heap.find_object(p).is_some(),
                live.contains(&i),
                "workers {workers}: node {i} survival is wrong"
            );
        }
        g.heap.check_integrity().unwrap();
    }
}

#[test]
fn serial_mark_is_exact() {
    check(1, 1 << 20);
}

#[test]
fn two_workers_mark_exactly() {
    check(2, 1 << 20);
}

#[test]
fn more_workers_than_cores_mark_exactly() {
    check(5, 1 << 20);
}

#[test]
fn parallel_mark_with_overflowing_gray_stacks() {
    check(3, 32);
}

#[test]
fn bad_worker_count_is_a_clear_error() {
    for w in [0, 1000] {
        let e = RawHeap::new(Config {
            mark_workers: w,
            ..Config::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("mark_workers"), "{e}");
    }
}
