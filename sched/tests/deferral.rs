//! Deferred scans of parked goroutines (pardon-preempt's deferral, the
//! runtime's `deferred` module), against a recording scanner: a stop
//! begins a deferral; afterwards every goroutine that was parked at the
//! stop must be scanned exactly once, with the stack pointer the stop saw,
//! and before it runs again — whether its worker scans it on the way in
//! or the coordinator's pass gets there first.
//!
//! The oracle is independent of the deferral's code: which goroutines
//! were parked at the stop, and where their stacks were, comes from the
//! stopped world's ordinary report (`for_each_suspended`), taken in the
//! same stop; each goroutine checks, once it runs again, that a scan of
//! its own stack (found by the address of one of its locals) was
//! recorded before it woke.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pardon_preempt::{Registry, SuspendedTask, TaskScanner};
use pardon_sched::{channel, Config, Runtime};

mod own_registry;

fn runtime(procs: usize) -> (Runtime, Registry) {
    own_registry::runtime(procs, Config::default().time_slice, || {})
}

const CAP: usize = 1 << 16;

/// Scans recorded as (stack bottom, saved stack pointer): fixed arrays,
/// since a scanner must not allocate.
struct Recorder {
    lo: Vec<AtomicUsize>,
    hi: Vec<AtomicUsize>,
    sp: Vec<AtomicUsize>,
    /// The address of a local of the scan's own frame: which stack the
    /// scan ran on.
    on: Vec<AtomicUsize>,
    n: AtomicUsize,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            lo: (0..CAP).map(|_| AtomicUsize::new(0)).collect(),
            hi: (0..CAP).map(|_| AtomicUsize::new(0)).collect(),
            sp: (0..CAP).map(|_| AtomicUsize::new(0)).collect(),
            on: (0..CAP).map(|_| AtomicUsize::new(0)).collect(),
            n: AtomicUsize::new(0),
        }
    }

    fn record(&self, t: &SuspendedTask<'_>) {
        let i = self.n.fetch_add(1, SeqCst);
        assert!(i < CAP, "more scans than the test expects");
        self.sp[i].store(t.sp, SeqCst);
        let here = 0u8;
        self.on[i].store(std::hint::black_box(&here) as *const u8 as usize, SeqCst);
        self.hi[i].store(t.stack.1, SeqCst);
        // Published last: a reader takes an entry with its `lo` set.
        self.lo[i].store(t.stack.0, SeqCst);
    }

    /// How many recorded scans were of the stack at `lo` with saved stack
    /// pointer `sp`.
    fn count(&self, lo: usize, sp: usize) -> usize {
        let n = self.n.load(SeqCst).min(CAP);
        (0..n)
            .filter(|&i| self.lo[i].load(SeqCst) == lo && self.sp[i].load(SeqCst) == sp)
            .count()
    }

    /// How many recorded scans ran on a stack in `[lo, hi)`.
    fn ran_on(&self, lo: usize, hi: usize) -> usize {
        let n = self.n.load(SeqCst).min(CAP);
        (0..n)
            .filter(|&i| (lo..hi).contains(&self.on[i].load(SeqCst)))
            .count()
    }

    /// How many recorded scans were of the stack holding address `at`.
    fn count_holding(&self, at: usize) -> usize {
        let n = self.n.load(SeqCst).min(CAP);
        (0..n)
            .filter(|&i| (self.lo[i].load(SeqCst)..self.hi[i].load(SeqCst)).contains(&at))
            .count()
    }
}

struct Scans(Arc<Recorder>);

impl TaskScanner for Scans {
    fn scan(&self, task: &SuspendedTask<'_>) {
        self.0.record(task);
    }
}

/// The goroutines parked at the stop, as (stack bottom, stack top, saved
/// stack pointer).
type Parked = Arc<Mutex<Vec<(usize, usize, usize)>>>;

