//! Timers and the channel operations that do not wait, or wait only so
//! long: `try_send`, `try_recv`, `send_timeout`, `recv_timeout`, `after`. Each from
//! goroutines and from threads outside the runtime. The checks are on
//! what is received and returned, and on deadlines never coming early;
//! nothing asserts that something happens within a time.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_sched::channel::{
    self, RecvError, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError,
};
use pardon_sched::{after, go, Config, Runtime};

fn runtime(procs: usize) -> Runtime {
    Runtime::new(Config {
        procs,
        ..Config::default()
    })
    .unwrap()
}

#[test]
fn try_send_and_try_recv_never_wait() {
    let check = || {
        let (tx, rx) = channel::channel::<u32>(2);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(tx.try_send(4), Ok(()));
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(4), "queued values outlive the senders");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));

        let (tx, rx) = channel::unbounded::<u32>();
        for i in 0..100 {
            assert_eq!(tx.try_send(i), Ok(()), "unbounded: never full");
        }
        drop(rx);
        assert_eq!(tx.try_send(7), Err(TrySendError::Disconnected(7)));

        // A rendezvous with nobody waiting on the other side.
        let (tx, rx) = channel::channel::<u32>(0);
        assert_eq!(tx.try_send(5), Err(TrySendError::Full(5)));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    };
    check();
    let rt = runtime(2);
    rt.block_on(check).unwrap();
}

