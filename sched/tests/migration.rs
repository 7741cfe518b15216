//! Goroutines of a migrating runtime (`Runtime::with_migration`) move
//! between workers where they yield or their time slice ends, and where
//! they park (a sleep, a contended lock, a join) if a worker without work
//! takes them once woken; a worker blocked in a system call gives up the
//! goroutines queued behind it. The safe constructors refuse to migrate.
//!
//! The goroutines here use no thread-locals (the contract): they name
//! their thread by the `gettid` system call. Each test runs until it has
//! seen a goroutine move, however long that takes (bounded at five minutes,
//! which only a runtime that never moves one reaches); what it asserts is
//! where goroutines resumed and that their work is all there.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_sched::{go, poll, sleep, yield_now, Config, Mutex, Preemption, Runtime};

/// The calling thread's id, from the kernel (no thread-local involved).
fn tid() -> i64 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

fn migrating(procs: usize, preemption: Preemption) -> Runtime {
    // SAFETY: the goroutines of these tests use no thread-locals, hold
    // nothing bound to their thread, do not print, and allocate only
    // through the system allocator.
    unsafe {
        Runtime::with_migration(Config {
            procs,
            preemption,
            time_slice: Duration::from_micros(200),
            ..Config::default()
        })
    }
    .unwrap()
}

#[test]
fn the_safe_constructors_refuse_to_migrate() {
    let c = Config {
        procs: 1,
        migrate: true,
        ..Config::default()
    };
    let e = Runtime::new(c.clone()).unwrap_err();
    assert!(e.to_string().contains("with_migration"), "{e}");
    // SAFETY: refused before anything runs.
    let e = unsafe { Runtime::with_signal_preemption(c.clone()) }.unwrap_err();
    assert!(e.to_string().contains("with_migration"), "{e}");
    let reg =
        pardon_preempt::Registry::new(pardon_sched::registry_config(Default::default())).unwrap();
    // SAFETY: refused before anything runs.
    let e = unsafe { Runtime::with_registry(c, reg) }.unwrap_err();
    assert!(e.to_string().contains("stay on their worker"), "{e}");
}

/// 200 goroutines on 4 workers yield, sleep, lock and join in turn: after
/// a yield a goroutine may be on another thread, and after a park too (a
/// worker with nothing to run takes woken goroutines its worker has let
/// go of); some of each do; every increment under the lock is there.
fn yields_and_parks_move(preemption: Preemption) {
    let rt = migrating(4, preemption);
    let start = Instant::now();
    let mut rounds = 0u64;
    let (mut moved_at_yields, mut moved_at_parks) = (0, 0);
    loop {
        rounds += 1;
        let (moved, parks_moved, total) = rt
            .block_on(|| {
                let lock = Arc::new(Mutex::new(0u64));
                let moved = Arc::new(AtomicU64::new(0));
                let parks_moved = Arc::new(AtomicU64::new(0));
                let hs: Vec<_> = (0..200u64)
                    .map(|i| {
                        let (lock, moved, parks_moved) =
                            (lock.clone(), moved.clone(), parks_moved.clone());
                        go(move || {
                            for k in 0..20u64 {
                                let before = tid();
                                match (i + k) % 4 {
                                    0 => {
                                        yield_now();
                                        if tid() != before {
                                            moved.fetch_add(1, SeqCst);
                                        }
                                        continue;
                                    }
                                    1 => sleep(Duration::from_micros(50)),
                                    2 => *lock.lock() += 1,
                                    _ => go(|| ()).join().unwrap(),
                                }
                                if tid() != before {
                                    parks_moved.fetch_add(1, SeqCst);
                                }
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().unwrap();
                }
                let total = *lock.lock();
                (moved.load(SeqCst), parks_moved.load(SeqCst), total)
            })
            .unwrap();
        assert_eq!(total, 1000, "{preemption}: increments lost");
        moved_at_yields += moved;
        moved_at_parks += parks_moved;
        if moved_at_yields > 0 && moved_at_parks > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{preemption}: in {rounds} rounds {moved_at_yields} moves at yields, \
             {moved_at_parks} at parks"
        );
    }
    assert!(rt.stats().migrations > 0, "{:?}", rt.stats());
}

#[test]
fn cooperative_goroutines_move_at_yields_and_parks() {
    yields_and_parks_move(Preemption::Cooperative);
}

#[test]
fn polling_goroutines_move_at_yields_and_parks() {
    yields_and_parks_move(Preemption::Poll);
}

#[test]
fn signal_preempted_goroutines_move_at_yields_and_parks() {
    yields_and_parks_move(Preemption::Signal);
}

/// Waits until `fd` is readable or `limit` has passed, in `poll` (a
/// blocking system call made directly: the worker's thread blocks in it).
/// Returns whether it became readable.
fn blocked_until_readable(fd: i32, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, 60_000) as i32;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r > 0 {
            return true;
        }
        // 0: time ran out (looked at again above); -1: interrupted (the
        // preemption signal, refused in a system call).
    }
}

/// A pipe's two descriptors (read, write).
fn pipe() -> [i32; 2] {
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    fds
}

/// Writes one byte to `fd`.
fn write_byte(fd: i32) {
    // SAFETY: writes one byte from a live buffer.
    assert_eq!(unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) }, 1);
}

