//! A thread that keeps a stop waiting is moved to the coordinator's CPU
//! (`Config::move_after`) and always gets its affinity back before the stop
//! returns; a thread pinned to one CPU is never moved.
//!
//! The threads here keep a stop waiting by spinning inside a no-preempt
//! region, which defers the stop until they leave it. Both tests need two
//! CPUs the process may use, and say so and return on a machine without.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pardon_preempt::{Config, Registry};

type Mask = libc::cpu_set_t;

/// The two tests pin threads to CPUs and spin there: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The CPUs thread `tid` (0: the caller) may run on.
fn affinity(tid: i32) -> Mask {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, which
    // sched_getaffinity fills; the size passed is the set's.
    unsafe {
        let mut set: Mask = std::mem::zeroed();
        let r = libc::sched_getaffinity(tid, std::mem::size_of::<Mask>(), &mut set);
        assert_eq!(
            r,
            0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        set
    }
}

/// Sets the calling thread's affinity.
fn set_affinity(set: &Mask) {
    // SAFETY: `set` is a valid cpu_set_t of the size passed; tid 0 changes
    // only the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<Mask>(), set) };
    assert_eq!(
        r,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

fn only(cpu: usize) -> Mask {
    // SAFETY: as in `affinity`; CPU_SET writes one bit of the set (cpu is
    // a CPU number the kernel gave us, below the set's 1,024).
    unsafe {
        let mut set: Mask = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

fn cpus_of(set: &Mask) -> Vec<usize> {
    // SAFETY: CPU_ISSET reads one bit of the set, within its 1,024.
    (0..1024)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, set) })
        .collect()
}

fn current_cpu() -> usize {
    // SAFETY: sched_getcpu has no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    assert!(c >= 0, "sched_getcpu failed");
    c as usize
}

/// The caller's CPU `here` (to which the caller is then pinned) and
/// another CPU the process may use, or None on a one-CPU machine. Returns
/// the caller's affinity from before as well.
fn two_cpus() -> Option<(usize, usize, Mask)> {
    let allowed = affinity(0);
    let here = current_cpu();
    set_affinity(&only(here));
    let other = cpus_of(&allowed).into_iter().find(|&c| c != here)?;
    Some((here, other, allowed))
}

/// A thread that spins in a no-preempt region while a stop waits for it is
/// moved to the coordinator's CPU (it sees itself run there, which is also
/// what ends its region), and while the world is stopped its affinity is
/// already what it was before the move. The thread starts on another CPU
/// each round; if the kernel moves it to ours on its own before the
/// coordinator does, that round proves nothing (the stop counts no move)
/// and another is made: at least one of 20 must see a move.
#[test]
fn a_thread_that_keeps_a_stop_waiting_runs_on_the_coordinators_cpu_and_gets_its_affinity_back() {
    let _s = serial();
    let Some((here, other, allowed)) = two_cpus() else {
        eprintln!("skipped: needs two CPUs");
        return;
    };
    let reg = Registry::new(Config {
        move_after: Some(Duration::from_millis(1)),
        stop_timeout: Duration::from_secs(60),
        ..Config::default()
    })
    .unwrap();
    let mut moved_rounds = 0;
    for _ in 0..20 {
        let tid = Arc::new(AtomicI32::new(0));
        let in_region = Arc::new(AtomicBool::new(false));
        let (reg2, tid2, in_region2) = (reg.clone(), tid.clone(), in_region.clone());
        let mutator = std::thread::spawn(move || {
            set_affinity(&only(other));
            let me = reg2.attach().unwrap();
            let _np = me.no_preempt();
            // Widening the mask does not move a running thread: it stays on
            // `other` until someone moves it.
            set_affinity(&allowed);
            tid2.store(me.tid(), Ordering::SeqCst);
            in_region2.store(true, Ordering::SeqCst);
            // Once moved it runs on `here` as soon as the coordinator
            // sleeps; the deadline only bounds a failure.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut x = 0u64;
            while current_cpu() != here && Instant::now() < deadline {
                x = black_box(x + 1);
            }
            current_cpu() == here
        });
        while !in_region.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let w = reg.stop_the_world().unwrap();
        let moved = w.stats().moved;
        assert!(moved <= 1, "one thread, moved {moved} times");
        let now = affinity(tid.load(Ordering::SeqCst));
        assert_eq!(
            cpus_of(&now),
            cpus_of(&allowed),
            "a stopped thread's affinity was not given back"
        );
        drop(w);
        assert!(
            mutator.join().unwrap(),
            "the thread never ran on CPU {here}"
        );
        moved_rounds += moved;
        if moved_rounds >= 3 {
            break;
        }
    }
    assert!(
        moved_rounds > 0,
        "no round moved the thread that kept the stop waiting"
    );
    set_affinity(&allowed);
}

/// A thread pinned to one CPU that keeps a stop waiting is not moved,
/// whether that CPU is another than the coordinator's or the same: after
/// the stop its affinity is still that CPU alone, and the stop counts no
/// move. (On a machine so loaded that the coordinator does not reach its
/// move point before the thread lets the stop go, this passes without
/// testing much; it cannot fail wrongly.)
#[test]
fn a_thread_pinned_to_one_cpu_is_not_moved() {
    let _s = serial();
    let Some((here, other, allowed)) = two_cpus() else {
        eprintln!("skipped: needs two CPUs");
        return;
    };
    let reg = Registry::new(Config {
        move_after: Some(Duration::ZERO),
        stop_timeout: Duration::from_secs(60),
        ..Config::default()
    })
    .unwrap();
    for pin in [other, here] {
        let tid = Arc::new(AtomicI32::new(0));
        let in_region = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let (reg2, tid2, in_region2, release2) =
            (reg.clone(), tid.clone(), in_region.clone(), release.clone());
        let mutator = std::thread::spawn(move || {
            set_affinity(&only(pin));
            let me = reg2.attach().unwrap();
            let _np = me.no_preempt();
            tid2.store(me.tid(), Ordering::SeqCst);
            in_region2.store(true, Ordering::SeqCst);
            let mut x = 0u64;
            while !release2.load(Ordering::SeqCst) {
                x = black_box(x + 1);
            }
        });
        while !in_region.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            release.store(true, Ordering::SeqCst);
        });
        let w = reg.stop_the_world().unwrap();
        assert_eq!(w.stats().moved, 0, "a thread pinned to CPU {pin} was moved");
        assert_eq!(cpus_of(&affinity(tid.load(Ordering::SeqCst))), vec![pin]);
        drop(w);
        mutator.join().unwrap();
        releaser.join().unwrap();
    }
    set_affinity(&allowed);
}