/// Starts `n` goroutines that each run `before`, park on a channel of
/// their own until woken, then return what `after` says (given the
/// address of one of their locals, which names their stack); waits until
/// all have started, and a little longer, for the last ones to park (one
/// still running at a stop is left out of every oracle here, as it is of
/// the deferral).
fn park_goroutines<T: Send + 'static>(
    rt: &Runtime,
    n: usize,
    after: impl Fn(usize) -> T + Clone + Send + 'static,
) -> (Vec<channel::Sender<()>>, Vec<pardon_sched::JoinHandle<T>>) {
    let started = Arc::new(AtomicUsize::new(0));
    let mut wakes = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..n {
        let (tx, rx) = channel::channel::<()>(1);
        wakes.push(tx);
        let (started, after) = (started.clone(), after.clone());
        handles.push(rt.go(move || {
            let here = 0u8;
            let at = std::hint::black_box(&here) as *const u8 as usize;
            started.fetch_add(1, SeqCst);
            rx.recv().unwrap();
            after(at)
        }));
    }
    wait_started(&started, n);
    (wakes, handles)
}

/// Waits until `n` goroutines have said they started, and a little
/// longer, for the last ones to park.
fn wait_started(started: &AtomicUsize, n: usize) {
    while started.load(SeqCst) < n {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
}

/// Stops the world, lists the goroutines parked there (the oracle: the
/// stop's ordinary report) and begins a deferral with `scanner`; returns
/// how many were parked.
fn stop_and_defer(registry: &Registry, parked: &Parked, scanner: &Arc<dyn TaskScanner>) -> usize {
    let world = registry.stop_the_world().unwrap();
    // Room made beforehand: no allocation with the world stopped.
    let mut list = parked.lock().unwrap();
    world.for_each_suspended(|t| list.push((t.stack.0, t.stack.1, t.sp)));
    world.defer_suspended(scanner, |_| panic!("the runtime defers"));
    list.len()
}

/// Called by a goroutine running again, `at` the address of one of its
/// locals: if it was parked at the stop, a scan of its stack as the stop
/// saw it is recorded, once. Returns whether it was parked at the stop.
fn scanned_before_running(parked: &Parked, recorder: &Recorder, at: usize) -> bool {
    let mine = parked
        .lock()
        .unwrap()
        .iter()
        .find(|&&(lo, hi, _)| (lo..hi).contains(&at))
        .copied();
    match mine {
        Some((lo, _, sp)) => {
            assert_eq!(
                recorder.count(lo, sp),
                1,
                "not scanned (once) before it ran"
            );
            true
        }
        None => false,
    }
}

#[test]
fn every_goroutine_parked_at_the_stop_is_scanned_once_before_it_runs_again() {
    const N: usize = 400;
    let (rt, registry) = runtime(2);
    let recorder = Arc::new(Recorder::new());
    let parked: Parked = Arc::new(Mutex::new(Vec::with_capacity(N * 2)));
    let (wakes, handles) = {
        let (recorder, parked) = (recorder.clone(), parked.clone());
        park_goroutines(&rt, N, move |at| {
            // Running again: if this goroutine was parked at the stop, a
            // scan of its stack as the stop saw it is already recorded.
            scanned_before_running(&parked, &recorder, at)
        })
    };

    let scanner: Arc<dyn TaskScanner> = Arc::new(Scans(recorder.clone()));
    let at_stop = stop_and_defer(&registry, &parked, &scanner);
    assert!(at_stop >= N / 2, "only {at_stop} of {N} parked");

    // Half woken at once (their workers scan them on the way in, unless
    // the pass below is there first), then the pass, then the rest.
    for tx in &wakes[..N / 2] {
        tx.send(()).unwrap();
    }
    let mut passed = 0;
    registry.scan_deferred(&scanner, |t| {
        recorder.record(t);
        passed += 1;
    });
    for tx in &wakes[N / 2..] {
        tx.send(()).unwrap();
    }
    let checked = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|&c| c)
        .count();
    assert_eq!(
        checked, at_stop,
        "each goroutine parked at the stop checked itself"
    );
    {
        let world = registry.stop_the_world().unwrap();
        world.end_deferred(&scanner, |_| panic!("the pass finished: nothing is owed"));
    }
    // Exactly once each, and nothing else scanned (these goroutines
    // neither yield nor are preempted).
    for &(lo, _, sp) in parked.lock().unwrap().iter() {
        assert_eq!(recorder.count(lo, sp), 1);
    }
    assert_eq!(recorder.n.load(SeqCst), at_stop);
    assert!(passed <= at_stop);
}

