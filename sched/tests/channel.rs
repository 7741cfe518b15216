//! Channels: values arrive once and in order per sender, bounded channels
//! hold back senders, a rendezvous send returns only once the value is
//! taken, closing by drop ends receivers and fails senders. On one worker,
//! where a waiter that blocked its thread would hang the test.

use pardon_sched::channel::{channel, unbounded, RecvError};
use pardon_sched::{go, Config, Runtime};

mod delivery;

fn rt(procs: usize) -> Runtime {
    Runtime::new(Config {
        procs,
        ..Config::default()
    })
    .unwrap()
}

#[test]
fn many_producers_one_consumer_in_order_per_producer() {
    for (procs, cap) in [
        (1, Some(0)),
        (1, Some(4)),
        (2, Some(1)),
        (2, None),
        (4, Some(16)),
    ] {
        let rt = rt(procs);
        let got = rt
            .block_on(move || {
                let (tx, rx) = match cap {
                    Some(c) => channel::<(u32, u32)>(c),
                    None => unbounded(),
                };
                for p in 0..4u32 {
                    let tx = tx.clone();
                    go(move || {
                        for i in 0..500 {
                            tx.send((p, i)).unwrap();
                        }
                    });
                }
                drop(tx);
                let mut next = [0u32; 4];
                let mut n = 0;
                while let Ok((p, i)) = rx.recv() {
                    assert_eq!(i, next[p as usize], "producer {p} out of order");
                    next[p as usize] += 1;
                    n += 1;
                }
                n
            })
            .unwrap();
        assert_eq!(got, 2000, "procs {procs}, cap {cap:?}");
    }
}

#[test]
fn a_bounded_channel_holds_senders_back() {
    let rt = rt(1);
    rt.block_on(|| {
        let (tx, rx) = channel::<u32>(2);
        let (done_tx, done_rx) = unbounded::<u32>();
        go(move || {
            for i in 0..5 {
                tx.send(i).unwrap();
                done_tx.send(i).unwrap();
            }
        });
        // One worker: the sender runs whenever this goroutine yields, until
        // it blocks on the full channel (two values in, the third waiting).
        for _ in 0..10 {
            pardon_sched::yield_now();
        }
        assert_eq!(rx.len(), 2, "a capacity-2 channel holds two");
        assert_eq!(done_rx.len(), 2, "the third send returned early");
        for i in 0..5 {
            assert_eq!(rx.recv(), Ok(i));
        }
    })
    .unwrap();
}

#[test]
fn rendezvous_send_returns_once_taken_and_drop_closes() {
    let rt = rt(1);
    rt.block_on(|| {
        let (tx, rx) = channel::<u32>(0);
        let (log_tx, log_rx) = unbounded::<&'static str>();
        let l2 = log_tx.clone();
        go(move || {
            tx.send(7).unwrap();
            l2.send("sent").unwrap();
        });
        pardon_sched::yield_now();
        log_tx.send("receiving").unwrap();
        assert_eq!(rx.recv(), Ok(7));
        pardon_sched::yield_now();
        drop(log_tx);
        let log: Vec<_> = std::iter::from_fn(|| log_rx.recv().ok()).collect();
        assert_eq!(log, vec!["receiving", "sent"]);
        // Every sender gone: receivers end.
        assert_eq!(rx.recv(), Err(RecvError));
        // Every receiver gone: a send fails with its value.
        let (tx2, rx2) = channel::<u32>(1);
        drop(rx2);
        assert_eq!(tx2.send(3).unwrap_err().0, 3);
    })
    .unwrap();
}

