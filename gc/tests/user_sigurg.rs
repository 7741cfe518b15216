//! A program's own SIGURG handler, installed before the heap, keeps receiving
//! the SIGURGs that are not the collector's, while collections stop a
//! spinning thread by the same signal. Its own test binary: the handler must
//! be installed before the first heap in the process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use pardon::{Config, Heap};

static USER_SIGURG: AtomicU64 = AtomicU64::new(0);

extern "C" fn user_handler(_: libc::c_int) {
    USER_SIGURG.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn user_sigurg_handler_keeps_its_signals() {
    // SAFETY: installs a trivial async-signal-safe handler for SIGURG.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = user_handler as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGURG, &sa, std::ptr::null_mut()), 0);
    }
    let heap = Heap::new(Config::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let spinner = {
        let (heap, stop, ready) = (heap.clone(), stop.clone(), ready.clone());
        std::thread::spawn(move || {
            let m = heap.attach().unwrap();
            ready.store(true, Ordering::SeqCst);
            let mut x = 1u64;
            while !stop.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(3).wrapping_add(1));
            }
            (x, m.attached().signals_received())
        })
    };
    while !ready.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let m = heap.attach().unwrap();
    let before = USER_SIGURG.load(Ordering::SeqCst);
    for _ in 0..40 {
        // SAFETY: signals the calling thread (attached, no request pending).
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                libc::gettid(),
                libc::SIGURG,
            )
        };
        m.collect().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (_, collector_signals) = spinner.join().unwrap();
    assert_eq!(
        USER_SIGURG.load(Ordering::SeqCst) - before,
        40,
        "every external SIGURG reached the user"
    );
    assert!(
        collector_signals > 0,
        "the spinner was stopped by the collector's SIGURGs"
    );
    assert_eq!(heap.collections(), 40);
}
