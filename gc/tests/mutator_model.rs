//! State-machine property test of the heap through its public, threaded
//! API against a reference model: mutators on threads of their own are
//! spawned, allocate (the typed path, and the raw inlined fast path, slow
//! path and arrays over every size class with random layouts, inside and
//! outside safe regions),
//! are dropped or leaked (`mem::forget`, then their thread exits), collect,
//! and fork children that collect and check the heap themselves. The main
//! thread writes reference fields and keeps global roots.
//!
//! After every step the heap's integrity walk passes (every mutator is idle
//! in a safe region then); after every collection every object the model
//! can reach is allocated, its data words hold the canaries written at
//! allocation, and its reference words hold what the model says. Verify
//! mode is on: each collection also checks every marked object's heap bits
//! against its type and re-marks from scratch. The oracle is the model, not
//! the heap: what is reachable is computed from the model's own edges.

use std::collections::HashSet;
use std::sync::mpsc::{channel, Receiver, Sender};

use pardon::sizeclass::{CLASSES, NUM_CLASSES};
use pardon::{gc_object, Config, GcObject, GlobalRootId, Heap, Member, Mutator, Type, TypeDesc};
use proptest::prelude::*;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

gc_object! {
    /// The typed path's object: 24 bytes, so its slots straddle bitmap
    /// words at some offsets; reference word 1.
    struct TNode {
        a: std::sync::atomic::AtomicU64,
        next: Member<TNode>,
        b: std::sync::atomic::AtomicU64,
    }
}

/// The model's description of `TNode`, always the last type.
fn tnode_spec() -> TSpec {
    TSpec {
        size: 24,
        ptrs: vec![1],
    }
}

/// A type: size in bytes and reference words.
#[derive(Clone, Debug)]
struct TSpec {
    size: usize,
    ptrs: Vec<usize>,
}

fn type_strategy() -> impl Strategy<Value = TSpec> {
    // Half the types take the inlined fast path (classes of at most 64
    // bytes); the rest any small class (its size or 8 bytes less) or a
    // large object. Reference words anywhere in the object.
    let tiny = CLASSES[1..NUM_CLASSES]
        .iter()
        .filter(|c| c.size <= 64)
        .count();
    let class = prop_oneof![1 => 1..tiny + 1, 1 => 1..NUM_CLASSES + 1];
    (
        class,
        any::<bool>(),
        prop::collection::vec(any::<u16>(), 0..6),
    )
        .prop_map(|(class, shrink, ptrs)| {
            let size = if class == NUM_CLASSES {
                40_008
            } else {
                let s = CLASSES[class].size as usize;
                if shrink && s > 8 {
                    s - 8
                } else {
                    s
                }
            };
            let words = size / 8;
            let mut ptrs: Vec<usize> = ptrs.into_iter().map(|p| p as usize % words).collect();
            ptrs.sort_unstable();
            ptrs.dedup();
            TSpec { size, ptrs }
        })
}

#[derive(Clone, Debug)]
struct MObj {
    ty: usize,
    count: usize,
    /// count × ptrs.len() reference fields.
    fields: Vec<Option<usize>>,
    alive: bool,
}

