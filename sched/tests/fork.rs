//! A runtime across `fork`: in the child, its threads do not exist, so
//! spawning on it or joining an unfinished goroutine panics with a message
//! (never hangs), dropping it joins nothing, and a new runtime works, its
//! sleeps and blocking calls included. With signal preemption the parent's
//! workers are stopped while the process forks (busy ones park, idle ones
//! sleep in a safe region), so the fork does not wait out a timeout.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_sched::{blocking, sleep, Config, Preemption, Runtime};

fn runtime(preemption: Preemption) -> Runtime {
    let c = Config {
        procs: 2,
        preemption,
        ..Config::default()
    };
    if preemption == Preemption::Signal {
        // SAFETY: these goroutines use no thread-locals and do not print.
        unsafe { Runtime::with_signal_preemption(c) }.unwrap()
    } else {
        Runtime::new(c).unwrap()
    }
}

/// The child's checks; returns its exit status.
fn child(rt: Runtime, unfinished: pardon_sched::JoinHandle<()>) -> i32 {
    let spawn = catch_unwind(AssertUnwindSafe(|| rt.go(|| 1)));
    let Err(e) = spawn else { return 10 };
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    if !msg.contains("forked child") {
        return 11;
    }
    if catch_unwind(AssertUnwindSafe(|| unfinished.join())).is_ok() {
        return 12;
    }
    drop(rt);
    let fresh = Runtime::new(Config {
        procs: 1,
        ..Config::default()
    })
    .unwrap();
    let v = fresh.block_on(|| {
        sleep(Duration::from_millis(2));
        blocking(|| 40) + 2
    });
    match v {
        Ok(42) => 0,
        _ => 13,
    }
}

fn across_fork(preemption: Preemption) {
    let rt = runtime(preemption);
    assert_eq!(rt.block_on(|| 5).unwrap(), 5);
    // A goroutine still busy at the fork (a loop without calls, so it
    // holds its worker), and an idle worker.
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let busy = rt.go(move || {
        while !s2.load(SeqCst) {
            std::hint::spin_loop();
        }
    });
    std::thread::sleep(Duration::from_millis(20));
    let t0 = Instant::now();
    // SAFETY: the child only runs `child`, then exits without unwinding
    // into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = catch_unwind(AssertUnwindSafe(|| child(rt, busy))).unwrap_or(20);
        // SAFETY: ends the child at once, running no atexit handlers of
        // the parent's test harness.
        unsafe { libc::_exit(code) };
    }
    let forked_in = t0.elapsed();
    let mut status = 0;
    // SAFETY: waits for our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child died: {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "child check failed");
    assert!(
        forked_in < Duration::from_secs(20),
        "fork took {forked_in:?}: it waited for a worker"
    );
    stop.store(true, SeqCst);
    busy.join().unwrap();
    assert_eq!(rt.block_on(|| 6).unwrap(), 6);
}

#[test]
fn a_polling_runtime_across_fork() {
    across_fork(Preemption::Poll);
}

#[test]
fn a_signal_preempted_runtime_across_fork() {
    across_fork(Preemption::Signal);
}
