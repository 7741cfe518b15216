//! The suite's kernels: real loops, each generic over its poll strategy, so
//! the signal modes and the reference run compile them with no poll at all
//! ([`NoPoll`](pardon::preempt::NoPoll)), and the poll modes put a poll on
//! every back edge, every N iterations, or only between calls.
//!
//! A kernel call does `n` units of work in one call-free stretch (the loop
//! bodies inline everything they use). The runner
//! calibrates `n` so that a call lasts about the configured stretch.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon::preempt::PollStrategy;
use pardon::stackscan::{frame_map, with_frame, FrameMap};
use pardon::{gc_object, Member, Mutator, Root, Type, TypeDesc};

/// The kernels, in report order.
pub const KERNELS: &[&str] = &[
    "spin", "sum", "base64", "copy", "chase", "alloc", "spinlock", "syscall",
];

gc_object! {
    /// One link of the `chase` ring: a pointer and a cache line's worth of
    /// payload, so consecutive hops miss the cache like real object graphs.
    pub struct Link {
        next: Member<Link>,
        payload: [u64; 7],
    }
}

const SUM_WORDS: usize = 32 * 1024;
const COPY_WORDS: usize = 32 * 1024;
const B64_BYTES: usize = 64 * 1024;
const RING: usize = 16 * 1024;

/// Shared state of one `spinlock` pair.
#[derive(Default)]
pub struct SpinPair {
    turn: AtomicU32,
    done: AtomicBool,
}

/// What one thread needs to run its kernel: buffers, a ring, a pair, a pipe.
pub struct ThreadCtx<'m> {
    m: &'m Mutator,
    kernel: &'static str,
    words: Vec<u64>,
    dst: Vec<u64>,
    b64: Vec<u8>,
    b64_out: Vec<u8>,
    ring: Option<Root<'m, Link>>,
    node: Option<Type>,
    pair: Option<(Arc<SpinPair>, u32)>,
    fd: i32,
    seed: u64,
    max_call: Option<Duration>,
}

static ALLOC_MAP: FrameMap = frame_map!(2; [0, 1]);

