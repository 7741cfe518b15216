//! A goroutine that parks while its worker has a goroutine in `next` (one
//! it woke: a channel's partner) switches straight into that goroutine,
//! not through the scheduler (`worker::hand_off`). Such a switch must
//! carry everything a switch through the scheduler carries; what a
//! collector relies on most is the task word (pardon's heap keeps a
//! goroutine's shadow-frame chain there), so that is what these tests
//! watch.
//!
//! The oracles are independent of the runtime's code: each goroutine
//! stores task words of its own choosing through its worker's record and
//! checks, every time it runs again, that the record holds its last one;
//! and a stopper thread checks that the word each stop reports for a
//! parked goroutine (found by the address of one of its locals) is the
//! one that goroutine published before it parked, that each worker
//! stopped inside the stack bounds its record holds (which the signal
//! handler and the collector trust), and that a worker running a ring
//! goroutine reports that goroutine's word.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use pardon_preempt::{Attached, Registry};
use pardon_sched::{channel, go, Attacher, Config, Runtime};

struct Own(Attached);

impl AsRef<Attached> for Own {
    fn as_ref(&self) -> &Attached {
        &self.0
    }
}

thread_local! {
    /// The worker's own record, set by the attach hook on each worker
    /// (goroutines never leave their worker, so a goroutine reads its own
    /// worker's).
    static RECORD: Cell<*const Attached> = const { Cell::new(std::ptr::null()) };
}

/// `procs` signal-preempted workers (slices of 1 ms, so preemptions mix
/// with the hand-offs) over a registry of their own, whose attach hook
/// leaves each worker's record where its goroutines find it.
fn runtime(procs: usize) -> (Runtime, Registry) {
    let registry = Registry::new(pardon_sched::registry_config(pardon_preempt::Config {
        stop_timeout: Duration::from_secs(10),
        ..Default::default()
    }))
    .unwrap();
    let r = registry.clone();
    let attach = Attacher::new(move |ctx| {
        // SAFETY: the runtime addresses its worker's yields by `ctx`, as
        // the hook's contract asks; nothing else uses that word here.
        let a = unsafe { r.attach_with_context(ctx) }.map_err(|e| e.to_string())?;
        let owned = Box::new(Own(a));
        // The box does not move: the pointer stays good while the
        // runtime holds it, which is as long as any goroutine runs.
        RECORD.with(|c| c.set(&owned.0));
        Ok(owned as Box<dyn AsRef<Attached>>)
    });
    let config = Config {
        procs,
        time_slice: Duration::from_millis(1),
        attach: Some(attach),
        ..Config::default()
    };
    // SAFETY: these goroutines keep `with_registry`'s contract: the one
    // thread-local they read is set once per worker before any runs.
    let rt = unsafe { Runtime::with_registry(config, registry.clone()) }.unwrap();
    (rt, registry)
}

/// The calling goroutine's worker's task-word cell.
fn word_cell() -> &'static AtomicUsize {
    let p = RECORD.with(|c| c.get());
    assert!(!p.is_null(), "a goroutine of this test's runtime");
    // SAFETY: set by the attach hook to the worker's record, which lives
    // while the runtime does (longer than this goroutine). The words
    // stored are never interpreted: the registry's only coordinators are
    // this test's.
    unsafe { (*p).task_word_cell() }
}

/// A word no other goroutine of the ring uses: goroutine `i`, round `r`.
fn word(i: usize, r: usize) -> usize {
    (i << 32) | r
}

const RING: usize = 6;
const ROUNDS: usize = 3000;

