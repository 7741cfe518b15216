//! The machine's floor: what the kernel (and, in a VM, the hypervisor)
//! charges for the steps a signal stop is made of, measured without pardon.
//!
//! A stop of two call-free spinners on two CPUs, with the coordinator woken
//! on one of them, is made of kernel paths that no user-space design can
//! shorten: the coordinator's `tgkill` to the thread running on the other
//! CPU (an inter-processor interrupt), the switch from the sleeping
//! coordinator to the spinner queued on its own CPU, signal delivery to each,
//! and the wake-up of the coordinator by the last acknowledgement. Their
//! costs differ by an order of magnitude between bare metal and a VM whose
//! interrupts are VM exits, so a time to safepoint means little without
//! them. `stw-latency` measures them before its runs and prints them with
//! its machine description (`"machine": {"floor": {...}}` in the JSON).
//!
//! Each figure is a median over `samples` repetitions, with the threads
//! involved pinned (a thread of this module pins only itself):
//!
//! - `syscall_ns`: a trivial system call (`getppid`), the entry and exit
//!   every other step includes.
//! - `signal_send_ns`: the sender's time inside `tgkill` to a thread spinning
//!   on another CPU; `signal_deliver_ns`: from just before that `tgkill` to
//!   the first instruction of the target's handler.
//! - `handoff_ns`: half of a futex ping-pong between two threads pinned to
//!   one CPU: one thread wakes the other and sleeps, the other runs.
//! - `wake_remote_ns`: from just before a `FUTEX_WAKE` to the woken thread
//!   running, the woken thread asleep on a CPU that has been idle for
//!   [`WARM_IDLE`] (about a stop's length, as at a restart);
//!   `wake_send_ns`: the waker's time inside that `FUTEX_WAKE`;
//!   `wake_remote_cold_ns`: the same wake after [`COLD_IDLE`]. On a VM the
//!   two differ where the host stops polling a halted virtual CPU and
//!   deschedules it (on the machine of `docs/benchmarks.md`, 6-10 µs up to
//!   150 µs of idleness, 21-34 µs from 200 µs on).
//! - `signal_victim_ns`: the time a signal with an empty handler takes from
//!   the thread it interrupts on another CPU: that thread reads the clock in
//!   a tight loop, and the gap between two readings across which its
//!   handler ran is what the signal cost it (the interrupt, delivery, the
//!   handler, `sigreturn`). What a signal stop costs a running mutator
//!   cannot be less (it also parks and is woken), so at one stop a
//!   millisecond it is a floor for the signal modes' throughput loss.
//!
//! - `core_to_core_ns`: a round trip of one cache line between two threads
//!   pinned to two CPUs, each spinning until the other has written it: what
//!   any hand-over between workers on those CPUs pays at least twice (a
//!   goroutine spawned on one and run on the other, a lock taken on both).
//!   On the VM of `docs/benchmarks.md` it flips, within seconds and with
//!   nothing else running, between about 55 ns and about 450 ns (the host
//!   presumably placing the two virtual CPUs on cores that share a cache,
//!   then on cores that do not), and every figure of work handed between two workers
//!   flips with it, Go's too: such figures are compared only in the same
//!   state. [`core_to_core_ns`] measures it alone, for a benchmark to
//!   report beside its figure.
//!
//! The cross-CPU figures need two CPUs this process may run on; with one
//! they are `None` (`null` in JSON).
//!
//! The signal is `SIGUSR2`, whose previous disposition is restored
//! afterwards; nothing else in the suite uses it. Measurements in one
//! process take turns (the handler's counters are process-wide).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The measured costs, in nanoseconds (medians).
#[derive(Clone, Copy, Debug, Default)]
pub struct Floor {
    /// Samples per figure.
    pub samples: usize,
    /// A trivial system call.
    pub syscall_ns: u64,
    /// Sender's time in `tgkill` to a thread running on another CPU.
    pub signal_send_ns: Option<u64>,
    /// `tgkill` to the target's handler running, on another CPU.
    pub signal_deliver_ns: Option<u64>,
    /// One futex hand-off between two threads on one CPU.
    pub handoff_ns: u64,
    /// `FUTEX_WAKE` to the woken thread running on an idle CPU.
    pub wake_remote_ns: Option<u64>,
    /// Waker's time in that `FUTEX_WAKE`.
    pub wake_send_ns: Option<u64>,
    /// The same wake after the sleeper's CPU idled for [`COLD_IDLE`].
    pub wake_remote_cold_ns: Option<u64>,
    /// The time a signal with an empty handler takes from the thread it
    /// interrupts on another CPU.
    pub signal_victim_ns: Option<u64>,
    /// A cache line's round trip between two CPUs (see the module
    /// comment).
    pub core_to_core_ns: Option<u64>,
}

