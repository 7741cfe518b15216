//! binary-trees (the Benchmarks Game definition) on pardon, with one mutator
//! thread: a stretch tree of depth N+1, a long-lived tree of depth N, and for
//! each depth d = 4, 6, …, N, 2^(N-d+4) trees of depth d built and checked.
//! Nodes are 16 bytes, two pointers, built bottom-up; each level of the
//! recursion keeps its left subtree alive across the allocation of its right
//! one in a precise frame slot.
//!
//! `cargo run --release -p pardon --example binary_trees -- 21`
//!
//! Prints the game's output, then the time, collections, pauses and peak
//! resident memory. `PARDON_GCTRACE=1` adds a line per collection;
//! `PARDON_MARK_WORKERS=1` marks on one thread; `PARDON_GENERATIONAL=1`
//! makes the heap generational, so most collections mark only what was
//! allocated since the last one instead of re-marking the long-lived tree.
//!
//! No write barrier is needed here even on a generational heap: the only
//! reference stores are a new node's initializing stores of its children,
//! which were allocated before it. An object that survived a collection
//! therefore never comes to point at one allocated after that collection. (`pardon-bench`'s
//! `binary-trees` binary runs the same program with several mutator threads
//! and in every preemption mode.)

use std::time::{Duration, Instant};

use pardon::stackscan::{frame_map, with_frame, FrameMap};
use pardon::{Config, Heap, Mutator, Type, TypeDesc};

/// Site 0 (building the left subtree): nothing live; site 1 (the right
/// subtree): the left one; site 2 (the node itself): both.
static BUILD: FrameMap = frame_map!(2; [], [0], [0, 1]);
/// One slot holding a tree across the calls that check it.
static HOLD: FrameMap = frame_map!(1; [0]);

fn alloc(m: &Mutator, ty: Type) -> usize {
    m.alloc_raw(ty).unwrap_or_else(|e| {
        eprintln!("binary_trees: {e}");
        std::process::exit(2)
    })
}

fn bottom_up(m: &Mutator, ty: Type, depth: u32) -> usize {
    if depth == 0 {
        return alloc(m, ty);
    }
    with_frame::<2, _>(m.frames(), &BUILD, |fr| {
        fr.set(0, bottom_up(m, ty, depth - 1));
        fr.set_site(1);
        fr.set(1, bottom_up(m, ty, depth - 1));
        fr.set_site(2);
        let n = alloc(m, ty) as *mut usize;
        // SAFETY: `n` is a fresh 16-byte node whose words 0 and 1 are its
        // children; the children are live in the frame until stored.
        unsafe {
            *n = fr.get(0);
            *n.add(1) = fr.get(1);
        }
        n as usize
    })
}

fn check(node: usize) -> u64 {
    // SAFETY: `node` is a node of a tree the caller keeps rooted; nothing
    // allocates (so nothing is collected) while it is walked.
    let (l, r) = unsafe { (*(node as *const usize), *(node as *const usize).add(1)) };
    if l == 0 {
        1
    } else {
        1 + check(l) + check(r)
    }
}

fn held_check(m: &Mutator, ty: Type, depth: u32) -> u64 {
    with_frame::<1, _>(m.frames(), &HOLD, |fr| {
        fr.set(0, bottom_up(m, ty, depth));
        check(fr.get(0))
    })
}

fn main() {
    let n: u32 = match std::env::args().nth(1).map(|a| a.parse::<u32>()) {
        None => 16,
        Some(Ok(n)) if n <= 30 => n,
        Some(_) => {
            eprintln!("usage: binary_trees [DEPTH up to 30]");
            std::process::exit(1)
        }
    };
    let heap = Heap::new(Config::default()).expect("a default heap");
    let ty = heap
        .register_type(&TypeDesc {
            name: "TreeNode",
            size: 16,
            align: 8,
            pointer_words: &[0, 1],
        })
        .expect("a valid type");
    let m = heap.attach().expect("attach");
    let start = Instant::now();
    let (min_depth, max_depth) = (4, n.max(6));
    println!(
        "stretch tree of depth {}\t check: {}",
        max_depth + 1,
        held_check(&m, ty, max_depth + 1)
    );
    with_frame::<1, _>(m.frames(), &HOLD, |long| {
        long.set(0, bottom_up(&m, ty, max_depth));
        for d in (min_depth..=max_depth).step_by(2) {
            let iterations = 1u64 << (max_depth - d + min_depth);
            let sum: u64 = (0..iterations).map(|_| held_check(&m, ty, d)).sum();
            println!("{iterations}\t trees of depth {d}\t check: {sum}");
        }
        println!(
            "long lived tree of depth {max_depth}\t check: {}",
            check(long.get(0))
        );
    });
    let time = start.elapsed();
    let st = heap.stats();
    let ms = |ns: u64| Duration::from_nanos(ns).as_secs_f64() * 1e3;
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or("?".to_string(), |kb| {
            format!("{:.1} MiB", kb as f64 / 1024.0)
        });
    eprintln!(
        "{:.3} s, {} collections ({} minor), pause p50 {:.1} ms, max {:.1} ms, {} mark threads, peak RSS {rss}",
        time.as_secs_f64(),
        st.collections,
        st.minor_collections,
        ms(st.pause_ns.value_at_quantile(0.5)),
        ms(st.pause_ns.max()),
        heap.raw().mark_workers(),
    );
}