/// A deferral belongs to its scanner: while one is under way, a stop that
/// asks for another gets every parked goroutine reported at once, as from
/// a source that cannot defer, and that other scanner can neither run the
/// pass nor end the first's deferral; a cancelled deferral frees the
/// runtime for the next.
#[test]
fn a_deferral_belongs_to_its_scanner() {
    const N: usize = 50;
    let (rt, registry) = runtime(2);
    let (wakes, handles) = park_goroutines(&rt, N, |_| ());
    let a: Arc<dyn TaskScanner> = Arc::new(Scans(Arc::new(Recorder::new())));
    let b: Arc<dyn TaskScanner> = Arc::new(Scans(Arc::new(Recorder::new())));
    let count = |w: &pardon_preempt::StoppedWorld<'_>| {
        let mut n = 0;
        w.for_each_suspended(|_| n += 1);
        n
    };

    let parked = {
        let w = registry.stop_the_world().unwrap();
        w.defer_suspended(&a, |_| panic!("a's deferral begins"));
        let mut to_b = 0;
        w.defer_suspended(&b, |_| to_b += 1);
        let parked = count(&w);
        assert_eq!(to_b, parked, "b, refused, is handed every parked goroutine");
        parked
    };
    assert!(parked >= N / 2, "only {parked} of {N} parked");
    registry.scan_deferred(&b, |_| panic!("b owns no deferral"));
    {
        let w = registry.stop_the_world().unwrap();
        let mut to_b = 0;
        w.end_deferred(&b, |_| to_b += 1);
        assert_eq!(to_b, parked, "b cannot end a's deferral");
        let mut to_a = 0;
        w.end_deferred(&a, |_| to_a += 1);
        assert_eq!(to_a, parked, "no pass ran: a is owed every one");
    }

    // Cancelled with the world running: the next deferral may begin.
    {
        let w = registry.stop_the_world().unwrap();
        w.defer_suspended(&a, |_| panic!("a's deferral begins"));
    }
    registry.cancel_deferred(&b);
    {
        let w = registry.stop_the_world().unwrap();
        let mut to_b = 0;
        w.defer_suspended(&b, |_| to_b += 1);
        assert_eq!(to_b, parked, "cancelling b's left a's in place");
    }
    registry.cancel_deferred(&a);
    {
        let w = registry.stop_the_world().unwrap();
        w.defer_suspended(&b, |_| panic!("a's was cancelled: b's begins"));
        let mut to_b = 0;
        w.end_deferred(&b, |_| to_b += 1);
        assert_eq!(to_b, parked);
    }
    for tx in &wakes {
        tx.send(()).unwrap();
    }
    for h in handles {
        h.join().unwrap();
    }
}

/// While a deferral lasts, a goroutine that leaves its worker by a yield
/// (as by a preemption: the signal may have taken it inside a collector's
/// barrier) is scanned as it leaves, each time.
#[test]
fn a_goroutine_that_yields_while_a_deferral_lasts_is_scanned_as_it_leaves() {
    const YIELDS: usize = 10;
    let (rt, registry) = runtime(1);
    let recorder = Arc::new(Recorder::new());
    let scanner: Arc<dyn TaskScanner> = Arc::new(Scans(recorder.clone()));
    {
        let world = registry.stop_the_world().unwrap();
        world.defer_suspended(&scanner, |_| panic!("the runtime defers"));
    }
    // Started after the stop: it owes no scan, so every record of its
    // stack comes from its yields.
    let (park_tx, park_rx) = channel::channel::<()>(1);
    let g = rt.go(move || {
        let here = 0u8;
        let at = std::hint::black_box(&here) as *const u8 as usize;
        for _ in 0..YIELDS {
            pardon_sched::yield_now();
        }
        let _ = park_rx.recv();
        at
    });
    std::thread::sleep(Duration::from_millis(20));
    park_tx.send(()).unwrap();
    let at = g.join().unwrap();
    // At least one a yield (a preemption, on a machine so loaded that a
    // slice outlasts its 10 ms, would add one).
    assert!(
        recorder.count_holding(at) >= YIELDS,
        "a yield left unscanned"
    );
    let world = registry.stop_the_world().unwrap();
    world.end_deferred(&scanner, |_| panic!("nothing is owed"));
}

