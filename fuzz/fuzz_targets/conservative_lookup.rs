//! The conservative oracle against a model: the input allocates objects of
//! fuzzed sizes (some freed by a collection that keeps a fuzzed subset), then
//! every remaining 8-byte chunk is a word to look up, offset into the arena
//! or not. `find_object` must return exactly the model's answer: the base of
//! the live object containing the word, or nothing.

#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use pardon::{Config, RawHeap, ThreadCache, TypeDesc};

static TYPES: Mutex<Option<HashMap<usize, pardon::Type>>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let heap = RawHeap::new(Config { arena_size: 1 << 30, gc_percent: None, ..Config::default() })
        .expect("heap");
    let nallocs = (data[0] as usize) * 4 + data[1] as usize % 4;
    let keep_mask = data[2];
    let mut cache = ThreadCache::new();
    let mut objects: BTreeMap<usize, usize> = BTreeMap::new();
    let mut rest = &data[3..];
    for i in 0..nallocs {
        let Some((&b, tail)) = rest.split_first() else { break };
        rest = tail;
        // Sizes from 8 bytes to about 40 KiB (small classes and large spans).
        let size = match b % 8 {
            0..=5 => 8 * (b as usize + 1),
            6 => 1024 * (b as usize % 40 + 1),
            _ => 8,
        };
        // Types are registered once per size for the whole process (a
        // registered type lives forever).
        let ty = *TYPES.lock().unwrap().get_or_insert_with(HashMap::new).entry(size).or_insert_with(|| {
            heap.register_type(&TypeDesc { name: "fuzz", size, align: 8, pointer_words: &[] })
                .expect("type")
        });
        let addr = cache.alloc(&heap, ty).expect("alloc").as_ptr() as usize;
        let slot = heap.object_size(addr).expect("allocated objects have a size");
        assert!(slot >= size);
        objects.insert(addr, slot);
        let _ = i;
    }
    // Keep a subset through a collection; the rest becomes free.
    let kept: Vec<usize> = objects
        .keys()
        .enumerate()
        .filter(|(i, _)| keep_mask & (1 << (i % 8)) != 0)
        .map(|(_, &a)| a)
        .collect();
    heap.collect_with(&mut [&mut cache], |m| {
        for &a in &kept {
            m.mark_word(a);
        }
    });
    heap.finish_sweep();
    objects.retain(|a, _| kept.contains(a));
    let (lo, hi) = heap.arena_range();
    for chunk in rest.chunks_exact(8) {
        let raw = u64::from_le_bytes(chunk.try_into().unwrap()) as usize;
        // Half the words land inside the arena, near the objects.
        let w = if raw & 1 == 0 { lo + (raw >> 1) % (hi - lo).min(64 << 20) } else { raw };
        let want = objects
            .range(..=w)
            .next_back()
            .filter(|(&base, &size)| w < base + size)
            .map(|(&base, _)| base);
        assert_eq!(heap.find_object(w), want, "word {w:#x}");
    }
});
