//! Time slices end: the talk's claims on our own scheduler. A goroutine
//! spinning without calls for a lock another holds deadlocks a cooperative
//! runtime and a polls-only one whose loop does not poll, and does not
//! deadlock one preempted by signal (Go's `TestAsyncPreempt` shape); a
//! pair of heavy goroutines and a pair of light ones on one worker make
//! comparable progress (`TestPingPongHog`); and every register of a
//! goroutine survives being switched out by the signal, across 10,000
//! preemptions.
//!
//! These tests assert outcomes, never durations: a deadlock is detected by
//! a watchdog that then releases the spinning goroutine (so the test never
//! hangs), and the deadlock-free runs are only required to finish.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_preempt::PollStrategy;
use pardon_sched::{channel, go, yield_now, Config, GoroutinePoll, Preemption, Runtime};

mod delivery;
#[path = "../../preempt/tests/regloop/mod.rs"]
mod regloop;

fn config(procs: usize, preemption: Preemption, slice_us: u64) -> Config {
    Config {
        procs,
        preemption,
        time_slice: Duration::from_micros(slice_us),
        ..Config::default()
    }
}

fn runtime(c: Config) -> Runtime {
    if c.preemption == Preemption::Signal {
        // SAFETY: the goroutines of these tests use no thread-locals, do
        // not print, and allocate only through the system allocator.
        unsafe { Runtime::with_signal_preemption(c) }.unwrap()
    } else {
        Runtime::new(c).unwrap()
    }
}

/// One round of the spinlock story on `rt`: goroutine A takes the lock,
/// starts B, and yields while holding it; B spins for the lock with no
/// calls (polling with `P` on each try), bailing out only when `abort` is
/// set. Returns whether the round completed before `watchdog` ran out (if
/// not, it sets `abort` and waits for the round to unwind).
fn spinlock_round<P: PollStrategy + Default + Send + 'static>(
    rt: &Runtime,
    watchdog: Duration,
) -> bool {
    let lock = Arc::new(AtomicBool::new(false));
    let abort = Arc::new(AtomicBool::new(false));
    let (l2, a2) = (lock.clone(), abort.clone());
    let round = rt.go(move || {
        while l2.swap(true, SeqCst) {}
        let (l3, a3) = (l2.clone(), a2.clone());
        let b = go(move || {
            let mut poll = P::default();
            loop {
                if l3
                    .compare_exchange_weak(false, true, SeqCst, SeqCst)
                    .is_ok()
                {
                    l3.store(false, SeqCst);
                    return true;
                }
                if a3.load(SeqCst) {
                    return false;
                }
                poll.tick();
            }
        });
        yield_now();
        // A runs again only once B has given up the worker.
        l2.store(false, SeqCst);
        b.join().unwrap()
    });
    let start = Instant::now();
    while !round.is_finished() && start.elapsed() < watchdog {
        std::thread::sleep(Duration::from_millis(1));
    }
    if !round.is_finished() {
        abort.store(true, SeqCst);
    }
    let acquired = round.join().unwrap();
    let finished = start.elapsed() < watchdog || acquired;
    assert_eq!(finished, acquired);
    acquired
}

#[derive(Default)]
struct NoPoll;
impl PollStrategy for NoPoll {
    fn tick(&mut self) {}
    fn between_calls(&mut self) {}
}

#[test]
fn signal_preemption_ends_the_spinlock_deadlock() {
    let rt = runtime(config(1, Preemption::Signal, 1000));
    for round in 0..20 {
        assert!(
            spinlock_round::<NoPoll>(&rt, Duration::from_secs(60)),
            "round {round} deadlocked under signal preemption"
        );
    }
    let s = rt.stats();
    assert!(s.preemptions >= 20, "{s:?}");
}

#[test]
fn cooperative_runtime_deadlocks_on_the_spinlock() {
    let rt = runtime(config(1, Preemption::Cooperative, 1000));
    assert!(!spinlock_round::<NoPoll>(&rt, Duration::from_millis(300)));
    // And after the watchdog released it, the runtime works.
    assert_eq!(rt.block_on(|| 7).unwrap(), 7);
    assert_eq!(rt.stats().preemptions, 0);
}

#[test]
fn polls_end_the_deadlock_only_where_the_loop_polls() {
    let rt = runtime(config(1, Preemption::Poll, 1000));
    for _ in 0..5 {
        assert!(spinlock_round::<GoroutinePoll>(
            &rt,
            Duration::from_secs(60)
        ));
    }
    assert!(!spinlock_round::<NoPoll>(&rt, Duration::from_millis(300)));
}

