//! Join handles: whichever of the join, the goroutine's end and the
//! handle's drop comes first, every closure and every result (or panic
//! payload) is dropped exactly once, and a joined value is the one
//! returned; closures and results kept in the task and boxed alike.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use pardon_sched::{channel, go, Config, JoinHandle, Runtime};

fn rt(procs: usize) -> Runtime {
    Runtime::new(Config {
        procs,
        ..Config::default()
    })
    .unwrap()
}

/// Counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// A result larger than any slot: boxed.
struct Big {
    words: [u64; 40],
    _c: Counted,
}

/// A result more aligned than the slot: boxed.
#[repr(align(64))]
struct Aligned {
    word: u64,
    _c: Counted,
}

/// How the handle goes.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// Joined by the goroutine that spawned it.
    Join,
    /// Joined by a thread outside the runtime.
    JoinOutside,
    /// Dropped before the goroutine ends (it waits for the drop).
    DropFirst,
    /// Dropped once the goroutine has ended.
    DropAfter,
}

const ENDINGS: [Ending; 4] = [
    Ending::Join,
    Ending::JoinOutside,
    Ending::DropFirst,
    Ending::DropAfter,
];

/// Spawns `f` behind a gate (in a closure that holds it, so as large as
/// it), ends its handle as `ending` says, and checks the value with
/// `check` when it is joined. Returns once the goroutine has ended and its
/// handle is gone.
fn one<T: Send + 'static>(
    rt: &Runtime,
    ending: Ending,
    f: impl FnOnce() -> T + Send + 'static,
    check: impl FnOnce(T) + Send + 'static,
) {
    let (gate_tx, gate_rx) = channel::channel::<()>(1);
    let (done_tx, done_rx) = channel::channel::<()>(1);
    let spawn = move || {
        go(move || {
            let _ = gate_rx.recv();
            let v = f();
            let _ = done_tx.send(());
            v
        })
    };
    match ending {
        Ending::Join => rt
            .block_on(move || {
                let h = spawn();
                gate_tx.send(()).unwrap();
                check(h.join().unwrap_or_else(|_| panic!("no panic")));
            })
            .unwrap(),
        Ending::JoinOutside => {
            let h: JoinHandle<T> = rt.block_on(spawn).unwrap();
            gate_tx.send(()).unwrap();
            check(h.join().unwrap_or_else(|_| panic!("no panic")));
        }
        Ending::DropFirst => {
            let h: JoinHandle<T> = rt.block_on(spawn).unwrap();
            drop(h);
            gate_tx.send(()).unwrap();
            // Its end, which drops the result, follows the send (the
            // caller waits for the drop).
            done_rx.recv().unwrap();
        }
        Ending::DropAfter => {
            let h: JoinHandle<T> = rt.block_on(spawn).unwrap();
            gate_tx.send(()).unwrap();
            wait_until(|| h.is_finished());
            drop(h);
        }
    }
}

/// Waits for `done`, failing after 30 s (far beyond any load: what
/// it waits for is a drop that must come, or never will).
fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 30 s for a drop or an end that never came"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn every_result_is_dropped_once_however_the_handle_goes() {
    let rt = rt(2);
    for ending in ENDINGS {
        let drops = Arc::new(AtomicUsize::new(0));
        // Small closure, small result, each holding a `Counted`.
        let (c, d) = (Counted(drops.clone()), drops.clone());
        let small = move || {
            let _c = c;
            (5u8, Counted(d))
        };
        one(&rt, ending, small, |(v, _c)| assert_eq!(v, 5));
        // A large closure and a large result: both boxed.
        let (c, d, pad) = (Counted(drops.clone()), drops.clone(), [3u64; 40]);
        let large = move || {
            let _c = c;
            Big {
                words: pad,
                _c: Counted(d),
            }
        };
        one(&rt, ending, large, |b| assert_eq!(b.words, [3; 40]));
        // An over-aligned result (boxed).
        let (c, d) = (Counted(drops.clone()), drops.clone());
        let aligned = move || {
            let _c = c;
            Aligned {
                word: 9,
                _c: Counted(d),
            }
        };
        one(&rt, ending, aligned, |a| {
            assert_eq!(a.word, 9);
            assert_eq!(&a as *const Aligned as usize % 64, 0);
        });
        // Three closures' and three results' counters.
        wait_until(|| drops.load(SeqCst) >= 6);
        assert_eq!(drops.load(SeqCst), 6, "{ending:?}");
    }
}

