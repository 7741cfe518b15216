//! The heap's side of goroutines, against a test double: a task source
//! that reports one hand-built "suspended task" (a buffer standing for its
//! stack, with a saved stack pointer, a shadow frame chain and saved
//! registers). The collector must scan it by the hybrid rule — precisely
//! along the chain, conservatively from the saved stack pointer up to the
//! second-innermost frame, and the registers — and nothing else of it.
//!
//! The oracle is independent of the collector: the test knows which
//! objects each rule reaches, and counts the objects a full collection
//! marks (the coordinator is an unattached thread, which is not scanned,
//! and no mutator is attached while it collects, so nothing else is a
//! root); canaries written by the test check the survivors' contents after
//! the freed slots have been reused.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use pardon::preempt::{Registry, SuspendedTask, TaskSource};
use pardon::stackscan::{frame_map, FrameHeader, FrameMap};
use pardon::{Config, Heap, Type, TypeDesc};

static MAP: FrameMap = frame_map!(1; [0]);

const WORDS: usize = 512;
/// Where the saved stack pointer is, in words from the bottom.
const SP: usize = 64;
/// Conservative words: below SP (not scanned), between SP and the outer
/// frame (scanned), above the outer frame (not scanned: that part is
/// precise).
const BELOW_SP: usize = 10;
const IN_RANGE: usize = 100;
const ABOVE_OUTER: usize = 400;
const INNER_FRAME: usize = 150;
const OUTER_FRAME: usize = 300;

/// A fake suspended task. Addresses only, so it is `Send` and `Sync`.
struct Fake {
    stack: (usize, usize),
    head: usize,
    registers: Vec<u64>,
    /// Whether to report the task.
    on: AtomicU32,
}

// SAFETY: the reported range is the test's own buffer, kept alive and
// unwritten while a world is stopped; the frame chain in it is well
// formed (built below) and its slots live as long as the test.
unsafe impl TaskSource for Fake {
    unsafe fn for_each_suspended(&self, f: &mut dyn FnMut(&SuspendedTask<'_>)) {
        if self.on.load(SeqCst) == 0 {
            return;
        }
        f(&SuspendedTask {
            stack: self.stack,
            sp: self.stack.0 + SP * 8,
            registers: &self.registers,
            word: self.head,
        });
    }
}

const CANARY: u64 = 0xc0ff_ee00;

fn node(heap: &Heap) -> Type {
    heap.register_type(&TypeDesc {
        name: "node",
        size: 32,
        align: 8,
        pointer_words: &[1],
    })
    .unwrap()
}

/// Writes a frame header at word `at` of `stack`.
fn put_frame(stack: &mut [usize], at: usize, prev: usize, slot: &AtomicUsize) -> usize {
    let p = &mut stack[at] as *mut usize as *mut FrameHeader;
    // SAFETY: `at..at + 4` are words of the buffer (a header is four
    // words), suitably aligned.
    unsafe {
        p.write(FrameHeader {
            prev,
            map: &MAP,
            site: AtomicU32::new(0),
            nslots: 1,
            slots: slot,
        })
    };
    p as usize
}

#[test]
fn a_suspended_task_is_scanned_by_the_hybrid_rule_and_only_while_reported() {
    let registry = Registry::new(Default::default()).unwrap();
    let heap = Heap::with_registry(
        Config {
            gc_percent: None,
            verify: true,
            ..Config::default()
        },
        registry.clone(),
    )
    .unwrap();
    let ty = node(&heap);
    // Six objects, allocated on a thread that then detaches: A..F.
    let objs: Vec<usize> = {
        let heap = heap.clone();
        std::thread::spawn(move || {
            let m = heap.attach().unwrap();
            (0..6)
                .map(|i| {
                    let a = m.alloc_raw(ty).unwrap();
                    // SAFETY: a fresh 32-byte object: word 0 is data.
                    unsafe { *(a as *mut u64) = CANARY + i };
                    a
                })
                .collect()
        })
        .join()
        .unwrap()
    };
    let [a, b, c, d, e, f] = objs[..] else {
        unreachable!()
    };
    // The stack buffer and the frames' slots (outside it: found only by
    // walking the chain).
    let mut stack = vec![0usize; WORDS].into_boxed_slice();
    let slot_inner = Box::new(AtomicUsize::new(b));
    let slot_outer = Box::new(AtomicUsize::new(e));
    stack[BELOW_SP] = c;
    stack[IN_RANGE] = a + 8; // an interior pointer
    stack[ABOVE_OUTER] = d;
    let outer = put_frame(&mut stack, OUTER_FRAME, 0, &slot_outer);
    let inner = put_frame(&mut stack, INNER_FRAME, outer, &slot_inner);
    let lo = stack.as_ptr() as usize;
    let fake = Arc::new(Fake {
        stack: (lo, lo + WORDS * 8),
        head: inner,
        registers: vec![f as u64],
        on: AtomicU32::new(1),
    });
    let id = registry.add_task_source(fake.clone());

    let cycle = heap.collect().unwrap();
    assert_eq!(cycle.suspended_tasks, 1);
    assert!(cycle.verified);
    assert_eq!(
        cycle.marked_objects, 4,
        "A (conservative, in range), B and E (frame slots), F (register)"
    );
    assert_eq!(cycle.precise_roots, 2);
    for (i, &o) in objs.iter().enumerate() {
        if [a, b, e, f].contains(&o) {
            assert_eq!(heap.raw().find_object(o), Some(o), "object {i} freed");
        }
    }
    // Reuse the freed slots, then check the survivors' contents.
    {
        let heap = heap.clone();
        std::thread::spawn(move || {
            let m = heap.attach().unwrap();
            for _ in 0..10_000 {
                let x = m.alloc_raw(ty).unwrap();
                // SAFETY: a fresh object.
                unsafe { *(x as *mut u64) = 0xdead };
            }
        })
        .join()
        .unwrap();
    }
    for (i, &o) in objs.iter().enumerate() {
        if [a, b, e, f].contains(&o) {
            // SAFETY: live (checked above), never freed since: no
            // collection ran.
            assert_eq!(unsafe { *(o as *const u64) }, CANARY + i as u64);
        }
    }

    // Not reported: nothing of it is a root any more.
    fake.on.store(0, SeqCst);
    let cycle = heap.collect().unwrap();
    assert_eq!(cycle.suspended_tasks, 0);
    assert_eq!(cycle.marked_objects, 0);
    fake.on.store(1, SeqCst);
    assert!(registry.remove_task_source(id).is_some());
    let cycle = heap.collect().unwrap();
    assert_eq!(cycle.suspended_tasks, 0, "a removed source is not asked");
    drop((stack, slot_inner, slot_outer, d));
}