/// Closes both ends of a pipe.
fn close_pipe(fds: [i32; 2]) {
    for fd in fds {
        // SAFETY: our own descriptors, closed once.
        unsafe { libc::close(fd) };
    }
}

/// Runs `round` in goroutines of `rt` until `want` rounds have said the
/// goroutines of interest were on one thread (the first of its answers),
/// failing any round whose blocked call was not ended by them in time (the
/// second), and giving up after 300 s.
fn rounds_on_one_thread(
    rt: &Runtime,
    preemption: Preemption,
    want: u32,
    round: impl Fn() -> (bool, bool) + Send + Clone + 'static,
) {
    let start = Instant::now();
    let (mut same_thread, mut rounds) = (0, 0);
    while same_thread < want {
        rounds += 1;
        let (shared, freed) = rt.block_on(round.clone()).unwrap();
        assert!(
            freed,
            "{preemption}: round {rounds}: the goroutine that ends the call \
             did not run while the call blocked its thread ({:?})",
            rt.stats()
        );
        same_thread += u32::from(shared);
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{preemption}: {same_thread} rounds of {rounds} on one thread"
        );
    }
}

/// A goroutine that wakes another of its worker and then blocks its
/// worker's thread in a system call (not through `blocking`) does not keep
/// the woken one waiting for the call: `sysmon` finds the worker stuck and
/// an idle worker takes it, even from the `next` slot. Here the woken
/// goroutine is what ends the call (it writes the pipe the call waits on),
/// so a runtime without the retake waits out the limit. Rounds in which
/// both were on one thread when the call began, and the woken one wrote
/// from another, count; 20 of them.
fn a_blocked_worker_gives_up_its_goroutines(preemption: Preemption) {
    use pardon_sched::channel::channel;
    let rt = migrating(2, preemption);
    rounds_on_one_thread(&rt, preemption, 20, move || {
        let fds = pipe();
        let (ready_tx, ready_rx) = channel::<i64>(1);
        let (go_tx, go_rx) = channel::<()>(1);
        let w = fds[1];
        let b = go(move || {
            ready_tx.send(tid()).unwrap();
            go_rx.recv().unwrap();
            // Where it runs just before the write (it may move after).
            let on = tid();
            write_byte(w);
            on
        });
        let b_tid = ready_rx.recv().unwrap();
        go_tx.send(()).unwrap();
        let a_tid = tid();
        let freed = blocked_until_readable(fds[0], Duration::from_secs(60));
        let wrote_on = b.join().unwrap();
        close_pipe(fds);
        // Counted: both on one thread when the call began, and the write
        // made from another while the call blocked that thread. (With the
        // signal, the first may be switched out between its send and the
        // call, and the woken one then writes on that thread before the
        // call: such a round is not counted. Seen once in ~550 soak runs.)
        let counted = a_tid == b_tid && wrote_on != a_tid;
        (counted, freed)
    });
    // (`retakes` counts only retakes that woke a sleeping worker: a thief
    // still spinning took the goroutine without one.)
    assert!(rt.stats().migrations >= 20, "{:?}", rt.stats());
}

