//! Property test of the heap over goroutines: random sequences of
//! goroutine operations — spawn (holding objects in 1 to 3 nested shadow
//! frames, on the stack or off it, and in a local), check, allocate
//! garbage, collect from a goroutine, collect from an attached thread,
//! reuse freed slots, end — run against a model that knows every object
//! each live goroutine holds and its canary, while two more goroutines
//! hold an object each in a register only inside call-free loops that the
//! time slice keeps preempting. Every check compares the canaries the
//! model expects; verify mode re-marks every collection. The oracle is the
//! model: the heap is never asked what it thinks is live. Half the cases
//! use a concurrent heap, with cycles back to back on a thread of their
//! own throughout (parked goroutines' stacks then scanned after each first
//! stop, by the pass or by their workers as they wake).

mod common;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pardon::stackscan::{with_frame, with_frame_slots};
use pardon::{with_mutator, Mutator, Type};
use pardon_sched::channel::{self, Receiver, Sender};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Spawn { frames: usize, off_stack: bool },
    Check(usize),
    Garbage(usize, u16),
    CollectFrom(usize),
    CollectThread,
    Churn(u16),
    End(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..=3, any::<bool>()).prop_map(|(frames, off_stack)| Op::Spawn { frames, off_stack }),
        2 => any::<usize>().prop_map(Op::Check),
        2 => (any::<usize>(), 0u16..2000).prop_map(|(g, n)| Op::Garbage(g, n)),
        1 => any::<usize>().prop_map(Op::CollectFrom),
        2 => Just(Op::CollectThread),
        1 => (0u16..5000).prop_map(Op::Churn),
        1 => any::<usize>().prop_map(Op::End),
    ]
}

/// What a goroutine is told to do.
enum Cmd {
    Check,
    Garbage(usize),
    Collect,
    End,
}

/// A goroutine as the model sees it.
struct Live {
    cmd: Sender<Cmd>,
    reply: Receiver<bool>,
}

/// Holds one object per level (canary `base + level`) in nested frames,
/// then serves commands; `check` says whether every level's object above
/// is intact.
fn level(
    m: &Mutator,
    ty: Type,
    depth: usize,
    base: u64,
    off_stack: bool,
    io: &(Receiver<Cmd>, Sender<bool>),
    check: &dyn Fn() -> bool,
) {
    if depth == 0 {
        // Held unmasked in this frame's local: the innermost frame, and
        // the park below it, are scanned conservatively.
        let local = std::hint::black_box(new_masked(m, ty, base + 100) ^ KEY);
        scrub();
        serve(m, ty, io, &|| {
            check() && canary_of(std::hint::black_box(local) ^ KEY) == base + 100
        });
        return;
    }
    let canary = base + depth as u64;
    if off_stack {
        let slot = Box::new([AtomicUsize::new(0)]);
        with_frame_slots(m.frames(), &ONE, &*slot, |fr| {
            put_slot(fr, new_masked(m, ty, canary));
            fr.set_site(0);
            scrub();
            level(m, ty, depth - 1, base, off_stack, io, &|| {
                check() && canary_of(fr.get(0) ^ KEY) == canary
            });
        });
    } else {
        with_frame::<1, _>(m.frames(), &ONE, |fr| {
            fr.set(0, new_masked(m, ty, canary) ^ KEY);
            fr.set_site(0);
            scrub();
            level(m, ty, depth - 1, base, off_stack, io, &|| {
                check() && canary_of(fr.get(0) ^ KEY) == canary
            });
        });
    }
}

fn serve(
    m: &Mutator,
    ty: Type,
    (cmd, reply): &(Receiver<Cmd>, Sender<bool>),
    check: &dyn Fn() -> bool,
) {
    while let Ok(c) = cmd.recv() {
        let ok = match c {
            Cmd::Check => check(),
            Cmd::Garbage(n) => {
                garbage(m, ty, n);
                scrub();
                true
            }
            Cmd::Collect => m.collect().is_ok_and(|c| verified(&c)),
            Cmd::End => {
                let ok = check();
                let _ = reply.send(ok);
                return;
            }
        };
        if reply.send(ok).is_err() {
            return;
        }
    }
}

/// Whether a collection verified, or joined a concurrent cycle already
/// under way on another thread instead of running one (which reports no
/// figures; that cycle's own caller checks it).
fn verified(c: &pardon::CycleStats) -> bool {
    c.verified || c.total.is_zero()
}

