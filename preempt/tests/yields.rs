//! Yield requests: the hook runs on the asked thread, with the asker's
//! token, where the interrupted instruction is the program's own code;
//! never inside a no-preempt region, never while the thread is inside
//! libc; a stop still works on a thread with a yield hook; and bad
//! requests are refused by name.
//!
//! The hook here records what it saw in statics (one registry per test
//! binary would be tidier, but the hook is a plain `fn`): each test uses
//! its own context word and token range, and they all run in one process.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pardon_preempt::{Config, Preemption, Registry, YieldHook, YieldRequest};

/// Tokens the hook has seen, by the last digit of the context (tokens
/// are `context * 1_000_000 + n`).
static SEEN: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static LAST_TOKEN: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn hook(token: u64) {
    let slot = (token / 1_000_000) as usize % 8;
    SEEN[slot].fetch_add(1, SeqCst);
    LAST_TOKEN[slot].store(token, SeqCst);
}

/// `hook` as a registry's yield hook.
fn yield_hook() -> YieldHook {
    // SAFETY: `hook` only counts in static atomics, which no interrupted
    // code is half-way through changing (an atomic's change is one
    // instruction), and it returns without switching or unwinding.
    unsafe { YieldHook::new(hook) }
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        Registry::new(Config {
            yield_hook: Some(yield_hook()),
            ..Config::default()
        })
        .unwrap()
    })
}

fn token(ctx: usize, n: u64) -> NonZeroU64 {
    NonZeroU64::new(ctx as u64 * 1_000_000 + n).unwrap()
}

/// Asks `ctx` to yield until the hook has run `want` times in all, or 30 s.
fn ask_until(ctx: usize, want: u64) -> bool {
    let start = Instant::now();
    let mut n = 0;
    while SEEN[ctx].load(SeqCst) < want {
        if start.elapsed() > Duration::from_secs(30) {
            return false;
        }
        n += 1;
        registry().request_yield(ctx, token(ctx, n));
        std::thread::sleep(Duration::from_micros(200));
    }
    true
}

/// A thread attached to `reg` with context `ctx`, spinning in a loop
/// without calls until the flag returned is set; it returns the yields
/// its record counted. Returns once the thread is attached.
fn spinner(reg: &Registry, ctx: usize) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let attached = Arc::new(std::sync::Barrier::new(2));
    let (s2, a2, r2) = (stop.clone(), attached.clone(), reg.clone());
    let t = std::thread::spawn(move || {
        // SAFETY: nothing interprets the context word of this registry.
        let me = unsafe { r2.attach_with_context(ctx) }.unwrap();
        a2.wait();
        let mut x = 0u64;
        while !s2.load(SeqCst) {
            x = std::hint::black_box(x + 1);
        }
        std::hint::black_box(x);
        me.yields()
    });
    attached.wait();
    (stop, t)
}

#[test]
fn the_hook_runs_on_a_spinning_thread_with_the_token() {
    const CTX: usize = 1;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let t = std::thread::spawn(move || {
        // SAFETY: nothing interprets the context word of this registry.
        let me = unsafe { registry().attach_with_context(CTX) }.unwrap();
        let mut x = 0u64;
        while !s2.load(SeqCst) {
            x = std::hint::black_box(x + 1);
        }
        (me.yields(), x)
    });
    assert!(
        ask_until(CTX, 20),
        "the hook ran {} times",
        SEEN[CTX].load(SeqCst)
    );
    assert_eq!(LAST_TOKEN[CTX].load(SeqCst) / 1_000_000, CTX as u64);
    stop.store(true, SeqCst);
    let (yields, _) = t.join().unwrap();
    assert!(yields >= 20);
}

