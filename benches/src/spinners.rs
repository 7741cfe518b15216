//! Goroutines that spin in call-free loops, one on each of as many
//! distinct workers, for the benchmarks that stop the world of goroutines.
//!
//! Goroutines do not migrate once they have run (see `pardon-sched`), so
//! two spinners that happened to start on the same worker stay there,
//! taking turns at its time slice, while another worker idles in a safe
//! region: a stop then signals one thread, or none, and measures nothing
//! like the case it is meant to. (One suite run saw a time to safepoint
//! of 1 µs that way.) So the spinners record the thread they run on, and
//! are started again until they all run on different ones.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pardon_sched::{JoinHandle, Runtime};

/// Spinners spread over the workers; stopped by [`Spinners::stop`] (or left
/// to the runtime's end).
pub struct Spinners {
    stop: Arc<AtomicU32>,
    handles: Vec<JoinHandle<()>>,
}

impl Spinners {
    /// Starts `n` goroutines on `rt`, each running `body` with the stop
    /// flag (it must return once the flag is non-zero), again until they
    /// run on `min(n, procs)` different worker threads (`procs`: the
    /// runtime's workers), so that every worker has one when there are
    /// enough.
    pub fn start(
        rt: &Runtime,
        n: usize,
        procs: usize,
        body: impl Fn(&AtomicU32) + Clone + Send + 'static,
    ) -> Result<Spinners, String> {
        for _ in 0..50 {
            let stop = Arc::new(AtomicU32::new(0));
            let tids: Arc<Vec<AtomicI32>> = Arc::new((0..n).map(|_| AtomicI32::new(0)).collect());
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let (stop, tids, body) = (stop.clone(), tids.clone(), body.clone());
                    rt.go(move || {
                        tids[i].store(nix::unistd::gettid().as_raw(), SeqCst);
                        body(&stop);
                    })
                })
                .collect();
            let t0 = Instant::now();
            while tids.iter().any(|t| t.load(SeqCst) == 0) {
                if t0.elapsed() > Duration::from_secs(30) {
                    return Err(format!("{n} spinners did not all start in 30 s"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut seen: Vec<i32> = tids.iter().map(|t| t.load(SeqCst)).collect();
            seen.sort_unstable();
            seen.dedup();
            let s = Spinners { stop, handles };
            if seen.len() >= n.min(procs) {
                return Ok(s);
            }
            s.stop()?;
        }
        Err(format!(
            "{n} spinners never ran on {} distinct workers in 50 tries",
            n.min(procs)
        ))
    }

    /// Stops and joins the spinners.
    pub fn stop(self) -> Result<(), String> {
        self.stop.store(1, SeqCst);
        for h in self.handles {
            h.join().map_err(|_| "a spinner panicked".to_string())?;
        }
        Ok(())
    }
}
