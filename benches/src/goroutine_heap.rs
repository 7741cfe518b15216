//! Collections over goroutines: a `pardon` heap and a signal-preempted
//! `pardon-sched` runtime sharing one preempt registry (issue 21), measured
//! while `workers` goroutines run call-free loops and `parked` more are
//! parked, each holding `frames` nested shadow frames with an object in
//! each. Full collections from an attached thread, `samples` of them, each
//! followed by as long a run as its pause (at least 1 ms); each reports its time to safepoint, its pause and the time it
//! spent gathering roots, of which the parked goroutines are nearly all.
//!
//! The `goroutines` tool's `gc` mode runs this (`--parked`, `--workers`,
//! `--frames`), and its suite's `gc` rows with 0, 10,000 and 100,000 parked
//! goroutines; `../shared/anchors-go/stwprobe.go -workers 2 -parked N` is
//! Go's side for the time to safepoint.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon::preempt::Registry;
use pardon::stackscan::{frame_map, with_frame, FrameMap};
use pardon::{with_mutator, Config, Heap, Mutator, Type, TypeDesc};
use pardon_sched::{channel, registry_config, Attacher, Runtime};

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Workers (Ps).
    pub procs: usize,
    /// Goroutines in call-free loops.
    pub workers: usize,
    /// Goroutines parked on a channel, each with `frames` frames.
    pub parked: usize,
    /// Nested shadow frames a parked goroutine holds (1..=8).
    pub frames: usize,
    /// Collections measured.
    pub samples: usize,
    /// The runtime's time slice.
    pub slice: Duration,
    /// Concurrent collections (`Config::concurrent`): parked goroutines'
    /// stacks are then read after the first stop, not in either.
    pub concurrent: bool,
}

/// What one run measured, one entry a collection.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    /// Time to safepoint.
    pub ttsp: Vec<Duration>,
    /// Stop to restart.
    pub pause: Vec<Duration>,
    /// Gathering the roots.
    pub roots: Vec<Duration>,
    /// Suspended tasks the collections reported (the last one's).
    pub suspended: usize,
    /// Objects the last collection marked.
    pub marked: usize,
    /// Words the last collection scanned conservatively.
    pub words: usize,
    /// Concurrent collections: the first stop (time to safepoint
    /// included), and the second.
    pub first: Vec<Duration>,
    /// See `first`.
    pub second: Vec<Duration>,
    /// Concurrent collections: parked goroutines the last one scanned
    /// after its first stop (its workers scanned the others).
    pub deferred: usize,
}

static ONE: FrameMap = frame_map!(1; [0]);

/// `depth` nested frames, each holding a new object, then a park until
/// `rx` yields (or closes).
fn hold_frames(
    m: &Mutator,
    ty: Type,
    depth: usize,
    rx: &channel::Receiver<()>,
    parked: &AtomicUsize,
) {
    if depth == 0 {
        parked.fetch_add(1, SeqCst);
        let _ = rx.recv();
        return;
    }
    with_frame::<1, _>(m.frames(), &ONE, |fr| {
        fr.set(0, m.alloc_raw(ty).expect("allocate"));
        fr.set_site(0);
        hold_frames(m, ty, depth - 1, rx, parked);
    });
}

/// A call-free loop until `stop` (the time slice preempts it).
#[inline(never)]
fn spin(stop: &AtomicU32) {
    // SAFETY: reads `*stop`; touches only rcx.
    unsafe {
        std::arch::asm!(
            "2:",
            "pause",
            "cmp dword ptr [{f}], 0",
            "je 2b",
            f = in(reg) stop.as_ptr(),
        );
    }
}

/// A heap made with `config` and a signal-preempted runtime made with
/// `sched` sharing its preempt registry, each worker a mutator of the heap
/// (`sched.attach` is set here): the wiring of docs/embedding.md section
/// 12, for the tools and tests that run goroutines over a heap. The
/// registry stops threads by signal with `config`'s timeout and wait.
pub fn heap_and_runtime(
    config: Config,
    sched: pardon_sched::Config,
) -> Result<(Heap, Runtime), String> {
    let registry = Registry::new(registry_config(pardon_preempt::Config {
        // A signal strategy (a polling one becomes `Signal`): how stops
        // reach a running goroutine.
        preemption: config.preemption,
        stop_timeout: config.stop_timeout,
        wait: config.stop_wait,
        ..Default::default()
    }))
    .map_err(|e| e.to_string())?;
    let heap = Heap::with_registry(config, registry.clone()).map_err(|e| e.to_string())?;
    // SAFETY: the callers' goroutine code keeps no thread-local state of its
    // own and does not print; the heap's per-worker state is shared only
    // as its no-preempt and no-yield regions allow.
    let rt = unsafe {
        Runtime::with_registry(
            pardon_sched::Config {
                attach: Some(Attacher::new(heap.worker_attacher())),
                ..sched
            },
            registry,
        )
    }
    .map_err(|e| e.to_string())?;
    Ok((heap, rt))
}

