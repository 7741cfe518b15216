//! Properties of the exact lookup over random heaps, and the heap's errors.

use pardon::sizeclass::{CLASSES, NUM_CLASSES, PAGE_SIZE};
use pardon::{AllocError, Config, RawHeap, ThreadCache, TypeDesc};
use proptest::prelude::*;

fn heap(limit: usize) -> RawHeap {
    RawHeap::new(Config {
        arena_size: 64 << 20,
        heap_limit: limit,
        verify: true,
        ..Config::default()
    })
    .unwrap()
}

fn noscan(h: &RawHeap, size: usize) -> pardon::Type {
    h.register_type(&TypeDesc {
        name: "blob",
        size,
        align: 8,
        pointer_words: &[],
    })
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Every address inside an allocated object maps to its base; addresses in
    /// free, just-freed, tail-waste and outside-arena positions map to nothing.
    #[test]
    fn lookup_is_exact(sizes in prop::collection::vec(1usize..50_000, 1..80),
                       keep in prop::collection::vec(any::<bool>(), 80),
                       junk in prop::collection::vec(any::<u64>(), 200)) {
        let h = heap(64 << 20);
        let mut c = ThreadCache::new();
        let mut objs = Vec::new();
        for &s in &sizes {
            let t = noscan(&h, s.next_multiple_of(8));
            let p = c.alloc(&h, t).unwrap().as_ptr() as usize;
            objs.push((p, s.next_multiple_of(8)));
        }
        for &(p, s) in &objs {
            for a in [p, p + 1, p + s / 2, p + s - 1] {
                prop_assert_eq!(h.find_object(a), Some(p));
            }
        }
        // Keep some, free the rest with a collection.
        let kept: Vec<(usize, usize)> = objs.iter().zip(&keep).filter(|(_, k)| **k).map(|(o, _)| *o).collect();
        h.collect_with(&mut [&mut c], |m| { for &(p, _) in &kept { m.mark_word(p); } });
        h.finish_sweep();
        for &(p, s) in &objs {
            let alive = kept.contains(&(p, s));
            let want = if alive { Some(p) } else { None };
            prop_assert_eq!(h.find_object(p), want);
            prop_assert_eq!(h.find_object(p + s - 1), want);
            if alive {
                // Past the object, inside its slot or span: never this object.
                let slot = h.object_size(p).unwrap();
                if slot > s {
                    prop_assert_eq!(h.find_object(p + s), Some(p), "slot padding belongs to the slot");
                }
                prop_assert_ne!(h.find_object(p + slot), Some(p));
            }
        }
        let (lo, hi) = h.arena_range();
        for a in [0, 1, lo - 1, lo.wrapping_sub(8), hi, hi + 8, usize::MAX, usize::MAX - 7] {
            prop_assert_eq!(h.find_object(a), None);
        }
        // Arbitrary words never crash and only ever return kept objects' bases.
        for &j in &junk {
            for a in [j as usize, lo + (j as usize % (hi - lo))] {
                if let Some(b) = h.find_object(a) {
                    prop_assert!(kept.iter().any(|&(p, _)| p == b), "{a:#x} -> {b:#x} not live");
                }
            }
        }
        h.check_integrity().map_err(TestCaseError::fail)?;
    }
}

/// Tail waste of every class (bytes past the last whole object) is never an
/// object.
#[test]
fn tail_waste_is_not_an_object() {
    let h = heap(64 << 20);
    let mut c = ThreadCache::new();
    for k in CLASSES.iter().take(NUM_CLASSES).skip(1) {
        let t = noscan(&h, k.size as usize);
        // Fill one span of the class.
        let first = c.alloc(&h, t).unwrap().as_ptr() as usize;
        for _ in 1..k.nelems {
            c.alloc(&h, t).unwrap();
        }
        let span_base = first & !(PAGE_SIZE - 1);
        let span_end = span_base + k.npages as usize * PAGE_SIZE;
        let tail = span_base + k.nelems as usize * k.size as usize;
        for a in tail..span_end {
            assert_eq!(h.find_object(a), None, "class {} tail byte {a:#x}", k.size);
        }
    }
}

