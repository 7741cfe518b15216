//! A model of concurrent marking's algorithm, checked step by step: random
//! interleavings of mutator loads, stores (split where the real store
//! sequence can be interrupted: after the swap, before the phase check),
//! allocations and drops, marker steps, and the cycle's two stops, on a
//! small model heap. After every step of a marking phase the snapshot
//! invariant of the deletion barrier must hold: every object reachable when
//! the cycle began is marked, or reachable through unmarked ones from a
//! gray object or from the old value of a store in progress. At the second stop nothing reachable may be unmarked.
//!
//! This checks the design (gc/src/mark/barrier.rs, gc/src/mark/concurrent.rs), not
//! the code: `tests/concurrent.rs` checks the code. The same checker finds
//! violations in broken variants of the design (no barrier; a second stop
//! that does not rescan the threads), so it can fail.

use proptest::prelude::*;
use proptest::strategy::ValueTree;

const OBJECTS: usize = 12;
const FIELDS: usize = 2;
const MUTATORS: usize = 2;
const REGS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Colour {
    White,
    Gray,
    Black,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Mutator `m`: register `dst` := field `f` of the object in `src`.
    Load {
        m: usize,
        src: usize,
        f: usize,
        dst: usize,
    },
    /// Mutator `m`, first half of a store: swap the value of register `val`
    /// (or null) into field `f` of the object in `obj`; the old value is
    /// held in the mutator's pending slot (a register).
    StoreSwap {
        m: usize,
        obj: usize,
        f: usize,
        val: Option<usize>,
    },
    /// Second half: check the phase, shade the pending old value, drop it.
    StoreFinish { m: usize },
    /// Mutator `m` allocates into register `dst`.
    Alloc { m: usize, dst: usize },
    /// Mutator `m` clears register `r`.
    Drop { m: usize, r: usize },
    /// A marker scans one gray object.
    MarkStep,
    /// The first stop (if off) or the second (if marking).
    Stop,
}

/// Which variant of the design runs.
#[derive(Clone, Copy, PartialEq)]
enum Design {
    /// pardon's: deletion barrier, both stops take every root.
    Pardon,
    /// No barrier at all.
    NoBarrier,
    /// The second stop does not take the threads' registers again.
    NoRescan,
}

struct Model {
    design: Design,
    fields: Vec<[Option<usize>; FIELDS]>,
    live: Vec<bool>,
    colour: Vec<Colour>,
    regs: [[Option<usize>; REGS]; MUTATORS],
    pending: [Option<Option<usize>>; MUTATORS],
    globals: Vec<usize>,
    marking: bool,
    snapshot: Vec<bool>,
    gray: Vec<usize>,
}

impl Model {
    fn new(design: Design) -> Model {
        // A chain and a branch hanging from a global root.
        let mut fields = vec![[None; FIELDS]; OBJECTS];
        let mut live = vec![false; OBJECTS];
        for i in 0..6 {
            live[i] = true;
            if i + 1 < 6 {
                fields[i][0] = Some(i + 1);
            }
        }
        fields[1][1] = Some(4);
        let mut regs = [[None; REGS]; MUTATORS];
        regs[0][0] = Some(0);
        regs[1][0] = Some(2);
        Model {
            design,
            fields,
            live,
            colour: vec![Colour::White; OBJECTS],
            regs,
            pending: [None; MUTATORS],
            globals: vec![0],
            marking: false,
            snapshot: vec![false; OBJECTS],
            gray: Vec::new(),
        }
    }

    fn roots(&self, with_threads: bool) -> Vec<usize> {
        let mut r = self.globals.clone();
        if with_threads {
            for m in 0..MUTATORS {
                r.extend(self.regs[m].iter().flatten());
                if let Some(Some(p)) = self.pending[m] {
                    r.push(p);
                }
            }
        }
        r
    }

    fn reachable(&self) -> Vec<bool> {
        let mut seen = vec![false; OBJECTS];
        let mut stack = self.roots(true);
        while let Some(o) = stack.pop() {
            if !seen[o] {
                seen[o] = true;
                stack.extend(self.fields[o].iter().flatten());
            }
        }
        seen
    }

    fn shade(&mut self, o: usize) {
        if self.colour[o] == Colour::White {
            self.colour[o] = Colour::Gray;
            self.gray.push(o);
        }
    }

    /// The snapshot invariant: every white object reachable at the start
    /// is reachable through white objects from a gray object, or from the
    /// old value of a store in progress (swapped out, not yet shaded: it is
    /// in the storing thread's registers, which the second stop scans).
    fn check_invariant(&self) -> Result<(), String> {
        let mut covered = [false; OBJECTS];
        let mut stack: Vec<usize> = self.gray.clone();
        for p in self.pending.iter().flatten().flatten() {
            if self.colour[*p] == Colour::White && !covered[*p] {
                covered[*p] = true;
                stack.push(*p);
            }
        }
        while let Some(o) = stack.pop() {
            for &c in self.fields[o].iter().flatten() {
                if self.colour[c] == Colour::White && !covered[c] {
                    covered[c] = true;
                    stack.push(c);
                }
            }
        }
        match (0..OBJECTS)
            .find(|&o| self.snapshot[o] && self.colour[o] == Colour::White && !covered[o])
        {
            Some(o) => Err(format!(
                "object {o}, reachable at the first stop, is white and no gray object leads to it"
            )),
            None => Ok(()),
        }
    }

