#![allow(dead_code)]
//! Shared helpers for the preempt integration tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;

use pardon_preempt::{Attached, Registry};

/// Spawns `n` attached threads running `body` until `stop` is set; each gets
/// its Attached handle and a progress counter.
pub fn spawn_attached<F>(
    reg: &Registry,
    n: usize,
    stop: &Arc<AtomicBool>,
    body: F,
) -> (Vec<JoinHandle<u64>>, Vec<Arc<AtomicU64>>)
where
    F: Fn(&Attached, &AtomicBool, &AtomicU64) -> u64 + Send + Sync + 'static + Clone,
{
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut hs = Vec::new();
    let mut progress = Vec::new();
    for _ in 0..n {
        let reg = reg.clone();
        let stop = stop.clone();
        let b = barrier.clone();
        let body = body.clone();
        let p = Arc::new(AtomicU64::new(0));
        progress.push(p.clone());
        hs.push(std::thread::spawn(move || {
            let me = reg.attach().expect("attach");
            b.wait();
            body(&me, &stop, &p)
        }));
    }
    barrier.wait();
    (hs, progress)
}

/// Waits until every counter has moved at least once.
pub fn wait_progress(progress: &[Arc<AtomicU64>]) {
    let start = std::time::Instant::now();
    for p in progress {
        while p.load(Ordering::Relaxed) == 0 {
            assert!(
                start.elapsed().as_secs() < 20,
                "a thread never made progress"
            );
            std::thread::yield_now();
        }
    }
}
