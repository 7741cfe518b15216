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

use pardon::preempt::{Registry, SuspendedTask, TaskScanner, TaskSource};
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
        f(&self.report());
    }
}

impl Fake {
    /// The task as a stop reports it.
    fn report(&self) -> SuspendedTask<'_> {
        SuspendedTask {
            stack: self.stack,
            sp: self.stack.0 + SP * 8,
            registers: &self.registers,
            word: self.head,
        }
    }

    /// Another source reporting the same task.
    fn clone_report(&self) -> Fake {
        Fake {
            stack: self.stack,
            head: self.head,
            registers: self.registers.clone(),
            on: AtomicU32::new(self.on.load(SeqCst)),
        }
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

/// The hand-built task and what it holds: objects A..F (allocated on a
/// thread that then detached), a stack buffer holding C below the saved
/// stack pointer, an interior pointer to A in the scanned range and D
/// above the outer frame, two frames whose off-stack slots hold B (inner)
/// and E (outer), and F in a saved register.
struct Scene {
    objs: Vec<usize>,
    /// The objects the hybrid rule reaches: A, B, E, F.
    reached: [usize; 4],
    fake: Fake,
    _stack: Box<[usize]>,
    _slots: (Box<AtomicUsize>, Box<AtomicUsize>),
}

fn scene(heap: &Heap, ty: Type) -> Scene {
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
    Scene {
        fake: Fake {
            stack: (lo, lo + WORDS * 8),
            head: inner,
            registers: vec![f as u64],
            on: AtomicU32::new(1),
        },
        reached: [a, b, e, f],
        objs,
        _stack: stack,
        _slots: (slot_inner, slot_outer),
    }
}

/// Allocates over the slots a collection freed, then checks that the
/// objects the task reaches kept their contents.
fn check_canaries(heap: &Heap, ty: Type, sc: &Scene) {
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
    for (i, &o) in sc.objs.iter().enumerate() {
        if sc.reached.contains(&o) {
            // SAFETY: live (its holder checked it), never freed since.
            assert_eq!(unsafe { *(o as *const u64) }, CANARY + i as u64);
        }
    }
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
    let sc = scene(&heap, ty);
    let fake = Arc::new(sc.fake.clone_report());
    let id = registry.add_task_source(fake.clone());

    let cycle = heap.collect().unwrap();
    assert_eq!(cycle.suspended_tasks, 1);
    assert!(cycle.verified);
    assert_eq!(
        cycle.marked_objects, 4,
        "A (conservative, in range), B and E (frame slots), F (register)"
    );
    assert_eq!(cycle.precise_roots, 2);
    for (i, &o) in sc.objs.iter().enumerate() {
        if sc.reached.contains(&o) {
            assert_eq!(heap.raw().find_object(o), Some(o), "object {i} freed");
        }
    }
    check_canaries(&heap, ty, &sc);

    // Not reported: nothing of it is a root any more.
    fake.on.store(0, SeqCst);
    let cycle = heap.collect().unwrap();
    assert_eq!(cycle.suspended_tasks, 0);
    assert_eq!(cycle.marked_objects, 0);
    fake.on.store(1, SeqCst);
    assert!(registry.remove_task_source(id).is_some());
    let cycle = heap.collect().unwrap();
    assert_eq!(cycle.suspended_tasks, 0, "a removed source is not asked");
}

/// A source that defers (as pardon-sched's does): reports nothing in the
/// stops, and hands its task over in `scan_deferred` — or, when
/// `forgetful`, never (a broken source).
struct Deferring {
    fake: Fake,
    forgetful: bool,
    /// Deferrals begun and ended, and scans handed over.
    begun: AtomicU32,
    ended: AtomicU32,
    handed: AtomicU32,
}

// SAFETY: as for `Fake`; the task is never switched in, so handing it
// over after the stop sees it as the stop would have.
unsafe impl TaskSource for Deferring {
    unsafe fn for_each_suspended(&self, f: &mut dyn FnMut(&SuspendedTask<'_>)) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.fake.for_each_suspended(f) }
    }
    unsafe fn defer_scans(
        &self,
        _scanner: &Arc<dyn TaskScanner>,
        _now: &mut dyn FnMut(&SuspendedTask<'_>),
    ) {
        self.begun.fetch_add(1, SeqCst);
    }
    fn scan_deferred(&self, _s: &Arc<dyn TaskScanner>, f: &mut dyn FnMut(&SuspendedTask<'_>)) {
        if !self.forgetful {
            self.handed.fetch_add(1, SeqCst);
            f(&self.fake.report());
        }
    }
    unsafe fn end_deferral(
        &self,
        _s: &Arc<dyn TaskScanner>,
        _f: &mut dyn FnMut(&SuspendedTask<'_>),
    ) {
        self.ended.fetch_add(1, SeqCst);
    }
}

/// A deferring double over the scene's task.
fn deferring(sc: &Scene, forgetful: bool) -> Arc<Deferring> {
    Arc::new(Deferring {
        fake: sc.fake.clone_report(),
        forgetful,
        begun: AtomicU32::new(0),
        ended: AtomicU32::new(0),
        handed: AtomicU32::new(0),
    })
}

fn concurrent_heap() -> (Registry, Heap) {
    let registry = Registry::new(Default::default()).unwrap();
    let heap = Heap::with_registry(
        Config {
            gc_percent: None,
            verify: true,
            concurrent: true,
            ..Config::default()
        },
        registry.clone(),
    )
    .unwrap();
    (registry, heap)
}

/// A concurrent cycle reads a deferring source's task after its first
/// stop, by the same rule, and neither stop reads it.
#[test]
fn a_deferred_task_is_scanned_after_the_first_stop_by_the_hybrid_rule() {
    let (registry, heap) = concurrent_heap();
    let ty = node(&heap);
    let sc = scene(&heap, ty);
    let src = deferring(&sc, false);
    registry.add_task_source(src.clone());
    let cycle = heap.collect().unwrap();
    assert!(cycle.verified);
    assert_eq!(cycle.suspended_tasks, 0, "no stop scanned it");
    assert_eq!(cycle.deferred_tasks, 1);
    assert_eq!(
        (
            src.begun.load(SeqCst),
            src.handed.load(SeqCst),
            src.ended.load(SeqCst)
        ),
        (1, 1, 1)
    );
    assert_eq!(cycle.marked_objects, 4, "A, B, E, F");
    assert_eq!(cycle.precise_roots, 2);
    check_canaries(&heap, ty, &sc);
}

/// Verify mode re-marks from every suspended task, deferred or not: a
/// source that defers and then never hands its task over is caught, the
/// missed object named.
#[test]
fn verify_catches_a_deferred_scan_that_never_happened() {
    let (registry, heap) = concurrent_heap();
    let ty = node(&heap);
    let sc = scene(&heap, ty);
    let src = deferring(&sc, true);
    registry.add_task_source(src.clone());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| heap.collect()));
    let msg = match r {
        Ok(c) => panic!("the collection passed verification: {c:?}"),
        Err(p) => p.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(msg.contains("pardon verify"), "{msg}");
    assert_eq!(src.begun.load(SeqCst), 1);
}

/// A source that cannot defer (the trait's default methods) is scanned in
/// both stops of a concurrent cycle, as before deferral existed.
#[test]
fn a_source_that_cannot_defer_is_scanned_in_both_stops() {
    let (registry, heap) = concurrent_heap();
    let ty = node(&heap);
    let sc = scene(&heap, ty);
    registry.add_task_source(Arc::new(sc.fake.clone_report()));
    let cycle = heap.collect().unwrap();
    assert!(cycle.verified);
    assert_eq!(cycle.suspended_tasks, 2, "once in each stop");
    assert_eq!(cycle.deferred_tasks, 0);
    assert_eq!(cycle.marked_objects, 4, "A, B, E, F");
    check_canaries(&heap, ty, &sc);
}