/// `RING` goroutines pass a token round a ring of rendezvous channels
/// (each send parks the sender until the next one takes the value, and
/// that receive wakes it into its worker's `next` slot: the shape that
/// hands off on every switch), each with a task word of its own, while a
/// stopper checks the words the stops report.
fn ring(procs: usize) {
    let (rt, registry) = runtime(procs);
    // Each goroutine's stack (by a local's address) and its last word,
    // published before it parks.
    let at: Arc<Vec<AtomicUsize>> = Arc::new((0..RING).map(|_| AtomicUsize::new(0)).collect());
    let published: Arc<Vec<AtomicUsize>> =
        Arc::new((0..RING).map(|_| AtomicUsize::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));

    let stopper = {
        let (registry, at, published, done) = (
            registry.clone(),
            at.clone(),
            published.clone(),
            done.clone(),
        );
        std::thread::spawn(move || {
            while !done.load(SeqCst) {
                // The first wrong report, checked once the world runs
                // again (a panic with the world stopped ends the process):
                // (goroutine, word found, word published), or
                // (usize::MAX, stopped at, stack bottom).
                let mut wrong = None;
                {
                    let world = registry.stop_the_world().expect("a stop");
                    // The workers: each stopped on the stack its record
                    // names, and one running a ring goroutine with that
                    // goroutine's word.
                    for th in world.threads() {
                        if th.kind() == pardon_preempt::StopKind::Coordinator {
                            continue;
                        }
                        let (lo, hi) = th.stack_bounds();
                        if !(lo..hi).contains(&th.scan_lo()) && wrong.is_none() {
                            wrong = Some((usize::MAX, th.scan_lo(), lo));
                        }
                        let Some(i) = (0..RING).find(|&i| (lo..hi).contains(&at[i].load(SeqCst)))
                        else {
                            continue;
                        };
                        let (w, p) = (th.task_word(), published[i].load(SeqCst));
                        // A running goroutine may be between its two
                        // stores (published first): its word may be one
                        // behind, never ahead.
                        if w != p && w + 1 != p && wrong.is_none() {
                            wrong = Some((i, w, p));
                        }
                    }
                    world.for_each_suspended(|t| {
                        let Some(i) = (0..RING).find(|&i| {
                            let a = at[i].load(SeqCst);
                            a != 0 && (t.stack.0..t.stack.1).contains(&a)
                        }) else {
                            return;
                        };
                        // Published before the word was stored, and
                        // both before the goroutine parked: a parked
                        // goroutine's word is its published one, or, if
                        // it was taken by a preemption between the two
                        // stores, the one before.
                        let p = published[i].load(SeqCst);
                        if t.word != p && t.word + 1 != p && wrong.is_none() {
                            wrong = Some((i, t.word, p));
                        }
                    });
                }
                if let Some((i, w, p)) = wrong {
                    if i == usize::MAX {
                        panic!(
                            "a worker stopped at {w:#x}, outside its stack bounds (from {p:#x})"
                        );
                    }
                    panic!("goroutine {i} reported with word {w:#x}, published {p:#x}");
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };

    let (txs, rxs): (Vec<_>, Vec<_>) = (0..RING).map(|_| channel::channel::<usize>(0)).unzip();
    let mut rxs: Vec<Option<channel::Receiver<usize>>> = rxs.into_iter().map(Some).collect();
    let mut handles = Vec::new();
    for i in 0..RING {
        // Goroutine i receives on channel i and sends on channel i + 1.
        let rx = rxs[i].take().unwrap();
        let tx = txs[(i + 1) % RING].clone();
        let (at, published) = (at.clone(), published.clone());
        handles.push(rt.go(move || {
            let here = 0u8;
            at[i].store(std::hint::black_box(&here) as *const u8 as usize, SeqCst);
            let cell = word_cell();
            let mut hops = 0usize;
            for r in 1..=ROUNDS {
                let w = word(i, r);
                published[i].store(w, SeqCst);
                cell.store(w, SeqCst);
                if i == 0 {
                    tx.send(r).unwrap();
                    assert_eq!(rx.recv().unwrap(), r);
                } else {
                    let v = rx.recv().unwrap();
                    assert_eq!(cell.load(SeqCst), w, "goroutine {i}'s word after a receive");
                    tx.send(v).unwrap();
                }
                assert_eq!(
                    cell.load(SeqCst),
                    w,
                    "goroutine {i} found another word when it ran again"
                );
                hops += 1;
            }
            hops
        }));
    }
    drop(txs);
    for h in handles {
        assert_eq!(h.join().unwrap(), ROUNDS);
    }
    done.store(true, SeqCst);
    stopper.join().unwrap();
}

#[test]
fn hand_offs_carry_task_words_on_one_worker() {
    ring(1);
}

#[test]
fn hand_offs_carry_task_words_on_two_workers() {
    ring(2);
}

/// One goroutine program whose steps are logged as (goroutine, step):
/// goroutines parking on rendezvous and buffered channels, a mutex held
/// across a yield, a condition variable, a wait group and joins.
fn program(log: Arc<std::sync::Mutex<Vec<(u32, u32)>>>) {
    let note = move |g: u32, s: u32| log.lock().unwrap().push((g, s));
    let mut handles = Vec::new();
    // A ping-pong pair on rendezvous channels.
    let (atx, arx) = channel::channel::<u32>(0);
    let (btx, brx) = channel::channel::<u32>(0);
    {
        let note = note.clone();
        handles.push(go(move || {
            while let Ok(v) = arx.recv() {
                note(1, v);
                if btx.send(v + 1).is_err() {
                    break;
                }
            }
        }));
    }
    // Producers and a consumer on a buffered channel.
    let (ptx, prx) = channel::channel::<u32>(2);
    for p in 0..3u32 {
        let (ptx, note) = (ptx.clone(), note.clone());
        handles.push(go(move || {
            for i in 0..5 {
                ptx.send(p * 100 + i).unwrap();
                note(10 + p, i);
            }
        }));
    }
    drop(ptx);
    {
        let note = note.clone();
        handles.push(go(move || {
            while let Ok(v) = prx.recv() {
                note(20, v);
            }
        }));
    }
    // A mutex held across a yield, and a condition variable.
    let m = Arc::new(pardon_sched::Mutex::new(0u32));
    let cv = Arc::new(pardon_sched::Condvar::new());
    for k in 0..3u32 {
        let (m, cv, note) = (m.clone(), cv.clone(), note.clone());
        handles.push(go(move || {
            for _ in 0..3 {
                let mut g = m.lock();
                *g += 1;
                note(30 + k, *g);
                pardon_sched::yield_now();
                drop(g);
            }
            cv.notify_all();
        }));
    }
    {
        let (m, cv, note) = (m.clone(), cv.clone(), note.clone());
        handles.push(go(move || {
            let mut g = m.lock();
            while *g < 9 {
                g = cv.wait(g);
            }
            note(40, *g);
        }));
    }
    // A wait group.
    let wg = pardon_sched::WaitGroup::new();
    for k in 0..4u32 {
        wg.add(1);
        let (wg, note) = (wg.clone(), note.clone());
        handles.push(go(move || {
            note(50 + k, 0);
            pardon_sched::yield_now();
            note(50 + k, 1);
            wg.done();
        }));
    }
    for i in 0..10 {
        atx.send(i * 2).unwrap();
        note(0, brx.recv().unwrap());
    }
    drop(atx);
    wg.wait();
    note(0, 1000);
    for h in handles {
        h.join().unwrap();
    }
    note(0, 2000);
}

/// The hand-off changes how a worker gets to the next goroutine, never
/// which one runs: a cooperative runtime on one worker is deterministic
/// (no preemption, no other thread waking anyone), and the same program
/// runs its steps in the same order with hand-offs and without.
#[test]
fn hand_offs_change_no_scheduling_order() {
    fn trace(hand_off: bool) -> (Vec<(u32, u32)>, u64) {
        let rt = Runtime::new(Config {
            procs: 1,
            preemption: pardon_sched::Preemption::Cooperative,
            hand_off,
            ..Config::default()
        })
        .unwrap();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = log.clone();
        rt.block_on(move || program(l)).unwrap();
        let handed = rt.stats().hand_offs;
        let steps = log.lock().unwrap().clone();
        (steps, handed)
    }
    let (with, handed) = trace(true);
    let (without, none) = trace(false);
    assert_eq!(none, 0, "hand_off: false never hands off");
    assert!(
        handed > 0,
        "this program parks with goroutines it woke in `next`"
    );
    assert_eq!(with.len(), without.len());
    assert_eq!(with, without, "the same steps in the same order");
}