#[test]
fn a_rendezvous_try_meets_a_waiting_goroutine() {
    let rt = runtime(2);
    rt.block_on(|| {
        // A receiver parked in `recv`: a `try_send` hands it the value
        // once it is there (tried until then: no timing assumed).
        let (tx, rx) = channel::channel::<u32>(0);
        let r = go(move || rx.recv());
        let mut v = 11;
        loop {
            match tx.try_send(v) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    v = back;
                    pardon_sched::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(r.join().unwrap(), Ok(11));

        // A goroutine parked in `send`: a `try_recv` takes its value.
        let (tx, rx) = channel::channel::<u32>(0);
        let s = go(move || tx.send(12));
        let got = loop {
            match rx.try_recv() {
                Ok(v) => break v,
                Err(TryRecvError::Empty) => pardon_sched::sleep(Duration::from_millis(1)),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(got, 12);
        assert!(s.join().unwrap().is_ok());
    })
    .unwrap();
}

#[test]
fn recv_timeout_never_times_out_early() {
    let check = || {
        let (_tx, rx) = channel::channel::<u32>(1);
        for d in [0u64, 1, 5, 20] {
            let d = Duration::from_millis(d);
            let t0 = Instant::now();
            assert_eq!(rx.recv_timeout(d), Err(RecvTimeoutError::Timeout));
            assert!(
                t0.elapsed() >= d,
                "timed out after {:?} of {d:?}",
                t0.elapsed()
            );
        }
    };
    check();
    let rt = runtime(1);
    rt.block_on(check).unwrap();
}

#[test]
fn recv_timeout_takes_a_value_or_the_channel_end() {
    let rt = runtime(2);
    rt.block_on(|| {
        let (tx, rx) = channel::channel::<u32>(0);
        let r = go(move || (rx.recv_timeout(Duration::from_secs(60)), rx));
        pardon_sched::sleep(Duration::from_millis(5));
        tx.send(21).unwrap();
        let (got, rx) = r.join().unwrap();
        assert_eq!(got, Ok(21));

        let r = go(move || rx.recv_timeout(Duration::from_secs(60)));
        pardon_sched::sleep(Duration::from_millis(5));
        drop(tx);
        assert_eq!(r.join().unwrap(), Err(RecvTimeoutError::Disconnected));
    })
    .unwrap();
    // From a thread outside the runtime, a goroutine sending.
    let (tx, rx) = channel::channel::<u32>(0);
    rt.go(move || tx.send(22).unwrap());
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(22));
}

/// Receivers with timeouts about as long as the senders take race the
/// senders on rendezvous channels: every value sent is received exactly
/// once, and the receivers, whose alarms often fire just as a sender
/// meets them, go on parking on other things afterwards (a stale
/// wake-up would list a goroutine twice and corrupt a wait list).
#[test]
fn timeouts_racing_sends_lose_and_duplicate_nothing() {
    const SENDERS: u64 = 4;
    const EACH: u64 = 1000;
    let rt = runtime(2);
    let (tx, rx) = channel::channel::<u64>(0);
    let done = Arc::new(AtomicBool::new(false));
    let sum = Arc::new(AtomicU64::new(0));
    let count = Arc::new(AtomicUsize::new(0));
    let timeouts = Arc::new(AtomicUsize::new(0));
    let lock = Arc::new(pardon_sched::Mutex::new(0u64));
    let mut receivers = Vec::new();
    for k in 0..6u64 {
        let (rx, done, sum, count, timeouts, lock) = (
            rx.clone(),
            done.clone(),
            sum.clone(),
            count.clone(),
            timeouts.clone(),
            lock.clone(),
        );
        receivers.push(rt.go(move || {
            let mut i = k;
            while !done.load(SeqCst) {
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let d = Duration::from_micros(50 + (i >> 33) % 300);
                match rx.recv_timeout(d) {
                    Ok(v) => {
                        sum.fetch_add(v, SeqCst);
                        count.fetch_add(1, SeqCst);
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        timeouts.fetch_add(1, SeqCst);
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                // Other parks, where a stale alarm would land: a sleep
                // longer than any timeout here (whose alarm, if it was
                // left armed, falls due during it and would end it
                // early), and a lock.
                let t0 = Instant::now();
                pardon_sched::sleep(Duration::from_micros(400));
                assert!(
                    t0.elapsed() >= Duration::from_micros(400),
                    "a sleep ended early"
                );
                *lock.lock() += 1;
                if i % 7 == 0 {
                    pardon_sched::yield_now();
                }
            }
        }));
    }
    drop(rx);
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let tx = tx.clone();
            rt.go(move || {
                for j in 0..EACH {
                    // Now and then late, so that receivers time out
                    // around the sends.
                    if (s + j) % 3 == 0 {
                        pardon_sched::sleep(Duration::from_micros((s * 37 + j * 11) % 200));
                    }
                    tx.send(s * EACH + j + 1).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    for s in senders {
        s.join().unwrap();
    }
    done.store(true, SeqCst);
    for r in receivers {
        r.join().unwrap();
    }
    let n = SENDERS * EACH;
    assert_eq!(count.load(SeqCst) as u64, n, "each value received once");
    assert_eq!(sum.load(SeqCst), n * (n + 1) / 2, "the values sent");
}

#[test]
fn after_sends_the_time_once_no_earlier() {
    let check = || {
        let t0 = Instant::now();
        let rx = after(Duration::from_millis(10));
        let at = rx.recv().unwrap();
        assert!(at >= t0 + Duration::from_millis(10), "sent early");
        assert_eq!(rx.recv(), Err(RecvError), "once");
        // Dropped unread: the timer's send goes nowhere.
        drop(after(Duration::from_millis(1)));
    };
    check();
    let rt = runtime(1);
    rt.block_on(check).unwrap();
    // Many at once, received out of their order of creation.
    rt.block_on(|| {
        let rxs: Vec<_> = (0..50)
            .rev()
            .map(|i| after(Duration::from_micros(i * 100)))
            .collect();
        for rx in rxs {
            rx.recv().unwrap();
        }
    })
    .unwrap();
}

#[test]
fn send_timeout_never_times_out_early_and_gives_the_value_back() {
    let check = || {
        let (tx, _rx) = channel::channel::<u32>(1);
        tx.send(0).unwrap();
        let (rtx, _rrx) = channel::channel::<u32>(0);
        for d in [0u64, 1, 5, 20] {
            let d = Duration::from_millis(d);
            let t0 = Instant::now();
            assert_eq!(tx.send_timeout(7, d), Err(SendTimeoutError::Timeout(7)));
            assert!(
                t0.elapsed() >= d,
                "full: timed out after {:?} of {d:?}",
                t0.elapsed()
            );
            let t0 = Instant::now();
            assert_eq!(rtx.send_timeout(8, d), Err(SendTimeoutError::Timeout(8)));
            assert!(
                t0.elapsed() >= d,
                "no receiver: timed out after {:?}",
                t0.elapsed()
            );
        }
    };
    check();
    let rt = runtime(1);
    rt.block_on(check).unwrap();
}

#[test]
fn send_timeout_meets_a_receiver_or_the_channel_end() {
    let rt = runtime(2);
    rt.block_on(|| {
        for cap in [0usize, 1] {
            let (tx, rx) = channel::channel::<u32>(cap);
            if cap == 1 {
                tx.send(0).unwrap();
            }
            let s = go(move || (tx.send_timeout(31, Duration::from_secs(60)), tx));
            pardon_sched::sleep(Duration::from_millis(5));
            if cap == 1 {
                assert_eq!(rx.recv(), Ok(0));
            }
            assert_eq!(rx.recv(), Ok(31));
            let (sent, tx) = s.join().unwrap();
            assert_eq!(sent, Ok(()));

            if cap == 1 {
                tx.send(1).unwrap();
            }
            let s = go(move || tx.send_timeout(32, Duration::from_secs(60)));
            pardon_sched::sleep(Duration::from_millis(5));
            drop(rx);
            assert_eq!(s.join().unwrap(), Err(SendTimeoutError::Disconnected(32)));
        }
    })
    .unwrap();
}

/// Senders with timeouts race plain receivers, on a rendezvous and on a
/// buffered channel: every value is either received, once, or given back
/// to its sender; and a sleep right after each send never ends early (a
/// stale wake-up would end it).
#[test]
fn send_timeouts_racing_receives_lose_and_duplicate_nothing() {
    for cap in [0usize, 2] {
        const EACH: u64 = 400;
        let rt = runtime(2);
        let (tx, rx) = channel::channel::<u64>(cap);
        let received = Arc::new(AtomicU64::new(0));
        let returned = Arc::new(AtomicU64::new(0));
        let receivers: Vec<_> = (0..2)
            .map(|k| {
                let (rx, received) = (rx.clone(), received.clone());
                rt.go(move || {
                    let mut j = k;
                    while let Ok(v) = rx.recv() {
                        received.fetch_add(v, SeqCst);
                        j += 1;
                        // Slow now and then (always, with a buffer, so
                        // that it fills), so that senders time out.
                        if cap > 0 || j % 3 == 0 {
                            pardon_sched::sleep(Duration::from_micros(j % 150));
                        }
                    }
                })
            })
            .collect();
        drop(rx);
        let senders: Vec<_> = (0..4u64)
            .map(|s| {
                let (tx, returned) = (tx.clone(), returned.clone());
                rt.go(move || {
                    for j in 0..EACH {
                        let v = s * EACH + j + 1;
                        let d = Duration::from_micros(20 + (v * 7919) % 200);
                        match tx.send_timeout(v, d) {
                            Ok(()) => {}
                            Err(SendTimeoutError::Timeout(back)) => {
                                assert_eq!(back, v);
                                returned.fetch_add(back, SeqCst);
                            }
                            Err(SendTimeoutError::Disconnected(_)) => panic!("receivers left"),
                        }
                        let t0 = Instant::now();
                        pardon_sched::sleep(Duration::from_micros(300));
                        assert!(
                            t0.elapsed() >= Duration::from_micros(300),
                            "a sleep ended early"
                        );
                    }
                })
            })
            .collect();
        drop(tx);
        for s in senders {
            s.join().unwrap();
        }
        for r in receivers {
            r.join().unwrap();
        }
        let n = 4 * EACH;
        assert_eq!(
            received.load(SeqCst) + returned.load(SeqCst),
            n * (n + 1) / 2,
            "cap {cap}: every value received or given back, once"
        );
    }
}

/// `Duration::MAX` (a caller's "never") is a wait with no end, not an
/// overflow: `sleep`, `after`, `recv_timeout` and `send_timeout` with it
/// used to panic adding it to the time. From goroutines and from a thread
/// outside the runtime, each waits for what ends it (a value, a receiver,
/// the channel's end) or, for `sleep` and `after`, not at all.
#[test]
fn the_longest_timeouts_wait_without_end() {
    let check = || {
        let (tx, rx) = channel::channel::<u32>(0);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            tx.send(7).unwrap();
            tx
        });
        assert_eq!(rx.recv_timeout(Duration::MAX), Ok(7));
        drop(sender.join().unwrap());
        assert_eq!(
            rx.recv_timeout(Duration::MAX),
            Err(RecvTimeoutError::Disconnected)
        );

        let (tx, rx) = channel::channel::<u32>(0);
        let receiver = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            rx.recv()
        });
        assert_eq!(tx.send_timeout(8, Duration::MAX), Ok(()));
        assert_eq!(receiver.join().unwrap(), Ok(8));
        assert_eq!(
            tx.send_timeout(9, Duration::MAX),
            Err(SendTimeoutError::Disconnected(9))
        );

        let never = after(Duration::MAX);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(never.try_recv(), Err(TryRecvError::Empty));
    };
    check();
    let rt = runtime(2);
    rt.block_on(check).unwrap();
    // A goroutine that sleeps for ever stays parked; the runtime still
    // drops.
    let asleep = rt.go(|| pardon_sched::sleep(Duration::MAX));
    std::thread::sleep(Duration::from_millis(20));
    assert!(!asleep.is_finished());
    drop(rt);
}
