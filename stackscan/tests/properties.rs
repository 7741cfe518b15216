//! Property tests of the scanner against a test-double object finder.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use pardon_stackscan::{with_frame_slots, FrameChain, FrameHeader, FrameMap, RootKind, Scanner};
use proptest::prelude::*;

/// Objects as `(base, size)` in a fake address range, found by binary search.
struct Objects(BTreeMap<usize, usize>);

impl Objects {
    fn new(sizes: &[usize]) -> Objects {
        // Far above any real stack or heap address used by the test.
        let mut base = 0x5000_0000_0000usize;
        let mut m = BTreeMap::new();
        for &s in sizes {
            m.insert(base, s);
            base += s.next_multiple_of(16) + 32; // gaps between objects
        }
        Objects(m)
    }
    fn find(&self, a: usize) -> Option<usize> {
        let (&b, &s) = self.0.range(..=a).next_back()?;
        (a < b + s).then_some(b)
    }
    fn bases(&self) -> Vec<usize> {
        self.0.keys().copied().collect()
    }
}

#[derive(Clone, Debug)]
struct FrameSpec {
    nslots: usize,
    sites: Vec<Vec<bool>>,
    site: usize,
    /// Per slot: None (null), Some(i) -> object i, interior offset.
    values: Vec<Option<(usize, usize)>>,
}

fn frame_spec(nobj: usize) -> impl Strategy<Value = FrameSpec> {
    (1usize..12, 1usize..5).prop_flat_map(move |(nslots, nsites)| {
        (
            prop::collection::vec(prop::collection::vec(any::<bool>(), nslots), nsites),
            0..nsites,
            prop::collection::vec(prop::option::of((0..nobj, 0usize..64)), nslots),
        )
            .prop_map(move |(sites, site, values)| FrameSpec {
                nslots,
                sites,
                site,
                values,
            })
    })
}

