//! # pardon-bench: measuring what "Pardon the Interruption" claims
//!
//! Go 1.14 stopped tight loops for the collector with a signal instead of
//! polls compiled into every loop. The claim has three parts, and this crate
//! measures each on the machine it runs on:
//!
//! 1. **Signal preemption stops call-free loops fast.** The STW-latency
//!    suite ([`suite`]) runs real loops ([`kernels`]) on mutator threads while
//!    a coordinator stops the world every millisecond, and records the time
//!    to safepoint: from the stop request to the last thread's
//!    acknowledgement.
//! 2. **It costs the loops nothing.** The same kernels run with no runtime at
//!    all (the reference), and each mode's mutator throughput is reported as
//!    a ratio to it. Back-edge polls (every iteration, or strip-mined every
//!    1000) are the baselines that do cost something.
//! 3. **Cooperative-only preemption waits for the loop.** In `coop` mode the
//!    threads poll only between kernel calls, as Go did up to 1.13, so the
//!    time to safepoint is the length of a call-free stretch.
//!
//! Before its runs the suite measures the machine's *floor* ([`floor`]): what
//! the kernel, and a hypervisor if there is one, charge for the steps any
//! signal stop is made of (a cross-CPU `tgkill`, a hand-off between threads
//! on one CPU, the wake of a thread on an idle CPU). A time to safepoint is
//! read against them: on bare metal they are a few microseconds in all, in
//! a VM whose interrupts are exits they are most of a stop.
//!
//! The binaries: `stw-latency` (the suite; `--help`), `binary-trees` and
//! `gcbench` (peer GC benchmarks, in every preemption mode). Criterion
//! microbenchmarks live under `benches/`, one file per area.
//!
//! Invariant worth knowing when reading results: the coordinator is not an
//! attached thread and holds the world only for the stop itself (no
//! collection work), so `restart_ns` is the whole stop-to-restart cost of the
//! mechanism, and time to safepoint is the only part a mode can change much.

pub mod cli;
pub mod floor;
pub mod goroutine_heap;
pub mod goroutine_suite;
pub mod kernels;
pub mod parked;
pub mod report;
pub mod spinners;
pub mod suite;
mod throughput;
pub mod trees;

/// Peak resident set size of this process so far, in bytes (Linux `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