/// How long the sleeper's CPU idles before a `wake_remote_ns` wake: about a
/// stop's length, as for threads woken at a restart.
pub const WARM_IDLE: Duration = Duration::from_micros(50);
/// How long it idles before a `wake_remote_cold_ns` wake: longer than a
/// hypervisor's halt polling (KVM's default window is 200 µs), after which
/// a halted virtual CPU's host thread is descheduled.
pub const COLD_IDLE: Duration = Duration::from_millis(1);

impl Floor {
    /// The floor as the JSON object stored under `machine.floor`.
    pub fn to_json(&self) -> Value {
        json!({
            "samples": self.samples,
            "syscall_ns": self.syscall_ns,
            "signal_send_ns": self.signal_send_ns,
            "signal_deliver_ns": self.signal_deliver_ns,
            "handoff_ns": self.handoff_ns,
            "wake_remote_ns": self.wake_remote_ns,
            "wake_send_ns": self.wake_send_ns,
            "wake_remote_cold_ns": self.wake_remote_cold_ns,
            "signal_victim_ns": self.signal_victim_ns,
            "core_to_core_ns": self.core_to_core_ns,
        })
    }

    /// One line for humans.
    pub fn summary(&self) -> String {
        let us = |n: u64| format!("{:.1} µs", n as f64 / 1e3);
        let opt = |n: Option<u64>| n.map_or_else(|| "n/a (one CPU)".to_string(), us);
        format!(
            "machine floor (median of {}): system call {}; tgkill to a thread running on another CPU {} (sender), its handler entered after {}; hand-off on one CPU {}; wake of a thread on a CPU idle for {:?} {} ({} for the waker), for {:?} {}; a signal takes {} from the thread it interrupts; a cache line's round trip between two CPUs {}",
            self.samples,
            us(self.syscall_ns),
            opt(self.signal_send_ns),
            opt(self.signal_deliver_ns),
            us(self.handoff_ns),
            WARM_IDLE,
            opt(self.wake_remote_ns),
            opt(self.wake_send_ns),
            COLD_IDLE,
            opt(self.wake_remote_cold_ns),
            opt(self.signal_victim_ns),
            self.core_to_core_ns
                .map_or_else(|| "n/a (one CPU)".to_string(), |n| format!("{n} ns")),
        )
    }
}

/// Measures the floor with `samples` repetitions per figure (at least 1).
/// Takes about `samples` x 2.2 ms.
pub fn measure(samples: usize) -> Result<Floor, String> {
    if samples == 0 {
        return Err("floor: samples must be at least 1".into());
    }
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cpus = allowed_cpus()?;
    let mut f = Floor {
        samples,
        syscall_ns: syscall_cost(samples),
        handoff_ns: handoff(cpus[0], samples)?,
        ..Floor::default()
    };
    if let [a, b, ..] = cpus[..] {
        let (send, deliver) = signal_remote(a, b, samples)?;
        f.signal_send_ns = Some(send);
        f.signal_deliver_ns = Some(deliver);
        let (wake, send) = wake_remote(a, b, samples, WARM_IDLE)?;
        f.wake_remote_ns = Some(wake);
        f.wake_send_ns = Some(send);
        f.wake_remote_cold_ns = Some(wake_remote(a, b, samples, COLD_IDLE)?.0);
        f.signal_victim_ns = Some(signal_victim(a, b, samples)?);
        f.core_to_core_ns = Some(round_trips(a, b, CORE_TO_CORE_TRIPS)?);
    }
    Ok(f)
}

/// Round trips a `core_to_core_ns` figure averages over (about 1 ms in
/// the fast state, 9 ms in the slow one).
pub const CORE_TO_CORE_TRIPS: u64 = 20_000;

