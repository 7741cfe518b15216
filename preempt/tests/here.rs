//! The regions of the calling thread whatever its registry
//! (`no_preempt_here`, `blocking_here`): the first holds a stop off until
//! it ends, the second lets a stop complete while its closure runs and
//! holds the thread at its end until the restart.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use pardon_preempt::{blocking_here, no_preempt_here, Config, Registry};

/// Thread A, attached, spins watching for a stop to complete meanwhile:
/// with `guarded`, inside a `no_preempt_here` region for 500 ms (no stop
/// can complete in it, however long it waits); without, until it sees one
/// (up to 30 s). Returns whether one did.
fn stop_completes_inside(guarded: bool) -> bool {
    let reg = Registry::new(Config::default()).unwrap();
    let inside = Arc::new(Barrier::new(2));
    let stopped = Arc::new(AtomicBool::new(false));
    let a = {
        let (reg, inside, stopped) = (reg.clone(), inside.clone(), stopped.clone());
        std::thread::spawn(move || {
            let _me = reg.attach().unwrap();
            let region = guarded.then(no_preempt_here);
            inside.wait();
            let t0 = Instant::now();
            let hold = if guarded {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(30)
            };
            let mut seen = false;
            while t0.elapsed() < hold {
                if stopped.load(SeqCst) {
                    seen = true;
                    break;
                }
                std::hint::spin_loop();
            }
            drop(region);
            seen
        })
    };
    inside.wait();
    let world = reg.stop_the_world().unwrap();
    stopped.store(true, SeqCst);
    drop(world);
    a.join().unwrap()
}

#[test]
fn no_preempt_here_holds_a_stop_off_until_it_ends() {
    assert!(!stop_completes_inside(true));
    // The control: without the region the stop parks the thread, which
    // sees the stop's flag once restarted.
    assert!(stop_completes_inside(false));
}

#[test]
fn no_preempt_here_on_an_unattached_thread_is_empty() {
    let reg = Registry::new(Config::default()).unwrap();
    let region = no_preempt_here();
    // Nothing to wait for: this thread is not attached.
    let world = reg.stop_the_world().unwrap();
    drop(world);
    drop(region);
}

#[test]
fn blocking_here_lets_a_stop_complete_and_holds_the_thread_at_its_end() {
    let reg = Registry::new(Config::default()).unwrap();
    let inside = Arc::new(Barrier::new(2));
    let go = Arc::new(AtomicBool::new(false));
    let closure_done = Arc::new(AtomicBool::new(false));
    let after = Arc::new(AtomicBool::new(false));
    let a = {
        let (reg, inside, go, closure_done, after) = (
            reg.clone(),
            inside.clone(),
            go.clone(),
            closure_done.clone(),
            after.clone(),
        );
        std::thread::spawn(move || {
            let _me = reg.attach().unwrap();
            blocking_here(|| {
                inside.wait();
                while !go.load(SeqCst) {
                    std::hint::spin_loop();
                }
                closure_done.store(true, SeqCst);
            });
            after.store(true, SeqCst);
        })
    };
    inside.wait();
    // Completes though A runs: A counts as stopped inside the region.
    let world = reg.stop_the_world().unwrap();
    go.store(true, SeqCst);
    let t0 = Instant::now();
    while !closure_done.load(SeqCst) {
        assert!(t0.elapsed() < Duration::from_secs(30), "A never ran on");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        !after.load(SeqCst),
        "A left its region while the world was stopped"
    );
    drop(world);
    a.join().unwrap();
    assert!(after.load(SeqCst));
}
