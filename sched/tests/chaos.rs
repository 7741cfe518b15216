//! Goroutines running random programs over everything the runtime offers
//! at once: channels of every kind (rendezvous, buffered, unbounded),
//! with blocking, timed and non-blocking sends and receives; a goroutine
//! mutex, sometimes held across a yield; a wait group; sleeps, yields and
//! call-free loops the time slice ends; blocking calls; children spawned,
//! some detached and counted by the wait group, some joined; a condition
//! variable a child notifies; and two threads outside the runtime sending
//! and receiving on the same channels. In every preemption mode, with and
//! without migration, on more workers than CPUs.
//!
//! The oracle is arithmetic over what each goroutine recorded, never what
//! the runtime reports: every token made is either sent (and then taken
//! exactly once, by a receive or by the final drain) or handed back by a
//! send that failed (and then never taken); nothing is taken that was not
//! sent; the mutex's count is every increment made under it; every
//! blocking call and every joined child returns what it computed; every
//! detached child's wait-group `done` arrives.
//!
//! The goroutines use no thread-locals, print nothing, keep no value bound
//! to their thread across a switch point and allocate through the system
//! allocator (the contract of the `unsafe` constructors below); none
//! panics (two goroutines of one signal-preempted worker unwinding at once
//! abort the process: see `Runtime::with_signal_preemption`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use pardon_sched::channel::{self, Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use pardon_sched::channel::{TryRecvError, TrySendError};
use pardon_sched::Runtime;
use pardon_sched::{blocking, go, poll, sleep, yield_now, Condvar, Config, Mutex, Preemption};
use pardon_sched::{JoinHandle, WaitGroup};

/// Goroutines of a run, and steps each takes.
const GOROUTINES: u64 = 12;
const STEPS: u64 = 250;

/// The channels every goroutine uses: capacities 0, 1 and 8, and one
/// unbounded.
struct Chans {
    tx: Vec<Sender<u64>>,
    rx: Vec<Receiver<u64>>,
}

impl Chans {
    fn new() -> Chans {
        let mut tx = Vec::new();
        let mut rx = Vec::new();
        for cap in [Some(0), Some(1), Some(8), None] {
            let (t, r) = match cap {
                Some(c) => channel::channel(c),
                None => channel::unbounded(),
            };
            tx.push(t);
            rx.push(r);
        }
        Chans { tx, rx }
    }

    fn clone_all(&self) -> Chans {
        Chans {
            tx: self.tx.clone(),
            rx: self.rx.clone(),
        }
    }
}

/// What one goroutine (and the children it joined) did.
#[derive(Default)]
struct Record {
    /// Tokens a send delivered (queued, or taken by a receiver).
    sent: Vec<u64>,
    /// Tokens a failed send handed back.
    returned: Vec<u64>,
    /// Tokens received.
    got: Vec<u64>,
    /// Increments of the shared count, made under the mutex.
    incs: u64,
}

impl Record {
    fn merge(&mut self, other: Record) {
        self.sent.extend(other.sent);
        self.returned.extend(other.returned);
        self.got.extend(other.got);
        self.incs += other.incs;
    }
}

/// xorshift64: the program of a goroutine, from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Shared state of a run besides the channels.
struct Shared {
    count: Mutex<u64>,
    wg: WaitGroup,
    /// Detached children that have run to their `done`.
    detached_done: AtomicU64,
    /// Detached children started.
    detached: AtomicU64,
    /// The next id for a joined child (ids make tokens unique).
    next_id: AtomicU64,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            count: Mutex::new(0),
            wg: WaitGroup::new(),
            detached_done: AtomicU64::new(0),
            detached: AtomicU64::new(0),
            next_id: AtomicU64::new(GOROUTINES + 1),
        })
    }
}