/// The tools' and tests' object: 32 bytes, word 0 data, word 1 a
/// reference.
pub fn node_type(heap: &Heap) -> Result<Type, String> {
    heap.register_type(&TypeDesc {
        name: "node",
        size: 32,
        align: 8,
        pointer_words: &[1],
    })
    .map_err(|e| e.to_string())
}

/// The goroutines of a measurement, running: what a collection of
/// [`Scene::heap`] scans. Dropping it ends the loops and the parked goroutines.
pub struct Scene {
    heap: Heap,
    /// The call-free loops, one a worker (see `spinners`).
    spinners: Option<crate::spinners::Spinners>,
    release: Option<channel::Sender<()>>,
    handles: Vec<pardon_sched::JoinHandle<()>>,
    /// Dropped after the goroutines have ended (fields drop in order).
    rt: Runtime,
}

impl Scene {
    /// Starts the runtime and its goroutines, and waits until every one
    /// meant to park has. Errors name what could not be set up.
    pub fn new(o: &Options) -> Result<Scene, String> {
        if !(1..=8).contains(&o.frames) {
            return Err(format!("frames: {} is not between 1 and 8", o.frames));
        }
        let (heap, rt) = heap_and_runtime(
            Config {
                gc_percent: None,
                concurrent: o.concurrent,
                ..Config::default()
            },
            pardon_sched::Config {
                procs: o.procs,
                time_slice: o.slice,
                ..pardon_sched::Config::default()
            },
        )?;
        let ty = node_type(&heap)?;
        let (tx, rx) = channel::unbounded::<()>();
        let parked = Arc::new(AtomicUsize::new(0));
        let mut scene = Scene {
            heap,
            spinners: None,
            release: Some(tx),
            handles: Vec::with_capacity(o.parked + o.workers),
            rt,
        };
        for _ in 0..o.parked {
            let (rx, parked) = (rx.clone(), parked.clone());
            let frames = o.frames;
            scene.handles.push(scene.rt.go(move || {
                with_mutator(|m| hold_frames(m, ty, frames, &rx, &parked));
            }));
        }
        scene.spinners = Some(crate::spinners::Spinners::start(
            &scene.rt, o.workers, o.procs, spin,
        )?);
        let t0 = Instant::now();
        while parked.load(SeqCst) < o.parked {
            if t0.elapsed() > Duration::from_secs(120) {
                return Err(format!(
                    "only {} of {} goroutines parked after 120 s",
                    parked.load(SeqCst),
                    o.parked
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
        Ok(scene)
    }

    /// The heap.
    pub fn heap(&self) -> &Heap {
        &self.heap
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        if let Some(s) = self.spinners.take() {
            let _ = s.stop();
        }
        drop(self.release.take());
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Runs the measurement. Errors name what could not be set up.
pub fn run(o: Options) -> Result<Samples, String> {
    let scene = Scene::new(&o)?;
    let m = scene.heap().attach().map_err(|e| e.to_string())?;
    let mut s = Samples::default();
    for _ in 0..o.samples {
        let c = m.collect().map_err(|e| e.to_string())?;
        s.ttsp.push(c.ttsp);
        s.pause.push(c.pause);
        s.roots.push(c.roots);
        s.suspended = c.suspended_tasks;
        s.marked = c.marked_objects;
        s.words = c.words_scanned;
        if o.concurrent {
            s.first.push(c.pause_start);
            s.second.push(c.pause_end);
            s.deferred = c.deferred_tasks;
        }
        // The world runs at least as long as it was stopped: back to back,
        // 45 ms pauses 1 ms apart left the workers no time to settle (the
        // next stop found them waiting for a CPU behind the sweep), a
        // collector spending 98% of the time stopped, which no pacer does.
        std::thread::sleep(c.pause.max(Duration::from_millis(1)));
    }
    Ok(s)
}
