//! The helper team of one heap: `mark_workers - 1` threads spawned when
//! the heap is made, which join the coordinator's parallel rounds (work
//! sharing and termination are described in the module essay, `mark`).

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::gray::GrayStack;
use super::tracer::Tracer;
use crate::heap::{lock, RawHeap};

/// The most gray entries moved in one hand-over.
pub(super) const SHARE_MAX: usize = 512;

/// The state the marking workers of one heap share.
///
/// A *round* is one parallel drain: the coordinator (the thread running the
/// collection) resets the round's fields, opens the round under `ctl`,
/// works, closes it and waits until no helper is `inside`; only then does it
/// read the totals. Between rounds no helper touches anything but `ctl`.
pub(crate) struct MarkTeam {
    /// Workers in a round at most, the coordinator included. Set at
    /// creation.
    pub(super) workers: usize,
    /// Workers in the current round, the coordinator included: `workers`
    /// while the world is stopped, fewer while mutators run
    /// (`Config::background_mark_percent`). Helpers numbered from this up
    /// sit the round out. Stored by the coordinator before it opens the
    /// round; read by the workers in it.
    pub(super) round_workers: AtomicUsize,
    /// Round control; see [`Ctl`]. Helpers sleep on `wake` under it.
    pub(super) ctl: Mutex<Ctl>,
    /// Wakes helpers for a round (or for shutdown).
    pub(super) wake: Condvar,
    /// Signals the coordinator that the last helper left a round.
    pub(super) left: Condvar,
    /// Gray entries handed between workers: a worker with work and an idle
    /// peer gives the bottom half of its stack here; an idle worker takes
    /// from it. Under its own lock.
    pub(super) pool: Mutex<GrayStack>,
    /// A hint of `pool.len`, stored under the pool's lock after each change
    /// and read without it to decide whether to share or take (a stale
    /// value costs a lock, never an entry).
    pub(super) pool_len: AtomicUsize,
    /// Workers with nothing to drain. Reset by the coordinator before a
    /// round (helpers start idle, the coordinator busy); a worker adds one
    /// when its stack empties and takes one off, under the pool's lock,
    /// when it takes entries. All workers idle with an empty pool means the
    /// round's work is done (termination detection: nothing is gray).
    pub(super) idle: AtomicUsize,
    /// Set (release) by the worker that finds every worker idle and the pool
    /// empty under the pool's lock; every worker then leaves the round.
    pub(super) done: AtomicBool,
    /// Set by any worker whose gray stack overflowed in the round; read by
    /// the coordinator after the round, which then rescans the heap.
    pub(super) overflow: AtomicBool,
    /// Objects marked in the round, summed by each worker as it leaves;
    /// read by the coordinator after the round.
    pub(super) objects: AtomicUsize,
    /// Bytes marked in the round; as `objects`.
    pub(super) bytes: AtomicUsize,
    /// Workers that marked at least one object in the round; as `objects`.
    pub(super) active_workers: AtomicUsize,
    /// Hand-overs to the pool in the round (a statistic); as `objects`.
    pub(super) shares: AtomicUsize,
    /// In a gather round, the next part to run: claimed by fetch-add by
    /// helpers as they enter and by the coordinator once it has run its
    /// own, so each part runs once however late a helper wakes.
    pub(super) next_part: AtomicUsize,
}

impl MarkTeam {
    /// Moves up to `k` entries from the pool onto `to` (a mutator assist's
    /// stack; see `assist`); returns how many. Outside rounds the pool is
    /// empty.
    pub(crate) fn give_to(&self, to: &mut GrayStack, k: usize) -> usize {
        if self.pool_len.load(Relaxed) == 0 {
            return 0;
        }
        let mut pool = lock(&self.pool);
        let k = k.min(pool.len).min(to.cap - to.len);
        if k > 0 {
            pool.give_top(to, k);
            self.pool_len.store(pool.len, Relaxed);
        }
        k
    }
}

/// What one parallel round marked.
pub(super) struct RoundTotals {
    pub(super) objects: usize,
    pub(super) bytes: usize,
    /// Workers that marked at least one object.
    pub(super) workers: usize,
    pub(super) shares: usize,
    /// Some worker's gray stack overflowed: the heap must be rescanned.
    pub(super) overflow: bool,
}

