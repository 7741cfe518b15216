//! Spawn-and-join and yield costs of the cooperative runtime, the shapes
//! of `../shared/anchors-go/sched -mode spawn` and `-mode switch`:
//! `cargo run --release -p pardon-sched --example spawn [N]`.

use std::time::Instant;

use pardon_sched::{go, yield_now, Config, Runtime};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N: a number of goroutines"))
        .unwrap_or(1_000_000);
    let rt = Runtime::new(Config::default()).expect("runtime");
    let t0 = Instant::now();
    let sum = rt
        .block_on(move || {
            let hs: Vec<_> = (0..n).map(|i| go(move || i)).collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        })
        .unwrap();
    let spawn = t0.elapsed();
    assert_eq!(sum, n * (n - 1) / 2);
    println!(
        "spawn+join: {n} goroutines in {:.3} s, {:.0} ns each ({} workers)",
        spawn.as_secs_f64(),
        spawn.as_nanos() as f64 / n as f64,
        Config::default().procs
    );
    let one = Runtime::new(Config {
        procs: 1,
        ..Config::default()
    })
    .expect("runtime");
    let rounds = n;
    let t0 = Instant::now();
    one.block_on(move || {
        let other = go(move || {
            for _ in 0..rounds {
                yield_now();
            }
        });
        for _ in 0..rounds {
            yield_now();
        }
        other.join().unwrap();
    })
    .unwrap();
    let e = t0.elapsed();
    println!(
        "yield ping-pong on one worker: {:.0} ns a switch",
        e.as_nanos() as f64 / (2 * rounds) as f64
    );
}
