//! `blocking` keeps the worker free: on a single worker, a goroutine
//! blocked reading a pipe does not stop the goroutine that will write to
//! it; the closure may borrow from the goroutine; its panic comes back to
//! the goroutine; `go` in it starts goroutines on the caller's runtime.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_sched::{blocking, go, Config, Runtime};

fn one_worker() -> Runtime {
    Runtime::new(Config {
        procs: 1,
        ..Config::default()
    })
    .unwrap()
}

#[test]
fn a_goroutine_blocked_in_read_leaves_the_worker_to_the_others() {
    let rt = one_worker();
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let wrote = Arc::new(AtomicBool::new(false));
    let w2 = wrote.clone();
    let h = rt.go(move || {
        let reader = go(move || {
            let mut b = [0u8; 1];
            // SAFETY: reads one byte into a buffer on this goroutine's
            // stack, which `blocking` keeps alive until the call returns.
            let n = blocking(|| unsafe { libc::read(rd, b.as_mut_ptr().cast(), 1) });
            (n, b[0])
        });
        // The reader runs first and blocks; this goroutine, on the same
        // (only) worker, must still get to run and write.
        let writer = go(move || {
            // SAFETY: writes one byte from a local.
            let n = unsafe { libc::write(wr, [42u8].as_ptr().cast(), 1) };
            w2.store(true, SeqCst);
            n
        });
        (reader.join().unwrap(), writer.join().unwrap())
    });
    let start = Instant::now();
    while !h.is_finished() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(1));
    }
    if !h.is_finished() {
        // Release the reader so the test fails instead of hanging.
        // SAFETY: writes one byte from a local.
        unsafe { libc::write(wr, [0u8].as_ptr().cast(), 1) };
    }
    let ((n, byte), wn) = h.join().unwrap();
    assert!(wrote.load(SeqCst), "the writer never ran");
    assert_eq!((n, byte, wn), (1, 42, 1));
    // SAFETY: closing the descriptors we opened.
    unsafe {
        libc::close(rd);
        libc::close(wr);
    }
}

#[test]
fn the_closure_borrows_and_its_panic_returns_to_the_goroutine() {
    let rt = one_worker();
    let r = rt
        .block_on(|| {
            let v: Vec<u64> = (0..1000).collect();
            let sum = blocking(|| v.iter().sum::<u64>());
            let mut out = String::new();
            blocking(|| out.push_str("written on a pool thread"));
            let p = std::panic::catch_unwind(|| blocking(|| panic!("in the pool")));
            (sum, out, p.is_err())
        })
        .unwrap();
    assert_eq!(r, (499_500, "written on a pool thread".to_string(), true));
    // Outside a runtime it just runs.
    assert_eq!(blocking(|| 5), 5);
}

/// `go` in a blocking call starts a goroutine on the caller's runtime (it
/// used to panic: the pool thread is outside every runtime), also from a
/// goroutine so started, and a panicking call still comes back.
#[test]
fn go_in_a_blocking_call_starts_goroutines_on_the_callers_runtime() {
    let rt = one_worker();
    let r = rt
        .block_on(|| {
            let h = blocking(|| go(|| 6 * 7));
            let inner = blocking(|| go(|| blocking(|| go(|| 5).join().unwrap())).join().unwrap());
            let p = std::panic::catch_unwind(|| blocking(|| -> u32 { panic!("in the pool") }));
            (h.join().unwrap(), inner, p.is_err())
        })
        .unwrap();
    assert_eq!(r, (42, 5, true));
    // The call ran on a pool thread, which is no worker.
    let name = rt.block_on(|| blocking(|| std::thread::current().name().map(String::from)));
    assert_eq!(name.unwrap().as_deref(), Some("pardon-blocking"));
}
