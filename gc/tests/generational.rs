//! Generational mode (sticky mark bits and a card-marking write barrier)
//! through the public API: what a minor collection keeps and frees, that a
//! full collection reclaims what minor ones leave, that the pacer mixes the
//! two, and that verify mode catches a store that skipped the barrier.

use std::sync::atomic::{AtomicI64, Ordering};

use pardon::{gc_object, CollectionKind, Config, Heap, Member, Mutator, Root, TypeDesc};

gc_object! {
    struct Cell {
        next: Member<Cell>,
        value: AtomicI64,
    }
}

fn heap(generational: bool) -> Heap {
    Heap::new(Config {
        arena_size: 1 << 30,
        gc_percent: None,
        verify: true,
        generational,
        ..Config::default()
    })
    .unwrap()
}

fn cell<'m>(m: &'m Mutator, v: i64) -> Root<'m, Cell> {
    let c = m.alloc::<Cell>().unwrap();
    c.value.store(v, Ordering::Relaxed);
    c
}

/// Allocates a young cell, links it from `old` and drops every other
/// reference to it; returns its address. Not inlined, so that no copy of the
/// address stays in the caller's frame for the conservative scan to find.
#[inline(never)]
fn link_young(m: &Mutator, old: &Root<'_, Cell>, v: i64) -> usize {
    let young = cell(m, v);
    old.next.set(Some(&young));
    young.addr()
}

#[test]
fn a_young_object_linked_only_from_an_old_one_survives_a_minor_collection() {
    let h = heap(true);
    let m = h.attach().unwrap();
    let old = cell(&m, 1);
    let full = m.collect().unwrap();
    assert_eq!(full.kind, CollectionKind::Full);
    let addr = link_young(&m, &old, 2);
    let st = m.collect_minor().unwrap();
    assert_eq!(st.kind, CollectionKind::Minor);
    assert!(st.cards >= 1, "the barrier dirtied the old cell's card");
    assert_eq!(h.raw().find_object(addr), Some(addr), "young cell freed");
    let y = old.next.get(&m).expect("link kept");
    assert_eq!(y.value.load(Ordering::Relaxed), 2);
    assert!(
        st.verified,
        "the minor mark was checked against a full re-mark"
    );
}

#[inline(never)]
fn garbage(m: &Mutator, n: i64) -> Vec<usize> {
    (0..n).map(|i| cell(m, i).addr()).collect()
}

#[test]
fn minor_collections_keep_old_garbage_until_a_full_one() {
    let h = heap(true);
    let m = h.attach().unwrap();
    // Survivors of a collection are old; dropping them makes old garbage.
    let keep = garbage(&m, 1);
    let olds = {
        let roots: Vec<Root<'_, Cell>> = (0..100).map(|i| cell(&m, i)).collect();
        m.collect().unwrap();
        roots.iter().map(|r| r.addr()).collect::<Vec<_>>()
    };
    let young = garbage(&m, 100);
    let st = m.collect_minor().unwrap();
    assert_eq!(st.kind, CollectionKind::Minor);
    let found = |v: &[usize]| {
        v.iter()
            .filter(|&&a| h.raw().find_object(a) == Some(a))
            .count()
    };
    h.raw().finish_sweep();
    assert_eq!(found(&olds), 100, "a minor collection freed old objects");
    assert!(found(&young) < 5, "unreachable young objects were freed");
    let st = m.collect().unwrap();
    assert_eq!(st.kind, CollectionKind::Full);
    h.raw().finish_sweep();
    assert!(
        found(&olds) < 5,
        "the full collection freed the old garbage"
    );
    drop(keep);
}

#[test]
fn on_a_heap_that_is_not_generational_minor_means_full() {
    let h = heap(false);
    let m = h.attach().unwrap();
    let _a = cell(&m, 1);
    let st = m.collect_minor().unwrap();
    assert_eq!(st.kind, CollectionKind::Full);
    assert_eq!(h.stats().minor_collections, 0);
}