/// A cache line's round trip between the first two CPUs this process may
/// run on, in nanoseconds (the mean of `trips`), or `None` with one CPU
/// (see the module comment). Pins only threads of its own.
pub fn core_to_core_ns(trips: u64) -> Result<Option<u64>, String> {
    if trips == 0 {
        return Err("floor: round trips must be at least 1".into());
    }
    match allowed_cpus()?[..] {
        [a, b, ..] => round_trips(a, b, trips).map(Some),
        _ => Ok(None),
    }
}

/// `trips` round trips of one cache line between a thread on CPU `a` and
/// one on CPU `b`: `a` writes an odd count, `b` answers with the next even
/// one. Mean nanoseconds a round trip.
fn round_trips(a: usize, b: usize, trips: u64) -> Result<u64, String> {
    #[repr(align(128))]
    struct Line(AtomicU64);
    /// Spins until the line holds `v` (the clock read only every 4,096
    /// looks, not to slow the answer down; 5 s at most, as `spin_until`).
    fn await_value(line: &Line, v: u64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut looks = 0u32;
        while line.0.load(Ordering::Acquire) != v {
            looks = looks.wrapping_add(1);
            if looks.is_multiple_of(4096) && Instant::now() > deadline {
                return Err("floor: a core-to-core round trip did not end within 5 s".into());
            }
            std::hint::spin_loop();
        }
        Ok(())
    }
    let line = Arc::new(Line(AtomicU64::new(0)));
    let l2 = line.clone();
    let answer = std::thread::spawn(move || -> Result<(), String> {
        pin(b)?;
        for i in 0..trips {
            await_value(&l2, 2 * i + 1)?;
            l2.0.store(2 * i + 2, Ordering::Release);
        }
        Ok(())
    });
    let asked = std::thread::spawn(move || -> Result<Duration, String> {
        pin(a)?;
        let t0 = Instant::now();
        for i in 0..trips {
            line.0.store(2 * i + 1, Ordering::Release);
            await_value(&line, 2 * i + 2)?;
        }
        Ok(t0.elapsed())
    })
    .join();
    match (asked, answer.join()) {
        (Ok(Ok(d)), Ok(Ok(()))) => Ok((d.as_nanos() / u128::from(trips)) as u64),
        (Ok(Err(e)), _) | (_, Ok(Err(e))) => Err(e),
        _ => Err("floor: a core-to-core thread panicked".into()),
    }
}

/// CLOCK_MONOTONIC in ns; async-signal-safe (`clock_gettime` is on POSIX's
/// list), so the handler below may call it.
fn now_ns() -> u64 {
    // CLOCK_MONOTONIC exists on every Linux; a failure reads as time 0.
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> Result<Vec<usize>, String> {
    use nix::sched::{sched_getaffinity, CpuSet};
    let set = sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map_err(|e| format!("floor: sched_getaffinity: {e}"))?;
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&i| set.is_set(i).unwrap_or(false))
        .collect();
    if cpus.is_empty() {
        return Err("floor: this process may run on no CPU".into());
    }
    Ok(cpus)
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> Result<(), String> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)
        .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set))
        .map_err(|e| format!("floor: pinning to CPU {cpu}: {e}"))
}

fn gettid() -> i32 {
    nix::unistd::gettid().as_raw()
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    pardon_preempt::futex::wait(word, expected, None)
}

fn futex_wake(word: &AtomicU32) {
    pardon_preempt::futex::wake(word, 1)
}

/// Spins until `cond` or a generous bound, so that a lost wake-up is an
/// error rather than a hang.
fn spin_until(what: &str, cond: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        if Instant::now() > deadline {
            return Err(format!("floor: {what} did not happen within 5 s"));
        }
        std::hint::spin_loop();
    }
    Ok(())
}

