//! A program's own SIGURG handler and pardon's preemption signal. One test
//! with phases in order, in its own binary: signal handlers are per process.
//!
//! The rule (as Go's): every SIGURG the process receives is passed to the
//! handler that was installed before pardon's, including pardon's own, so
//! the program sees spurious SIGURGs but never loses one of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use pardon::{CollectError, Config, Heap};

static USER_SIGURG: AtomicU64 = AtomicU64::new(0);

extern "C" fn user_handler(_: libc::c_int) {
    USER_SIGURG.fetch_add(1, Ordering::SeqCst);
}

fn install_user_handler() {
    // SAFETY: installs a trivial async-signal-safe handler for SIGURG.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = user_handler as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGURG, &sa, std::ptr::null_mut()), 0);
    }
}

fn raise_sigurg() {
    // SAFETY: signals the calling thread; delivered before tgkill returns to
    // this code, since SIGURG is not blocked here.
    unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            libc::gettid(),
            libc::SIGURG,
        )
    };
}

/// Spins in a call-free loop until `stop`, attached to `heap`.
fn spinner(heap: &Heap) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let (h, s, r) = (heap.clone(), stop.clone(), ready.clone());
    let t = std::thread::spawn(move || {
        let m = h.attach().unwrap();
        r.store(true, Ordering::SeqCst);
        let mut x = 1u64;
        while !s.load(Ordering::Relaxed) {
            x = std::hint::black_box(x.wrapping_mul(3).wrapping_add(1));
        }
        std::hint::black_box(x);
        m.attached().signals_received()
    });
    while !ready.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    (stop, t)
}

#[test]
fn the_programs_sigurg_handler_never_loses_a_signal() {
    install_user_handler();
    let heap = Heap::new(Config::default()).unwrap();

    // 1. The program's signals reach it while collections stop a spinner
    //    by the same signal.
    let (stop, t) = spinner(&heap);
    let m = heap.attach().unwrap();
    for _ in 0..40 {
        let before = USER_SIGURG.load(Ordering::SeqCst);
        raise_sigurg();
        assert!(
            USER_SIGURG.load(Ordering::SeqCst) > before,
            "a SIGURG was lost"
        );
        m.collect().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(
        t.join().unwrap() > 0,
        "the collector's SIGURGs stopped the spinner"
    );
    assert_eq!(heap.collections(), 40);

    // 2. A signal the program sends while a stop is pending for its thread
    //    (the thread is in a no-preempt region, so the stop waits): it used
    //    to be taken for the collector's and swallowed, 30 of 30.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (h2, lost) = (heap.clone(), Arc::new(AtomicU64::new(0)));
    let in_region = Arc::new(AtomicU64::new(0));
    let (lost2, in_region2) = (lost.clone(), in_region.clone());
    let t = std::thread::spawn(move || {
        let m = h2.attach().unwrap();
        for round in 1..=30 {
            m.blocking(|| go_rx.recv().unwrap());
            let np = m.attached().no_preempt();
            // Only now may the stop begin: it must find us in the region.
            in_region2.store(round, Ordering::SeqCst);
            let d0 = m.attached().deferred();
            // Wait until the stop's signal has found us in the region.
            while m.attached().deferred() == d0 {
                std::hint::spin_loop();
            }
            let before = USER_SIGURG.load(Ordering::SeqCst);
            raise_sigurg();
            if USER_SIGURG.load(Ordering::SeqCst) == before {
                lost2.fetch_add(1, Ordering::SeqCst);
            }
            drop(np); // parks for the pending stop
        }
    });
    for round in 1..=30 {
        go_tx.send(()).unwrap();
        while in_region.load(Ordering::SeqCst) != round {
            std::thread::yield_now();
        }
        m.collect().unwrap();
    }
    t.join().unwrap();
    assert_eq!(
        lost.load(Ordering::SeqCst),
        0,
        "SIGURGs lost while a stop was pending"
    );

    // 3. A program that replaces pardon's handler without chaining: stops
    //    fail at once with an error that says so, instead of waiting out
    //    the stop timeout.
    install_user_handler();
    let t0 = std::time::Instant::now();
    let e = m.collect().unwrap_err();
    assert!(
        matches!(
            e,
            CollectError::Stop(pardon::preempt::StopError::HandlerReplaced { .. })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("replaced"), "{e}");
    assert!(t0.elapsed() < Config::default().stop_timeout);
    drop(m);
    drop(heap);

    // 4. A new heap installs pardon's handler again, chaining to the
    //    program's, as documented.
    let heap = Heap::new(Config::default()).unwrap();
    let (stop, t) = spinner(&heap);
    let m = heap.attach().unwrap();
    for _ in 0..10 {
        let before = USER_SIGURG.load(Ordering::SeqCst);
        raise_sigurg();
        assert!(USER_SIGURG.load(Ordering::SeqCst) > before);
        m.collect().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(t.join().unwrap() > 0);
}