#[test]
fn every_panic_payload_is_dropped_once_however_the_handle_goes() {
    let rt = rt(2);
    for ending in ENDINGS {
        let drops = Arc::new(AtomicUsize::new(0));
        let d = drops.clone();
        let (gate_tx, gate_rx) = channel::channel::<()>(1);
        let h = rt
            .block_on(move || {
                go(move || -> u32 {
                    let _ = gate_rx.recv();
                    std::panic::panic_any(Counted(d))
                })
            })
            .unwrap();
        match ending {
            Ending::Join | Ending::JoinOutside => {
                gate_tx.send(()).unwrap();
                let payload = if matches!(ending, Ending::Join) {
                    rt.block_on(move || h.join()).unwrap()
                } else {
                    h.join()
                }
                .expect_err("a panic");
                assert!(payload.downcast_ref::<Counted>().is_some());
                assert_eq!(drops.load(SeqCst), 0, "the payload is the joiner's");
            }
            Ending::DropFirst => {
                drop(h);
                gate_tx.send(()).unwrap();
            }
            Ending::DropAfter => {
                gate_tx.send(()).unwrap();
                wait_until(|| h.is_finished());
                drop(h);
            }
        }
        wait_until(|| drops.load(SeqCst) >= 1);
        assert_eq!(drops.load(SeqCst), 1, "{ending:?}");
    }
}

/// Handles dropped while their goroutines end on the other worker, in
/// both orders and every interleaving the race gives, over many spawns
/// (so over tasks reused from the free lists): nothing dropped twice or
/// never, and the joined values right.
#[test]
fn racing_ends_and_drops_drop_everything_once() {
    let rt = rt(2);
    let drops = Arc::new(AtomicUsize::new(0));
    const N: usize = 20_000;
    let d = drops.clone();
    let sum = rt
        .block_on(move || {
            let mut sum = 0;
            // Every goroutine has begun once the group is done (a detached
            // one still queued when the runtime is dropped would never
            // make its result).
            let started = pardon_sched::WaitGroup::new();
            for i in 0..N {
                let (c, r, s) = (Counted(d.clone()), d.clone(), started.clone());
                started.add(1);
                let h = go(move || {
                    let _c = c;
                    s.done();
                    (i, Counted(r))
                });
                if i % 3 == 0 {
                    sum += h.join().unwrap().0;
                } else if i % 3 == 1 {
                    pardon_sched::yield_now();
                    drop(h);
                } else {
                    drop(h);
                }
            }
            started.wait();
            sum
        })
        .unwrap();
    assert_eq!(sum, (0..N).filter(|i| i % 3 == 0).sum::<usize>());
    // Every goroutine has begun, so has ended once the workers are gone.
    drop(rt);
    assert_eq!(drops.load(SeqCst), 2 * N);
}

/// A goroutine that never runs (its runtime is dropped first) drops its
/// closure once, whether its handle goes before or after the runtime.
/// (Its one worker is held by a goroutine spinning without a yield until
/// a thread lets it go, a moment after the runtime's drop has begun; were
/// the host to stall that drop longer, the goroutine would run, and its
/// closure still be dropped once.)
#[test]
fn a_closure_that_never_runs_is_dropped_once() {
    use std::sync::atomic::AtomicBool;
    for handle_first in [false, true] {
        let rt = rt(1);
        let drops = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let (s, st) = (stop.clone(), started.clone());
        let spinner = rt.go(move || {
            st.store(true, SeqCst);
            while !s.load(SeqCst) {
                std::hint::spin_loop();
            }
        });
        wait_until(|| started.load(SeqCst));
        let c = Counted(drops.clone());
        let h = rt.go(move || {
            let _c = c;
        });
        drop(spinner);
        let h = if handle_first {
            drop(h);
            assert_eq!(drops.load(SeqCst), 0, "queued still");
            None
        } else {
            Some(h)
        };
        let letter = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            stop.store(true, SeqCst);
        });
        drop(rt);
        letter.join().unwrap();
        drop(h);
        assert_eq!(drops.load(SeqCst), 1, "handle first: {handle_first}");
    }
}

/// A thread outside the runtime joining a goroutine that will never end
/// (parked on a channel whose sender lives on, when its runtime is
/// dropped) gets an error saying so, whether it began to wait before the
/// drop or after it: not a hang.
#[test]
fn a_join_from_outside_after_the_runtime_is_gone_is_an_error() {
    let rt = rt(2);
    let (tx, rx) = channel::channel::<()>(0);
    let (parked_tx, parked_rx) = channel::channel::<()>(1);
    let (tx2, rx2) = channel::channel::<()>(0);
    let early = rt.go(move || {
        let _ = rx2.recv();
    });
    let late = rt.go(move || {
        parked_tx.send(()).unwrap();
        let _ = rx.recv();
    });
    parked_rx.recv().unwrap();
    let waiter = std::thread::spawn(move || early.join());
    // Most likely waiting by now; either way it must come back.
    std::thread::sleep(std::time::Duration::from_millis(20));
    drop(rt);
    let why = |r: Result<(), Box<dyn std::any::Any + Send>>| {
        r.expect_err("the goroutine never ended")
            .downcast::<String>()
            .map(|s| *s)
            .unwrap_or_default()
    };
    // Joined on threads, waited for at most 30 s: a hang fails the test.
    let late = std::thread::spawn(move || late.join());
    let within = |t: std::thread::JoinHandle<Result<(), Box<dyn std::any::Any + Send>>>| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !t.is_finished() {
            assert!(std::time::Instant::now() < deadline, "a join hung");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        why(t.join().unwrap())
    };
    let (early, late) = (within(waiter), within(late));
    for msg in [early, late] {
        assert!(msg.contains("runtime was dropped"), "{msg}");
    }
    drop((tx, tx2));
}