#[derive(Clone, Debug, Default)]
struct Model {
    types: Vec<TSpec>,
    objs: Vec<MObj>,
    roots: Vec<usize>,
    /// Which mutator slots have a live mutator.
    mutators: Vec<bool>,
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
    fn pick_mutator(&self, k: usize) -> Option<usize> {
        let m: Vec<usize> = (0..self.mutators.len())
            .filter(|&i| self.mutators[i])
            .collect();
        (!m.is_empty()).then(|| m[k % m.len()])
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
    fn nfields(&self, o: usize) -> usize {
        self.objs[o].fields.len()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Spawn,
    /// `batch` objects, each linked from the one before through its first
    /// reference field (if its type has one); the first is rooted if `root`.
    Alloc {
        m: usize,
        ty: usize,
        array: Option<usize>,
        batch: usize,
        root: bool,
        blocking: bool,
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
    /// By mutator `by` (inside a safe region if `blocking`), or by the
    /// unattached main thread.
    Collect {
        by: Option<usize>,
        minor: bool,
        blocking: bool,
    },
    Forget(usize),
    Drop(usize),
    Fork(usize),
}

/// The ids an op resolves to in the model (shared by model and system).
fn resolve(m: &Model, op: &Op) -> Option<(usize, usize, usize)> {
    match *op {
        Op::Alloc { m: k, .. } | Op::Forget(k) | Op::Drop(k) | Op::Fork(k) => {
            Some((m.pick_mutator(k)?, 0, 0))
        }
        Op::Collect { by: Some(k), .. } => Some((m.pick_mutator(k)?, 0, 0)),
        Op::Write { src, field, dst } => {
            let s = m.pick(src)?;
            let nf = m.nfields(s);
            (nf > 0).then_some(())?;
            Some((s, field % nf, m.pick(dst)?))
        }
        Op::Clear { src, field } => {
            let s = m.pick(src)?;
            let nf = m.nfields(s);
            (nf > 0).then_some(())?;
            Some((s, field % nf, 0))
        }
        Op::AddRoot(k) => Some((m.pick(k)?, 0, 0)),
        Op::DropRoot(k) => (!m.roots.is_empty()).then(|| (k % m.roots.len(), 0, 0)),
        Op::Spawn | Op::Collect { by: None, .. } => Some((0, 0, 0)),
    }
}

fn model_apply(mut m: Model, op: &Op) -> Model {
    let Some((a, b, c)) = resolve(&m, op) else {
        return m;
    };
    match *op {
        Op::Spawn => m.mutators.push(true),
        Op::Alloc {
            ty,
            array,
            batch,
            root,
            ..
        } => {
            // The typed path (the last type) has no arrays.
            let count = if ty == m.types.len() - 1 {
                1
            } else {
                array.unwrap_or(1)
            };
            let first = m.objs.len();
            for j in 0..batch {
                m.objs.push(MObj {
                    ty,
                    count,
                    fields: vec![None; count * m.types[ty].ptrs.len()],
                    alive: true,
                });
                if j > 0 && !m.types[ty].ptrs.is_empty() {
                    m.objs[first + j - 1].fields[0] = Some(first + j);
                }
            }
            if root {
                m.roots.push(first);
            }
        }
        Op::Write { .. } => m.objs[a].fields[b] = Some(c),
        Op::Clear { .. } => m.objs[a].fields[b] = None,
        Op::AddRoot(_) => m.roots.push(a),
        Op::DropRoot(_) => {
            m.roots.swap_remove(a);
        }
        Op::Collect { .. } => {
            let r = m.reachable();
            for (i, o) in m.objs.iter_mut().enumerate() {
                o.alive &= r.contains(&i);
            }
        }
        Op::Forget(_) | Op::Drop(_) => m.mutators[a] = false,
        Op::Fork(_) => {}
    }
    m
}

struct RefMachine;
impl ReferenceStateMachine for RefMachine {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        (prop::collection::vec(type_strategy(), 1..6), any::<bool>())
            .prop_map(|(mut types, generational)| {
                types.push(tnode_spec());
                Model {
                    types,
                    generational,
                    ..Model::default()
                }
            })
            .boxed()
    }

    fn transitions(m: &Model) -> BoxedStrategy<Op> {
        let nt = m.types.len();
        prop_oneof![
            1 => Just(Op::Spawn),
            6 => (any::<usize>(), 0..nt, prop::option::weighted(0.2, 1usize..4), 1usize..48, any::<bool>(), any::<bool>())
                .prop_map(|(m, ty, array, batch, root, blocking)| Op::Alloc { m, ty, array, batch, root, blocking }),
            5 => (any::<usize>(), any::<usize>(), any::<usize>())
                .prop_map(|(src, field, dst)| Op::Write { src, field, dst }),
            1 => (any::<usize>(), any::<usize>()).prop_map(|(src, field)| Op::Clear { src, field }),
            1 => any::<usize>().prop_map(Op::AddRoot),
            2 => any::<usize>().prop_map(Op::DropRoot),
            2 => (prop::option::of(any::<usize>()), any::<bool>(), any::<bool>())
                .prop_map(|(by, minor, blocking)| Op::Collect { by, minor, blocking }),
            1 => any::<usize>().prop_map(Op::Forget),
            1 => any::<usize>().prop_map(Op::Drop),
            1 => any::<usize>().prop_map(Op::Fork),
        ]
        .boxed()
    }

    fn apply(state: Model, op: &Op) -> Model {
        model_apply(state, op)
    }
}

fn canary(id: usize, word: usize) -> u64 {
    ((id as u64) << 24 | word as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

/// What an object must hold: (word, value) pairs.
type Expect = (usize, Vec<(usize, u64)>);

/// Checks objects against expectations; runs in the parent and in forked
/// children.
fn check(heap: &Heap, expect: &[Expect]) -> Result<(), String> {
    for (addr, words) in expect {
        if heap.raw().find_object(*addr) != Some(*addr) {
            return Err(format!("reachable object at {addr:#x} was freed"));
        }
        for &(w, v) in words {
            // SAFETY: an allocated object (checked above) of at least this
            // many words (the expectations come from its type).
            let got = unsafe { ((addr + w * 8) as *const u64).read() };
            if got != v {
                return Err(format!(
                    "object at {addr:#x} word {w}: {got:#x}, expected {v:#x}"
                ));
            }
        }
    }
    Ok(())
}

enum Cmd {
    Alloc {
        ty: Type,
        /// Through `Mutator::alloc::<TNode>` (the typed path, rooted by a
        /// handle until the reply).
        typed: bool,
        array: Option<usize>,
        /// Per object: the canaries to write.
        data: Vec<Vec<(usize, u64)>>,
        /// The word of the first reference field, which links each object
        /// to the next.
        link: Option<usize>,
        root: bool,
        blocking: bool,
    },
    Collect {
        minor: bool,
        blocking: bool,
    },
    Forget,
    Drop,
    Fork(Vec<Expect>),
}

enum Reply {
    Alloc(Vec<usize>, Option<GlobalRootId>),
    Done,
    Fork(Result<(), String>),
}

fn alloc_one(m: &Mutator, ty: Type, array: Option<usize>) -> usize {
    match array {
        None => m.alloc_raw(ty).expect("alloc"),
        Some(n) => m.alloc_raw_array(ty, n).expect("alloc array"),
    }
}

fn worker(heap: Heap, rx: Receiver<Cmd>, tx: Sender<Reply>) {
    let m = heap.attach().unwrap();
    loop {
        // Idle in a safe region: collections never wait for an idle worker.
        let Ok(cmd) = m.blocking(|| rx.recv()) else {
            return;
        };
        match cmd {
            Cmd::Alloc {
                ty,
                typed,
                array,
                data,
                link,
                root,
                blocking,
            } => {
                let mut handles = Vec::new();
                // Built from the last object back, so each is referenced
                // (from the next one built) as soon as it exists; only the
                // objects' own frames keep the newest one meanwhile.
                let mut addrs = vec![0usize; data.len()];
                for j in (0..data.len()).rev() {
                    let a = if typed {
                        let r = if blocking {
                            m.blocking(|| m.alloc::<TNode>().unwrap())
                        } else {
                            m.alloc::<TNode>().unwrap()
                        };
                        let a = r.addr();
                        handles.push(r);
                        a
                    } else if blocking {
                        m.blocking(|| alloc_one(&m, ty, array))
                    } else {
                        alloc_one(&m, ty, array)
                    };
                    for &(w, v) in &data[j] {
                        // SAFETY: a fresh object of at least this many words.
                        unsafe { ((a + w * 8) as *mut u64).write(v) };
                    }
                    if let (Some(l), Some(&next)) = (link, addrs.get(j + 1)) {
                        // SAFETY: as above; a reference word of the type.
                        unsafe { ((a + l * 8) as *mut usize).write(next) };
                    }
                    addrs[j] = a;
                }
                let id = root.then(|| heap.add_root(addrs[0]).unwrap());
                drop(handles);
                tx.send(Reply::Alloc(addrs, id)).unwrap();
            }
            Cmd::Collect { minor, blocking } => {
                let c = || {
                    if minor {
                        m.collect_minor()
                    } else {
                        m.collect()
                    }
                };
                if blocking {
                    m.blocking(c).unwrap();
                } else {
                    c().unwrap();
                }
                tx.send(Reply::Done).unwrap();
            }
            Cmd::Forget => {
                std::mem::forget(m);
                tx.send(Reply::Done).unwrap();
                return;
            }
            Cmd::Drop => {
                drop(m);
                tx.send(Reply::Done).unwrap();
                return;
            }
            Cmd::Fork(expect) => {
                // SAFETY: the child runs this thread's code only, then exits.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        m.collect().map_err(|e| e.to_string())?;
                        check(&heap, &expect)
                    }));
                    let code = match ok {
                        Ok(Ok(())) => 0,
                        _ => 1,
                    };
                    // SAFETY: ends the child at once.
                    unsafe { libc::_exit(code) };
                }
                let mut status = 0;
                // SAFETY: waits for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                let r = if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                    Ok(())
                } else {
                    Err(format!("forked child failed (status {status:#x})"))
                };
                tx.send(Reply::Fork(r)).unwrap();
            }
        }
    }
}

