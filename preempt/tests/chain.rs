//! A user's SIGURG handler installed before the registry receives every
//! SIGURG (pardon's own too: no test can tell them apart, so it passes all
//! on and the program sees spurious ones, never loses its own). Its own test
//! binary: a handler installed *after* ours
//! would replace ours process-wide, so it must come first, as in a real
//! program that has its own SIGURG handling.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::{spawn_attached, wait_progress};
use pardon_preempt::{Config, Registry};

static USER_SIGURG: AtomicU64 = AtomicU64::new(0);
extern "C" fn user_handler(_: libc::c_int) {
    USER_SIGURG.fetch_add(1, Ordering::SeqCst);
}

/// A user's SIGURG handler installed before the registry receives each
/// SIGURG the program sends, which do no harm to an attached thread with no
/// request pending; and stops still work alongside.
#[test]
fn external_sigurg_reaches_chained_handler() {
    // SAFETY: installs a trivial async-signal-safe handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = user_handler as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGURG, &sa, std::ptr::null_mut());
    }
    let reg = Registry::new(Config::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (hs, progress) = spawn_attached(&reg, 1, &stop, |_, stop, p| {
        let mut x = 1u64;
        while !stop.load(Ordering::Relaxed) {
            x = std::hint::black_box(x.wrapping_mul(3));
            p.fetch_add(1, Ordering::Relaxed);
        }
        x
    });
    wait_progress(&progress);
    let me = reg.attach().unwrap();
    // A signal a thread sends itself is delivered before tgkill returns.
    let raise = || {
        let before = USER_SIGURG.load(Ordering::SeqCst);
        // SAFETY: signals this very thread.
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                libc::gettid(),
                libc::SIGURG,
            )
        };
        USER_SIGURG.load(Ordering::SeqCst) > before
    };
    for _ in 0..50 {
        assert!(raise(), "a SIGURG to an attached thread was lost");
        drop(reg.stop_the_world().unwrap());
    }
    assert_eq!(
        me.signals_received(),
        0,
        "no request was pending for this thread"
    );
    drop(me);
    // An unattached thread too.
    assert!(std::thread::spawn(raise).join().unwrap());
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
}