fn run(ops: Vec<Op>, concurrent: bool) -> Result<(), TestCaseError> {
    let (heap, rt, ty) = setup_with(
        2,
        Duration::from_millis(1),
        pardon::Config {
            gc_percent: None,
            verify: true,
            concurrent,
            ..pardon::Config::default()
        },
    );
    // On a concurrent heap, cycles run back to back on a thread of their
    // own throughout, so every operation may meet one marking: goroutines
    // woken while their stacks are owed a deferred scan, parked ones
    // scanned by the coordinator's pass.
    let cycling = Arc::new(AtomicU32::new(concurrent as u32));
    /// Stops the cycles however the case ends.
    struct StopCycles(Arc<AtomicU32>);
    impl Drop for StopCycles {
        fn drop(&mut self) {
            self.0.store(0, SeqCst);
        }
    }
    let _cycling = StopCycles(cycling.clone());
    let cycler = concurrent.then(|| {
        let (heap, cycling) = (heap.clone(), cycling.clone());
        std::thread::spawn(move || {
            let m = heap.attach().unwrap();
            let (mut cycles, mut verified) = (0, 0);
            while cycling.load(SeqCst) != 0 {
                let c = m.collect().unwrap();
                cycles += 1;
                verified += self::verified(&c) as usize;
                m.blocking(|| std::thread::sleep(Duration::from_micros(200)));
            }
            (cycles, verified)
        })
    });
    let release = Arc::new(AtomicU32::new(0));
    let _release = ReleaseOnDrop(release.clone());
    let spinners: Vec<_> = (0..2u64)
        .map(|i| {
            let release = release.clone();
            rt.go(move || {
                with_mutator(|m| {
                    let masked = new_masked(m, ty, 0x7000 + i);
                    scrub();
                    canary_of(hold_in_r11(masked, &release)) == 0x7000 + i
                })
                .unwrap()
            })
        })
        .collect();
    let m = heap.attach().unwrap();
    let mut live: Vec<Live> = Vec::new();
    let mut next = 0u64;
    let ask =
        |g: &Live, c: Cmd| -> bool { g.cmd.send(c).is_ok() && g.reply.recv().unwrap_or(false) };
    for op in ops {
        match op {
            Op::Spawn { frames, off_stack } => {
                let (cmd_tx, cmd_rx) = channel::unbounded();
                let (reply_tx, reply_rx) = channel::unbounded();
                let base = next * 1000;
                next += 1;
                rt.go(move || {
                    with_mutator(|m| {
                        level(m, ty, frames, base, off_stack, &(cmd_rx, reply_tx), &|| {
                            true
                        })
                    })
                });
                live.push(Live {
                    cmd: cmd_tx,
                    reply: reply_rx,
                });
            }
            Op::Check(g) if !live.is_empty() => {
                let g = &live[g % live.len()];
                prop_assert!(
                    ask(g, Cmd::Check),
                    "a goroutine's object was freed or reused"
                );
            }
            Op::Garbage(g, n) if !live.is_empty() => {
                prop_assert!(ask(&live[g % live.len()], Cmd::Garbage(n as usize)));
            }
            Op::CollectFrom(g) if !live.is_empty() => {
                prop_assert!(
                    ask(&live[g % live.len()], Cmd::Collect),
                    "collection from a goroutine"
                );
            }
            Op::CollectThread => {
                prop_assert!(verified(&m.collect().unwrap()));
            }
            Op::Churn(n) => churn(&m, ty, n as usize),
            Op::End(g) if !live.is_empty() => {
                let g = live.swap_remove(g % live.len());
                prop_assert!(ask(&g, Cmd::End), "an ending goroutine's object was freed");
            }
            _ => {}
        }
    }
    if let Some(cycler) = cycler {
        cycling.store(0, SeqCst);
        let (cycles, verified) = cycler.join().unwrap();
        prop_assert_eq!(cycles, verified, "a concurrent cycle failed verification");
    }
    prop_assert!(m.collect().unwrap().verified);
    churn(&m, ty, 5000);
    for g in live {
        prop_assert!(
            ask(&g, Cmd::End),
            "a goroutine's object was freed at the end"
        );
    }
    release.store(1, SeqCst);
    for s in spinners {
        prop_assert!(s.join().unwrap(), "an object held in a register was freed");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn goroutine_operations_keep_every_held_object(
        ops in prop::collection::vec(op(), 1..40),
        concurrent in any::<bool>(),
    ) {
        run(ops, concurrent)?;
    }
}