struct Worker {
    tx: Sender<Cmd>,
    rx: Receiver<Reply>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Sut {
    heap: Heap,
    types: Vec<Type>,
    addr: Vec<usize>,
    /// Global root ids, parallel to the model's `roots`.
    root_ids: Vec<GlobalRootId>,
    workers: Vec<Option<Worker>>,
    model: Model,
}

impl Sut {
    fn data_words(&self, id: usize) -> Vec<(usize, u64)> {
        let o = &self.model.objs[id];
        let t = &self.model.types[o.ty];
        let words = t.size / 8;
        (0..o.count * words)
            .filter(|w| !t.ptrs.contains(&(w % words)))
            .map(|w| (w, canary(id, w)))
            .collect()
    }

    fn field_word(&self, id: usize, f: usize) -> usize {
        let o = &self.model.objs[id];
        let t = &self.model.types[o.ty];
        let k = t.ptrs.len();
        (f / k) * (t.size / 8) + t.ptrs[f % k]
    }

    /// Every model-reachable object's expected words.
    fn expectations(&self) -> Vec<Expect> {
        let mut v = Vec::new();
        for i in self.model.reachable() {
            let mut words = self.data_words(i);
            for (f, t) in self.model.objs[i].fields.iter().enumerate() {
                words.push((self.field_word(i, f), t.map_or(0, |t| self.addr[t] as u64)));
            }
            v.push((self.addr[i], words));
        }
        v
    }

