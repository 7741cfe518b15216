//! Channels, mutexes and condition variables used by threads outside the
//! runtime, which cannot park: they sleep until woken (they used to yield
//! in a loop, which took a CPU from the goroutines). Rendezvous channels
//! between such threads and goroutines. A thread waiting in a receive is a receiver a
//! send may meet: `send_timeout` and `try_send` from another thread used
//! to poll for a parked goroutine only, and so timed out beside a waiting
//! thread. A thread's `send` whose value is still queued when every
//! receiver goes gets it back, as std's does (it used to return `Ok`, the
//! value dropped with the channel). And under racing timeouts from both
//! kinds of waiter, every value is received once or given back.
//!
//! Nothing asserts a time: a wait that should meet its partner has thirty
//! seconds, far more than it needs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_sched::channel::{
    self, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use pardon_sched::{Condvar, Config, Mutex, Runtime};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn a_timed_or_try_send_from_a_thread_meets_a_thread_waiting_to_receive() {
    for timed_receive in [false, true] {
        // send_timeout
        let (tx, rx) = channel::channel::<u32>(0);
        let receiver = std::thread::spawn(move || {
            if timed_receive {
                rx.recv_timeout(LONG).ok()
            } else {
                rx.recv().ok()
            }
        });
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            tx.send_timeout(1, LONG),
            Ok(()),
            "a thread waiting in recv (timed: {timed_receive})"
        );
        assert_eq!(receiver.join().unwrap(), Some(1));

        // try_send, once the receiver waits
        let (tx, rx) = channel::channel::<u32>(0);
        let idle = rx.clone();
        let receiver = std::thread::spawn(move || {
            if timed_receive {
                rx.recv_timeout(LONG).ok()
            } else {
                rx.recv().ok()
            }
        });
        let deadline = Instant::now() + LONG;
        loop {
            match tx.try_send(2) {
                Ok(()) => break,
                Err(TrySendError::Full(_)) => {
                    assert!(Instant::now() < deadline, "try_send never met the receiver");
                    std::thread::yield_now();
                }
                Err(TrySendError::Disconnected(_)) => panic!("the receiver left"),
            }
        }
        assert_eq!(receiver.join().unwrap(), Some(2));
        // A receiver that is not waiting is not met.
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(
            tx.send_timeout(4, Duration::from_millis(1)),
            Err(SendTimeoutError::Timeout(4))
        );
        assert!(idle.is_empty());
    }
}

#[test]
fn a_rendezvous_send_from_a_thread_gets_its_value_back_when_the_receivers_go() {
    let (tx, rx) = channel::channel::<u64>(0);
    let senders: Vec<_> = (1..=3u64)
        .map(|v| {
            let tx = tx.clone();
            std::thread::spawn(move || tx.send(v))
        })
        .collect();
    // One of them queues its value (the others wait for room); then the
    // only receiver goes without taking anything.
    let deadline = Instant::now() + LONG;
    while rx.is_empty() {
        assert!(Instant::now() < deadline, "no sender queued its value");
        std::thread::yield_now();
    }
    drop(rx);
    let mut back: Vec<u64> = senders
        .into_iter()
        .map(|h| match h.join().unwrap() {
            Err(SendError(v)) => v,
            Ok(()) => panic!("a send returned Ok with no receiver taking its value"),
        })
        .collect();
    back.sort_unstable();
    assert_eq!(back, [1, 2, 3], "each sender got its own value back");
}

