//! Binary trees on the raw API, for the peer benchmarks (binary-trees and
//! GCBench): 16-byte nodes of two pointers (binary-trees) or 32-byte nodes
//! with two pointers and two integers (GCBench), built bottom-up with a
//! precise shadow-stack frame per level, or top-down under a rooted parent.

use std::time::{Duration, Instant};

use pardon::stackscan::{frame_map, with_frame, FrameMap};
use pardon::{Config, Heap, Mutator, Preemption, Type, TypeDesc};

/// Bottom-up construction: call site 0 (the left subtree) has nothing live,
/// site 1 (the right subtree) has the left one, site 2 (the node) both.
static BUILD: FrameMap = frame_map!(2; [], [0], [0, 1]);
/// Top-down population: the parent is live across both children.
static POPULATE: FrameMap = frame_map!(1; [0]);

/// A tree node type: `words` words, the first two of which are the children.
pub fn node_type(heap: &Heap, words: usize) -> Type {
    heap.register_type(&TypeDesc {
        name: "bench::TreeNode",
        size: 8 * words,
        align: 8,
        pointer_words: &[0, 1],
    })
    .expect("a valid node type")
}

fn child(addr: usize, i: usize) -> usize {
    // SAFETY: `addr` is a live node (rooted by the caller's frame or parent)
    // of a type whose words 0 and 1 are its children.
    unsafe { *(addr as *const usize).add(i) }
}

/// An initializing store: `v` is older than `addr` (or null), so no write
/// barrier is needed even on a generational heap.
fn set_child(addr: usize, i: usize, v: usize) {
    // SAFETY: as in `child`; only this thread uses the node.
    unsafe { *(addr as *mut usize).add(i) = v }
}

/// A store of a possibly younger `v` into `addr`: the write barrier first
/// (needed on a generational heap; a byte store otherwise).
fn store_child(m: &Mutator, addr: usize, i: usize, v: usize) {
    m.write_barrier(addr + 8 * i);
    set_child(addr, i, v);
}

fn alloc(m: &Mutator, ty: Type) -> usize {
    match m.alloc_raw(ty) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("allocation failed: {e}");
            std::process::exit(2);
        }
    }
}

/// Builds a complete tree of `depth` bottom-up and returns its root, which
/// the caller must root before its next allocation.
pub fn bottom_up(m: &Mutator, ty: Type, depth: u32) -> usize {
    // A leaf holds nothing across its allocation: no frame.
    if depth == 0 {
        return alloc(m, ty);
    }
    with_frame::<2, _>(m.frames(), &BUILD, |fr| {
        fr.set_site(0);
        fr.set(0, bottom_up(m, ty, depth - 1));
        fr.set_site(1);
        fr.set(1, bottom_up(m, ty, depth - 1));
        fr.set_site(2);
        let n = alloc(m, ty);
        set_child(n, 0, fr.get(0));
        set_child(n, 1, fr.get(1));
        n
    })
}

/// Gives `node` (rooted by the caller) complete subtrees of `depth`, top-down.
pub fn populate(m: &Mutator, ty: Type, depth: u32, node: usize) {
    if depth == 0 {
        return;
    }
    with_frame::<1, _>(m.frames(), &POPULATE, |fr| {
        fr.set(0, node);
        // Children are younger than `node`, which may be old by now.
        store_child(m, node, 0, alloc(m, ty));
        store_child(m, node, 1, alloc(m, ty));
        populate(m, ty, depth - 1, child(node, 0));
        populate(m, ty, depth - 1, child(node, 1));
    })
}

/// Counts the nodes of the tree at `root` (the binary-trees "check").
pub fn check(root: usize) -> u64 {
    if root == 0 {
        return 0;
    }
    let (l, r) = (child(root, 0), child(root, 1));
    if l == 0 {
        1
    } else {
        1 + check(l) + check(r)
    }
}

