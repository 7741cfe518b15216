//! A panic on a thread that holds a stopped world reports and aborts
//! instead of waiting forever on a lock a stopped thread holds. Run in a
//! child process (this test binary, re-executed), since the outcome is an
//! abort.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_preempt::{Config, Registry};

const CHILD: &str = "PARDON_FATAL_TEST_CHILD";

/// In the child: a thread captures and prints backtraces in a loop (most of
/// its time inside std's backtrace lock and malloc), is stopped there, and
/// the coordinator panics while holding the world with `RUST_BACKTRACE=1`:
/// the default hook takes that lock and allocates.
fn child() -> ! {
    let reg = Registry::new(Config::default()).unwrap();
    let ready = Arc::new(AtomicBool::new(false));
    let (r2, rd) = (reg.clone(), ready.clone());
    std::thread::spawn(move || {
        let _me = r2.attach().unwrap();
        rd.store(true, Ordering::SeqCst);
        loop {
            let bt = std::backtrace::Backtrace::force_capture();
            std::hint::black_box(bt.to_string());
        }
    });
    while !ready.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    let _world = reg.stop_the_world().unwrap();
    assert!(pardon_preempt::holds_stopped_world());
    panic!("boom in the stopped world");
}

#[test]
fn a_panic_while_holding_a_stopped_world_reports_and_aborts() {
    if std::env::var_os(CHILD).is_some() {
        child();
    }
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_panic_while_holding_a_stopped_world_reports_and_aborts",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Generous: the child either aborts at once or hangs for ever.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            c.kill().unwrap();
            panic!("the child hung: the panic waited on a lock a stopped thread holds");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("boom in the stopped world"), "{err}");
    assert!(err.contains("holds a stopped world"), "{err}");
    // And the hook passes other panics to the one it wrapped.
    assert!(!pardon_preempt::holds_stopped_world());
    let r = std::panic::catch_unwind(|| panic!("an ordinary panic"));
    assert!(r.is_err());
}
