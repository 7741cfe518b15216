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

/// Runs `f` on a thread of its own and says whether it returned within
/// `limit` (a hung thread is left behind; the test fails).
fn returns_within(limit: Duration, f: impl FnOnce() + Send + 'static) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(limit).is_ok()
}

/// On a thread that is not attached, `outside_stops` holds the coordinator
/// lock for its closure. A nested `outside_stops` and a stop inside it
/// each waited for ever on that lock (so did a heap's collection there,
/// and a `RawView` sweep, which is an `outside_stops`): now the nested
/// one runs at once, the stop fails with `ExcludingStops`, a panic inside
/// lets the lock go, and a stop from another thread afterwards succeeds.
#[test]
fn outside_stops_on_an_unattached_thread_nests_and_refuses_stops() {
    let limit = Duration::from_secs(30);
    let reg = Registry::new(Config::default()).unwrap();
    let r = reg.clone();
    assert!(
        returns_within(limit, move || {
            let ran = r.outside_stops(|| r.outside_stops(|| 7));
            assert_eq!(ran, 7);
        }),
        "a nested outside_stops waited for ever"
    );
    let r = reg.clone();
    assert!(
        returns_within(limit, move || {
            let e = r
                .outside_stops(|| r.stop_the_world().map(drop))
                .unwrap_err();
            assert!(
                matches!(e, pardon_preempt::StopError::ExcludingStops),
                "{e}"
            );
            assert!(e.to_string().contains("outside_stops"), "{e}");
        }),
        "a stop inside outside_stops waited for ever"
    );
    let r = reg.clone();
    assert!(
        returns_within(limit, move || {
            let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                r.outside_stops(|| panic!("inside outside_stops"))
            }));
            assert!(p.is_err());
            // The lock and the word were let go: a stop on this thread, and
            // a nested call's lock, work again.
            r.stop_the_world().unwrap();
            r.outside_stops(|| ());
        }),
        "outside_stops kept its lock after a panic"
    );
    // The holder of a stopped world (not attached) may call it: it runs at
    // once, since no other stop can begin. It waited for ever on the lock
    // the world holds.
    let r = reg.clone();
    assert!(
        returns_within(limit, move || {
            let world = r.stop_the_world().unwrap();
            assert_eq!(r.outside_stops(|| 3), 3);
            drop(world);
        }),
        "outside_stops while holding the stopped world waited for ever"
    );
    // Another thread's stop is not refused by the word the others left.
    let me = reg.attach().unwrap();
    let r = reg.clone();
    assert!(
        returns_within(limit, move || drop(r.stop_the_world().unwrap())),
        "a stop after the excluding calls waited for ever"
    );
    drop(me);
}

/// `fork` from inside `outside_stops` on an unattached thread: the fork's
/// stop of the registry would have waited for ever on the coordinator
/// lock the thread holds; now the fork goes ahead, and in the child (a
/// copy of the thread with a tid of its own) a nested `outside_stops` runs
/// at once and a stop is refused, as in the parent.
#[test]
fn fork_inside_outside_stops() {
    let reg = Registry::new(Config::default()).unwrap();
    // An attached thread, for the fork's stop to have someone to stop.
    let _attached = reg.attach().unwrap();
    let r = reg.clone();
    let ok = returns_within(Duration::from_secs(30), move || {
        let status = r.outside_stops(|| {
            // SAFETY: the child runs only code that neither allocates nor
            // takes a lock another thread may hold, then `_exit`s.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let nested = r.outside_stops(|| 1);
                let refused = matches!(
                    r.stop_the_world().map(drop),
                    Err(pardon_preempt::StopError::ExcludingStops)
                );
                let code = if nested == 1 && refused { 0 } else { 1 };
                // SAFETY: ends the child at once.
                unsafe { libc::_exit(code) };
            }
            let mut status = 0;
            // SAFETY: waits for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            status
        });
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the child's registry misbehaved"
        );
    });
    assert!(ok, "fork inside outside_stops waited for ever");
}