fn build_map(f: &FrameSpec) -> FrameMap {
    let live: Vec<Vec<usize>> = f
        .sites
        .iter()
        .map(|s| {
            s.iter()
                .enumerate()
                .filter(|(_, l)| **l)
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
    let refs: Vec<&[usize]> = live.iter().map(|v| v.as_slice()).collect();
    FrameMap::new(f.nslots, &refs).unwrap()
}

/// Links the frames recursively (each on its own native stack frame) and
/// runs `at_top` inside the innermost one.
fn nest(
    chain: &AtomicUsize,
    specs: &[(FrameSpec, FrameMap)],
    objs: &Objects,
    sizes: &[usize],
    at_top: &mut dyn FnMut(),
) {
    let Some(((spec, map), rest)) = specs.split_first() else {
        at_top();
        return;
    };
    let bases = objs.bases();
    let slots: Vec<AtomicUsize> = spec
        .values
        .iter()
        .map(|v| AtomicUsize::new(v.map_or(0, |(o, off)| bases[o] + off % sizes[o])))
        .collect();
    with_frame_slots(FrameChain::new(chain), map, &slots, |fr| {
        fr.set_site(spec.site);
        nest(chain, rest, objs, sizes, at_top);
    });
}

proptest! {
    /// The precise roots are exactly the live, non-null slots, reported as
    /// the slots' values (interior ones included), each of which the oracle
    /// resolves to the object the slot references.
    #[test]
    fn precise_roots_are_live_nonnull_slots(
        sizes in prop::collection::vec(1usize..200, 1..20),
        specs in prop::collection::vec(frame_spec(20), 0..8),
    ) {
        let objs = Objects::new(&sizes);
        let specs: Vec<(FrameSpec, FrameMap)> = specs
            .into_iter()
            .map(|mut s| {
                for (o, _) in s.values.iter_mut().flatten() {
                    *o %= sizes.len();
                }
                let m = build_map(&s);
                (s, m)
            })
            .collect();
        let mut expected = Vec::new();
        let mut expected_bases = Vec::new();
        let bases = objs.bases();
        for (s, _) in &specs {
            for (i, v) in s.values.iter().enumerate() {
                if let (true, Some((o, off))) = (s.sites[s.site][i], v) {
                    expected.push(bases[*o] + off % sizes[*o]);
                    expected_bases.push(bases[*o]);
                }
            }
        }
        expected.sort();
        expected_bases.sort();
        let chain = AtomicUsize::new(0);
        let mut got = Vec::new();
        let mut frames = 0;
        nest(&chain, &specs, &objs, &sizes, &mut || {
            let finder = |a: usize| objs.find(a);
            let mut sc = Scanner::new(&finder, 0, usize::MAX, |b, k| {
                assert_eq!(k, RootKind::Precise);
                got.push(b);
            });
            // SAFETY: the chain is linked on this very thread.
            unsafe { sc.frames(chain.load(Ordering::Relaxed)) };
            frames = sc.stats.frames;
            assert!(!sc.stats.bad_chain);
        });
        got.sort();
        let mut resolved: Vec<usize> = got.iter().map(|&v| objs.find(v).expect("resolves")).collect();
        resolved.sort();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(resolved, expected_bases);
        prop_assert_eq!(frames, specs.len());
        prop_assert_eq!(chain.load(Ordering::Relaxed), 0, "every frame unlinked");
    }

    /// A random stack salted with pointers (base, interior, last byte) and
    /// garbage: every salted object is found; nothing the oracle rejects is
    /// reported; arbitrary words never crash.
    #[test]
    fn conservative_finds_every_salted_object(
        sizes in prop::collection::vec(1usize..300, 1..30),
        garbage in prop::collection::vec(any::<u64>(), 0..300),
        salt in prop::collection::vec((any::<usize>(), 0u8..3, any::<usize>()), 0..40),
    ) {
        let objs = Objects::new(&sizes);
        let bases = objs.bases();
        let mut stack: Vec<usize> = garbage.iter().map(|&g| g as usize).collect();
        let mut want = HashSet::new();
        for &(o, how, pos) in &salt {
            let o = o % bases.len();
            let b = bases[o];
            let w = match how { 0 => b, 1 => b + (pos % sizes[o]), _ => b + sizes[o] - 1 };
            want.insert(b);
            let at = if stack.is_empty() { 0 } else { pos % (stack.len() + 1) };
            stack.insert(at, w);
        }
        let finder = |a: usize| objs.find(a);
        let mut got = HashSet::new();
        let lo = stack.as_ptr() as usize;
        let hi = lo + stack.len() * 8;
        let mut sc = Scanner::new(&finder, 0, 0, |b, _| {
            got.insert(b);
        });
        // SAFETY: the Vec's buffer is readable and not mutated meanwhile.
        unsafe { sc.range(lo, hi) };
        prop_assert_eq!(sc.stats.words_examined, stack.len());
        for b in &want {
            prop_assert!(got.contains(b));
        }
        for b in &got {
            prop_assert!(objs.find(*b) == Some(*b), "reported a base the oracle rejects");
        }
    }
}

/// An object referenced only from a dead slot of a caller frame is not a
/// root; the same object referenced from the interrupted range is.
#[test]
fn dead_caller_slot_is_not_a_root_but_the_interrupted_range_is() {
    let objs = Objects::new(&[64, 64]);
    let b = objs.bases();
    let chain = AtomicUsize::new(0);
    // Caller frame: slot 0 live at site 0, dead at site 1.
    let caller_map = FrameMap::new(1, &[&[0], &[]]).unwrap();
    let inner_map = FrameMap::new(1, &[&[]]).unwrap();
    let caller_slots = [AtomicUsize::new(b[0] + 8)];
    with_frame_slots(
        FrameChain::new(&chain),
        &caller_map,
        &caller_slots,
        |caller| {
            caller.set_site(1); // the call in progress: slot 0 is dead here
            let inner_slots = [AtomicUsize::new(0)];
            with_frame_slots(
                FrameChain::new(&chain),
                &inner_map,
                &inner_slots,
                |_inner| {
                    let finder = |a: usize| objs.find(a);
                    // Precise part only: the dead slot keeps nothing alive.
                    let mut got = Vec::new();
                    let mut sc = Scanner::new(&finder, 0, usize::MAX, |x, k| got.push((x, k)));
                    // SAFETY: linked on this thread.
                    unsafe { sc.frames(chain.load(Ordering::Relaxed)) };
                    assert!(got.is_empty(), "{got:?}");
                    // The same pointer in the interrupted range (a local array here,
                    // standing for the interrupted frame) is found.
                    let interrupted = [0usize, b[0] + 8, 7];
                    let mut got = Vec::new();
                    let mut sc = Scanner::new(&finder, 0, 0, |x, k| got.push((x, k)));
                    let lo = interrupted.as_ptr() as usize;
                    // SAFETY: a live local array.
                    unsafe { sc.range(lo, lo + 24) };
                    assert_eq!(got, vec![(b[0], RootKind::Stack)]);
                },
            );
        },
    );
}

/// Two frames inlined into one native frame may sit in either address order.
/// Every frame of the chain is still scanned (an outer frame placed below an
/// inner one once ended the walk, and its roots were lost), and a cyclic
/// chain ends.
#[test]
fn frames_out_of_address_order_are_all_scanned() {
    let objs = Objects::new(&[64, 64]);
    let b = objs.bases();
    let map = FrameMap::new(1, &[&[0]]).unwrap();
    let slots = [AtomicUsize::new(b[0]), AtomicUsize::new(b[1])];
    let header = |i: usize| FrameHeader {
        prev: 0,
        map: &map,
        site: std::sync::atomic::AtomicU32::new(0),
        nslots: 1,
        slots: &slots[i],
    };
    // headers[0] is the outer frame, at the lower address; headers[1] is the
    // innermost, above it.
    let mut headers = [header(0), header(1)];
    headers[1].prev = &headers[0] as *const FrameHeader as usize;
    let head = &headers[1] as *const FrameHeader as usize;
    let finder = |a: usize| objs.find(a);
    let mut got = Vec::new();
    let mut sc = Scanner::new(&finder, 0, usize::MAX, |x, k| got.push((x, k)));
    // SAFETY: both headers are live locals with valid maps and slots.
    let bound = unsafe { sc.frames(head) };
    let bad = sc.stats.bad_chain;
    assert_eq!(
        got,
        vec![(b[1], RootKind::Precise), (b[0], RootKind::Precise)]
    );
    assert!(!bad);
    // No frame lies above the innermost: the conservative range runs to the
    // stack top.
    assert_eq!(bound, None);
    // A cycle (corruption) ends after at most as many frames as fit the stack.
    headers[0].prev = head;
    let lo = &headers[0] as *const FrameHeader as usize;
    let hi = lo + 2 * std::mem::size_of::<FrameHeader>();
    let mut n = 0;
    let mut sc = Scanner::new(&finder, lo, hi, |_, _| n += 1);
    // SAFETY: as above; the cycle only revisits the same two headers.
    unsafe { sc.frames(head) };
    let bad = sc.stats.bad_chain;
    assert!(bad);
    assert!(n <= 3, "visited {n} slots");
}

#[test]
fn map_errors_name_the_problem() {
    let e = FrameMap::new(2, &[&[0, 2]]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "call site 0 marks slot 2 live, but the frame has 2 slots"
    );
    assert!(FrameMap::from_bytes(&[1, 0]).is_err());
    let m = FrameMap::new(10, &[&[0, 9], &[3]]).unwrap();
    assert_eq!(FrameMap::from_bytes(&m.to_bytes()).unwrap(), m);
    let mut bytes = m.to_bytes();
    bytes.push(0);
    assert!(FrameMap::from_bytes(&bytes)
        .unwrap_err()
        .to_string()
        .contains("trailing"));
    // A bit past the slot count.
    let e = FrameMap::from_bytes(&[3, 0, 1, 0, 0b1000]).unwrap_err();
    assert!(matches!(
        e,
        pardon_stackscan::MapError::SlotOutOfRange { slot: 3, .. }
    ));
}

#[test]
#[should_panic(expected = "frame has 3 slots but its map describes 2")]
fn slot_count_mismatch_panics_clearly() {
    let chain = AtomicUsize::new(0);
    let map = FrameMap::new(2, &[&[0]]).unwrap();
    let slots = [
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ];
    with_frame_slots(FrameChain::new(&chain), &map, &slots, |_| {});
}

#[test]
fn frames_unlink_on_panic() {
    let chain = AtomicUsize::new(0);
    let map = FrameMap::new(1, &[&[0]]).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pardon_stackscan::with_frame::<1, ()>(FrameChain::new(&chain), &map, |f| {
            f.set(0, 42);
            panic!("boom");
        })
    }));
    assert!(r.is_err());
    assert_eq!(chain.load(Ordering::Relaxed), 0);
}

proptest! {
    /// `live_slots` lists exactly the slots `is_live` reports, in order, for
    /// maps whose sites span several words.
    #[test]
    fn live_slots_are_the_live_slots_in_order(
        nslots in 0usize..200,
        picks in proptest::collection::vec(proptest::collection::vec(any::<u16>(), 0..40), 1..4),
    ) {
        let sites: Vec<Vec<usize>> = picks
            .iter()
            .map(|p| {
                let mut v: Vec<usize> = p.iter().filter(|_| nslots > 0).map(|&x| x as usize % nslots.max(1)).collect();
                v.sort_unstable();
                v.dedup();
                v
            })
            .collect();
        let refs: Vec<&[usize]> = sites.iter().map(|v| v.as_slice()).collect();
        let map = FrameMap::new(nslots, &refs).unwrap();
        for (s, want) in sites.iter().enumerate() {
            let got: Vec<usize> = map.live_slots(s).collect();
            prop_assert_eq!(&got, want);
            let by_bit: Vec<usize> = (0..nslots).filter(|&i| map.is_live(s, i)).collect();
            prop_assert_eq!(&got, &by_bit);
        }
    }
}
