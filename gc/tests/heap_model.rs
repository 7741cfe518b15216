//! State-machine property test of the raw heap against a reference model:
//! allocate objects of random types, write and clear pointer fields, add and
//! drop roots, collect. After every step the heap's integrity walk passes.
//! After every collection every reachable object is allocated with its
//! contents intact, every unreachable one is free (and poisoned) after the
//! sweep, and the number of objects marked equals the model's reachable count.
//!
//! Half the cases run a generational heap, with minor collections as well:
//! pointer writes go through the write barrier; after a minor collection
//! every reachable object is intact, no object that survived an earlier
//! collection is freed, and unreachable young objects may float until a full
//! collection (which must again mark exactly the reachable set). Verify mode
//! is on, so each minor mark is also checked against a full re-mark.

use std::collections::HashSet;

use pardon::{CollectionKind, Config, RawHeap, ThreadCache, Type, TypeDesc, POISON};
use proptest::prelude::*;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

/// (name, size in bytes, pointer words)
const TYPES: &[(&str, usize, &[usize])] = &[
    ("node", 16, &[0, 1]),
    ("pair+data", 32, &[0, 2]),
    ("int", 8, &[]),
    ("record", 200, &[0, 5, 24]),
    ("big", 40_000, &[0, 4999]),
    ("all-pointers", 48, &[0, 1, 2, 3, 4, 5]),
    ("bytes", 3000, &[]),
];

fn ptr_fields(ty: usize) -> &'static [usize] {
    TYPES[ty].2
}

fn data_words(ty: usize) -> impl Iterator<Item = usize> {
    let (_, size, ptrs) = TYPES[ty];
    (0..size / 8).filter(move |w| !ptrs.contains(w))
}

fn canary(id: usize, word: usize) -> u64 {
    ((id as u64) << 20 | word as u64).wrapping_mul(0x9E37_79B9) & 0xFF_FFFF_FFFF
}

#[derive(Clone, Debug)]
struct MObj {
    ty: usize,
    fields: Vec<Option<usize>>,
    alive: bool,
}

#[derive(Clone, Debug, Default)]
struct Model {
    objs: Vec<MObj>,
    roots: Vec<usize>,
    gray_small: bool,
    /// Marking threads (1 = serial; 3 is more than this machine's cores).
    workers: usize,
    generational: bool,
}

impl Model {
    fn alive(&self) -> Vec<usize> {
        (0..self.objs.len())
            .filter(|&i| self.objs[i].alive)
            .collect()
    }
    fn pick(&self, k: usize) -> Option<usize> {
        let a = self.alive();
        (!a.is_empty()).then(|| a[k % a.len()])
    }
    fn reachable(&self) -> HashSet<usize> {
        let mut seen = HashSet::new();
        let mut stack: Vec<usize> = self.roots.clone();
        while let Some(o) = stack.pop() {
            if seen.insert(o) {
                stack.extend(self.objs[o].fields.iter().flatten().copied());
            }
        }
        seen
    }
}

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        ty: usize,
        root: bool,
    },
    Write {
        src: usize,
        field: usize,
        dst: usize,
    },
    Clear {
        src: usize,
        field: usize,
    },
    AddRoot(usize),
    DropRoot(usize),
    Collect,
    CollectMinor,
}

/// Applies `op` to the model; returns the ids it resolved to (shared by the
/// model and the system under test so both read the op the same way).
fn resolve(m: &Model, op: &Op) -> Option<(usize, usize, usize)> {
    match *op {
        Op::Write { src, field, dst } => {
            let s = m.pick(src)?;
            let nf = ptr_fields(m.objs[s].ty).len();
            (nf > 0).then_some(())?;
            Some((s, field % nf, m.pick(dst)?))
        }
        Op::Clear { src, field } => {
            let s = m.pick(src)?;
            let nf = ptr_fields(m.objs[s].ty).len();
            (nf > 0).then_some(())?;
            Some((s, field % nf, 0))
        }
        Op::AddRoot(k) => Some((m.pick(k)?, 0, 0)),
        Op::DropRoot(k) => (!m.roots.is_empty()).then(|| (k % m.roots.len(), 0, 0)),
        _ => Some((0, 0, 0)),
    }
}