#[test]
fn the_pacer_runs_minor_collections_and_full_ones_as_old_objects_grow() {
    let h = Heap::new(Config {
        arena_size: 1 << 30,
        min_heap: 1 << 20,
        gc_percent: Some(100),
        generational: true,
        verify: true,
        ..Config::default()
    })
    .unwrap();
    let m = h.attach().unwrap();
    // A list that keeps growing (old objects accumulate), and garbage.
    let head = cell(&m, 0);
    let mut tail = head.clone();
    for i in 1..1_000_000i64 {
        let c = cell(&m, i);
        if i % 2 == 0 {
            tail.next.set(Some(&c));
            tail = c;
        }
    }
    let st = h.stats();
    assert!(
        st.minor_collections > 0,
        "{} collections, none minor",
        st.collections
    );
    assert!(
        st.collections - st.minor_collections >= 2,
        "full collections as the old objects grew: {} of {}",
        st.collections - st.minor_collections,
        st.collections
    );
    // The list is intact.
    let (mut n, mut c) = (1, head.clone());
    while let Some(next) = c.next.get(&m) {
        assert_eq!(next.value.load(Ordering::Relaxed), 2 * n);
        n += 1;
        c = next;
    }
    assert_eq!(n, 1_000_000 / 2);
}

/// Stores a fresh object into an old one *without* the barrier, on a thread
/// that then detaches and exits, so no stack or register of any thread still
/// holds the fresh object's address for the conservative scan to find.
/// Returns the fresh object's address (a plain number: it roots nothing).
fn store_without_barrier(h: &Heap, ty: pardon::Type, slot: usize) -> usize {
    let h = h.clone();
    std::thread::spawn(move || {
        let m = h.attach().unwrap();
        let young = m.alloc_raw(ty).unwrap();
        // SAFETY: `slot` is a reference word of a live object (word 0 or 1
        // of a rooted pair).
        unsafe { *(slot as *mut usize) = young };
        young
    })
    .join()
    .unwrap()
}

/// A generational heap in verify mode, a pair type (two reference
/// words), and one pair, old (it survived a collection) and held by a
/// global root.
fn old_pair() -> (Heap, pardon::Type, usize, pardon::GlobalRootId) {
    let h = heap(true);
    let ty = h
        .register_type(&TypeDesc {
            name: "pair",
            size: 16,
            align: 8,
            pointer_words: &[0, 1],
        })
        .unwrap();
    let old = {
        let m = h.attach().unwrap();
        m.alloc_raw(ty).unwrap()
    };
    let id = h.add_root(old).unwrap();
    h.collect().unwrap();
    (h, ty, old, id)
}

#[test]
#[should_panic(expected = "without the write barrier")]
fn verify_mode_catches_a_store_without_the_barrier() {
    let (h, ty, old, id) = old_pair();
    store_without_barrier(&h, ty, old);
    // The young object is reachable only through the unrecorded store: the
    // minor mark misses it, and the verification re-mark says so.
    let _ = h.collect_minor();
    h.remove_root(id);
}

/// The panic names the path: the global root, the old object (marked: old)
/// and, at word 1, the young object the minor mark missed.
#[test]
fn verify_mode_names_the_path_to_the_missed_object() {
    let (h, ty, old, id) = old_pair();
    let young = store_without_barrier(&h, ty, old + 8);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.collect_minor()));
    let msg = match r {
        Ok(_) => panic!("verify mode missed the unbarriered store"),
        Err(p) => p
            .downcast_ref::<String>()
            .cloned()
            .expect("a formatted panic message"),
    };
    let want = format!(
        "path: root -> {old:#x} (marked) word 1 -> {young:#x} (unmarked); the marked object \
         {old:#x} references the unmarked {young:#x} at word 1"
    );
    assert!(msg.contains(&want), "{msg}\nwants: {want}");
    h.remove_root(id);
}