/// A goroutine's program: `steps` random operations. `id` makes its
/// tokens unique (`id << 32 | n`); children get ids of their own
/// (`Shared::next_id`), and a program from its id.
fn program(id: u64, steps: u64, chans: &Chans, sh: &Arc<Shared>, depth: u32) -> Record {
    let mut rng = Rng(id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut rec = Record::default();
    let mut made = 0u64;
    let mut token = || {
        made += 1;
        (id << 32) | made
    };
    let short = |rng: &mut Rng| Duration::from_micros(rng.below(150));
    for _ in 0..steps {
        let c = rng.below(chans.tx.len() as u64) as usize;
        match rng.below(14) {
            0 | 1 => {
                let t = token();
                match chans.tx[c].send_timeout(t, short(&mut rng)) {
                    Ok(()) => rec.sent.push(t),
                    Err(SendTimeoutError::Timeout(v)) => {
                        assert_eq!(v, t, "a timed-out send handed back another token");
                        rec.returned.push(v);
                    }
                    Err(SendTimeoutError::Disconnected(_)) => {
                        unreachable!("every receiver lives until the end")
                    }
                }
            }
            2 => {
                let t = token();
                match chans.tx[c].try_send(t) {
                    Ok(()) => rec.sent.push(t),
                    Err(TrySendError::Full(v)) => {
                        assert_eq!(v, t, "a refused send handed back another token");
                        rec.returned.push(v);
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        unreachable!("every receiver lives until the end")
                    }
                }
            }
            3 if c == 3 => {
                // An unbounded channel's send never waits.
                let t = token();
                chans.tx[c].send(t).expect("receivers live");
                rec.sent.push(t);
            }
            3..=5 => match chans.rx[c].recv_timeout(short(&mut rng)) {
                Ok(v) => rec.got.push(v),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    unreachable!("every sender lives until the end")
                }
            },
            6 => match chans.rx[c].try_recv() {
                Ok(v) => rec.got.push(v),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => {
                    unreachable!("every sender lives until the end")
                }
            },
            7 => {
                let mut g = sh.count.lock();
                let v = *g;
                if rng.below(3) == 0 {
                    // Held across a switch, between the read and the
                    // write: the others park for it (a lock that let one
                    // in meanwhile loses an increment).
                    yield_now();
                }
                *g = v + 1;
                rec.incs += 1;
            }
            8 => match rng.below(3) {
                0 => yield_now(),
                1 => sleep(short(&mut rng)),
                _ => {
                    // Call-free work the time slice may end (polls for the
                    // poll mode; nothing in the others).
                    let n = rng.below(200_000);
                    let mut x = id;
                    for i in 0..n {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                        if i % 1024 == 0 {
                            poll();
                        }
                    }
                    std::hint::black_box(x);
                }
            },
            9 => {
                let k = rng.below(1000);
                let r = blocking(move || {
                    std::thread::sleep(Duration::from_micros(20));
                    k * 3 + 1
                });
                assert_eq!(r, k * 3 + 1, "a blocking call returned another value");
            }
            10 if depth < 2 => {
                // A joined child with a program of its own.
                let child = sh.next_id.fetch_add(1, SeqCst);
                let ch = chans.clone_all();
                let sh2 = sh.clone();
                let h: JoinHandle<Record> = go(move || program(child, 20, &ch, &sh2, depth + 1));
                if rng.below(2) == 0 {
                    yield_now();
                }
                rec.merge(h.join().expect("a child panicked"));
            }
            13 => {
                // A handshake through a condition variable: a child sets
                // the flag after a while and notifies; this goroutine
                // waits for it (a notification before the wait is not
                // lost: the flag is looked at under the mutex).
                let gate = Arc::new((Mutex::new(false), Condvar::new()));
                let g2 = gate.clone();
                let pause = short(&mut rng);
                let h = go(move || {
                    sleep(pause);
                    *g2.0.lock() = true;
                    g2.1.notify_all();
                });
                let mut open = gate.0.lock();
                while !*open {
                    open = gate.1.wait(open);
                }
                drop(open);
                h.join().expect("a notifier panicked");
            }
            11 | 12 if depth < 2 => {
                // A detached child, counted by the wait group: it only
                // touches the count (its sends would have no one to tell).
                sh.wg.add(1);
                sh.detached.fetch_add(1, SeqCst);
                let sh2 = sh.clone();
                drop(go(move || {
                    // Still running, often, when the main goroutine waits.
                    sleep(Duration::from_micros(300));
                    *sh2.count.lock() += 0;
                    sh2.detached_done.fetch_add(1, SeqCst);
                    sh2.wg.done();
                }));
            }
            _ => yield_now(),
        }
    }
    rec
}