impl MarkTeam {
    /// A gather round: `job(k)` for `k` in `0..workers`, on the
    /// coordinator (the caller, 0) and `workers - 1` helpers at once (a
    /// stopped world's parked stacks read in parallel, say). Returns once
    /// every helper that entered the round has left it. A helper that does
    /// not enter (it cannot: helpers are idle between rounds) leaves its
    /// part to the coordinator, which runs every part no helper claimed.
    pub(crate) fn gather_round(&self, job: &(dyn Fn(usize) + Sync), workers: usize) {
        let workers = workers.min(self.workers).max(1);
        self.round_workers.store(workers, Relaxed);
        self.next_part.store(1, SeqCst);
        let erased: *const (dyn Fn(usize) + Sync + '_) = job;
        // SAFETY: only the lifetime changes; see `Job`.
        let erased: *const (dyn Fn(usize) + Sync + 'static) =
            unsafe { std::mem::transmute(erased) };
        {
            let mut c = lock(&self.ctl);
            c.round += 1;
            c.job = Some(Job(erased));
            c.open = true;
        }
        self.wake.notify_all();
        job(0);
        // The coordinator takes the parts no helper has taken yet.
        loop {
            let k = self.next_part.fetch_add(1, SeqCst);
            if k >= workers {
                break;
            }
            job(k);
        }
        let mut c = lock(&self.ctl);
        c.open = false;
        while c.inside > 0 {
            c = c.wait(&self.left);
        }
        c.job = None;
    }

    /// One parallel round: `workers` of the team in all (the coordinator,
    /// the caller, included; at least 2) drain from the coordinator's
    /// stack `gray` until nothing is gray anywhere. Returns once every
    /// helper that entered the round has left it.
    pub(super) fn round(
        &self,
        heap: &RawHeap,
        gray: &mut GrayStack,
        workers: usize,
    ) -> RoundTotals {
        self.pool_len.store(0, Relaxed);
        lock(&self.pool).len = 0;
        // Helpers join counted idle; the coordinator starts busy.
        self.round_workers.store(workers, Relaxed);
        self.idle.store(workers - 1, SeqCst);
        self.done.store(false, Relaxed);
        self.overflow.store(false, Relaxed);
        self.objects.store(0, Relaxed);
        self.bytes.store(0, Relaxed);
        self.active_workers.store(0, Relaxed);
        self.shares.store(0, Relaxed);
        {
            let mut c = lock(&self.ctl);
            c.round += 1;
            c.heap = heap as *const RawHeap as usize;
            c.open = true;
        }
        self.wake.notify_all();
        let mut t = Tracer {
            heap,
            gray,
            objects: 0,
            bytes: 0,
        };
        t.work(self, false);
        // Close the round and wait for every helper that entered it.
        let mut c = lock(&self.ctl);
        c.open = false;
        while c.inside > 0 {
            c = c.wait(&self.left);
        }
        c.heap = 0;
        drop(c);
        RoundTotals {
            objects: self.objects.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            workers: self.active_workers.load(Relaxed),
            shares: self.shares.load(Relaxed),
            overflow: self.overflow.load(Relaxed),
        }
    }
}

/// Round control, under `MarkTeam::ctl`.
pub(super) struct Ctl {
    /// Round number, raised by the coordinator as it opens a round, so a
    /// helper woken late never works a round twice.
    pub(super) round: u64,
    /// The heap being marked (a `*const RawHeap`), while a round is open;
    /// 0 otherwise. Set and cleared by the coordinator.
    pub(super) heap: usize,
    /// Whether helpers may enter the current round.
    pub(super) open: bool,
    /// Helpers inside the open round; the coordinator waits for 0 after
    /// closing it before it reads the totals or lets the heap go.
    pub(super) inside: usize,
    /// Set by `MarkHelpers`' drop: helpers exit.
    pub(super) shutdown: bool,
    /// The job of a gather round (`MarkTeam::gather_round`), while one is
    /// open: each helper in it calls it with its index instead of
    /// draining. Set and cleared by the coordinator under this lock.
    pub(super) job: Option<Job>,
}

/// A gather round's job: a `&(dyn Fn(usize) + Sync)` of the coordinator's
/// frame, its lifetime erased. Valid while the round is open and until
/// every helper has left it, which the coordinator waits for before it
/// returns (and so before the closure is dropped).
#[derive(Clone, Copy)]
pub(super) struct Job(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY: the pointee is `Sync` and outlives every use (see `Job`).
unsafe impl Send for Job {}

/// The helper threads of one heap; joined on drop.
pub(crate) struct MarkHelpers {
    team: Option<Arc<MarkTeam>>,
    threads: Vec<JoinHandle<()>>,
    /// The process that spawned the helpers. In a child forked since, they
    /// do not exist: marking there is serial, and nothing waits for them.
    pid: i32,
}

impl MarkHelpers {
    /// Spawns `workers - 1` helpers, each with a gray stack of `cap` entries.
    pub fn new(workers: usize, cap: usize) -> std::io::Result<MarkHelpers> {
        if workers <= 1 {
            return Ok(MarkHelpers {
                team: None,
                threads: Vec::new(),
                pid: 0,
            });
        }
        let team = Arc::new(MarkTeam {
            workers,
            round_workers: AtomicUsize::new(workers),
            ctl: Mutex::new(Ctl {
                round: 0,
                heap: 0,
                open: false,
                inside: 0,
                shutdown: false,
                job: None,
            }),
            wake: Condvar::new(),
            left: Condvar::new(),
            pool: Mutex::new(GrayStack::new(cap)?),
            pool_len: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            done: AtomicBool::new(false),
            overflow: AtomicBool::new(false),
            objects: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            active_workers: AtomicUsize::new(0),
            shares: AtomicUsize::new(0),
            next_part: AtomicUsize::new(0),
        });
        let mut helpers = MarkHelpers {
            pid: nix::unistd::getpid().as_raw(),
            team: Some(team.clone()),
            threads: Vec::new(),
        };
        for i in 1..workers {
            let local = GrayStack::new(cap)?;
            let team = team.clone();
            let h = std::thread::Builder::new()
                .name(format!("pardon-mark-{i}"))
                .spawn(move || helper_main(&team, local, i))?;
            helpers.threads.push(h);
        }
        Ok(helpers)
    }

    pub fn workers(&self) -> usize {
        self.team().map_or(1, |t| t.workers)
    }

    /// The helper team, unless this is a child forked since it was spawned.
    pub fn team(&self) -> Option<&MarkTeam> {
        self.team
            .as_deref()
            .filter(|_| nix::unistd::getpid().as_raw() == self.pid)
    }
}

impl Drop for MarkHelpers {
    fn drop(&mut self) {
        if self.team.is_some() && self.team().is_none() {
            // A forked child: the helper threads were not copied into it;
            // joining them would wait for ever.
            for h in self.threads.drain(..) {
                std::mem::forget(h);
            }
            return;
        }
        if let Some(team) = &self.team {
            lock(&team.ctl).shutdown = true;
            team.wake.notify_all();
        }
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

/// Helper `index` (1 up; the coordinator is 0).
fn helper_main(team: &MarkTeam, mut local: GrayStack, index: usize) {
    let mut seen = 0u64;
    loop {
        let heap_addr = {
            let mut c = lock(&team.ctl);
            loop {
                if c.shutdown {
                    return;
                }
                if c.open && c.round != seen {
                    if index < team.round_workers.load(Relaxed) {
                        break;
                    }
                    // Not in this round.
                    seen = c.round;
                }
                c = c.wait(&team.wake);
            }
            seen = c.round;
            c.inside += 1;
            if let Some(job) = c.job {
                drop(c);
                // A gather round: parts claimed one at a time, each once.
                loop {
                    let k = team.next_part.fetch_add(1, SeqCst);
                    if k >= team.round_workers.load(Relaxed) {
                        break;
                    }
                    // SAFETY: see `Job`: the closure outlives the round,
                    // which the coordinator does not leave while we are
                    // inside it.
                    unsafe { (*job.0)(k) };
                }
                let mut c = lock(&team.ctl);
                c.inside -= 1;
                if c.inside == 0 {
                    team.left.notify_all();
                }
                continue;
            }
            c.heap
        };
        // SAFETY: the coordinator stored the address of the heap it is
        // marking before opening the round, and does not return from the
        // round (so the heap outlives it) until `inside` is back to zero.
        let heap = unsafe { &*(heap_addr as *const RawHeap) };
        local.len = 0;
        local.overflowed = false;
        let mut t = Tracer {
            heap,
            gray: &mut local,
            objects: 0,
            bytes: 0,
        };
        // A helper joins a round counted as idle (the coordinator set the
        // count so), holding nothing.
        t.work(team, true);
        let mut c = lock(&team.ctl);
        c.inside -= 1;
        if c.inside == 0 {
            team.left.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part of a gather round runs exactly once, whichever thread
    /// claims it and however late the helpers wake; a round with fewer
    /// parts than the team runs only those.
    #[test]
    fn each_part_of_a_gather_round_runs_once() {
        let helpers = MarkHelpers::new(4, 1024).unwrap();
        let team = helpers.team().unwrap();
        for parts in [1usize, 2, 3, 4] {
            let counts: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
            const ROUNDS: usize = 300;
            for _ in 0..ROUNDS {
                team.gather_round(
                    &|k| {
                        counts[k].fetch_add(1, SeqCst);
                    },
                    parts,
                );
            }
            for (k, c) in counts.iter().enumerate() {
                let want = if k < parts { ROUNDS } else { 0 };
                assert_eq!(c.load(SeqCst), want, "{parts} parts: part {k}");
            }
        }
    }
}
