//! Every duration a `Config` accepts works, up to `Duration::MAX` (a
//! user's "never"): a stop whose wait runs through the spin, a resend and
//! the move point ends when the thread it waits for lets it, and nothing
//! in the coordinator overflows a time or panics (which, with the world
//! stopped, ends the process). Before the coordinator saturated its
//! deadlines, `spin`, `resend_initial` and `move_after` at the maximum
//! each aborted this test. (The quick retries of a handler that could not
//! stop are not reached here: they need a thread on a foreign stack.)

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pardon_preempt::{Config, Registry};

/// A stop over a thread that keeps it waiting ~20 ms in a no-preempt
/// region, then one over a thread spinning outside any region.
fn stop_with(cfg: Config, what: &str) {
    let reg = Registry::new(cfg).unwrap_or_else(|e| panic!("{what}: rejected: {e}"));
    let in_region = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (reg2, in_region2, stop2) = (reg.clone(), in_region.clone(), stop.clone());
    let t = std::thread::spawn(move || {
        let me = reg2.attach().unwrap();
        {
            let _np = me.no_preempt();
            in_region2.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut x = 0u64;
        while !stop2.load(Ordering::SeqCst) {
            x = black_box(x + 1);
        }
    });
    while !in_region.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    drop(
        reg.stop_the_world()
            .unwrap_or_else(|e| panic!("{what}: first stop: {e}")),
    );
    drop(
        reg.stop_the_world()
            .unwrap_or_else(|e| panic!("{what}: second stop: {e}")),
    );
    stop.store(true, Ordering::SeqCst);
    t.join()
        .unwrap_or_else(|_| panic!("{what}: the thread panicked"));
}

#[test]
fn the_longest_durations_a_config_accepts_work() {
    let max = Duration::MAX;
    let cases: Vec<(&str, Config)> = vec![
        (
            "spin",
            Config {
                spin: max,
                ..Config::default()
            },
        ),
        (
            "resend_initial, resend_max and stop_timeout",
            Config {
                resend_initial: max,
                resend_max: max,
                stop_timeout: max,
                ..Config::default()
            },
        ),
        (
            "retry and resend_max",
            Config {
                retry: max,
                resend_max: max,
                ..Config::default()
            },
        ),
        (
            "resend_max",
            Config {
                resend_max: max,
                ..Config::default()
            },
        ),
        (
            "move_after",
            Config {
                move_after: Some(max),
                ..Config::default()
            },
        ),
        (
            "stop_timeout",
            Config {
                stop_timeout: max,
                ..Config::default()
            },
        ),
    ];
    for (what, cfg) in cases {
        stop_with(cfg, what);
    }
}
