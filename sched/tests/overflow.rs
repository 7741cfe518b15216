//! A goroutine that overflows its stack ends the process with a message
//! that says so, rather than corrupting memory or dying without a word.
//! Run in a child process (this test binary, re-executed), since the
//! outcome is an abort.

use std::process::Command;

use pardon_sched::{Config, Runtime};

const CHILD: &str = "PARDON_SCHED_OVERFLOW_CHILD";

/// Recurses until the stack runs out (the bound is never reached).
#[inline(never)]
fn recurse(n: u64) -> u64 {
    let pad = std::hint::black_box([n; 32]);
    if std::hint::black_box(n) == u64::MAX {
        return pad[0];
    }
    recurse(n + 1) + pad[3]
}

#[test]
fn a_goroutine_stack_overflow_is_reported() {
    if std::env::var_os(CHILD).is_some() {
        let rt = Runtime::new(Config {
            procs: 1,
            stack_size: 64 * 1024,
            ..Config::default()
        })
        .unwrap();
        let _ = rt.block_on(|| recurse(0));
        unreachable!("the recursion returned");
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_goroutine_stack_overflow_is_reported",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child survived: {err}");
    assert!(err.contains("goroutine stack overflow"), "no report: {err}");
}

#[test]
fn a_thread_stack_overflow_still_gets_std_s_report() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "thread_overflow_child", "--nocapture"])
        .env("PARDON_SCHED_THREAD_OVERFLOW", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child survived: {err}");
    assert!(
        !err.contains("goroutine stack overflow"),
        "misreported: {err}"
    );
    assert!(
        err.contains("overflowed its stack"),
        "std's report lost: {err}"
    );
}

#[test]
fn thread_overflow_child() {
    if std::env::var_os("PARDON_SCHED_THREAD_OVERFLOW").is_none() {
        return;
    }
    // A runtime exists (its handler is installed), but the overflow is a
    // plain thread's.
    let _rt = Runtime::new(Config {
        procs: 1,
        ..Config::default()
    })
    .unwrap();
    std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(|| recurse(0))
        .unwrap()
        .join()
        .unwrap();
}