/// What a peer benchmark reports for one mode.
#[derive(Debug)]
pub struct Summary {
    /// Mode name.
    pub mode: &'static str,
    /// Wall time.
    pub time: Duration,
    /// Collections.
    pub collections: u64,
    /// Of which minor (generational heaps: `PARDON_GENERATIONAL=1`).
    pub minor: u64,
    /// Longest pause (stop to restart).
    pub max_pause: Duration,
    /// Median pause.
    pub p50_pause: Duration,
    /// Peak resident set size of the process, bytes.
    pub peak_rss: Option<u64>,
}

impl Summary {
    /// One line for the summary table.
    pub fn line(&self) -> String {
        format!(
            "{:<15} {:>9.3} s {:>6} GCs{}  pause p50 {:>8.1} µs  max {:>8.1} µs  peak RSS {:>7.1} MiB",
            self.mode,
            self.time.as_secs_f64(),
            self.collections,
            if self.minor > 0 {
                format!(" ({} minor)", self.minor)
            } else {
                String::new()
            },
            self.p50_pause.as_secs_f64() * 1e6,
            self.max_pause.as_secs_f64() * 1e6,
            self.peak_rss.map_or(f64::NAN, |b| b as f64 / (1 << 20) as f64)
        )
    }
}

/// Every name `--mode` accepts: each [`Preemption::name`], and
/// `polls-only`, the name `poll` had before the tools agreed on one.
pub const GC_MODE_NAMES: &[&str] = &["signal", "signal-handler", "poll", "polls-only"];

/// Parses a peer benchmark's `--mode`: the strategy and its name.
pub fn gc_mode(name: &str) -> Result<(&'static str, Preemption), String> {
    let p: Preemption = name.parse().map_err(|e| format!("--mode: {e}"))?;
    Ok((p.name(), p))
}

/// A heap for a peer benchmark.
pub fn heap(preemption: Preemption) -> Heap {
    Heap::new(Config {
        preemption,
        ..Config::default()
    })
    .expect("default heap configuration")
}

/// The heap of a peer benchmark, and with `procs = Some(n)` the
/// signal-preempted runtime of `n` workers sharing its registry that runs
/// the benchmark as goroutines (`--runtime goroutines`, which needs the
/// signal mode: an error naming `--mode` otherwise).
pub fn heap_and_runtime(
    preemption: Preemption,
    procs: Option<usize>,
) -> Result<(Heap, Option<pardon_sched::Runtime>), String> {
    let Some(procs) = procs else {
        return Ok((heap(preemption), None));
    };
    if preemption != Preemption::Signal {
        return Err("--runtime goroutines needs --mode signal".into());
    }
    let (h, rt) = crate::goroutine_heap::heap_and_runtime(
        Config::default(),
        pardon_sched::Config {
            procs,
            ..pardon_sched::Config::default()
        },
    )?;
    Ok((h, Some(rt)))
}

/// Finishes a peer benchmark run: the summary for `heap` since `start`.
pub fn summarize(mode: &'static str, heap: &Heap, start: Instant) -> Summary {
    let time = start.elapsed();
    let st = heap.stats();
    Summary {
        mode,
        time,
        collections: st.collections,
        minor: st.minor_collections,
        max_pause: Duration::from_nanos(st.pause_ns.max()),
        p50_pause: Duration::from_nanos(st.pause_ns.value_at_quantile(0.5)),
        peak_rss: crate::peak_rss(),
    }
}

/// Runs every mode in a child process of the current executable (so each
/// reports its own peak RSS) with `args` plus `--mode M --summary-only`, and
/// prints their summary lines.
pub fn run_all_modes(args: &[String]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    // One line per mode, each from a fresh process (so each has its own
    // peak RSS); the run above, in this process, is not summarised again,
    // so no mode is reported with two times.
    println!("\nsummary (each mode in a process of its own):");
    for name in Preemption::ALL.map(Preemption::name) {
        let out = std::process::Command::new(&exe)
            .args(args)
            .args(["--mode", name, "--summary-only"])
            .output()
            .map_err(|e| format!("running {}: {e}", exe.display()))?;
        if !out.status.success() {
            return Err(format!(
                "mode {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}