    fn step(&mut self, op: Op) -> Result<(), String> {
        match op {
            Op::Load { m, src, f, dst } => {
                if let Some(o) = self.regs[m][src] {
                    self.regs[m][dst] = self.fields[o][f];
                }
            }
            Op::StoreSwap { m, obj, f, val } => {
                if self.pending[m].is_some() {
                    return Ok(()); // finish the store in progress first
                }
                if let Some(o) = self.regs[m][obj] {
                    let new = val.and_then(|r| self.regs[m][r]);
                    let old = std::mem::replace(&mut self.fields[o][f], new);
                    self.pending[m] = Some(old);
                }
            }
            Op::StoreFinish { m } => {
                if let Some(old) = self.pending[m].take() {
                    if self.marking && self.design != Design::NoBarrier {
                        if let Some(o) = old {
                            self.shade(o);
                        }
                    }
                }
            }
            Op::Alloc { m, dst } => {
                if let Some(o) = (0..OBJECTS).find(|&o| !self.live[o]) {
                    self.live[o] = true;
                    self.fields[o] = [None; FIELDS];
                    self.colour[o] = if self.marking {
                        Colour::Black
                    } else {
                        Colour::White
                    };
                    self.regs[m][dst] = Some(o);
                }
            }
            Op::Drop { m, r } => self.regs[m][r] = None,
            Op::MarkStep => {
                if let Some(o) = self.gray.pop() {
                    for c in self.fields[o].into_iter().flatten() {
                        self.shade(c);
                    }
                    self.colour[o] = Colour::Black;
                }
            }
            Op::Stop if !self.marking => {
                self.marking = true;
                self.colour = vec![Colour::White; OBJECTS];
                self.snapshot = self.reachable();
                for r in self.roots(true) {
                    self.shade(r);
                }
            }
            Op::Stop => {
                let rescan = self.design != Design::NoRescan;
                for r in self.roots(rescan) {
                    self.shade(r);
                }
                while !self.gray.is_empty() {
                    self.step(Op::MarkStep)?;
                }
                let reachable = self.reachable();
                if let Some(o) =
                    (0..OBJECTS).find(|&o| reachable[o] && self.colour[o] == Colour::White)
                {
                    return Err(format!(
                        "object {o} is reachable at the second stop but unmarked: the sweep would free it"
                    ));
                }
                // Sweep.
                for o in 0..OBJECTS {
                    if self.colour[o] == Colour::White {
                        self.live[o] = false;
                    }
                }
                self.marking = false;
            }
        }
        if self.marking {
            self.check_invariant()?;
        }
        Ok(())
    }
}

fn op() -> impl Strategy<Value = Op> {
    let m = 0..MUTATORS;
    let r = 0..REGS;
    prop_oneof![
        (m.clone(), r.clone(), 0..FIELDS, r.clone()).prop_map(|(m, src, f, dst)| Op::Load {
            m,
            src,
            f,
            dst
        }),
        (
            m.clone(),
            r.clone(),
            0..FIELDS,
            proptest::option::of(r.clone())
        )
            .prop_map(|(m, obj, f, val)| Op::StoreSwap { m, obj, f, val }),
        m.clone().prop_map(|m| Op::StoreFinish { m }),
        (m.clone(), r.clone()).prop_map(|(m, dst)| Op::Alloc { m, dst }),
        (m.clone(), r.clone()).prop_map(|(m, r)| Op::Drop { m, r }),
        Just(Op::MarkStep),
        Just(Op::MarkStep),
        Just(Op::Stop),
    ]
}

fn run(design: Design, ops: &[Op]) -> Result<(), String> {
    let mut model = Model::new(design);
    for (i, &op) in ops.iter().enumerate() {
        model
            .step(op)
            .map_err(|e| format!("step {i} ({op:?}): {e}"))?;
    }
    if model.marking {
        model.step(Op::Stop)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// pardon's design keeps the invariant under every interleaving tried.
    #[test]
    fn the_deletion_barrier_keeps_the_snapshot(ops in prop::collection::vec(op(), 1..120)) {
        prop_assert_eq!(run(Design::Pardon, &ops), Ok(()));
    }
}

/// The checker is not vacuous: broken designs fail it.
#[test]
fn broken_designs_are_caught() {
    for design in [Design::NoBarrier, Design::NoRescan] {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = prop::collection::vec(op(), 1..120);
        let mut found = false;
        for _ in 0..20_000 {
            let ops = strategy.new_tree(&mut runner).unwrap().current();
            if run(design, &ops).is_err() {
                found = true;
                break;
            }
        }
        assert!(found, "a broken design passed 20 000 random interleavings");
    }
}