/// Go's `TestPingPongHog`: two pairs of goroutines on one worker, each
/// pair handing a token back and forth, the hogs doing 1,000 times the
/// light pair's work per hand-off. A woken goroutine runs in its waker's
/// slice, so each pair gets about half the worker; without that (or
/// without preemption) the light pair, always woken next, would starve
/// the hogs, or the reverse.
fn ping_pong_hog(preemption: Preemption) -> (u64, u64) {
    let rt = runtime(config(1, preemption, 2000));
    let done = Arc::new(AtomicBool::new(false));
    let hog = Arc::new(AtomicU64::new(0));
    let light = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    let mut starts = Vec::new();
    for (limit, counter) in [(1_000_000u64, &hog), (1_000, &light)] {
        // Unbuffered, as in Go's test: a token sent goes to the partner.
        let (tx, rx) = channel::channel::<()>(0);
        let quit = Arc::new(AtomicU32::new(0));
        for _ in 0..2 {
            let (tx, rx, done, counter, quit) = (
                tx.clone(),
                rx.clone(),
                done.clone(),
                (*counter).clone(),
                quit.clone(),
            );
            handles.push(rt.go(move || {
                while rx.recv().is_ok() {
                    if done.load(SeqCst) {
                        // The first of the pair to see it passes the token
                        // on, so that the other wakes and sees it too.
                        if quit.fetch_add(1, SeqCst) == 0 {
                            let _ = tx.send(());
                        }
                        break;
                    }
                    let mut local = 0u64;
                    for _ in 0..limit {
                        local = std::hint::black_box(local + 1);
                    }
                    counter.fetch_add(local, SeqCst);
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            }));
        }
        starts.push(tx);
    }
    // Each pair's first token, sent by a goroutine: the channels are
    // unbuffered, and in cooperative mode the light pair may never run to
    // take it, which must not block this thread.
    for tx in starts {
        rt.go(move || {
            let _ = tx.send(());
        });
    }
    // At least 50 slices' worth of switching, whatever the machine's load.
    let start = Instant::now();
    while rt.stats().preemptions < 50 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    done.store(true, SeqCst);
    for h in handles {
        h.join().unwrap();
    }
    (hog.load(SeqCst), light.load(SeqCst))
}

#[test]
fn ping_pong_pairs_share_the_worker_fairly() {
    let (hog, light) = ping_pong_hog(Preemption::Signal);
    assert!(hog > 0 && light > 0, "hog {hog}, light {light}");
    let ratio = hog as f64 / light as f64;
    assert!(
        (0.2..=5.0).contains(&ratio),
        "hog {hog}, light {light}: ratio {ratio:.2} outside [0.2, 5]"
    );
}

/// Every register of goroutines preempted by the signal comes back
/// bit-exact: several goroutines per worker run the register loop with
/// patterns of their own, so a preempted one resumes after others have
/// loaded theirs.
#[test]
fn registers_survive_goroutine_preemption() {
    registers_survive(runtime(config(2, Preemption::Signal, 50)), 0);
}

/// The same in a migrating runtime (criterion 5 of issue 20, as Go does
/// it): a preempted goroutine goes to the global queue and resumes on
/// whichever worker takes it, so also on the other thread, a thousand
/// times at least.
#[test]
fn registers_survive_preemption_and_migration() {
    // SAFETY: the goroutines use no thread-locals, hold nothing bound to
    // their thread, do not print, and allocate only through the system
    // allocator.
    let rt = unsafe { Runtime::with_migration(config(2, Preemption::Signal, 50)) }.unwrap();
    registers_survive(rt, 1_000);
}

/// Runs six register-loop goroutines on `rt`'s two workers until 10,000
/// preemptions and `migrations` moves have happened, then checks every
/// goroutine's register state came back bit-exact every time (and, asked
/// for no moves, that none moved).
fn registers_survive(rt: Runtime, migrations: u64) {
    use regloop::{compare, pattern, Width, WORDS};
    const PREEMPTIONS: u64 = 10_000;
    const TIMEOUT_S: u64 = 300;
    let width = Width::best();
    let done = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for g in 0..6u64 {
        let done = done.clone();
        handles.push(rt.go(move || {
            let inp = pattern(1000 + g);
            let mut out = vec![0u64; WORDS];
            let mut failures = Vec::new();
            let mut runs = 0u64;
            while !done.load(SeqCst) {
                width.run(&inp, &mut out, 200_000);
                runs += 1;
                let bad = compare(width, &inp, &out);
                if !bad.is_empty() {
                    failures.push(bad);
                }
            }
            (runs, failures)
        }));
    }
    let start = Instant::now();
    while rt.stats().preemptions < PREEMPTIONS || rt.stats().migrations < migrations {
        if start.elapsed() > Duration::from_secs(TIMEOUT_S) {
            // The goroutines end first, or dropping the runtime would wait
            // for them for ever.
            done.store(true, SeqCst);
            panic!("only {:?} in {TIMEOUT_S} s", rt.stats());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done.store(true, SeqCst);
    for h in handles {
        let (runs, failures) = h.join().unwrap();
        assert!(runs > 0);
        assert!(
            failures.is_empty(),
            "register state corrupted: {:?}",
            &failures[..1]
        );
    }
    if migrations == 0 {
        assert_eq!(rt.stats().migrations, 0, "a goroutine moved");
    }
    eprintln!("{width:?}: {:?} in {:?}", rt.stats(), start.elapsed());
}

#[test]
fn signal_preemption_needs_the_unsafe_constructor() {
    let e = Runtime::new(config(1, Preemption::Signal, 1000)).unwrap_err();
    assert!(e.to_string().contains("with_signal_preemption"), "{e}");
    let e = Runtime::new(config(1, Preemption::Poll, 10)).unwrap_err();
    assert!(e.to_string().contains("time_slice"), "{e}");
}

/// `Runtime::stop_the_world` stops goroutines in loops without calls:
/// while the guard is held their counters do not move; from outside the
/// runtime and from one of its goroutines; other modes refuse by name.
#[test]
fn the_world_of_goroutines_stops() {
    let rt = Arc::new(runtime(config(2, Preemption::Signal, 1000)));
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let spinners: Vec<_> = counters
        .iter()
        .map(|c| {
            let (c, stop) = (c.clone(), stop.clone());
            rt.go(move || {
                while !stop.load(SeqCst) {
                    c.fetch_add(1, SeqCst);
                }
            })
        })
        .collect();
    let read = |cs: &[Arc<AtomicU64>]| cs.iter().map(|c| c.load(SeqCst)).collect::<Vec<_>>();
    for _ in 0..20 {
        let w = rt.stop_the_world().unwrap();
        let before = read(&counters);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(
            read(&counters),
            before,
            "a goroutine ran in a stopped world"
        );
        drop(w);
        std::thread::sleep(Duration::from_millis(1));
    }
    // From a goroutine: its own worker coordinates.
    let (rt2, cs) = (rt.clone(), counters.clone());
    let from_inside = rt.go(move || {
        let mut ok = 0;
        for _ in 0..10 {
            let w = rt2.stop_the_world().unwrap();
            let before = read(&cs);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(1) {
                std::hint::spin_loop();
            }
            ok += usize::from(read(&cs) == before);
            drop(w);
        }
        ok
    });
    assert_eq!(from_inside.join().unwrap(), 10);
    stop.store(true, SeqCst);
    for s in spinners {
        s.join().unwrap();
    }
    let polling = runtime(config(1, Preemption::Poll, 1000));
    let Err(e) = polling.stop_the_world() else {
        panic!("a polling runtime stopped its world");
    };
    assert!(e.to_string().contains("signal-preempted"), "{e}");
}

/// Goroutines of one worker that stop the world over and over, preempted
/// every 50 µs: one must never be switched out while it holds the
/// registry's coordinator lock (it was, between taking the lock and
/// becoming the coordinator, and after the restart before letting go),
/// or the next of them to stop the world blocks the worker's thread on
/// that lock for ever. Each goroutine stops the world for two seconds;
/// the whole must end well within the watchdog's minute.
#[test]
fn goroutines_stopping_the_world_are_not_switched_out_holding_the_coordinator_lock() {
    let rt = Arc::new(runtime(config(1, Preemption::Signal, 50)));
    let stops = Arc::new(AtomicU64::new(0));
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let (rt, stops) = (rt.clone(), stops.clone());
            rt.clone().go(move || {
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_secs(2) {
                    let w = rt.stop_the_world().unwrap();
                    drop(w);
                    stops.fetch_add(1, SeqCst);
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    while !hs.iter().all(|h| h.is_finished()) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "stuck after {} stops (a goroutine holding the coordinator lock was switched out?)",
            stops.load(SeqCst)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for h in hs {
        h.join().unwrap();
    }
}

/// Channels under signal preemption: producers and consumers on two
/// workers, a rendezvous and a one-slot channel, with goroutines in
/// call-free loops beside them so that slices end by the signal in the
/// middle of the channel code's goroutine-side steps (a parked sender's
/// value in its frame, a receiver's slot). Every value arrives exactly
/// once and in its producer's order at each consumer, and the run ends
/// (a watchdog turns a hang into a failure).
#[test]
fn channels_deliver_every_value_once_under_signal_preemption() {
    for cap in [0usize, 1] {
        let rt = Arc::new(runtime(config(2, Preemption::Signal, 200)));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicU32::new(0));
        let spinners: Vec<_> = (0..2)
            .map(|_| {
                let (stop, started) = (stop.clone(), started.clone());
                rt.go(move || {
                    started.fetch_add(1, SeqCst);
                    let mut x = 1u64;
                    while !stop.load(SeqCst) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(x.wrapping_mul(3).wrapping_add(1));
                        }
                    }
                })
            })
            .collect();
        // Both spinners running: on two workers, every other goroutine
        // runs only when the signal ends a spinner's slice; on one (the
        // second started once the signal ended the first's), likewise.
        while started.load(SeqCst) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (tx, rx) = channel::channel::<(u32, u32)>(cap);
        const PRODUCERS: u32 = 6;
        const EACH: u32 = 3_000;
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let tx = tx.clone();
                rt.go(move || {
                    for i in 0..EACH {
                        tx.send((p, i)).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let consumers: Vec<_> = (0..3)
            .map(|_| {
                let rx = rx.clone();
                rt.go(move || {
                    let mut got = Vec::new();
                    while let Ok(v) = rx.recv() {
                        got.push(v);
                    }
                    got
                })
            })
            .collect();
        drop(rx);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut all = Vec::new();
            for c in consumers {
                all.push(c.join().unwrap());
            }
            for p in producers {
                p.join().unwrap();
            }
            let _ = done_tx.send(all);
        });
        let all = done_rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("capacity {cap}: the channels hung"));
        stop.store(true, SeqCst);
        for s in spinners {
            s.join().unwrap();
        }
        let senders: Vec<u32> = (0..PRODUCERS).collect();
        delivery::assert_each_once_in_order(all, &senders, EACH, &format!("capacity {cap}"));
        // Implied by the above (see where the spinners start), whatever the
        // machine's load.
        assert!(rt.stats().preemptions > 0, "no slice ended by the signal");
    }
}

/// A goroutine that holds another registry's stopped world (a heap of its
/// own, say) is not switched out by its runtime's signal. It was: the
/// next goroutine of its worker to stop that registry got `Reentrant` (the
/// world was its thread's), and its panic aborted the process (the count
/// of stopped worlds that makes a panic abort is the thread's too); 3 of 3
/// runs. Watched: a run that makes no progress for 300 s is reported, not
/// waited for.
#[test]
fn goroutines_holding_another_registrys_world_are_not_switched_out() {
    let rt = Arc::new(runtime(config(1, Preemption::Signal, 50)));
    let other = pardon_preempt::Registry::new(pardon_preempt::Config::default()).unwrap();
    // Counted with an atomic, not sent on a `std` channel: its sender
    // takes a `std` mutex, which a goroutine preempted inside it would
    // hold while the other one waited for it, blocking their worker (the
    // contract of `with_signal_preemption`; this test did that once in
    // about 160 soak runs).
    let finished = Arc::new(AtomicU64::new(0));
    for _ in 0..2 {
        let (other, finished, rt2) = (other.clone(), finished.clone(), rt.clone());
        rt.go(move || {
            // 20,000 rounds at least, and on until the signal has been
            // asked to end this worker's slices a hundred times: a run in
            // which it never was would show nothing.
            let mut i = 0;
            while i < 20_000 || rt2.stats().asks < 100 {
                i += 1;
                let w = other.stop_the_world().unwrap();
                // Long enough to be preempted in, now and then.
                for i in 0..200u64 {
                    std::hint::black_box(i);
                }
                drop(w);
            }
            finished.fetch_add(1, SeqCst);
        });
    }
    let start = Instant::now();
    while finished.load(SeqCst) < 2 {
        if start.elapsed() > Duration::from_secs(300) {
            let s = rt.stats();
            // The worker is blocked for good: dropping the runtime would
            // wait for it.
            std::mem::forget(rt);
            panic!("no progress in 300 s: {s:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