impl<'m> ThreadCtx<'m> {
    /// Builds the state for `kernel` on thread `index`. `pair` is the shared
    /// pair and side for `spinlock`; `fd` the read end of this thread's pipe
    /// for `syscall`.
    pub fn new(
        m: &'m Mutator,
        kernel: &'static str,
        index: usize,
        pair: Option<(Arc<SpinPair>, u32)>,
        fd: i32,
    ) -> ThreadCtx<'m> {
        let mut c = ThreadCtx {
            m,
            kernel,
            words: Vec::new(),
            dst: Vec::new(),
            b64: Vec::new(),
            b64_out: Vec::new(),
            ring: None,
            node: None,
            pair,
            fd,
            seed: 0x9e37_79b9_7f4a_7c15 ^ index as u64,
            max_call: None,
        };
        match kernel {
            "sum" => c.words = (0..SUM_WORDS as u64).map(|i| i * 7 + 1).collect(),
            "copy" => {
                c.words = (0..COPY_WORDS as u64).collect();
                c.dst = vec![0; COPY_WORDS];
            }
            "base64" => {
                c.b64 = base64_encode(
                    &(0..B64_BYTES)
                        .map(|i| (i * 131 % 251) as u8)
                        .collect::<Vec<_>>(),
                );
                c.b64_out = vec![0; B64_BYTES + 3];
            }
            "chase" => c.ring = Some(build_ring(m, RING, c.seed)),
            "alloc" => {
                c.node = Some(
                    m.heap()
                        .register_type(&TypeDesc {
                            name: "bench::Pair",
                            size: 16,
                            align: 8,
                            pointer_words: &[0],
                        })
                        .expect("a valid type"),
                )
            }
            _ => {}
        }
        c
    }

    /// Bounds the length of a `spinlock` call (no effect on other kernels,
    /// whose calls take a fixed amount of work). Oversubscribed, a pair
    /// whose two threads share a CPU hands off once per context switch, far
    /// slower than a pair spinning on two CPUs, so a count calibrated in one
    /// placement can make a call last seconds in the other; the bound keeps
    /// a call near its call-free stretch.
    pub fn set_max_call(&mut self, max: Option<Duration>) {
        self.max_call = max;
    }

    /// Runs one call of `n` units with poll strategy `p`; returns the units
    /// done (fewer than `n` only for `spinlock` when the partner is stopped
    /// or gone, and `syscall` when the pipe closed).
    pub fn call<P: PollStrategy>(&mut self, n: u64, p: &mut P) -> u64 {
        let done = match self.kernel {
            "spin" => {
                self.seed = spin(n, self.seed, p);
                n
            }
            "sum" => {
                let reps = n.div_ceil(SUM_WORDS as u64);
                self.seed = self.seed.wrapping_add(sum(&self.words, reps, p));
                reps * SUM_WORDS as u64
            }
            "copy" => {
                let reps = n.div_ceil(COPY_WORDS as u64);
                copy(&self.words, &mut self.dst, reps, p);
                self.seed ^= self.dst[(self.seed as usize) % COPY_WORDS];
                reps * COPY_WORDS as u64
            }
            "base64" => {
                let groups = (self.b64.len() / 4) as u64;
                let reps = n.div_ceil(groups);
                for _ in 0..reps {
                    base64_decode(&self.b64, &mut self.b64_out, p);
                }
                reps * groups
            }
            "chase" => {
                let start = self.ring.as_ref().expect("ring").addr();
                let (end, hops) = chase(start, n, p);
                self.seed ^= end as u64;
                hops
            }
            "alloc" => alloc(self.m, self.node.expect("type"), n, p),
            "spinlock" => {
                let (pair, side) = self.pair.as_ref().expect("pair");
                let deadline = self.max_call.map(|d| Instant::now() + d);
                handoff(pair, *side, n, deadline, p)
            }
            "syscall" => self.read_bytes(n),
            other => panic!("unknown kernel {other}"),
        };
        std::hint::black_box(self.seed);
        done
    }

    /// Tells the `spinlock` partner that this side is leaving.
    pub fn finish(&self) {
        if let Some((pair, _)) = &self.pair {
            pair.done.store(true, Ordering::Release);
        }
    }

    fn read_bytes(&mut self, n: u64) -> u64 {
        let mut got = 0;
        let mut buf = [0u8; 1];
        while got < n {
            let fd = self.fd;
            let read = || {
                // SAFETY: `buf` is a live one-byte buffer; `fd` is this
                // thread's pipe read end, open until the runner closes it
                // after the join.
                unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 1) }
            };
            let r = self.m.blocking(read);
            if r <= 0 {
                break;
            }
            got += 1;
        }
        got
    }
}

/// A call-free linear congruential generator. Each step also folds the high
/// bits back in: a pure LCG step is affine, and without a poll in the loop the
/// compiler composes eight steps into one (it did), which would make the
/// reference run measure algebra instead of a loop.
#[inline(never)]
pub fn spin<P: PollStrategy>(n: u64, seed: u64, p: &mut P) -> u64 {
    let mut x = seed;
    counted(n, p, |_| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x ^= x >> 29;
    });
    x
}

/// A counted loop of `n` iterations with `p`'s polls placed as a compiler
/// would: every iteration, or once per strip (see [`PollStrategy`]).
#[inline(always)]
fn counted<P: PollStrategy>(n: u64, p: &mut P, mut body: impl FnMut(u64)) {
    let strip = P::STRIP as u64;
    let mut i = 0;
    while i < n {
        let hi = n.min(i.saturating_add(strip));
        while i < hi {
            body(i);
            if P::STRIP == usize::MAX {
                p.tick();
            }
            i += 1;
        }
        p.end_strip();
    }
}

/// A reduction the compiler vectorises when nothing polls in it.
#[inline(never)]
pub fn sum<P: PollStrategy>(data: &[u64], reps: u64, p: &mut P) -> u64 {
    let mut acc = 0u64;
    for _ in 0..reps {
        for strip in data.chunks(P::STRIP) {
            for &v in strip {
                acc = acc.wrapping_add(v);
                if P::STRIP == usize::MAX {
                    p.tick();
                }
            }
            p.end_strip();
        }
        acc = std::hint::black_box(acc);
    }
    acc
}

