//! The holes found by using the safe API as a newcomer and an adversary
//! would (issue 17), each as the program that found it. Every test checks
//! object contents through canaries the test wrote itself, not only the
//! collector's own verification, so it does not depend on the code under
//! test to notice its own mistake.

use std::sync::atomic::{AtomicI64, Ordering};

use pardon::{gc_object, Config, Heap, Member, Mutator, Type, TypeDesc};

fn verify_heap() -> Heap {
    Heap::new(Config {
        arena_size: 4 << 30,
        gc_percent: None,
        verify: true,
        ..Config::default()
    })
    .unwrap()
}

/// A raw node of `size` bytes: word 0 a canary, word 1 the next node.
fn node_type(heap: &Heap, size: usize) -> Type {
    heap.register_type(&TypeDesc {
        name: "node",
        size,
        align: 8,
        pointer_words: &[1],
    })
    .unwrap()
}

const CANARY: i64 = 0x5a5a_0000;

/// Builds a chain of `n` nodes reachable only from a global root, in a
/// frame that is gone by the time the caller collects.
#[inline(never)]
fn build_chain(m: &Mutator, ty: Type, n: usize) -> pardon::GlobalRootId {
    let mut next = 0usize;
    for i in (0..n).rev() {
        let a = m.alloc_raw(ty).unwrap();
        // SAFETY: a fresh object of `ty`: word 0 data, word 1 a reference.
        unsafe {
            *(a as *mut i64) = CANARY + i as i64;
            *(a as *mut usize).add(1) = next;
        }
        next = a;
    }
    m.heap().add_root(next).unwrap()
}

/// Allocates garbage that reuses every freed slot of `ty`'s class.
#[inline(never)]
fn churn(m: &Mutator, ty: Type, n: usize) {
    for _ in 0..n {
        let a = m.alloc_raw(ty).unwrap();
        std::hint::black_box(a);
    }
}

fn walk_chain(heap: &Heap, root: pardon::GlobalRootId, n: usize) {
    let mut p = heap.root_value(root);
    for i in 0..n {
        assert_ne!(p, 0, "chain cut at node {i}");
        assert_eq!(
            heap.raw().find_object(p),
            Some(p),
            "node {i} at {p:#x} was freed while reachable"
        );
        // SAFETY: `p` is an allocated node (checked above).
        let (c, next) = unsafe { (*(p as *const i64), *(p as *const usize).add(1)) };
        assert_eq!(c, CANARY + i as i64, "node {i} at {p:#x} was reused");
        p = next;
    }
}

/// Hole 1: the inlined fast path lost the reference bits of 24-, 40- and
/// 48-byte objects whose slot straddles a 512-byte boundary.
#[test]
fn chains_of_small_raw_objects_survive_in_every_size() {
    for size in (16..=64).step_by(8) {
        let heap = Heap::new(Config {
            gc_percent: None,
            ..Config::default()
        })
        .unwrap();
        let m = heap.attach().unwrap();
        let ty = node_type(&heap, size);
        let n = 200;
        let root = build_chain(&m, ty, n);
        m.collect().unwrap();
        churn(&m, ty, 2000);
        walk_chain(&heap, root, n);
    }
}

gc_object! {
    struct Node {
        val: AtomicI64,
        next: Member<Node>,
        check: AtomicI64,
    }
}

/// Hole 1 through the typed API, caught by verify mode's layout oracle too.
#[test]
fn typed_chains_survive_and_verify_checks_their_layout() {
    let heap = verify_heap();
    let m = heap.attach().unwrap();
    let head = m.alloc::<Node>().unwrap();
    let global = pardon::Global::new(&head).unwrap();
    drop(head);
    #[inline(never)]
    fn build(m: &Mutator, head: &pardon::Global<Node>) {
        let mut cur = head.get(m);
        for i in 1..200 {
            let n = m.alloc::<Node>().unwrap();
            n.val.store(i, Ordering::Relaxed);
            n.check.store(-i, Ordering::Relaxed);
            cur.next.set(Some(&n));
            cur = n;
        }
    }
    build(&m, &global);
    for _ in 0..3 {
        let st = m.collect().unwrap();
        assert!(st.verified);
        for _ in 0..5000 {
            std::hint::black_box(m.alloc::<Node>().unwrap());
        }
    }
    let mut cur = global.get(&m);
    for i in 1..200 {
        cur = cur.next.get(&m).expect("chain cut");
        assert_eq!(cur.val.load(Ordering::Relaxed), i);
        assert_eq!(cur.check.load(Ordering::Relaxed), -i);
    }
}

/// Hole 6: bad input is an error that names the problem.
#[test]
fn bad_types_and_configs_are_errors() {
    let heap = Heap::new(Config::default()).unwrap();
    for w in [usize::MAX / 8, usize::MAX, 3] {
        let e = heap
            .register_type(&TypeDesc {
                name: "bad",
                size: 24,
                align: 8,
                pointer_words: &[w],
            })
            .unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
    }
    let e = Heap::new(Config {
        gray_capacity: (1 << 61) - 1,
        ..Config::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("gray_capacity"), "{e}");
}