fn model_apply(mut m: Model, op: &Op) -> Model {
    let Some((a, b, c)) = resolve(&m, op) else {
        return m;
    };
    match *op {
        Op::Alloc { ty, root } => {
            m.objs.push(MObj {
                ty,
                fields: vec![None; ptr_fields(ty).len()],
                alive: true,
            });
            if root {
                m.roots.push(m.objs.len() - 1);
            }
        }
        Op::Write { .. } => m.objs[a].fields[b] = Some(c),
        Op::Clear { .. } => m.objs[a].fields[b] = None,
        Op::AddRoot(_) => m.roots.push(a),
        Op::DropRoot(_) => {
            m.roots.swap_remove(a);
        }
        Op::Collect | Op::CollectMinor => {
            let r = m.reachable();
            for (i, o) in m.objs.iter_mut().enumerate() {
                if o.alive && !r.contains(&i) {
                    o.alive = false;
                }
            }
        }
    }
    m
}

struct RefMachine;
impl ReferenceStateMachine for RefMachine {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        (any::<bool>(), 1usize..=3, any::<bool>())
            .prop_map(|(gray_small, workers, generational)| Model {
                gray_small,
                workers,
                generational,
                ..Model::default()
            })
            .boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Op> {
        prop_oneof![
            4 => (0..TYPES.len(), any::<bool>()).prop_map(|(ty, root)| Op::Alloc { ty, root }),
            4 => (any::<usize>(), any::<usize>(), any::<usize>())
                .prop_map(|(src, field, dst)| Op::Write { src, field, dst }),
            1 => (any::<usize>(), any::<usize>()).prop_map(|(src, field)| Op::Clear { src, field }),
            1 => any::<usize>().prop_map(Op::AddRoot),
            2 => any::<usize>().prop_map(Op::DropRoot),
            1 => Just(Op::Collect),
            1 => Just(Op::CollectMinor),
        ]
        .boxed()
    }

    fn apply(state: Model, op: &Op) -> Model {
        model_apply(state, op)
    }
}

struct Sut {
    heap: RawHeap,
    cache: ThreadCache,
    types: Vec<Type>,
    addr: Vec<usize>,
    model: Model,
    /// Per object: survived a collection (old, in a generational heap).
    old: Vec<bool>,
}

fn write(addr: usize, word: usize, v: u64) {
    // SAFETY: the test only writes words inside objects it allocated and keeps alive.
    unsafe { ((addr + word * 8) as *mut u64).write(v) }
}
fn read(addr: usize, word: usize) -> u64 {
    // SAFETY: as above, for reads.
    unsafe { ((addr + word * 8) as *const u64).read() }
}

impl Sut {
    fn check_after_collect(&mut self, before: &Model, marked: usize, minor: bool) {
        let m = &self.model;
        let reach = m.reachable();
        if minor {
            // A minor mark marks every reachable young object, and maybe
            // some unreachable ones (reached from old objects on dirty cards).
            let young = reach.iter().filter(|&&i| !self.old[i]).count();
            assert!(
                marked >= young,
                "minor: {marked} marked, {young} reachable young"
            );
        } else {
            assert_eq!(
                marked,
                reach.len(),
                "objects marked vs reachable in the model"
            );
        }
        // Sweep everything now, so freed objects must be gone.
        self.heap.finish_sweep();
        for (i, o) in m.objs.iter().enumerate() {
            let a = self.addr[i];
            if o.alive {
                assert_eq!(self.heap.find_object(a), Some(a), "live object {i} lost");
                let size = TYPES[o.ty].1;
                assert_eq!(
                    self.heap.find_object(a + size - 1),
                    Some(a),
                    "last byte of {i}"
                );
                for w in data_words(o.ty) {
                    assert_eq!(read(a, w), canary(i, w), "object {i} word {w} corrupted");
                }
                for (f, &w) in ptr_fields(o.ty).iter().enumerate() {
                    let want = o.fields[f].map_or(0, |t| self.addr[t] as u64);
                    assert_eq!(read(a, w), want, "object {i} field {f}");
                }
            } else if before.objs[i].alive {
                if minor && self.old[i] {
                    assert_eq!(
                        self.heap.find_object(a),
                        Some(a),
                        "minor collection freed old object {i}"
                    );
                } else if !minor || self.heap.find_object(a) != Some(a) {
                    assert_eq!(
                        self.heap.find_object(a),
                        None,
                        "dead object {i} still found"
                    );
                    assert_eq!(read(a, 0) as u8, POISON, "freed object {i} not poisoned");
                }
            }
        }
        // What is still allocated is old now. (A dead object's slot may
        // have been reused; `old` only matters for objects the model keeps.)
        for i in 0..self.addr.len() {
            self.old[i] = self.heap.find_object(self.addr[i]) == Some(self.addr[i]);
        }
    }
}