/// A word-by-word bulk copy. Each word is xored with a constant: a plain copy
/// loop without polls becomes a `memcpy` call, which on the development
/// machine (a VM) ran 5x slower than the loop, so the reference measured
/// glibc rather than the loop.
#[inline(never)]
pub fn copy<P: PollStrategy>(src: &[u64], dst: &mut [u64], reps: u64, p: &mut P) {
    for _ in 0..reps {
        for (ds, ss) in dst.chunks_mut(P::STRIP).zip(src.chunks(P::STRIP)) {
            for (d, &s) in ds.iter_mut().zip(ss) {
                *d = s ^ 0x5555_5555_5555_5555;
                if P::STRIP == usize::MAX {
                    p.tick();
                }
            }
            p.end_strip();
        }
        std::hint::black_box(&mut *dst);
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

const fn b64_table() -> [u8; 256] {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 64 {
        t[B64[i] as usize] = i as u8;
        i += 1;
    }
    t
}
static B64_DEC: [u8; 256] = b64_table();

/// Standard base64 without padding handling beyond whole groups.
pub fn base64_encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            out.push(B64[(v >> (18 - 6 * k)) as usize & 63]);
        }
    }
    out
}

/// Decodes whole 4-character groups, as many as `dst` holds (the talk's
/// Twitch case: a long decode with no calls). Returns the bytes written.
///
/// Written with paired chunk iterators rather than a running output index:
/// with an index carried from strip to strip LLVM could no longer prove that
/// `o + 3` does not overflow, and the strip-mined instantiation carried a
/// five-instruction check per group that the no-poll one did not (16% of its
/// time). A compiler that strip-mines a loop does so after eliminating its
/// range checks; this keeps the comparison about the polls.
#[inline(never)]
pub fn base64_decode<P: PollStrategy>(src: &[u8], dst: &mut [u8], p: &mut P) -> usize {
    let groups = (src.len() / 4).min(dst.len() / 3);
    let (src, dst) = (&src[..groups * 4], &mut dst[..groups * 3]);
    let strips = src
        .chunks(P::STRIP.saturating_mul(4))
        .zip(dst.chunks_mut(P::STRIP.saturating_mul(3)));
    for (s, d) in strips {
        for (g, o) in s.chunks_exact(4).zip(d.chunks_exact_mut(3)) {
            let v = (B64_DEC[g[0] as usize] as u32) << 18
                | (B64_DEC[g[1] as usize] as u32) << 12
                | (B64_DEC[g[2] as usize] as u32) << 6
                | B64_DEC[g[3] as usize] as u32;
            o[0] = (v >> 16) as u8;
            o[1] = (v >> 8) as u8;
            o[2] = v as u8;
            if P::STRIP == usize::MAX {
                p.tick();
            }
        }
        p.end_strip();
    }
    groups * 3
}

/// Builds a ring of `n` [`Link`]s in shuffled order and returns a root to one.
pub fn build_ring<'m>(m: &'m Mutator, n: usize, seed: u64) -> Root<'m, Link> {
    let nodes: Vec<Root<'m, Link>> = (0..n)
        .map(|_| m.alloc::<Link>().expect("ring allocation"))
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = seed | 1;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    for w in 0..n {
        let (a, b) = (order[w], order[(w + 1) % n]);
        nodes[a].next.set(Some(&nodes[b]));
    }
    nodes[order[0]].clone()
}

/// Follows `n` links from `start`. Returns where it ended and the hops.
#[inline(never)]
pub fn chase<P: PollStrategy>(start: usize, n: u64, p: &mut P) -> (usize, u64) {
    let mut a = start;
    counted(n, p, |_| {
        // SAFETY: `a` is a member of a ring that a Root keeps reachable, in a
        // heap that never moves objects, so it is a live `Link` while the
        // caller holds the ring (it does, for the whole call).
        a = unsafe { &*(a as *const Link) }.next.addr();
    });
    (a, n)
}