/// A value sent while a receiver is parked in `recv` goes to that
/// receiver (as in Go, where it is handed over directly), so nothing is
/// left in the channel for anyone else, the sender's own next `recv`
/// included: on one worker, right after the send and before the receiver
/// has run again, the channel is empty.
#[test]
fn a_value_sent_to_a_parked_receiver_is_that_receivers() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    for cap in [0, 1, 4] {
        let (queued, got) = rt(1)
            .block_on(move || {
                let (tx, rx) = channel::<u32>(cap);
                let probe = rx.clone();
                let (reply_tx, reply_rx) = channel::<u32>(1);
                let parked = std::sync::Arc::new(AtomicBool::new(false));
                let p2 = parked.clone();
                let echo = go(move || {
                    p2.store(true, SeqCst);
                    let v = rx.recv().unwrap();
                    reply_tx.send(v + 1).unwrap();
                });
                // One worker: once the echo goroutine has run, it is
                // parked in `recv` (it has nothing else to wait for).
                while !parked.load(SeqCst) {
                    pardon_sched::yield_now();
                }
                pardon_sched::yield_now();
                tx.send(1).unwrap();
                let queued = probe.len();
                let got = reply_rx.recv().unwrap();
                echo.join().unwrap();
                (queued, got)
            })
            .unwrap();
        assert_eq!(
            queued, 0,
            "capacity {cap}: the value was queued, not handed over"
        );
        assert_eq!(got, 2);
    }
}

/// A goroutine parked in a rendezvous send holds its value in its own
/// frame (Go's parked sender): when the last receiver goes, the send
/// fails with that very value, and nothing is lost or dropped twice.
#[test]
fn a_parked_rendezvous_sender_gets_its_value_back_when_receivers_go() {
    let rt = rt(1);
    rt.block_on(|| {
        let (tx, rx) = channel::<Box<u32>>(0);
        let senders: Vec<_> = (0..3u32)
            .map(|i| {
                let tx = tx.clone();
                go(move || tx.send(Box::new(i)).map_err(|e| *e.0))
            })
            .collect();
        // One worker: each sender runs and parks with its value.
        for _ in 0..10 {
            pardon_sched::yield_now();
        }
        assert_eq!(rx.len(), 0, "a goroutine's value waits in its frame");
        // The first in line is taken, in order.
        assert_eq!(*rx.recv().unwrap(), 0);
        drop(rx);
        let results: Vec<_> = senders.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results, vec![Ok(()), Err(1), Err(2)]);
        assert_eq!(tx.send(Box::new(9)).unwrap_err().0, Box::new(9));
    })
    .unwrap();
}

/// Goroutine senders (parked with their values) and a thread outside the
/// runtime (which queues its value and waits for it to be popped) share a
/// rendezvous channel, received by goroutines and by a thread: every value
/// arrives exactly once, in order per sender.
#[test]
fn rendezvous_between_goroutines_and_threads_delivers_each_value_once() {
    for procs in [1, 2] {
        let rt = rt(procs);
        let (tx, rx) = channel::<(u32, u32)>(0);
        let thread_tx = tx.clone();
        let thread_rx = rx.clone();
        let sender = std::thread::spawn(move || {
            for i in 0..300 {
                thread_tx.send((9, i)).unwrap();
            }
        });
        let receiver = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Ok(v) = thread_rx.recv() {
                got.push(v);
            }
            got
        });
        let mut got = rt
            .block_on(move || {
                for p in 0..3u32 {
                    let tx = tx.clone();
                    go(move || {
                        for i in 0..300 {
                            tx.send((p, i)).unwrap();
                        }
                    });
                }
                drop(tx);
                let receivers: Vec<_> = (0..2)
                    .map(|_| {
                        let rx = rx.clone();
                        go(move || {
                            let mut got = Vec::new();
                            while let Ok(v) = rx.recv() {
                                got.push(v);
                            }
                            got
                        })
                    })
                    .collect();
                drop(rx);
                receivers
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            })
            .unwrap();
        sender.join().unwrap();
        got.push(receiver.join().unwrap());
        delivery::assert_each_once_in_order(got, &[0, 1, 2, 9], 300, &format!("procs {procs}"));
    }
}