fn syscall_cost(samples: usize) -> u64 {
    const BATCH: u64 = 200;
    let v = (0..samples.clamp(5, 100))
        .map(|_| {
            let t = now_ns();
            for _ in 0..BATCH {
                // SAFETY: getppid takes no arguments and cannot fail.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
            (now_ns() - t) / BATCH
        })
        .collect();
    median(v)
}

/// Half a futex round trip between two threads pinned to `cpu`.
fn handoff(cpu: usize, samples: usize) -> Result<u64, String> {
    // Even: the main side's turn; odd: the partner's. Both wait on it.
    let turn = Arc::new(AtomicU32::new(0));
    let t2 = Arc::clone(&turn);
    let rounds = samples as u32;
    // A thread that fails to pin still plays its part (and reports the
    // failure afterwards), so that its partner cannot wait forever.
    let partner = std::thread::spawn(move || -> Result<(), String> {
        let pinned = pin(cpu);
        for i in 0..rounds {
            let mine = 2 * i + 1;
            while t2.load(Ordering::Acquire) != mine {
                futex_wait(&t2, mine - 1);
            }
            t2.store(mine + 1, Ordering::Release);
            futex_wake(&t2);
        }
        pinned
    });
    let main = std::thread::spawn(move || -> Result<Vec<u64>, String> {
        let pinned = pin(cpu);
        let mut v = Vec::with_capacity(rounds as usize);
        for i in 0..rounds {
            let t = now_ns();
            turn.store(2 * i + 1, Ordering::Release);
            futex_wake(&turn);
            while turn.load(Ordering::Acquire) != 2 * i + 2 {
                futex_wait(&turn, 2 * i + 1);
            }
            v.push((now_ns() - t) / 2);
        }
        pinned.map(|()| v)
    });
    let v = main
        .join()
        .map_err(|_| "floor: hand-off thread panicked")??;
    partner
        .join()
        .map_err(|_| "floor: hand-off partner panicked")??;
    Ok(median(v))
}

/// Set by the handler: when it ran (CLOCK_MONOTONIC ns).
static HANDLED_AT: AtomicU64 = AtomicU64::new(0);
/// Set by the handler: how many times it ran.
static HANDLED: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigusr2(_sig: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    let errno = unsafe { *libc::__errno_location() };
    HANDLED_AT.store(now_ns(), Ordering::SeqCst);
    HANDLED.fetch_add(1, Ordering::SeqCst);
    // SAFETY: as above; restores what the interrupted code saw.
    unsafe { *libc::__errno_location() = errno };
}

/// Restores SIGUSR2's previous disposition when dropped.
struct Handler(nix::sys::signal::SigAction);

impl Handler {
    fn install() -> Result<Handler, String> {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        let sa = SigAction::new(
            SigHandler::Handler(on_sigusr2),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler only touches atomics and saves and restores
        // errno (async-signal-safe); the previous action is restored on drop.
        let old = unsafe { sigaction(Signal::SIGUSR2, &sa) }
            .map_err(|e| format!("floor: sigaction(SIGUSR2): {e}"))?;
        Ok(Handler(old))
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        // SAFETY: restores the disposition `install` replaced.
        let _ = unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGUSR2, &self.0) };
    }
}

/// `tgkill` from CPU `a` to a thread spinning on CPU `b`: (send, deliver).
fn signal_remote(a: usize, b: usize, samples: usize) -> Result<(u64, u64), String> {
    let _h = Handler::install()?;
    let stop = Arc::new(AtomicBool::new(false));
    let tid = Arc::new(AtomicU64::new(0));
    let (s2, t2) = (Arc::clone(&stop), Arc::clone(&tid));
    let spinner = std::thread::spawn(move || -> Result<(), String> {
        pin(b)?;
        t2.store(gettid() as u64, Ordering::SeqCst);
        let mut x = 1u64;
        while !s2.load(Ordering::Relaxed) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            std::hint::black_box(x);
        }
        Ok(())
    });
    let run = || -> Result<(u64, u64), String> {
        pin(a)?;
        spin_until("the spinner's start", || tid.load(Ordering::SeqCst) != 0)?;
        let target = tid.load(Ordering::SeqCst) as i32;
        let pid = nix::unistd::getpid().as_raw();
        let (mut send, mut deliver) = (Vec::new(), Vec::new());
        for _ in 0..samples {
            // Let the spinner run undisturbed and this CPU go idle, as a
            // coordinator's does between stops.
            std::thread::sleep(Duration::from_micros(300));
            let before = HANDLED.load(Ordering::SeqCst);
            let t0 = now_ns();
            // SAFETY: tgkill takes plain integers; `target` is a live thread
            // of this process (it exits only after `stop` is set below).
            let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid, target, libc::SIGUSR2) };
            let t1 = now_ns();
            if rc != 0 {
                return Err(format!(
                    "floor: tgkill: {}",
                    std::io::Error::last_os_error()
                ));
            }
            spin_until("signal delivery", || {
                HANDLED.load(Ordering::SeqCst) != before
            })?;
            send.push(t1 - t0);
            deliver.push(HANDLED_AT.load(Ordering::SeqCst).saturating_sub(t0));
        }
        Ok((median(send), median(deliver)))
    };
    // The measuring side runs on its own thread so that only it is pinned.
    let r = std::thread::scope(|s| s.spawn(run).join());
    stop.store(true, Ordering::Relaxed);
    spinner.join().map_err(|_| "floor: spinner panicked")??;
    r.map_err(|_| "floor: signal thread panicked".to_string())?
}