#[test]
fn cooperative_blocked_worker_gives_up_its_goroutines() {
    a_blocked_worker_gives_up_its_goroutines(Preemption::Cooperative);
}

#[test]
fn polling_blocked_worker_gives_up_its_goroutines() {
    a_blocked_worker_gives_up_its_goroutines(Preemption::Poll);
}

#[test]
fn signal_preempted_blocked_worker_gives_up_its_goroutines() {
    a_blocked_worker_gives_up_its_goroutines(Preemption::Signal);
}

/// Load evens out after goroutines start, which a runtime that keeps each
/// goroutine on its first worker cannot do: three goroutines in loops
/// that only poll, on two workers, end their slices at polls and go to the
/// global queue, and each of them runs on both threads.
#[test]
fn goroutines_that_only_poll_run_on_every_worker() {
    let rt = migrating(2, Preemption::Poll);
    let done = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let done = done.clone();
            rt.go(move || {
                let mut threads = vec![tid()];
                while !done.load(SeqCst) {
                    for _ in 0..1000 {
                        poll();
                    }
                    let now = tid();
                    if !threads.contains(&now) {
                        threads.push(now);
                    }
                }
                threads.len()
            })
        })
        .collect();
    let start = Instant::now();
    while rt.stats().migrations < 30 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "only {:?} in 300 s",
            rt.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    done.store(true, SeqCst);
    let seen: Vec<usize> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(seen.iter().all(|&n| n <= 2), "{seen:?}");
    assert!(
        seen.contains(&2),
        "no goroutine ran on both workers: {seen:?}"
    );
}

