//! The context switch and stacks: a ping-pong between a thread and a task
//! on its own stack keeps every value each side holds across switches
//! (callee-saved registers included: the loops keep their state in locals
//! the compiler puts there), floating-point control state is the thread's,
//! deep recursion works inside a task, stacks are pooled and reused.

use std::sync::atomic::{AtomicUsize, Ordering};

use pardon_sched::{switch, Context, Stack, StackPool, MIN_STACK};

struct PingPong {
    main: Context,
    task: Context,
    rounds: usize,
    log: Vec<usize>,
}

extern "C" fn task_entry(arg: usize) -> ! {
    // SAFETY: `arg` is the PingPong the test keeps alive until the task's
    // last switch back.
    let pp = unsafe { &mut *(arg as *mut PingPong) };
    let mut acc: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..pp.rounds {
        acc = acc.rotate_left(7) ^ i as u64;
        pp.log.push(i * 2 + 1);
        // SAFETY: the main context was saved by the switch that started us.
        unsafe { switch(&mut pp.task, &pp.main) };
        assert_eq!(pp.log.last(), Some(&(i * 2 + 2)), "main ran in between");
    }
    pp.log.push(acc as usize);
    // SAFETY: as above; this task is never resumed again.
    unsafe { switch(&mut pp.task, &pp.main) };
    unreachable!("a finished task was resumed");
}

#[test]
fn ping_pong_keeps_both_sides_state() {
    let stack = Stack::new(64 * 1024).unwrap();
    let mut pp = Box::new(PingPong {
        main: Context::empty(),
        task: Context::empty(),
        rounds: 1000,
        log: Vec::new(),
    });
    let arg = &mut *pp as *mut PingPong as usize;
    // SAFETY: `stack` outlives every switch below, used by this task alone.
    pp.task = unsafe { Context::new(&stack, task_entry, arg) };
    let mut expect_acc: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut mine = 0u64;
    for i in 0..1000usize {
        let p = &mut *pp as *mut PingPong;
        // SAFETY: the task context was made above or saved by its switch.
        unsafe { switch(&mut (*p).main, &(*p).task) };
        assert_eq!(pp.log.last(), Some(&(i * 2 + 1)));
        expect_acc = expect_acc.rotate_left(7) ^ i as u64;
        mine = mine.wrapping_mul(31).wrapping_add(i as u64);
        pp.log.push(i * 2 + 2);
    }
    let p = &mut *pp as *mut PingPong;
    // SAFETY: as above: the task's last round.
    unsafe { switch(&mut (*p).main, &(*p).task) };
    assert_eq!(pp.log.last(), Some(&(expect_acc as usize)));
    assert_eq!(
        mine,
        (0..1000u64).fold(0u64, |m, i| m.wrapping_mul(31).wrapping_add(i))
    );
}

static DEPTH: AtomicUsize = AtomicUsize::new(0);

#[inline(never)]
fn recurse(n: usize) -> usize {
    let buf = std::hint::black_box([n as u8; 64]);
    if n == 0 {
        DEPTH.load(Ordering::Relaxed)
    } else {
        DEPTH.fetch_add(1, Ordering::Relaxed);
        recurse(n - 1) + buf[0] as usize
    }
}

struct Deep {
    main: Context,
    task: Context,
    result: usize,
}

extern "C" fn deep_entry(arg: usize) -> ! {
    // SAFETY: as in `task_entry`.
    let d = unsafe { &mut *(arg as *mut Deep) };
    d.result = recurse(1000);
    // SAFETY: as in `task_entry`.
    unsafe { switch(&mut d.task, &d.main) };
    unreachable!();
}

#[test]
fn deep_recursion_on_a_task_stack_and_pooled_stacks() {
    let pool = StackPool::new(256 * 1024, 2).unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let stack = pool.get().unwrap();
        seen.push(stack.top());
        DEPTH.store(0, Ordering::Relaxed);
        let mut d = Box::new(Deep {
            main: Context::empty(),
            task: Context::empty(),
            result: 0,
        });
        let arg = &mut *d as *mut Deep as usize;
        // SAFETY: `stack` outlives the task, which switches back once.
        d.task = unsafe { Context::new(&stack, deep_entry, arg) };
        let p = &mut *d as *mut Deep;
        // SAFETY: as above.
        unsafe { switch(&mut (*p).main, &(*p).task) };
        assert!(d.result >= 1000);
        pool.put(stack);
    }
    // The same stack was reused each time.
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:x?}");
    assert_eq!(pool.pooled(), 1);
}

#[test]
fn bad_stack_sizes_are_errors() {
    assert!(Stack::new(0).is_err());
    assert!(Stack::new(MIN_STACK - 4096).is_err());
    assert!(Stack::new(MIN_STACK + 1).is_err());
    let s = Stack::new(MIN_STACK).unwrap();
    assert!(s.in_guard(s.bottom() - 1));
    assert!(!s.in_guard(s.bottom()));
    assert_eq!(s.top() - s.bottom(), MIN_STACK - 4096);
}

fn mxcsr() -> u32 {
    let mut v = 0u32;
    // SAFETY: stores MXCSR into a local.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack)) };
    v
}

fn set_mxcsr(v: u32) {
    // SAFETY: loads a valid MXCSR value (exception bits masked).
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack)) };
}

struct Fp {
    main: Context,
    task: Context,
    seen: Vec<u32>,
}

/// Round toward negative infinity, all exceptions masked.
const ROUND_DOWN: u32 = 0x1f80 | (1 << 13);

extern "C" fn fp_entry(arg: usize) -> ! {
    // SAFETY: as in `task_entry`.
    let f = unsafe { &mut *(arg as *mut Fp) };
    f.seen.push(mxcsr());
    set_mxcsr(ROUND_DOWN);
    // SAFETY: as in `task_entry`.
    unsafe { switch(&mut f.task, &f.main) };
    f.seen.push(mxcsr());
    // SAFETY: as in `task_entry`.
    unsafe { switch(&mut f.task, &f.main) };
    unreachable!();
}

/// MXCSR is shared by the contexts of a thread, as documented (the switch
/// saves the general registers only): a rounding mode a task sets is the
/// thread's after the switch, until someone restores it.
#[test]
fn floating_point_control_is_the_thread_s() {
    let stack = Stack::new(64 * 1024).unwrap();
    let mut f = Box::new(Fp {
        main: Context::empty(),
        task: Context::empty(),
        seen: Vec::new(),
    });
    let arg = &mut *f as *mut Fp as usize;
    // SAFETY: as in the other tests.
    f.task = unsafe { Context::new(&stack, fp_entry, arg) };
    let before = mxcsr();
    let p = &mut *f as *mut Fp;
    // SAFETY: as above.
    unsafe { switch(&mut (*p).main, &(*p).task) };
    assert_eq!(mxcsr(), ROUND_DOWN);
    set_mxcsr(before);
    // SAFETY: as above.
    unsafe { switch(&mut (*p).main, &(*p).task) };
    assert_eq!(f.seen, vec![before, before]);
}
