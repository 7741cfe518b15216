//! The library surface around the raw and typed APIs: empty globals, raw
//! word accessors and what a reference word may hold.

use std::sync::atomic::{AtomicI64, Ordering};

use pardon::{gc_object, Config, Global, Heap, Member, Mutator, TypeDesc, WordError};

gc_object! {
    struct Node {
        next: Member<Node>,
        value: AtomicI64,
    }
}

fn heap() -> Heap {
    Heap::new(Config {
        arena_size: 1 << 30,
        gc_percent: None,
        verify: true,
        ..Config::default()
    })
    .unwrap()
}

fn on_thread<R: Send + 'static>(heap: &Heap, f: impl FnOnce(&Mutator) -> R + Send + 'static) -> R {
    let heap = heap.clone();
    std::thread::spawn(move || f(&heap.attach().unwrap()))
        .join()
        .unwrap()
}

#[test]
fn an_empty_global_is_filled_emptied_and_refilled() {
    let heap = heap();
    let g: Global<Node> = Global::empty(&heap).unwrap();
    assert!(g.is_empty());
    let g = on_thread(&heap, move |m| {
        assert!(g.get(m).is_none());
        let n = m.alloc::<Node>().unwrap();
        n.value.store(31, Ordering::Relaxed);
        g.set(Some(&n));
        g
    });
    heap.collect().unwrap();
    let g = on_thread(&heap, move |m| {
        assert_eq!(g.get(m).unwrap().value.load(Ordering::Relaxed), 31);
        g.set(None);
        g
    });
    assert!(g.is_empty());
    heap.collect().unwrap();
}

/// A raw list whose links are interior pointers and whose spare reference
/// word holds tagged integers: the links keep every node alive (checked by
/// canaries after collections that churn the freed slots), and the tagged
/// integers cause no harm.
#[test]
fn reference_words_hold_interior_pointers_and_tagged_integers() {
    let heap = heap();
    let ty = heap
        .register_type(&TypeDesc {
            name: "cell",
            size: 32,
            align: 8,
            pointer_words: &[1, 2],
        })
        .unwrap();
    const N: usize = 200;
    let head = on_thread(&heap, move |m| {
        let mut next = 0usize;
        for i in (0..N).rev() {
            let a = m.alloc_raw(ty).unwrap();
            // SAFETY: a raw object, whose words only this test reads.
            unsafe { m.store_word(a, 0, 0xc0de_0000 + i) }.unwrap();
            // An interior pointer to the next node (its word 3).
            // SAFETY: as above.
            unsafe { m.store_word(a, 1, if next == 0 { 0 } else { next + 24 }) }.unwrap();
            // A tagged small integer.
            // SAFETY: as above.
            unsafe { m.store_word(a, 2, (i << 1) | 1) }.unwrap();
            next = a;
        }
        m.heap().add_root(next).unwrap()
    });
    for _ in 0..3 {
        heap.collect().unwrap();
        on_thread(&heap, move |m| {
            for _ in 0..2 * N {
                std::hint::black_box(m.alloc_raw(ty).unwrap());
            }
        });
    }
    on_thread(&heap, move |m| {
        let mut cur = m.heap().root_value(&head);
        for i in 0..N {
            assert_eq!(m.load_word(cur, 0).unwrap(), 0xc0de_0000 + i, "node {i}");
            assert_eq!(m.load_word(cur, 2).unwrap(), (i << 1) | 1);
            let link = m.load_word(cur, 1).unwrap();
            cur = if link == 0 { 0 } else { link - 24 };
        }
        assert_eq!(cur, 0);
    });
}

#[test]
fn word_accessors_refuse_bad_addresses_and_indices() {
    let heap = heap();
    on_thread(&heap, |m| {
        let n = m.alloc::<Node>().unwrap();
        let outside = &n as *const _ as usize;
        assert_eq!(
            m.load_word(outside, 0),
            Err(WordError::NotAnObject { addr: outside })
        );
        // A 16-byte object: two words.
        assert_eq!(
            // SAFETY: refused before any store (out of bounds).
            unsafe { m.store_word(n.addr(), 2, 1) },
            Err(WordError::OutOfBounds { index: 2, words: 2 })
        );
        // SAFETY: word 1 of a Node is its `value`, an AtomicI64: any bits.
        unsafe { m.store_word(n.addr(), 1, 77) }.unwrap();
        assert_eq!(n.value.load(Ordering::Relaxed), 77);
        // SAFETY: `n` is a live two-word object.
        assert_eq!(unsafe { m.load_word_unchecked(n.addr(), 1) }, 77);
    });
}

/// A `ThreadCache` holds one heap's spans at a time: allocating from it
/// with another heap, or flushing it into another, panics with a message
/// (a flush into another heap used to put the first heap's spans on its
/// lists, whose next allocations then indexed the second heap's tables
/// with addresses outside its arena). Flushed into its own heap, it may
/// serve another.
#[test]
fn a_thread_cache_serves_one_heap_at_a_time() {
    use pardon::{RawHeap, ThreadCache};
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let small = || Config {
        arena_size: 64 << 20,
        ..Config::default()
    };
    let (a, b) = (
        RawHeap::new(small()).unwrap(),
        RawHeap::new(small()).unwrap(),
    );
    let desc = TypeDesc {
        name: "pair",
        size: 16,
        align: 8,
        pointer_words: &[0],
    };
    let (ta, tb) = (
        a.register_type(&desc).unwrap(),
        b.register_type(&desc).unwrap(),
    );
    let mut cache = ThreadCache::new();
    let p = cache.alloc(&a, ta).unwrap().as_ptr() as usize;
    assert_eq!(a.find_object(p), Some(p));
    let message = |r: std::thread::Result<()>| {
        let e = r.expect_err("another heap was accepted");
        e.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| e.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    };
    for m in [
        message(catch_unwind(AssertUnwindSafe(|| {
            let _ = cache.alloc(&b, tb);
        }))),
        message(catch_unwind(AssertUnwindSafe(|| {
            let _ = cache.alloc_array(&b, tb, 3);
        }))),
        message(catch_unwind(AssertUnwindSafe(|| cache.flush(&b)))),
    ] {
        assert!(m.contains("another heap"), "{m}");
    }
    // Still a's: its objects come from a, and b's lists never saw its spans.
    let q = cache.alloc(&a, ta).unwrap().as_ptr() as usize;
    assert_eq!(a.find_object(q), Some(q));
    cache.flush(&a);
    let r = cache.alloc(&b, tb).unwrap().as_ptr() as usize;
    assert_eq!(b.find_object(r), Some(r));
    assert_eq!(a.find_object(r), None);
    cache.flush(&b);
}
