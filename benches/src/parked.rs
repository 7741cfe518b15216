//! Goroutines parked on a channel for the length of a measurement: the
//! goroutines a stop must not wait for, nor grow with (issue 21's shape;
//! `stw-latency --parked`, `goroutines --mode stw --parked`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Goroutines parked on a channel; woken and joined on drop (so declare it
/// after the runtime, which then outlives it).
pub struct Parked {
    wake: Option<pardon_sched::channel::Sender<()>>,
    handles: Vec<pardon_sched::JoinHandle<()>>,
}

impl Parked {
    /// Starts `n` goroutines and returns once each is about to park (a
    /// goroutine that counted itself parks at its next instruction but
    /// one; the kernels, started after, wait for workers the parking ones
    /// give up at once).
    pub fn start(rt: &pardon_sched::Runtime, n: usize) -> Result<Parked, String> {
        let (wake, rx) = pardon_sched::channel::unbounded::<()>();
        let counted = Arc::new(AtomicU64::new(0));
        let handles = (0..n)
            .map(|_| {
                let (rx, counted) = (rx.clone(), counted.clone());
                rt.go(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let _ = rx.recv();
                })
            })
            .collect();
        let parked = Parked {
            wake: Some(wake),
            handles,
        };
        let t0 = Instant::now();
        while counted.load(Ordering::SeqCst) < n as u64 {
            if t0.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "only {} of {n} parked goroutines started in 60 s",
                    counted.load(Ordering::SeqCst)
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(parked)
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        // Closing the channel wakes them all.
        drop(self.wake.take());
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