/// `FUTEX_WAKE` from CPU `a` to a thread asleep on CPU `b`: (wake, send).
fn wake_remote(a: usize, b: usize, samples: usize, idle: Duration) -> Result<(u64, u64), String> {
    // The sleeper waits while the word is even; the waker makes it odd.
    let word = Arc::new(AtomicU32::new(0));
    let woke_at = Arc::new(AtomicU64::new(0));
    let asleep = Arc::new(AtomicU32::new(0));
    let abort = Arc::new(AtomicBool::new(false));
    let (w2, at2, sl2, ab2) = (
        Arc::clone(&word),
        Arc::clone(&woke_at),
        Arc::clone(&asleep),
        Arc::clone(&abort),
    );
    let rounds = samples as u32;
    let sleeper = std::thread::spawn(move || -> Result<(), String> {
        pin(b)?;
        for i in 0..rounds {
            let even = 2 * i;
            sl2.store(i + 1, Ordering::SeqCst);
            while w2.load(Ordering::Acquire) == even && !ab2.load(Ordering::SeqCst) {
                futex_wait(&w2, even);
            }
            if ab2.load(Ordering::SeqCst) {
                return Ok(());
            }
            at2.store(now_ns(), Ordering::SeqCst);
            // Let the waker see the wake before the next round starts.
            w2.store(even + 2, Ordering::Release);
        }
        Ok(())
    });
    let run = || -> Result<(u64, u64), String> {
        pin(a)?;
        let (mut wake, mut send) = (Vec::new(), Vec::new());
        for i in 0..rounds {
            spin_until("the sleeper's turn", || {
                asleep.load(Ordering::SeqCst) == i + 1
            })?;
            // Give it time to be asleep in the kernel and its CPU to idle
            // for `idle` (spinning here, so that only its CPU idles).
            let until = Instant::now() + idle;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            woke_at.store(0, Ordering::SeqCst);
            let t0 = now_ns();
            word.store(2 * i + 1, Ordering::Release);
            futex_wake(&word);
            let t1 = now_ns();
            spin_until("the wake", || word.load(Ordering::Acquire) == 2 * i + 2)?;
            wake.push(woke_at.load(Ordering::SeqCst).saturating_sub(t0));
            send.push(t1 - t0);
        }
        Ok((median(wake), median(send)))
    };
    let r = std::thread::scope(|s| s.spawn(run).join());
    if !matches!(r, Ok(Ok(_))) {
        // Release the sleeper, so that joining it cannot hang.
        abort.store(true, Ordering::SeqCst);
        word.fetch_add(1, Ordering::SeqCst);
        futex_wake(&word);
    }
    sleeper.join().map_err(|_| "floor: sleeper panicked")??;
    r.map_err(|_| "floor: waking thread panicked".to_string())?
}

