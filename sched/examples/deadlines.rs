//! Deadlines with goroutines: a pool of workers that take jobs from a
//! channel with `recv_timeout` (counting the times they waited 20 ms for
//! nothing), a producer that sends with `try_send` and backs off when the
//! queue is full, and a ticker built on `after`.
//! `cargo run -p pardon-sched --example deadlines`

use std::time::{Duration, Instant};

use pardon_sched::channel::{self, RecvTimeoutError, TrySendError};
use pardon_sched::{after, go, Config, Runtime};

fn main() {
    let rt = Runtime::new(Config::default()).expect("runtime");
    let (done, backoffs, idle) = rt
        .block_on(|| {
            let (jobs, queue) = channel::channel::<u64>(8);
            let (results, collected) = channel::unbounded::<u64>();
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let (queue, results) = (queue.clone(), results.clone());
                    go(move || {
                        let mut idle = 0u32;
                        loop {
                            match queue.recv_timeout(Duration::from_millis(20)) {
                                Ok(n) => results.send(n * n).expect("collector"),
                                Err(RecvTimeoutError::Timeout) => idle += 1,
                                // The producer is done.
                                Err(RecvTimeoutError::Disconnected) => return idle,
                            }
                        }
                    })
                })
                .collect();
            drop((queue, results));

            // The producer: a full queue is met with a short sleep.
            let mut backoffs = 0;
            for n in 0..1000u64 {
                let mut job = n;
                loop {
                    match jobs.try_send(job) {
                        Ok(()) => break,
                        Err(TrySendError::Full(back)) => {
                            job = back;
                            backoffs += 1;
                            pardon_sched::sleep(Duration::from_micros(50));
                        }
                        Err(TrySendError::Disconnected(_)) => unreachable!("workers leave last"),
                    }
                }
            }
            drop(jobs);
            let idle: u32 = workers
                .into_iter()
                .map(|w| w.join().expect("a worker"))
                .sum();
            let sum: u64 = std::iter::from_fn(|| collected.try_recv().ok()).sum();
            assert_eq!(sum, (0..1000u64).map(|n| n * n).sum::<u64>());

            // A ticker: three ticks 5 ms apart.
            let start = Instant::now();
            for k in 1..=3u32 {
                let at = after(Duration::from_millis(5)).recv().expect("a tick");
                assert!(at >= start + Duration::from_millis(5) * k);
            }
            (1000, backoffs, idle)
        })
        .expect("block_on");
    println!(
        "{done} jobs done by 4 workers (20 ms waits for nothing: {idle}); \
         the producer backed off {backoffs} times"
    );
}