#[test]
fn exhaustion_is_an_error_and_the_heap_stays_usable() {
    let h = heap(1 << 20);
    let t = noscan(&h, 4096);
    let mut c = ThreadCache::new();
    let mut n = 0;
    let err = loop {
        match c.alloc(&h, t) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, AllocError::HeapExhausted { limit, .. } if limit == 1 << 20),
        "{err}"
    );
    assert!(n >= 200, "only {n} 4 KiB objects fit in 1 MiB");
    // Large objects fail the same way.
    let big = noscan(&h, 512 << 10);
    assert!(c.alloc(&h, big).is_err());
    // Free everything; allocation works again.
    h.collect_with(&mut [&mut c], |_| {});
    h.finish_sweep();
    assert!(c.alloc(&h, t).is_ok());
    assert!(c.alloc(&h, big).is_ok());
    h.check_integrity().unwrap();
}

#[test]
fn zero_sized_oversized_and_overflowing_requests() {
    let h = heap(16 << 20);
    let mut c = ThreadCache::new();
    let zero = noscan(&h, 0);
    let a = c.alloc(&h, zero).unwrap().as_ptr() as usize;
    let b = c.alloc(&h, zero).unwrap().as_ptr() as usize;
    assert_ne!(a, b, "zero-sized objects get distinct addresses");
    assert_eq!(h.find_object(a), Some(a));
    let word = noscan(&h, 8);
    assert!(matches!(
        c.alloc_array(&h, word, usize::MAX / 2),
        Err(AllocError::TooLarge { .. })
    ));
    let huge = noscan(&h, 32 << 20);
    assert!(matches!(
        c.alloc(&h, huge),
        Err(AllocError::HeapExhausted { .. })
    ));
}

#[test]
fn bad_config_and_types_name_the_field() {
    let e = RawHeap::new(Config {
        arena_size: 12345,
        ..Config::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("arena_size"), "{e}");
    let e = RawHeap::new(Config {
        heap_limit: 1,
        ..Config::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("heap_limit"), "{e}");
    let e = RawHeap::new(Config {
        gray_capacity: 0,
        ..Config::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("gray_capacity"), "{e}");
    let h = heap(1 << 20);
    let e = h
        .register_type(&TypeDesc {
            name: "bad",
            size: 16,
            align: 8,
            pointer_words: &[2],
        })
        .unwrap_err();
    assert!(e.to_string().contains("pointer word 2"), "{e}");
    let e = h
        .register_type(&TypeDesc {
            name: "odd",
            size: 16,
            align: 3,
            pointer_words: &[],
        })
        .unwrap_err();
    assert!(e.to_string().contains("align"), "{e}");
}

#[test]
fn free_spans_are_decommitted_after_a_while() {
    let h = RawHeap::new(Config {
        arena_size: 64 << 20,
        scavenge_after: 1,
        ..Config::default()
    })
    .unwrap();
    let t = noscan(&h, 1024);
    let mut c = ThreadCache::new();
    for _ in 0..4096 {
        c.alloc(&h, t).unwrap();
    }
    h.collect_with(&mut [&mut c], |_| {});
    h.finish_sweep();
    let before = h.stats().free_committed;
    assert!(
        before >= 4 << 20,
        "freed spans are committed until scavenged: {before}"
    );
    assert_eq!(h.scavenge(), 0, "not yet free for a whole collection");
    h.collect_with(&mut [&mut c], |_| {});
    let released = h.scavenge();
    assert!(released >= 4 << 20, "released {released}");
    assert_eq!(h.stats().free_committed, before - released);
    // Reused decommitted memory is zero without being zeroed.
    let p = c.alloc(&h, t).unwrap().as_ptr();
    // SAFETY: a fresh 1024-byte object.
    assert!(unsafe { std::slice::from_raw_parts(p, 1024) }
        .iter()
        .all(|&b| b == 0));
}