/// A thread spinning on CPU `b`, reading the clock in a tight loop, while
/// CPU `a` signals it `samples` times: the median gap in its timeline
/// across an iteration during which its handler ran, which is the time the
/// signal took from it (the interrupt, signal delivery, the empty handler,
/// `sigreturn`), plus one iteration of the loop (tens of ns).
fn signal_victim(a: usize, b: usize, samples: usize) -> Result<u64, String> {
    let _h = Handler::install()?;
    let stop = Arc::new(AtomicBool::new(false));
    let tid = Arc::new(AtomicU64::new(0));
    let (s2, t2) = (Arc::clone(&stop), Arc::clone(&tid));
    let victim = std::thread::spawn(move || -> Result<Vec<u64>, String> {
        pin(b)?;
        let mut gaps = Vec::with_capacity(samples);
        let mut seen = HANDLED.load(Ordering::SeqCst);
        t2.store(gettid() as u64, Ordering::SeqCst);
        let mut last = now_ns();
        // The handler ran somewhere between the previous load of HANDLED
        // and this one, which spans the gap before this reading and the
        // one after it: take the larger.
        let mut pending: Option<u64> = None;
        while !s2.load(Ordering::Relaxed) {
            let t = now_ns();
            if let Some(g) = pending.take() {
                gaps.push(g.max(t - last));
            }
            let h = HANDLED.load(Ordering::Relaxed);
            if h != seen {
                seen = h;
                pending = Some(t - last);
            }
            last = t;
        }
        Ok(gaps)
    });
    let run = || -> Result<(), String> {
        pin(a)?;
        spin_until("the victim's start", || tid.load(Ordering::SeqCst) != 0)?;
        let target = tid.load(Ordering::SeqCst) as i32;
        let pid = nix::unistd::getpid().as_raw();
        for _ in 0..samples {
            std::thread::sleep(Duration::from_micros(300));
            let before = HANDLED.load(Ordering::SeqCst);
            // SAFETY: as in `signal_remote`; the victim exits only after
            // `stop` is set below.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, target, libc::SIGUSR2) };
            spin_until("signal delivery", || {
                HANDLED.load(Ordering::SeqCst) != before
            })?;
        }
        Ok(())
    };
    let r = std::thread::scope(|s| s.spawn(run).join());
    stop.store(true, Ordering::Relaxed);
    let gaps = victim.join().map_err(|_| "floor: victim panicked")??;
    r.map_err(|_| "floor: signalling thread panicked".to_string())??;
    if gaps.is_empty() {
        return Err("floor: the victim saw none of its signals".into());
    }
    Ok(median(gaps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "signals, affinity and futexes are outside Miri")]
    fn the_floor_is_measured_and_ordered_sensibly() {
        let f = measure(20).expect("floor");
        assert_eq!(f.samples, 20);
        assert!(f.syscall_ns > 0 && f.handoff_ns > 0, "{f:?}");
        // A hand-off includes at least two system calls' entries.
        assert!(f.handoff_ns >= f.syscall_ns, "{f:?}");
        if let (Some(send), Some(deliver)) = (f.signal_send_ns, f.signal_deliver_ns) {
            // The handler cannot run before the sender entered tgkill.
            assert!(deliver > 0 && send > 0, "{f:?}");
            assert!(f.wake_remote_ns.unwrap() > 0, "{f:?}");
            // Delivery, an empty handler and sigreturn take far more than
            // 100 ns anywhere; less means the gap was taken on the wrong
            // side of the handler (one loop iteration is ~30 ns).
            assert!(f.signal_victim_ns.unwrap() > 100, "{f:?}");
            // A line's round trip between two CPUs takes more than a
            // nanosecond anywhere (0 means the mean was not taken).
            assert!(f.core_to_core_ns.unwrap() > 0, "{f:?}");
        }
        let j = f.to_json();
        assert_eq!(j["samples"], 20);
        assert!(f.summary().contains("machine floor"));
    }

    #[test]
    fn zero_samples_is_an_error() {
        assert!(measure(0).unwrap_err().contains("at least 1"));
        assert!(core_to_core_ns(0).unwrap_err().contains("at least 1"));
    }

    /// With two CPUs the round trip is measured (and is `None` with one).
    #[test]
    fn core_to_core_is_measured_with_two_cpus() {
        let two = allowed_cpus().unwrap().len() >= 2;
        let r = core_to_core_ns(1000).expect("core to core");
        assert_eq!(r.is_some(), two, "{r:?}");
        assert!(r.is_none_or(|n| n > 0), "{r:?}");
    }
}