/// Goroutines of a signal-preempted migrating runtime busy in this crate's
/// own code (channels, spawns, joins, locks, yields), preempted at a short
/// slice: a preemption that lands between a lookup of the worker and its
/// use keeps the goroutine home (`stays`); one that moved it would make
/// the debug build's check of every no-preempt region's thread fail, or
/// lose a value. Runs until 3,000 preemptions.
#[test]
fn goroutines_preempted_inside_the_runtime_move_only_where_they_may() {
    use pardon_sched::channel::channel;
    const PREEMPTIONS: u64 = 3_000;
    // SAFETY: as `migrating`'s.
    let rt = Arc::new(
        unsafe {
            Runtime::with_migration(Config {
                procs: 4,
                preemption: Preemption::Signal,
                time_slice: Duration::from_micros(50),
                ..Config::default()
            })
        }
        .unwrap(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let lock = Arc::new(Mutex::new(0u64));
    let mut hs = Vec::new();
    for _ in 0..8 {
        let (tx, rx) = channel::<u64>(1);
        let (back_tx, back_rx) = channel::<u64>(0);
        let (done, lock) = (done.clone(), lock.clone());
        hs.push(rt.go(move || {
            let mut sent = 0u64;
            while !done.load(SeqCst) {
                tx.send(sent).unwrap();
                assert_eq!(back_rx.recv().unwrap(), sent);
                sent += 1;
                go(|| 1u64).join().unwrap();
                *lock.lock() += 1;
                yield_now();
            }
            drop(tx);
            sent
        }));
        hs.push(rt.go(move || {
            let mut got = 0u64;
            while let Ok(v) = rx.recv() {
                assert_eq!(v, got);
                back_tx.send(v).unwrap();
                got += 1;
            }
            got
        }));
    }
    let start = Instant::now();
    while rt.stats().preemptions < PREEMPTIONS {
        if start.elapsed() > Duration::from_secs(120) {
            done.store(true, SeqCst);
            panic!("only {:?} in 120 s", rt.stats());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done.store(true, SeqCst);
    let counts: Vec<u64> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    for pair in counts.chunks(2) {
        assert_eq!(pair[0], pair[1], "values lost between a pair");
    }
    let total = *lock.lock();
    assert_eq!(
        total,
        counts.iter().step_by(2).sum::<u64>(),
        "increments lost"
    );
    eprintln!("{:?} in {:?}", rt.stats(), start.elapsed());
}

/// A goroutine that yields while it unwinds (in a destructor) stays on its
/// worker until the panic is caught: std counts a panic on the thread it
/// began on and uncounts it on the one that catches it, so a move would
/// leave its first thread counted as panicking (std's `panicking()` true
/// there whenever any thread panics, which poisons std mutexes dropped
/// there) and the other's count below zero.
#[test]
fn a_goroutine_unwinding_stays_until_caught() {
    struct YieldOnDrop(Arc<AtomicU64>);
    impl Drop for YieldOnDrop {
        fn drop(&mut self) {
            let before = tid();
            for _ in 0..200 {
                yield_now();
            }
            if tid() != before {
                self.0.fetch_add(1, SeqCst);
            }
        }
    }
    let rt = migrating(2, Preemption::Cooperative);
    // Goroutines that spin on yields keep both workers busy, so that the
    // global queue is where the unwinding one would go, and move.
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            rt.go(move || {
                while !stop.load(SeqCst) {
                    yield_now();
                }
            })
        })
        .collect();
    let moved = Arc::new(AtomicU64::new(0));
    // At least 20 panics, and on until goroutines have moved (the yields
    // of the spinners and of the destructors go to the global queue): a
    // run where nothing moved would show nothing.
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < 20 || rt.stats().migrations == 0 {
        if start.elapsed() > Duration::from_secs(300) {
            stop.store(true, SeqCst);
            panic!("nothing moved in 300 s: {:?}", rt.stats());
        }
        let m = moved.clone();
        let h = rt.go(move || {
            let _y = YieldOnDrop(m);
            panic!("unwinding through yields");
        });
        assert!(h.join().is_err());
        rounds += 1;
    }
    stop.store(true, SeqCst);
    for s in spinners {
        s.join().unwrap();
    }
    assert_eq!(moved.load(SeqCst), 0, "a goroutine moved while it unwound");
}

/// Pairs of goroutines handing values back and forth over rendezvous and
/// buffered channels (parks, hand-offs, wake-ups into `next` slots), on 4
/// workers that keep running out of work (the pairs pause in sleeps), so
/// idle workers steal woken goroutines their workers have let go of. Every
/// value arrives once and in order, and goroutines move at parks. A steal
/// of a goroutine whose switch away was not over would resume it on two
/// threads at once (a crash, a debug check, a lost value).
fn pairs_keep_every_value_while_moving(preemption: Preemption) {
    use pardon_sched::channel::channel;
    let rt = migrating(4, preemption);
    let start = Instant::now();
    let mut rounds = 0u64;
    loop {
        rounds += 1;
        let sums = rt
            .block_on(|| {
                let hs: Vec<_> = (0..8u64)
                    .map(|pair| {
                        go(move || {
                            let cap = (pair % 2) as usize;
                            let (tx, rx) = channel::<u64>(cap);
                            let (back_tx, back_rx) = channel::<u64>(cap);
                            let echo = go(move || {
                                let mut expected = 0;
                                while let Ok(v) = rx.recv() {
                                    assert_eq!(v, expected, "pair {pair}: out of order");
                                    expected += 1;
                                    back_tx.send(v * 2).unwrap();
                                }
                                expected
                            });
                            let mut sum = 0;
                            for i in 0..500u64 {
                                tx.send(i).unwrap();
                                sum += back_rx.recv().unwrap();
                                if i % 50 == 0 {
                                    sleep(Duration::from_micros(100));
                                }
                            }
                            drop(tx);
                            assert_eq!(echo.join().unwrap(), 500, "pair {pair}: lost values");
                            sum
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<u64>>()
            })
            .unwrap();
        assert!(
            sums.iter().all(|&s| s == 499 * 500),
            "{preemption}: {sums:?}"
        );
        if rounds >= 200 && rt.stats().migrations > 100 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{preemption}: {rounds} rounds, {:?}",
            rt.stats()
        );
    }
}

#[test]
fn cooperative_pairs_keep_every_value_while_moving() {
    pairs_keep_every_value_while_moving(Preemption::Cooperative);
}

#[test]
fn signal_preempted_pairs_keep_every_value_while_moving() {
    pairs_keep_every_value_while_moving(Preemption::Signal);
}

/// A worker stays stuck after its first retake: a goroutine of its woken
/// later, by a thread outside the runtime while the other worker sleeps,
/// is taken too. A wakes B, then blocks in `poll(2)`; B is taken by the
/// idle worker (the first retake) and ends; 20 ms later a thread wakes C,
/// which had parked on A's thread too and is queued there behind the
/// call; only C writes the pipe that ends it.
fn a_stuck_worker_gives_up_goroutines_woken_later(preemption: Preemption) {
    use pardon_sched::channel::channel;
    let rt = migrating(2, preemption);
    rounds_on_one_thread(&rt, preemption, 10, move || {
        let fds = pipe();
        let w = fds[1];
        let (c_ready_tx, c_ready_rx) = channel::<i64>(1);
        let (c_go_tx, c_go_rx) = channel::<()>(1);
        let c = go(move || {
            c_ready_tx.send(tid()).unwrap();
            c_go_rx.recv().unwrap();
            write_byte(w);
        });
        let c_tid = c_ready_rx.recv().unwrap();
        let (b_ready_tx, b_ready_rx) = channel::<i64>(1);
        let (b_go_tx, b_go_rx) = channel::<()>(1);
        let b = go(move || {
            b_ready_tx.send(tid()).unwrap();
            b_go_rx.recv().unwrap();
        });
        let b_tid = b_ready_rx.recv().unwrap();
        // Started and joined from a pool thread: `std::thread::spawn`
        // and `join` read thread-locals, which the contract keeps out of
        // goroutine code.
        let outside = pardon_sched::blocking(move || {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                c_go_tx.send(()).unwrap();
            })
        });
        b_go_tx.send(()).unwrap();
        let a_tid = tid();
        let freed = blocked_until_readable(fds[0], Duration::from_secs(60));
        b.join().unwrap();
        c.join().unwrap();
        pardon_sched::blocking(move || outside.join()).unwrap();
        close_pipe(fds);
        (a_tid == b_tid && a_tid == c_tid, freed)
    });
}

#[test]
fn cooperative_stuck_worker_gives_up_goroutines_woken_later() {
    a_stuck_worker_gives_up_goroutines_woken_later(Preemption::Cooperative);
}

#[test]
fn signal_preempted_stuck_worker_gives_up_goroutines_woken_later() {
    a_stuck_worker_gives_up_goroutines_woken_later(Preemption::Signal);
}

/// A migrating runtime dropped while its goroutines move: twelve
/// goroutines yield (each yield sends them to the global queue, for any
/// worker to take) on three workers, with the slice's preemptions too in
/// signal mode, and the runtime is dropped 30 ms in, from the thread that
/// made it. Its workers end one after the other while goroutines that ran
/// on one of them resume on another. Before the fix a goroutine switched
/// back in read its old worker's `migrate` flag after the switch: in
/// signal mode 18 of 40 runs of six rounds crashed, reading through the
/// freed attachment of a worker that had ended. Every join after the drop
/// returns (the goroutine's end, or the error that its runtime is gone).
fn dropped_while_moving(preemption: Preemption) {
    for _ in 0..20 {
        let rt = migrating(3, preemption);
        let hs: Vec<_> = (0..12)
            .map(|_| {
                rt.go(|| {
                    for _ in 0..1_000_000 {
                        yield_now();
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30));
        drop(rt);
        let unfinished = hs
            .into_iter()
            .map(|h| h.join())
            .filter(|r| r.is_err())
            .count();
        // A million yields each do not end in 30 ms: the drop caught them.
        assert!(
            unfinished > 0,
            "{preemption}: every goroutine ended before the drop"
        );
    }
}

#[test]
fn cooperative_runtime_dropped_while_goroutines_move() {
    dropped_while_moving(Preemption::Cooperative);
}

#[test]
fn polling_runtime_dropped_while_goroutines_move() {
    dropped_while_moving(Preemption::Poll);
}

#[test]
fn signal_preempted_runtime_dropped_while_goroutines_move() {
    dropped_while_moving(Preemption::Signal);
}