/// Allocates `n` two-word objects, linking each to the previous one and
/// dropping the chain every 64; the chain lives in a precise frame.
#[inline(never)]
pub fn alloc<P: PollStrategy>(m: &Mutator, ty: Type, n: u64, p: &mut P) -> u64 {
    with_frame::<2, _>(m.frames(), &ALLOC_MAP, |fr| {
        let mut done = 0;
        for i in 0..n {
            let Ok(a) = m.alloc_raw(ty) else { break };
            let prev = if i % 64 == 0 { 0 } else { fr.get(0) };
            // SAFETY: `a` is a fresh, zeroed 16-byte object of `ty`, whose word
            // 0 is its pointer field; this thread is its only user.
            unsafe { *(a as *mut usize) = prev };
            fr.set(1, prev);
            fr.set(0, a);
            done += 1;
            p.tick();
        }
        done
    })
}

/// Hands a token back and forth with the partner through a naive spinlock
/// (spinning, yielding the core every 1024 spins), `n` times; gives up
/// (returning the handoffs done) when the partner has left or does not
/// answer within about four million spins, as it cannot while it is stopped
/// for a cooperative-only stop, or when `deadline` has passed (checked
/// only where it yields, so a pair handing off without waiting never reads
/// the clock).
#[inline(never)]
pub fn handoff<P: PollStrategy>(
    pair: &SpinPair,
    side: u32,
    n: u64,
    deadline: Option<Instant>,
    p: &mut P,
) -> u64 {
    const PATIENCE: u64 = 1 << 22;
    let mut done = 0;
    while done < n {
        let mut spins = 0u64;
        while pair.turn.load(Ordering::Acquire) != side {
            if spins > PATIENCE || pair.done.load(Ordering::Relaxed) {
                return done;
            }
            spins += 1;
            std::hint::spin_loop();
            // Oversubscribed, the partner may be waiting for this core: give
            // it up now and then (a call, but never a poll), or a handoff
            // would cost a whole scheduler time slice.
            if spins.is_multiple_of(1024) {
                std::thread::yield_now();
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return done;
                }
            }
            p.tick();
        }
        pair.turn.store(1 - side, Ordering::Release);
        done += 1;
        p.tick();
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use pardon::preempt::NoPoll;

    /// Strips of `N` iterations, counting them; never parks.
    struct Strips<const N: usize>(usize);
    impl<const N: usize> PollStrategy for Strips<N> {
        const STRIP: usize = N;
        fn tick(&mut self) {}
        fn end_strip(&mut self) {
            self.0 += 1;
        }
        fn between_calls(&mut self) {}
    }

    /// Polls every iteration, counting them.
    struct Ticks(usize);
    impl PollStrategy for Ticks {
        fn tick(&mut self) {
            self.0 += 1;
        }
        fn between_calls(&mut self) {}
    }

    #[test]
    fn base64_decodes_what_it_encodes_under_every_strategy() {
        let data: Vec<u8> = (0..3000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let text = base64_encode(&data);
        let mut out = vec![0u8; data.len()];
        assert_eq!(base64_decode(&text, &mut out, &mut NoPoll), data.len());
        assert_eq!(out, data);
        out.fill(0);
        let mut strips = Strips::<7>(0);
        assert_eq!(base64_decode(&text, &mut out, &mut strips), data.len());
        assert_eq!(out, data);
        assert_eq!(
            strips.0,
            1000usize.div_ceil(7),
            "one poll per strip of 7 groups"
        );
        out.fill(0);
        let mut ticks = Ticks(0);
        assert_eq!(base64_decode(&text, &mut out, &mut ticks), data.len());
        assert_eq!(out, data);
        assert_eq!(ticks.0, 1000, "one poll per group");
    }

    #[test]
    fn base64_decodes_only_the_groups_that_fit() {
        let text = base64_encode(b"abcdefghi");
        let mut out = [0u8; 7];
        assert_eq!(base64_decode(&text, &mut out, &mut NoPoll), 6);
        assert_eq!(&out[..6], b"abcdef");
        assert_eq!(out[6], 0);
    }
}