#[test]
fn no_yield_inside_a_no_preempt_region_or_inside_libc() {
    const CTX: usize = 2;
    let (go_on, go_on2) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (g1, g2) = (go_on.clone(), go_on2.clone());
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let t = std::thread::spawn(move || {
        // SAFETY: nothing interprets the context word of this registry.
        let me = unsafe { registry().attach_with_context(CTX) }.unwrap();
        // Phase 1: spinning inside a no-preempt region.
        me.enter_no_preempt();
        while !g1.load(SeqCst) {
            std::hint::spin_loop();
        }
        let seen_in_region = SEEN[CTX].load(SeqCst);
        me.exit_no_preempt();
        // Phase 2: blocked in read(2), inside libc.
        let mut b = [0u8; 1];
        // SAFETY: reads one byte into a local buffer.
        let n = unsafe { libc::read(rd, b.as_mut_ptr().cast(), 1) };
        assert_eq!(n, 1);
        let seen_after_read = SEEN[CTX].load(SeqCst);
        // Phase 3: spinning in our own code: yields happen.
        while !g2.load(SeqCst) {
            std::hint::spin_loop();
        }
        (seen_in_region, seen_after_read, me.yields_refused())
    });
    // Phase 1: ask many times; every signal is refused.
    std::thread::sleep(Duration::from_millis(20));
    for n in 1..=50 {
        registry().request_yield(CTX, token(CTX, n));
        std::thread::sleep(Duration::from_micros(300));
    }
    go_on.store(true, SeqCst);
    // Phase 2: the thread is (soon) blocked in read; wait for it to get
    // there, then ask again.
    std::thread::sleep(Duration::from_millis(50));
    let before = SEEN[CTX].load(SeqCst);
    for n in 51..=100 {
        registry().request_yield(CTX, token(CTX, n));
        std::thread::sleep(Duration::from_micros(300));
    }
    let during_read = SEEN[CTX].load(SeqCst) - before;
    // SAFETY: writes one byte from a local.
    assert_eq!(unsafe { libc::write(wr, [1u8].as_ptr().cast(), 1) }, 1);
    // Phase 3.
    assert!(ask_until(CTX, SEEN[CTX].load(SeqCst) + 5));
    go_on2.store(true, SeqCst);
    let (in_region, after_read, refused) = t.join().unwrap();
    assert_eq!(in_region, 0, "a yield was taken inside a no-preempt region");
    assert_eq!(during_read, 0, "a yield was taken inside libc");
    assert!(after_read <= before, "a yield was taken inside libc");
    assert!(refused > 0);
    // SAFETY: closing the descriptors we opened.
    unsafe {
        libc::close(rd);
        libc::close(wr);
    }
}

#[test]
fn stops_still_work_and_take_precedence() {
    const CTX: usize = 3;
    // A registry of its own: the other tests' threads sit in no-preempt
    // regions and in libc on purpose.
    let reg = Registry::new(Config {
        yield_hook: Some(yield_hook()),
        ..Config::default()
    })
    .unwrap();
    let (stop, t) = spinner(&reg, CTX);
    for n in 1..=50 {
        reg.request_yield(CTX, token(CTX, n));
        let w = reg.stop_the_world().unwrap();
        assert_eq!(w.threads().count(), 1);
        drop(w);
    }
    let start = Instant::now();
    let want = SEEN[CTX].load(SeqCst) + 3;
    let mut n = 100;
    while SEEN[CTX].load(SeqCst) < want {
        assert!(start.elapsed() < Duration::from_secs(30));
        n += 1;
        reg.request_yield(CTX, token(CTX, n));
        std::thread::sleep(Duration::from_micros(200));
    }
    stop.store(true, SeqCst);
    t.join().unwrap();
}