/// A deferral and the hand-off: goroutines on one worker, all parked at the
/// stop, then passing a token round a ring of rendezvous channels, so that
/// each wakes the next into its worker's `next` slot and parks (the shape
/// that switches straight into the woken goroutine). Each must still be
/// scanned, as the stop saw it, before it runs again, and no scan may run
/// on a goroutine's stack (a hand-off into a goroutine that owes a scan
/// would make it on the parking goroutine's, whose room may be short).
#[test]
fn a_hand_off_during_a_deferral_scans_first_and_never_on_a_goroutine_stack() {
    const RING: usize = 8;
    const ROUNDS: usize = 50;
    let (rt, registry) = runtime(1);
    let recorder = Arc::new(Recorder::new());
    let parked: Parked = Arc::new(Mutex::new(Vec::with_capacity(RING * 2)));
    let started = Arc::new(AtomicUsize::new(0));
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..RING).map(|_| channel::channel::<usize>(0)).unzip();
    let first = txs[0].clone();
    let mut rxs: Vec<_> = rxs.into_iter().map(Some).collect();
    let mut handles = Vec::new();
    for i in 0..RING {
        let rx = rxs[i].take().unwrap();
        // The last one hands the token back out of the ring.
        let tx = (i + 1 < RING).then(|| txs[i + 1].clone());
        let (recorder, parked, started) = (recorder.clone(), parked.clone(), started.clone());
        handles.push(rt.go(move || {
            let here = 0u8;
            let at = std::hint::black_box(&here) as *const u8 as usize;
            started.fetch_add(1, SeqCst);
            let mut checked = false;
            for _ in 0..ROUNDS {
                let v = rx.recv().unwrap();
                if !checked {
                    checked = true;
                    scanned_before_running(&parked, &recorder, at);
                }
                if let Some(tx) = &tx {
                    tx.send(v).unwrap();
                }
            }
            at
        }));
    }
    drop(txs);
    wait_started(&started, RING);
    let scanner: Arc<dyn TaskScanner> = Arc::new(Scans(recorder.clone()));
    let at_stop = stop_and_defer(&registry, &parked, &scanner);
    assert!(at_stop >= RING / 2, "only {at_stop} of {RING} parked");
    // The token goes round ROUNDS times; the ring's last goroutine is the
    // one that does not pass it on, so each round starts from outside.
    for r in 0..ROUNDS {
        first.send(r).unwrap();
    }
    for h in handles {
        h.join().unwrap();
    }
    {
        let world = registry.stop_the_world().unwrap();
        world.end_deferred(&scanner, |_| panic!("every one was scanned"));
    }
    for &(lo, hi, sp) in parked.lock().unwrap().iter() {
        assert_eq!(recorder.count(lo, sp), 1, "scanned once");
        assert_eq!(
            recorder.ran_on(lo, hi),
            0,
            "a scan ran on a goroutine's stack"
        );
    }
}

/// A stopped world's suspended tasks read in parts (a collector reading
/// parked stacks on several threads): for every number of parts, the
/// parts, read at once from as many threads, report each goroutine the
/// whole-world report names exactly once, with the same stack pointer.
#[test]
fn parts_report_every_parked_goroutine_once() {
    const N: usize = 300;
    let (rt, registry) = runtime(2);
    let (wakes, handles) = park_goroutines(&rt, N, |_| ());
    {
        let world = registry.stop_the_world().unwrap();
        let mut whole: Vec<(usize, usize)> = Vec::with_capacity(2 * N);
        world.for_each_suspended(|t| whole.push((t.stack.0, t.sp)));
        assert!(whole.len() >= N / 2, "only {} of {N} parked", whole.len());
        let parts = world.suspended_parts();
        // Allocating here is safe: every goroutine is parked, so every
        // worker is idle in a safe region, not inside the allocator.
        for n in 1..=5usize {
            let found: Vec<Vec<(usize, usize)>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..n)
                    .map(|k| {
                        let parts = &parts;
                        s.spawn(move || {
                            let mut mine = Vec::with_capacity(2 * N);
                            parts.for_each(k, n, |t| mine.push((t.stack.0, t.sp)));
                            mine
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let mut all: Vec<_> = found.into_iter().flatten().collect();
            all.sort_unstable();
            let mut want = whole.clone();
            want.sort_unstable();
            assert_eq!(all, want, "{n} parts: each parked goroutine once");
        }
    }
    for tx in &wakes {
        tx.send(()).unwrap();
    }
    for h in handles {
        h.join().unwrap();
    }
}