    fn worker(&mut self, k: usize) -> &Worker {
        self.workers[k].as_ref().expect("live worker")
    }

    fn finish_worker(&mut self, k: usize, cmd: Cmd) {
        let w = self.workers[k].take().expect("live worker");
        w.tx.send(cmd).unwrap();
        assert!(matches!(w.rx.recv().unwrap(), Reply::Done));
        w.thread.unwrap().join().unwrap();
    }
}

impl Drop for Sut {
    fn drop(&mut self) {
        for w in self.workers.iter_mut().filter_map(Option::take) {
            drop(w.tx);
            let _ = w.thread.unwrap().join();
        }
    }
}

impl StateMachineTest for Sut {
    type SystemUnderTest = Sut;
    type Reference = RefMachine;

    fn init_test(r: &Model) -> Sut {
        let heap = Heap::new(Config {
            arena_size: 1 << 30,
            gc_percent: None,
            verify: true,
            generational: r.generational,
            mark_workers: 2,
            ..Config::default()
        })
        .unwrap();
        let mut types: Vec<Type> = r.types[..r.types.len() - 1]
            .iter()
            .map(|t| {
                heap.register_type(&TypeDesc {
                    name: "t",
                    size: t.size,
                    align: 8,
                    pointer_words: &t.ptrs,
                })
                .unwrap()
            })
            .collect();
        types.push(TNode::gc_type());
        Sut {
            heap,
            types,
            addr: Vec::new(),
            root_ids: Vec::new(),
            workers: Vec::new(),
            model: r.clone(),
        }
    }