/// What a thread outside the runtime does: `steps` random timed and
/// non-blocking channel operations (it cannot park: it sleeps).
fn outside_program(id: u64, steps: u64, chans: &Chans) -> Record {
    let mut rng = Rng(id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut rec = Record::default();
    for n in 1..=steps {
        let c = rng.below(chans.tx.len() as u64) as usize;
        let d = Duration::from_micros(rng.below(150));
        let t = (id << 32) | n;
        match rng.below(4) {
            0 => match chans.tx[c].send_timeout(t, d) {
                Ok(()) => rec.sent.push(t),
                Err(SendTimeoutError::Timeout(v)) => rec.returned.push(v),
                Err(SendTimeoutError::Disconnected(_)) => unreachable!("receivers live"),
            },
            1 => match chans.tx[c].try_send(t) {
                Ok(()) => rec.sent.push(t),
                Err(TrySendError::Full(v)) => rec.returned.push(v),
                Err(TrySendError::Disconnected(_)) => unreachable!("receivers live"),
            },
            2 => match chans.rx[c].recv_timeout(d) {
                Ok(v) => rec.got.push(v),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => unreachable!("senders live"),
            },
            _ => match chans.rx[c].try_recv() {
                Ok(v) => rec.got.push(v),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => unreachable!("senders live"),
            },
        }
    }
    rec
}

/// Starts the threads outside the runtime, `steps` each.
fn outside_threads(chans: &Chans, steps: u64) -> Vec<std::thread::JoinHandle<Record>> {
    (0..OUTSIDE)
        .map(|k| {
            let ch = chans.clone_all();
            std::thread::spawn(move || outside_program(OUTSIDE_ID + k, steps, &ch))
        })
        .collect()
}

/// Threads outside the runtime in a run, and steps each takes; their ids
/// are above every goroutine's.
const OUTSIDE: u64 = 2;
const OUTSIDE_STEPS: u64 = 150;
const OUTSIDE_ID: u64 = 1 << 20;

fn run(rt: Runtime, what: &str) {
    let sh = Shared::new();
    let sh2 = sh.clone();
    let chans = Chans::new();
    // The threads outside the runtime start here, not in a goroutine
    // (`std::thread::spawn` reads thread-locals, which the contract of a
    // migrating or signal runtime keeps out of goroutine code).
    let threads = outside_threads(&chans, OUTSIDE_STEPS);
    let ch = chans.clone_all();
    // In signal mode a thread outside stops and restarts the world every
    // few hundred microseconds throughout (the runtime's own stop: every
    // worker parked where it is, goroutines mid-step).
    let done = std::sync::atomic::AtomicBool::new(false);
    let ((mut total, count, (done_at_wait, started)), (stops, stop_error)) =
        std::thread::scope(|s| {
            let stopper = s.spawn(|| {
                let (mut n, mut error) = (0u64, None);
                // At least one stop, however late this thread first runs
                // on a loaded machine (the check below counts on it).
                while rt.registry().is_some() {
                    match rt.stop_the_world() {
                        Ok(world) => {
                            n += 1;
                            drop(world);
                        }
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                    if done.load(SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(300));
                }
                (n, error)
            });
            let r = rt
                .block_on(move || {
                    let chans = ch;
                    let hs: Vec<JoinHandle<Record>> = (1..=GOROUTINES)
                        .map(|g| {
                            let ch = chans.clone_all();
                            let sh = sh2.clone();
                            go(move || program(g, STEPS, &ch, &sh, 0))
                        })
                        .collect();
                    let mut total = Record::default();
                    for h in hs {
                        total.merge(h.join().expect("a goroutine panicked"));
                    }
                    // One more, surely still asleep when the wait begins.
                    sh2.wg.add(1);
                    sh2.detached.fetch_add(1, SeqCst);
                    let sh3 = sh2.clone();
                    drop(go(move || {
                        sleep(Duration::from_millis(2));
                        sh3.detached_done.fetch_add(1, SeqCst);
                        sh3.wg.done();
                    }));
                    sh2.wg.wait();
                    // Read as the wait returns: every detached child done by now.
                    let at_wait = (sh2.detached_done.load(SeqCst), sh2.detached.load(SeqCst));
                    let count = *sh2.count.lock();
                    (total, count, at_wait)
                })
                .expect("the main goroutine panicked");
            done.store(true, SeqCst);
            (r, stopper.join().expect("the stopper panicked"))
        });
    assert_eq!(stop_error, None, "{what}: a stop failed");
    assert_eq!(
        stops > 0,
        rt.registry().is_some(),
        "{what}: the stopper did not run (or ran without a registry)"
    );
    for t in threads {
        total.merge(t.join().expect("an outside thread panicked"));
    }
    // Every goroutine and thread has ended: what is queued is all that is
    // left.
    let mut drained = Vec::new();
    for r in &chans.rx {
        while let Ok(v) = r.try_recv() {
            drained.push(v);
        }
    }
    drop(rt);
    assert_eq!(
        done_at_wait, started,
        "{what}: the wait group's wait returned before every detached child's done"
    );
    assert_eq!(sh.detached.load(SeqCst), started, "{what}");
    assert_eq!(count, total.incs, "{what}: increments lost or invented");
    let sent: BTreeSet<u64> = total.sent.iter().copied().collect();
    assert_eq!(sent.len(), total.sent.len(), "{what}: a token sent twice");
    let returned: BTreeSet<u64> = total.returned.iter().copied().collect();
    assert_eq!(
        returned.len(),
        total.returned.len(),
        "{what}: a token handed back twice"
    );
    assert!(
        sent.is_disjoint(&returned),
        "{what}: a token both delivered and handed back"
    );
    let mut taken: Vec<u64> = total.got.iter().chain(&drained).copied().collect();
    taken.sort_unstable();
    let unique = {
        let mut t = taken.clone();
        t.dedup();
        t
    };
    assert_eq!(unique.len(), taken.len(), "{what}: a token taken twice");
    let taken: BTreeSet<u64> = taken.into_iter().collect();
    assert_eq!(
        taken.difference(&sent).count(),
        0,
        "{what}: a token taken that no send delivered"
    );
    assert_eq!(
        sent.difference(&taken).count(),
        0,
        "{what}: a delivered token lost ({} of {})",
        sent.difference(&taken).count(),
        sent.len()
    );
    // The runs exercise what they claim to (not a bound on speed).
    assert!(
        !sent.is_empty() && !total.got.is_empty() && total.incs > 0,
        "{what}"
    );
}

fn config(preemption: Preemption) -> Config {
    Config {
        // More workers than this machine's CPUs: threads lose their CPU
        // anywhere, the runtime's own code included.
        procs: 3,
        preemption,
        time_slice: Duration::from_micros(200),
        ..Config::default()
    }
}

/// Every kind of runtime, by the name `runtime` takes.
const KINDS: [&str; 6] = [
    "coop",
    "poll",
    "signal",
    "coop, migrating",
    "poll, migrating",
    "signal, migrating",
];

/// A runtime of each kind the tests run, by name.
fn runtime(kind: &str) -> Runtime {
    let (p, migrating) = match kind {
        "coop" => (Preemption::Cooperative, false),
        "poll" => (Preemption::Poll, false),
        "signal" => (Preemption::Signal, false),
        "coop, migrating" => (Preemption::Cooperative, true),
        "poll, migrating" => (Preemption::Poll, true),
        "signal, migrating" => (Preemption::Signal, true),
        _ => unreachable!("no runtime kind {kind}"),
    };
    if migrating {
        // SAFETY: see the module comment: the goroutines keep the contract
        // (no thread-local, nothing bound to a thread).
        unsafe { Runtime::with_migration(config(p)) }.unwrap()
    } else if p == Preemption::Signal {
        // SAFETY: as above.
        unsafe { Runtime::with_signal_preemption(config(p)) }.unwrap()
    } else {
        Runtime::new(config(p)).unwrap()
    }
}

#[test]
fn cooperative() {
    run(runtime("coop"), "coop");
}

#[test]
fn polling() {
    run(runtime("poll"), "poll");
}

#[test]
fn signal() {
    run(runtime("signal"), "signal");
}

#[test]
fn cooperative_migrating() {
    run(runtime("coop, migrating"), "coop, migrating");
}

#[test]
fn polling_migrating() {
    run(runtime("poll, migrating"), "poll, migrating");
}

#[test]
fn signal_migrating() {
    run(runtime("signal, migrating"), "signal, migrating");
}

/// The same programs, long enough to be mid-flight (parked in channels,
/// timed waits, joins, a condition variable, blocking calls, call-free
/// loops) when the runtime is dropped from the thread that made it, while
/// the threads outside go on using the channels. Nothing may crash or
/// hang: every join from outside returns (the value, or the error saying
/// the runtime is gone), the outside threads finish, and no token is
/// taken twice among the takes still visible (those of goroutines that
/// never ended are gone with them).
fn run_dropped(rt: Runtime, what: &str) {
    // A hang is a failure, reported, not a test that never ends.
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f2 = finished.clone();
    let label = what.to_string();
    std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        while !f2.load(SeqCst) {
            if t0.elapsed() > Duration::from_secs(120) {
                eprintln!("{label}: a run with its runtime dropped hung");
                std::process::abort();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let sh = Shared::new();
    let chans = Chans::new();
    let threads = outside_threads(&chans, 400);
    let hs: Vec<JoinHandle<Record>> = (1..=GOROUTINES)
        .map(|g| {
            let ch = chans.clone_all();
            let sh = sh.clone();
            rt.go(move || program(g, 100_000, &ch, &sh, 0))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(30));
    drop(rt);
    let mut taken = Vec::new();
    let mut ended = 0;
    for h in hs {
        // Joined from outside after the drop: a value or an error, at once.
        if let Ok(r) = h.join() {
            ended += 1;
            taken.extend(r.got);
        }
    }
    for t in threads {
        taken.extend(t.join().expect("an outside thread panicked").got);
    }
    for r in &chans.rx {
        while let Ok(v) = r.try_recv() {
            taken.push(v);
        }
    }
    finished.store(true, SeqCst);
    let n = taken.len();
    taken.sort_unstable();
    taken.dedup();
    assert_eq!(taken.len(), n, "{what}: a token taken twice");
    // 100,000 steps do not end in 30 ms: the drop caught them running.
    assert!(
        ended < GOROUTINES,
        "{what}: every goroutine ended before the drop"
    );
}

#[test]
fn dropped_mid_flight() {
    for kind in KINDS {
        run_dropped(runtime(kind), kind);
    }
}

/// Each kind of runtime dropped from inside one of its own goroutines (it
/// was sent the `Runtime` on a channel) while twelve others yield: the
/// workers are not joined then but end on their own. Nothing may crash or
/// hang; every join from outside returns.
#[test]
fn dropped_from_inside() {
    for kind in KINDS {
        for _ in 0..5 {
            let rt = runtime(kind);
            let yielders: Vec<_> = (0..12)
                .map(|_| {
                    rt.go(|| {
                        for _ in 0..1_000_000 {
                            yield_now();
                        }
                    })
                })
                .collect();
            let (tx, rx) = channel::channel::<Runtime>(1);
            let dropper = rt.go(move || {
                let rt = rx.recv().expect("the runtime is sent");
                sleep(Duration::from_millis(20));
                drop(rt);
                // Goes on (or is left where it yields, its workers ending).
                for _ in 0..100 {
                    yield_now();
                }
            });
            tx.send(rt).expect("the dropper receives");
            let _ = dropper.join();
            for h in yielders {
                let _ = h.join();
            }
        }
    }
}
