//! `Registry::outside_stops` and `no_preempt` exclude stops even when
//! called from inside a safe region (a thread in one counts as stopped, so
//! a stop used not to wait for its no-preempt region).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use pardon_preempt::{Config, Registry};

/// Thread A, attached and inside a safe region, runs `enter` (one of the two
/// excluding calls) around a closure that holds on for up to `hold`, watching
/// for a stop to complete meanwhile. Returns whether one did.
fn stop_overlaps(enter: fn(&Registry, &mut dyn FnMut())) -> bool {
    let reg = Registry::new(Config::default()).unwrap();
    let inside = Arc::new(Barrier::new(2));
    let stopped = Arc::new(AtomicBool::new(false));
    let overlapped = Arc::new(AtomicBool::new(false));
    let a = {
        let (reg, inside, stopped, overlapped) = (
            reg.clone(),
            inside.clone(),
            stopped.clone(),
            overlapped.clone(),
        );
        std::thread::spawn(move || {
            let me = reg.attach().unwrap();
            me.safe_region(|| {
                enter(&reg, &mut || {
                    inside.wait();
                    let t0 = Instant::now();
                    // Hold on long enough for the stop to be requested and,
                    // if it did not wait for us, to complete.
                    while t0.elapsed() < Duration::from_millis(500) {
                        if stopped.load(Ordering::SeqCst) {
                            overlapped.store(true, Ordering::SeqCst);
                            break;
                        }
                        std::hint::spin_loop();
                    }
                });
            });
        })
    };
    inside.wait();
    let world = reg.stop_the_world().unwrap();
    stopped.store(true, Ordering::SeqCst);
    drop(world);
    a.join().unwrap();
    overlapped.load(Ordering::SeqCst)
}

#[test]
fn outside_stops_in_a_safe_region_excludes_stops() {
    assert!(!stop_overlaps(|reg, f| reg.outside_stops(f)));
}

#[test]
fn no_preempt_in_a_safe_region_excludes_stops() {
    assert!(!stop_overlaps(|reg, f| reg.no_preempt(f)));
}

/// `running_threads` counts attached threads that are neither in a safe
/// region nor stopped.
#[test]
fn running_threads_leaves_out_safe_regions() {
    let reg = Registry::new(Config::default()).unwrap();
    assert_eq!(reg.running_threads(), 0);
    let (attached, entered, leave) = (Barrier::new(2), Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            let _a = reg.attach().unwrap();
            attached.wait();
            entered.wait();
            reg.blocking(|| leave.wait());
        });
        attached.wait();
        assert_eq!(reg.running_threads(), 1, "attached and running");
        entered.wait();
        // The thread is in its safe region once `leave` can be reached;
        // until then it may still be on its way in.
        let t0 = Instant::now();
        while reg.running_threads() != 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "never left the count"
            );
            std::thread::yield_now();
        }
        leave.wait();
    });
    assert_eq!(reg.running_threads(), 0, "detached");
}
