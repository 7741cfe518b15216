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
use pardon_sched::{channel, Attacher, Config, Runtime};

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