/// A join that panics (here: a wait inside a no-preempt region, which a
/// signal-preempted runtime refuses) leaves a handle that detaches as it
/// unwinds, so the goroutine's end drops its result at once, in the
/// goroutine's code, rather than leaving it in the task for whoever drops
/// the task last.
#[test]
fn a_join_that_panics_detaches_its_goroutine() {
    let c = Config {
        procs: 2,
        preemption: pardon_sched::Preemption::Signal,
        ..Config::default()
    };
    // SAFETY: the goroutines of this test use no thread-locals, do not
    // print, and allocate only through the system allocator.
    let rt = unsafe { Runtime::with_signal_preemption(c) }.unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    let refused = rt
        .block_on(move || {
            let (gate_tx, gate_rx) = channel::channel::<()>(1);
            let h = go(move || {
                let _ = gate_rx.recv();
                Counted(d)
            });
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _region = pardon_preempt::no_preempt_here();
                h.join().map(drop)
            }));
            gate_tx.send(()).unwrap();
            r.is_err()
        })
        .unwrap();
    assert!(refused, "a join inside a no-preempt region panics");
    wait_until(|| drops.load(SeqCst) >= 1);
    assert_eq!(drops.load(SeqCst), 1);
    drop(rt);
    assert_eq!(drops.load(SeqCst), 1);
}

/// A goroutine of one runtime joining a goroutine of another that will
/// never end (parked on a channel whose sender lives on, when its runtime
/// is dropped) gets the same error as a thread outside would, whether it
/// began to wait before the drop or after it; its own worker runs its
/// other goroutines meanwhile. It used to park for ever: nothing was left
/// to wake it.
#[test]
fn a_join_from_another_runtime_after_the_runtime_is_gone_is_an_error() {
    let doomed = rt(1);
    let joiners = rt(1);
    let (tx, rx) = channel::channel::<()>(0);
    let (tx2, rx2) = channel::channel::<()>(0);
    let (parked_tx, parked_rx) = channel::channel::<()>(2);
    let pt = parked_tx.clone();
    let early = doomed.go(move || {
        pt.send(()).unwrap();
        let _ = rx2.recv();
    });
    let late = doomed.go(move || {
        parked_tx.send(()).unwrap();
        let _ = rx.recv();
    });
    parked_rx.recv().unwrap();
    parked_rx.recv().unwrap();
    // The early joiner waits before the drop (most likely; either way it
    // must come back), and a goroutine beside it on its single worker
    // keeps running meanwhile.
    let early = joiners.go(move || early.join().map(|_| ()));
    let (tick_tx, tick_rx) = channel::channel::<u32>(1);
    let ticker = joiners.go(move || {
        for i in 0..3 {
            pardon_sched::sleep(std::time::Duration::from_millis(5));
            tick_tx.send(i).unwrap();
        }
    });
    for i in 0..3 {
        assert_eq!(tick_rx.recv(), Ok(i), "the joiner's worker is blocked");
    }
    ticker.join().unwrap();
    drop(doomed);
    let late = joiners.go(move || late.join().map(|_| ()));
    let why = |r: Result<(), Box<dyn std::any::Any + Send>>| {
        r.expect_err("the goroutine never ended")
            .downcast::<String>()
            .map(|s| *s)
            .unwrap_or_default()
    };
    // Joined from threads, waited for at most 30 s: a hang fails the test.
    let within = |h: JoinHandle<Result<(), Box<dyn std::any::Any + Send>>>| {
        let t = std::thread::spawn(move || h.join().expect("the joiner itself ends"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !t.is_finished() {
            assert!(std::time::Instant::now() < deadline, "a join hung");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        why(t.join().unwrap())
    };
    for msg in [within(early), within(late)] {
        assert!(msg.contains("runtime was dropped"), "{msg}");
    }
    drop((tx, tx2));
}

/// A goroutine handed its own handle that joins it gets an error saying
/// so, and goes on (it used to park for ever): the failed join detaches
/// it, and its result is dropped once, at its end.
#[test]
fn a_goroutine_joining_itself_is_an_error() {
    let rt = rt(1);
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = channel::channel::<JoinHandle<Counted>>(1);
    let (msg_tx, msg_rx) = channel::channel::<String>(1);
    let d = drops.clone();
    let h = rt.go(move || {
        let me = rx.recv().unwrap();
        let msg = me
            .join()
            .err()
            .and_then(|e| e.downcast::<String>().ok())
            .map(|s| *s)
            .unwrap_or_default();
        msg_tx.send(msg).unwrap();
        Counted(d)
    });
    tx.send(h).unwrap();
    let msg = msg_rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the goroutine that joined itself never came back");
    assert!(msg.contains("joined itself"), "{msg}");
    drop(rt);
    assert_eq!(drops.load(SeqCst), 1, "the result dropped once");
}
