//! Root scanning: a conservative scan of a 64 KiB stack image holding some
//! heap pointers; a precise walk of 64 shadow-stack frames of 3 slots (2 live:
//! mostly per-frame cost), and of 16 frames of 32 live slots (mostly
//! per-slot cost).

use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pardon::stackscan::{with_frame_slots, FrameChain, FrameMap, Scanner};
use pardon::ThreadCache;

#[path = "common/mod.rs"]
mod common;

/// Links `depth` frames of `N` slots each (slot 1 null, the others `v`) and
/// runs `f` inside the innermost.
fn nest<const N: usize>(
    depth: usize,
    chain: &AtomicUsize,
    map: &FrameMap,
    v: usize,
    f: &mut dyn FnMut(),
) {
    if depth == 0 {
        return f();
    }
    let slots: [AtomicUsize; N] =
        std::array::from_fn(|i| AtomicUsize::new(if i == 1 { 0 } else { v }));
    with_frame_slots(FrameChain::new(chain), map, &slots, |_| {
        nest::<N>(depth - 1, chain, map, v, f)
    });
}

fn scan(c: &mut Criterion) {
    let heap = common::raw_heap();
    let ty = common::pair(&heap);
    let mut cache = ThreadCache::new();
    let objs: Vec<usize> = (0..1000)
        .map(|_| cache.alloc(&heap, ty).unwrap().as_ptr() as usize)
        .collect();
    // A stack image: mostly small integers and stack-like addresses, with a
    // heap pointer every 32 words.
    let image: Vec<usize> = (0..8192)
        .map(|i| {
            if i % 32 == 0 {
                objs[i / 32 % objs.len()] + 8
            } else {
                i * 3
            }
        })
        .collect();
    let finder = |a: usize| heap.find_object(a);
    let mut g = c.benchmark_group("stackscan");
    g.throughput(Throughput::Bytes(8 * image.len() as u64));
    g.bench_function("conservative 64 KiB", |b| {
        b.iter(|| {
            let mut hits = 0;
            let mut sc = Scanner::new(&finder, 0, 0, |_, _| hits += 1);
            let lo = image.as_ptr() as usize;
            // SAFETY: `image` is a live, readable buffer of that many words.
            unsafe { sc.range(lo, lo + 8 * image.len()) };
            hits
        })
    });
    g.finish();
    let chain = AtomicUsize::new(0);
    // Times `Scanner::frames` over the chain linked while `link` runs it.
    let mut precise = |name: &str, slots: u64, link: &dyn Fn(&mut dyn FnMut())| {
        let mut g = c.benchmark_group("stackscan");
        g.throughput(Throughput::Elements(slots));
        link(&mut || {
            g.bench_function(name, |b| {
                b.iter(|| {
                    let mut hits = 0;
                    let mut sc = Scanner::new(&finder, 0, usize::MAX, |_, _| hits += 1);
                    // SAFETY: the chain is linked on this thread for the whole call.
                    unsafe { sc.frames(chain.load(Ordering::Relaxed)) };
                    hits
                })
            });
        });
        g.finish();
    };
    let map = FrameMap::new(3, &[&[0, 2]]).unwrap();
    precise("precise 64 frames", 64, &|f| {
        nest::<3>(64, &chain, &map, objs[0], f)
    });
    // 32 slots, all live (slot 1 null): 31 precise roots a frame.
    let live: Vec<usize> = (0..32).collect();
    let map32 = FrameMap::new(32, &[&live]).unwrap();
    precise("precise 16 frames x 32 slots", 16 * 32, &|f| {
        nest::<32>(16, &chain, &map32, objs[0], f)
    });
    cache.flush(&heap);
}

criterion_group! { name = benches; config = common::config(); targets = scan }
criterion_main!(benches);