#[test]
fn bad_requests_are_refused_by_name() {
    assert_eq!(
        registry().request_yield(7, token(7, 1)),
        YieldRequest::NoSuchThread
    );
    let plain = Registry::new(Config::default()).unwrap();
    assert_eq!(
        plain.request_yield(0, token(0, 1)),
        YieldRequest::Unsupported
    );
    let e = Registry::new(Config {
        preemption: Preemption::Poll,
        yield_hook: Some(yield_hook()),
        ..Config::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("yield_hook"), "{e}");
}

/// A no-yield region refuses yields but still stops for a stop.
#[test]
fn no_yield_region_refuses_yields_but_not_stops() {
    const CTX: usize = 5;
    // A registry of its own: the other tests' threads sit in no-preempt
    // regions on purpose, and this test stops the world.
    let reg = Registry::new(Config {
        yield_hook: Some(yield_hook()),
        ..Config::default()
    })
    .unwrap();
    let r2 = reg.clone();
    let (go_on, stopped) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (g, st) = (go_on.clone(), stopped.clone());
    let t = std::thread::spawn(move || {
        // SAFETY: nothing interprets the context word of this registry.
        let me = unsafe { r2.attach_with_context(CTX) }.unwrap();
        let (seen_in_region, parks_in_region) = me.no_yield(|| {
            assert_eq!(me.no_yield_depth(), 1);
            while !g.load(SeqCst) {
                std::hint::spin_loop();
            }
            (
                SEEN[CTX].load(SeqCst),
                me.parks(pardon_preempt::StopKind::Injected),
            )
        });
        assert_eq!(me.no_yield_depth(), 0);
        st.store(true, SeqCst);
        (seen_in_region, parks_in_region, me.yields_refused())
    });
    std::thread::sleep(Duration::from_millis(20));
    for n in 1..=30 {
        reg.request_yield(CTX, token(CTX, n));
        std::thread::sleep(Duration::from_micros(300));
    }
    // A stop is taken inside the region.
    drop(reg.stop_the_world().unwrap());
    go_on.store(true, SeqCst);
    let (in_region, parks, refused) = t.join().unwrap();
    assert!(stopped.load(SeqCst));
    assert_eq!(in_region, 0, "a yield was taken inside a no-yield region");
    assert!(parks >= 1, "the stop did not stop the thread in the region");
    assert!(refused > 0);
}

/// With stops that park in the handler (`SignalInHandler`), yields are
/// still injected calls: the hook runs on a spinning thread with the
/// token, and stops asked between yield requests stop it (in the handler,
/// or in the injected call when a yield's injection was under way).
#[test]
fn yields_work_when_stops_park_in_the_handler() {
    const CTX: usize = 6;
    let reg = Registry::new(Config {
        preemption: Preemption::SignalInHandler,
        yield_hook: Some(yield_hook()),
        ..Config::default()
    })
    .unwrap();
    let (stop, t) = spinner(&reg, CTX);
    let mut n = 0;
    let start = Instant::now();
    while SEEN[CTX].load(SeqCst) < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the hook ran {} times",
            SEEN[CTX].load(SeqCst)
        );
        n += 1;
        reg.request_yield(CTX, token(CTX, n));
        if n % 2 == 0 {
            let w = reg.stop_the_world().unwrap();
            assert_eq!(w.threads().count(), 1);
            drop(w);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(LAST_TOKEN[CTX].load(SeqCst) / 1_000_000, CTX as u64);
    stop.store(true, SeqCst);
    let yields = t.join().unwrap();
    assert!(yields >= 20, "{yields} yields counted");
}

/// `may_switch_task` (one branch over three words) says yes exactly when
/// the three accessors it stands for do: running, at the no-preempt depth
/// asked (0, 1 or 2), no no-yield region; checked in every combination of
/// the two regions, nested up to two deep, and inside a safe region.
#[test]
fn may_switch_task_is_running_outside_every_region() {
    use pardon_preempt::Attached;
    fn agrees(me: &Attached) -> bool {
        for depth in 0..3 {
            let expected =
                me.is_running() && me.no_preempt_depth() == depth && me.no_yield_depth() == 0;
            assert_eq!(
                me.may_switch_task(depth),
                expected,
                "asked at depth {depth}"
            );
        }
        me.may_switch_task(0)
    }
    fn in_no_yield(me: &Attached, depth: u32) -> bool {
        if depth == 0 {
            agrees(me)
        } else {
            me.no_yield(|| in_no_yield(me, depth - 1))
        }
    }
    let reg = Registry::new(Config::default()).unwrap();
    let me = reg.attach().unwrap();
    for preempt_depth in 0..3 {
        for yield_depth in 0..3 {
            for _ in 0..preempt_depth {
                me.enter_no_preempt();
            }
            let free = in_no_yield(&me, yield_depth);
            assert_eq!(free, preempt_depth == 0 && yield_depth == 0);
            for _ in 0..preempt_depth {
                me.exit_no_preempt();
            }
        }
    }
    let in_safe = me.safe_region(|| agrees(&me));
    assert!(!in_safe, "a thread in a safe region is not running");
    assert!(agrees(&me));
}