/// Threads and goroutines on both sides of a rendezvous channel and of a
/// buffered one, senders timing out, trying, and sending; receivers
/// timing out. Every value is either received once or handed back to its
/// sender.
#[test]
fn threads_and_goroutines_racing_timeouts_lose_and_duplicate_nothing() {
    for cap in [0usize, 2] {
        const EACH: u64 = 300;
        let rt = Runtime::new(Config {
            procs: 2,
            ..Config::default()
        })
        .unwrap();
        let (tx, rx) = channel::channel::<u64>(cap);
        let received = Arc::new(AtomicU64::new(0));
        let returned = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let receive = {
            let (received, done) = (received.clone(), done.clone());
            move |rx: channel::Receiver<u64>, k: u64| {
                let mut i = k;
                loop {
                    i = i
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let d = Duration::from_micros(20 + (i >> 33) % 200);
                    match rx.recv_timeout(d) {
                        Ok(v) => {
                            received.fetch_add(v, SeqCst);
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            if done.load(SeqCst) {
                                return;
                            }
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            }
        };
        let send = {
            let returned = returned.clone();
            move |tx: channel::Sender<u64>, s: u64| {
                for j in 0..EACH {
                    let v = s * EACH + j + 1;
                    match (v * 7919) % 3 {
                        0 => match tx.send_timeout(v, Duration::from_micros(10 + v % 150)) {
                            Ok(()) => {}
                            Err(SendTimeoutError::Timeout(b)) => {
                                assert_eq!(b, v);
                                returned.fetch_add(b, SeqCst);
                            }
                            Err(SendTimeoutError::Disconnected(_)) => panic!("receivers left"),
                        },
                        1 => match tx.try_send(v) {
                            Ok(()) => {}
                            Err(TrySendError::Full(b)) => {
                                assert_eq!(b, v);
                                returned.fetch_add(b, SeqCst);
                            }
                            Err(TrySendError::Disconnected(_)) => panic!("receivers left"),
                        },
                        _ => tx.send(v).expect("receivers left"),
                    }
                }
            }
        };
        let mut threads = Vec::new();
        let mut goroutines = Vec::new();
        for k in 0..2u64 {
            let (rx1, receive1) = (rx.clone(), receive.clone());
            threads.push(std::thread::spawn(move || receive1(rx1, k)));
            let (rx2, receive2) = (rx.clone(), receive.clone());
            goroutines.push(rt.go(move || receive2(rx2, k + 2)));
        }
        drop(rx);
        let mut senders = Vec::new();
        let mut goroutine_senders = Vec::new();
        for s in 0..2u64 {
            let (tx1, send1) = (tx.clone(), send.clone());
            senders.push(std::thread::spawn(move || send1(tx1, s)));
            let (tx2, send2) = (tx.clone(), send.clone());
            goroutine_senders.push(rt.go(move || send2(tx2, s + 2)));
        }
        drop(tx);
        for s in senders {
            s.join().unwrap();
        }
        for s in goroutine_senders {
            s.join().unwrap();
        }
        done.store(true, SeqCst);
        for r in threads {
            r.join().unwrap();
        }
        for r in goroutines {
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

/// The scheduler state of thread `tid` of this process: `S` asleep, `R`
/// running or runnable (a thread yielding in a loop is always `R`).
fn state_of(tid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).expect("stat");
    // After the command name, in parentheses: " S ...".
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    after.chars().next().expect("state")
}

/// Runs `wait` on a thread outside the runtime and, once that thread is
/// seen asleep, `release`, which ends its wait; returns what `wait`
/// returned. Fails if the thread is never seen asleep in thirty seconds.
fn asleep_then<R: Send + 'static>(
    what: &str,
    wait: impl FnOnce() -> R + Send + 'static,
    release: impl FnOnce(),
) -> R {
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        wait()
    });
    let tid = tid_rx.recv().unwrap();
    let deadline = Instant::now() + LONG;
    while state_of(tid) != 'S' {
        assert!(
            Instant::now() < deadline,
            "{what}: the waiting thread never slept"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    release();
    t.join().unwrap()
}

/// Every wait of a thread outside the runtime sleeps, and is woken by
/// what ends it, from a thread or a goroutine. (The untimed waits failed
/// this before: the thread stayed runnable, yielding; the timed ones
/// napped 50 µs at a time.)
#[test]
fn a_thread_outside_the_runtime_sleeps_while_it_waits() {
    let rt = Runtime::new(Config {
        procs: 1,
        ..Config::default()
    })
    .unwrap();
    let rt = &rt;
    for cap in [0usize, 1] {
        // A receive, ended by a goroutine's send.
        let (tx, rx) = channel::channel::<u32>(cap);
        let got = asleep_then(
            "recv",
            move || rx.recv(),
            || {
                rt.go(move || tx.send(1).unwrap()).join().unwrap();
            },
        );
        assert_eq!(got, Ok(1));

        let (tx, rx) = channel::channel::<u32>(cap);
        let got = asleep_then(
            "recv_timeout",
            move || rx.recv_timeout(LONG),
            || {
                tx.send(2).unwrap();
            },
        );
        assert_eq!(got, Ok(2));

        // A send, ended by a goroutine's receive (a rendezvous waits for
        // one; a buffer of one is filled first).
        let (tx, rx) = channel::channel::<u32>(cap);
        if cap == 1 {
            tx.send(0).unwrap();
        }
        let rx2 = rx.clone();
        let got = asleep_then(
            "send",
            move || tx.send(3),
            move || {
                let h = rt.go(move || {
                    let mut v = vec![rx2.recv().unwrap()];
                    if cap == 1 {
                        v.push(rx2.recv().unwrap());
                    }
                    v
                });
                let v = h.join().unwrap();
                assert_eq!(*v.last().unwrap(), 3);
            },
        );
        assert_eq!(got, Ok(()));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));

        let (tx, rx) = channel::channel::<u32>(cap);
        if cap == 1 {
            tx.send(0).unwrap();
        }
        let got = asleep_then(
            "send_timeout",
            move || tx.send_timeout(4, LONG),
            || {
                std::thread::spawn(move || {
                    if cap == 1 {
                        assert_eq!(rx.recv(), Ok(0));
                    }
                    assert_eq!(rx.recv(), Ok(4));
                });
            },
        );
        assert_eq!(got, Ok(()));
    }
}

/// A thread outside the runtime waiting for a mutex a goroutine holds, or
/// on a condition variable, sleeps (each stayed runnable before, yielding)
/// and gets the lock, or the notification, once given.
#[test]
fn a_thread_outside_the_runtime_sleeps_on_a_mutex_and_a_condvar() {
    let rt = Runtime::new(Config {
        procs: 1,
        ..Config::default()
    })
    .unwrap();
    let m = Arc::new(Mutex::new(0u32));
    let (held_tx, held_rx) = channel::channel::<()>(0);
    let (go_on_tx, go_on_rx) = channel::channel::<()>(0);
    let m2 = m.clone();
    let holder = rt.go(move || {
        let mut g = m2.lock();
        held_tx.send(()).unwrap();
        go_on_rx.recv().unwrap();
        *g += 1;
    });
    held_rx.recv().unwrap();
    let m3 = m.clone();
    let seen = asleep_then(
        "Mutex::lock",
        move || {
            let mut g = m3.lock();
            *g += 10;
            *g
        },
        || go_on_tx.send(()).unwrap(),
    );
    holder.join().unwrap();
    assert_eq!(seen, 11, "the thread got the lock after the goroutine");

    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let p2 = pair.clone();
    let woke = asleep_then(
        "Condvar::wait",
        move || {
            let (m, cv) = &*p2;
            let mut ready = m.lock();
            while !*ready {
                ready = cv.wait(ready);
            }
            *ready
        },
        || {
            let p3 = pair.clone();
            rt.go(move || {
                *p3.0.lock() = true;
                p3.1.notify_one();
            })
            .join()
            .unwrap();
        },
    );
    assert!(woke);
}

/// A bounded buffer from a `Mutex` and two `Condvar`s between threads
/// outside the runtime and goroutines on both sides: every item arrives
/// once.
#[test]
fn threads_and_goroutines_share_a_condvar_buffer() {
    use std::collections::VecDeque;
    struct Buf {
        q: Mutex<VecDeque<u64>>,
        not_full: Condvar,
        not_empty: Condvar,
    }
    const EACH: u64 = 2000;
    let rt = Runtime::new(Config {
        procs: 2,
        ..Config::default()
    })
    .unwrap();
    let b = Arc::new(Buf {
        q: Mutex::new(VecDeque::new()),
        not_full: Condvar::new(),
        not_empty: Condvar::new(),
    });
    let produce = |b: Arc<Buf>, s: u64| {
        move || {
            for j in 0..EACH {
                let mut q = b.q.lock();
                while q.len() == 4 {
                    q = b.not_full.wait(q);
                }
                q.push_back(s * EACH + j + 1);
                drop(q);
                b.not_empty.notify_one();
            }
        }
    };
    // Each consumer takes EACH items: as many as a producer makes.
    let consume = |b: Arc<Buf>| {
        move || {
            let mut sum = 0;
            for _ in 0..EACH {
                let mut q = b.q.lock();
                while q.is_empty() {
                    q = b.not_empty.wait(q);
                }
                sum += q.pop_front().unwrap();
                drop(q);
                b.not_full.notify_all();
            }
            sum
        }
    };
    let t_prod = std::thread::spawn(produce(b.clone(), 0));
    let g_prod = rt.go(produce(b.clone(), 1));
    let t_cons = std::thread::spawn(consume(b.clone()));
    let g_cons = rt.go(consume(b.clone()));
    t_prod.join().unwrap();
    g_prod.join().unwrap();
    let sum = t_cons.join().unwrap() + g_cons.join().unwrap();
    let n = 2 * EACH;
    assert_eq!(sum, n * (n + 1) / 2);
}
