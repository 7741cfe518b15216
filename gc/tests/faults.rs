//! Faults around the collector: heap exhaustion reaches the allocating
//! thread as an error and the heap stays usable; a mutator that panics while
//! holding frames (caught, and uncaught so that its thread dies) during
//! collections loses nothing for anyone else.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon::stackscan::{frame_map, with_frame, FrameMap};
use pardon::{gc_object, AllocError, Config, Heap, Member, Preemption, Root};

gc_object! {
    struct Blob {
        next: Member<Blob>,
        value: AtomicI64,
        pad: [u64; 30],
    }
}

#[test]
fn heap_exhaustion_is_an_error_and_the_heap_recovers() {
    for preemption in [Preemption::Signal, Preemption::Poll] {
        let heap = Heap::new(Config {
            heap_limit: 8 << 20,
            gc_percent: None,
            verify: true,
            preemption,
            ..Config::default()
        })
        .unwrap();
        let m = heap.attach().unwrap();
        let mut keep: Vec<Root<'_, Blob>> = Vec::new();
        let err = loop {
            match m.alloc::<Blob>() {
                Ok(b) => {
                    b.value.store(keep.len() as i64, Ordering::Relaxed);
                    keep.push(b);
                }
                Err(e) => break e,
            }
            assert!(keep.len() < 1 << 20, "the limit never bit");
        };
        match err {
            AllocError::HeapExhausted { limit, .. } => assert_eq!(limit, 8 << 20),
            other => panic!("expected exhaustion, got {other:?}"),
        }
        assert!(
            keep.len() > 10_000,
            "only {} objects fit in 8 MiB",
            keep.len()
        );
        assert!(err.to_string().contains("limit"), "message: {err}");
        // Everything kept is intact; after dropping half, allocation works.
        for (i, b) in keep.iter().enumerate() {
            assert_eq!(b.value.load(Ordering::Relaxed), i as i64);
        }
        let n = keep.len();
        keep.truncate(n / 2);
        for _ in 0..n / 4 {
            keep.push(m.alloc::<Blob>().expect("room after dropping half"));
        }
        for (i, b) in keep.iter().take(n / 2).enumerate() {
            assert_eq!(b.value.load(Ordering::Relaxed), i as i64);
        }
    }
}

static CHAIN: FrameMap = frame_map!(2; [0, 1]);

/// Builds a chain under a frame and panics halfway, `depth` frames deep.
fn build_then_panic(m: &pardon::Mutator, ty: pardon::Type, depth: u32) {
    with_frame::<2, _>(m.frames(), &CHAIN, |fr| {
        for i in 0..200 {
            let a = m.alloc_raw(ty).unwrap();
            // SAFETY: word 0 of a fresh Blob-shaped object is its pointer.
            unsafe { *(a as *mut usize) = fr.get(0) };
            fr.set(0, a);
            if depth == 0 && i == 100 {
                panic!("mutator panics with frames linked");
            }
        }
        if depth > 0 {
            build_then_panic(m, ty, depth - 1);
        }
    })
}

#[test]
fn panicking_mutators_with_frames_lose_nothing() {
    let heap = Heap::new(Config {
        verify: true,
        min_heap: 1 << 20,
        ..Config::default()
    })
    .unwrap();
    let ty = heap
        .register_type(&pardon::TypeDesc {
            name: "Raw",
            size: 256,
            align: 8,
            pointer_words: &[0],
        })
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // A survivor whose data must come through every collection.
    let survivor = {
        let (heap, stop) = (heap.clone(), stop.clone());
        std::thread::spawn(move || {
            let m = heap.attach().unwrap();
            let head = m.alloc::<Blob>().unwrap();
            let mut tail = head.clone();
            for i in 1..1000 {
                let b = m.alloc::<Blob>().unwrap();
                b.value.store(i, Ordering::Relaxed);
                tail.next.set(Some(&b));
                tail = b;
            }
            drop(tail);
            let mut checks = 0;
            while !stop.load(Ordering::Relaxed) {
                let _ = m.alloc::<Blob>();
                let (mut sum, mut cur) = (0, Some(head.clone()));
                while let Some(b) = cur {
                    sum += b.value.load(Ordering::Relaxed);
                    cur = b.next.get(&m);
                }
                assert_eq!(sum, 999 * 1000 / 2);
                checks += 1;
            }
            checks
        })
    };
    let start = Instant::now();
    let mut caught = 0;
    let mut died = 0;
    while start.elapsed() < Duration::from_secs(2) {
        // Caught: the frames unlink during unwinding and the thread goes on.
        let h = heap.clone();
        let t = std::thread::spawn(move || {
            let m = h.attach().unwrap();
            for _ in 0..5 {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    build_then_panic(&m, ty, 3)
                }));
                assert!(r.is_err());
                assert_eq!(m.frames().head(), 0, "frames unlinked");
                m.collect().unwrap();
            }
        });
        t.join().unwrap();
        caught += 5;
        // Uncaught: the thread dies, detaching as it unwinds.
        let h = heap.clone();
        let t = std::thread::spawn(move || {
            let m = h.attach().unwrap();
            build_then_panic(&m, ty, 2);
        });
        assert!(t.join().is_err());
        died += 1;
        heap.collect().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let checks = survivor.join().unwrap();
    assert!(caught > 0 && died > 0 && checks > 0);
    assert_eq!(heap.registry().thread_count(), 0);
    assert!(heap.stats().last.verified);
}