    fn apply(mut s: Sut, _: &Model, op: Op) -> Sut {
        let before = s.model.clone();
        let resolved = resolve(&before, &op);
        s.model = model_apply(std::mem::take(&mut s.model), &op);
        let Some((a, b, c)) = resolved else { return s };
        match op {
            Op::Spawn => {
                let (tx, wrx) = channel();
                let (wtx, rx) = channel();
                let heap = s.heap.clone();
                let thread = Some(std::thread::spawn(move || worker(heap, wrx, wtx)));
                s.workers.push(Some(Worker { tx, rx, thread }));
            }
            Op::Alloc {
                ty,
                array,
                batch,
                root,
                blocking,
                ..
            } => {
                let id = s.addr.len();
                let data = (id..id + batch).map(|i| s.data_words(i)).collect();
                let link = (!s.model.types[ty].ptrs.is_empty()).then(|| s.field_word(id, 0));
                let typed = ty == s.types.len() - 1;
                let cmd = Cmd::Alloc {
                    ty: s.types[ty],
                    typed,
                    array: if typed { None } else { array },
                    data,
                    link,
                    root,
                    blocking,
                };
                let w = s.worker(a);
                w.tx.send(cmd).unwrap();
                let Reply::Alloc(addrs, rid) = w.rx.recv().unwrap() else {
                    panic!("unexpected reply")
                };
                s.addr.extend(addrs);
                if let Some(rid) = rid {
                    s.root_ids.push(rid);
                }
            }
            Op::Write { .. } => {
                let w = s.field_word(a, b);
                let slot = s.addr[a] + w * 8;
                s.heap.raw().write_barrier(slot);
                // SAFETY: a reference word of a live object (every mutator
                // is idle, so no collection runs meanwhile).
                unsafe { (slot as *mut u64).write(s.addr[c] as u64) };
            }
            Op::Clear { .. } => {
                let slot = s.addr[a] + s.field_word(a, b) * 8;
                // SAFETY: as above.
                unsafe { (slot as *mut u64).write(0) };
            }
            Op::AddRoot(_) => {
                let id = s.heap.add_root(s.addr[a]).unwrap();
                s.root_ids.push(id);
            }
            Op::DropRoot(_) => {
                let id = s.root_ids.swap_remove(a);
                s.heap.remove_root(id);
            }
            Op::Collect {
                by,
                minor,
                blocking,
            } => {
                match by {
                    Some(_) => {
                        let w = s.worker(a);
                        w.tx.send(Cmd::Collect { minor, blocking }).unwrap();
                        assert!(matches!(w.rx.recv().unwrap(), Reply::Done));
                    }
                    None if minor => drop(s.heap.collect_minor().unwrap()),
                    None => drop(s.heap.collect().unwrap()),
                }
                if let Err(e) = check(&s.heap, &s.expectations()) {
                    panic!("after {op:?}: {e}");
                }
            }
            Op::Forget(_) => s.finish_worker(a, Cmd::Forget),
            Op::Drop(_) => s.finish_worker(a, Cmd::Drop),
            Op::Fork(_) => {
                let expect = s.expectations();
                let w = s.worker(a);
                w.tx.send(Cmd::Fork(expect)).unwrap();
                let Reply::Fork(r) = w.rx.recv().unwrap() else {
                    panic!("unexpected reply")
                };
                r.unwrap();
            }
        }
        s
    }

    fn check_invariants(s: &Sut, _: &Model) {
        if let Err(e) = s.heap.raw().check_integrity() {
            panic!("integrity: {e}");
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]
    #[test]
    fn heap_and_mutators_match_model(sequential 1..60 => Sut);
}