impl StateMachineTest for Sut {
    type SystemUnderTest = Sut;
    type Reference = RefMachine;

    fn init_test(r: &Model) -> Sut {
        let heap = RawHeap::new(Config {
            arena_size: 256 << 20,
            heap_limit: 256 << 20,
            verify: true,
            generational: r.generational,
            gray_capacity: if r.gray_small { 16 } else { 1 << 16 },
            mark_workers: r.workers,
            ..Config::default()
        })
        .unwrap();
        let types = TYPES
            .iter()
            .map(|&(name, size, ptrs)| {
                heap.register_type(&TypeDesc {
                    name,
                    size,
                    align: 8,
                    pointer_words: ptrs,
                })
                .unwrap()
            })
            .collect();
        Sut {
            heap,
            cache: ThreadCache::new(),
            types,
            addr: Vec::new(),
            model: r.clone(),
            old: Vec::new(),
        }
    }

    fn apply(mut s: Sut, _: &Model, op: Op) -> Sut {
        let before = s.model.clone();
        let resolved = resolve(&before, &op);
        s.model = model_apply(s.model, &op);
        let Some((a, b, c)) = resolved else { return s };
        match op {
            Op::Alloc { ty, .. } => {
                let id = s.addr.len();
                let p = s.cache.alloc(&s.heap, s.types[ty]).expect("alloc").as_ptr() as usize;
                for w in 0..TYPES[ty].1 / 8 {
                    assert_eq!(read(p, w), 0, "allocation is not zeroed");
                }
                for w in data_words(ty) {
                    write(p, w, canary(id, w));
                }
                s.addr.push(p);
                s.old.push(false);
            }
            Op::Write { .. } => {
                let slot = ptr_fields(s.model.objs[a].ty)[b];
                s.heap.write_barrier(s.addr[a] + slot * 8);
                write(s.addr[a], slot, s.addr[c] as u64)
            }
            Op::Clear { .. } => write(s.addr[a], ptr_fields(s.model.objs[a].ty)[b], 0),
            Op::AddRoot(_) | Op::DropRoot(_) => {}
            Op::Collect | Op::CollectMinor => {
                let kind = if matches!(op, Op::CollectMinor) {
                    CollectionKind::Minor
                } else {
                    CollectionKind::Full
                };
                let roots: Vec<usize> = before
                    .roots
                    .iter()
                    .map(|&r| s.addr[r] + r % TYPES[before.objs[r].ty].1.max(1))
                    .collect();
                let Sut { heap, cache, .. } = &mut s;
                let st = heap.collect_kind_with(kind, &mut [cache], |m| {
                    for &w in &roots {
                        m.mark_word(w);
                    }
                });
                let minor = kind == CollectionKind::Minor && before.generational;
                s.check_after_collect(&before, st.objects, minor);
            }
        }
        s
    }

    fn check_invariants(s: &Sut, _: &Model) {
        if let Err(e) = s.heap.check_integrity() {
            panic!("integrity: {e}");
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]
    #[test]
    fn heap_matches_model(sequential 1..200 => Sut);
}
