//! The paired throughput estimator of the STW-latency runner (`suite`):
//! how much slower a kernel runs under a preemption mode than with no polls
//! and no stops, measured on the same threads in alternating phases.
//!
//! A call's rate is its units over the CPU time the thread
//! spent on it (`CLOCK_THREAD_CPUTIME_ID`, user and system: signal
//! delivery, the handler and `sigreturn` count; sleeping parked, or
//! waiting for a CPU another thread holds, does not). Mode calls count
//! only if they lie wholly inside their phase's probing window, so every
//! one was probed throughout; every call of about 10 ms holds about ten
//! stops, so the steady cost of running under a mode (polls, code the
//! compiler could not optimise, signal handling, the caches disturbed) is
//! in each. For each thread and mode phase, the median rate of its calls
//! is divided by the median rate of that thread's reference calls in the
//! two reference phases around it; `ratio` is the median of these
//! quotients over threads and phases. `ratio_wall` is the same from
//! units over wall time (time parked, waiting for the last thread,
//! included). `reference_spread` applies the same estimator to each
//! reference phase against the reference phases around it, where there is
//! nothing to find: its distance from 1 is the noise floor.
//!
//! Why interleave and pair: this machine class is shared, and a
//! memory-bound kernel's speed there flips between states tens of percent
//! apart every few hundred milliseconds (the same thread, the same loop:
//! 5.0 and 9.5 G units per CPU second in alternating stretches of `sum`),
//! and differs between processes. Separate reference runs, even bracketing
//! each mode run, disagreed by up to 60% on `base64` and `copy`; a pooled
//! median over a run flips with the state. Phases of about 100 ms, each
//! compared with its neighbours, mostly see one state, and the median over
//! phases drops those that straddle a change.

use std::time::{Duration, Instant};

/// Phases are numbered from 0; even ones run the reference loop (no polls,
/// no stops), odd ones the mode's loop, probed.
pub(crate) fn is_mode_phase(phase: u32) -> bool {
    phase % 2 == 1
}

/// One kernel call, as a thread logs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call {
    /// The phase it ran in (see [`is_mode_phase`]).
    pub phase: u32,
    pub start: Instant,
    pub end: Instant,
    pub units: u64,
    /// The thread's CPU time during the call.
    pub cpu: Duration,
}

pub(crate) type Log = Vec<Call>;

/// The calls of one thread that count: mode calls that lie wholly inside
/// their phase's probing window, and reference calls made inside the run
/// (after the settling time), in order.
pub(crate) fn classify(
    log: &[Call],
    t_start: Instant,
    t_end: Instant,
    windows: &[(u32, Instant, Instant)],
) -> Vec<Call> {
    log.iter()
        .filter(|c| {
            if is_mode_phase(c.phase) {
                windows
                    .iter()
                    .any(|&(p, w0, w1)| p == c.phase && c.start >= w0 && c.end <= w1)
            } else {
                c.start >= t_start && c.end <= t_end
            }
        })
        .copied()
        .collect()
}

/// The paired comparison of one thread's calls (see the module comment):
/// for each mode phase, its `(rate, rate_wall)` over those of the reference
/// phases just before and after it; and for each reference phase with
/// reference phases on both sides, its rate over theirs (the same estimator
/// with no difference to find: how far from 1 it lands is the noise).
pub(crate) fn phase_ratios(calls: &[Call]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let of = |phases: &[u32]| -> Vec<Call> {
        calls
            .iter()
            .filter(|c| phases.contains(&c.phase))
            .copied()
            .collect()
    };
    let last = calls.iter().map(|c| c.phase).max().unwrap_or(0);
    let (mut pairs, mut walls, mut nulls) = (Vec::new(), Vec::new(), Vec::new());
    for phase in 1..=last {
        let here = thread_rates(&of(&[phase]));
        let around = if is_mode_phase(phase) {
            thread_rates(&of(&[phase - 1, phase + 1]))
        } else if phase >= 2 {
            thread_rates(&of(&[phase - 2, phase + 2]))
        } else {
            None
        };
        let (Some((rate, wall)), Some((ref_rate, ref_wall))) = (here, around) else {
            continue;
        };
        if ref_rate <= 0.0 {
            continue;
        }
        if is_mode_phase(phase) {
            pairs.push(rate / ref_rate);
            if ref_wall > 0.0 {
                walls.push(wall / ref_wall);
            }
        } else if !of(&[phase + 2]).is_empty() {
            nulls.push(rate / ref_rate);
        }
    }
    (pairs, walls, nulls)
}

/// The median, or `None` for no values.
pub(crate) fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let k = v.len();
    Some(if k % 2 == 1 {
        v[k / 2]
    } else {
        (v[k / 2 - 1] + v[k / 2]) / 2.0
    })
}

/// One thread's `(rate, rate_wall)` from a set of its calls (see the module
/// comment); `None` without a call that took CPU time.
pub(crate) fn thread_rates(calls: &[Call]) -> Option<(f64, f64)> {
    // The rate of each call: its units over the CPU time it took; the
    // thread's rate is the median.
    let mut per_call: Vec<f64> = calls
        .iter()
        .filter(|c| !c.cpu.is_zero())
        .map(|c| c.units as f64 / c.cpu.as_secs_f64())
        .collect();
    let rate = median(&mut per_call)?;
    let units: u64 = calls.iter().map(|c| c.units).sum();
    let wall: f64 = calls.iter().map(|c| (c.end - c.start).as_secs_f64()).sum();
    let rate_wall = if wall > 0.0 { units as f64 / wall } else { 0.0 };
    Some((rate, rate_wall))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn call(start: Instant, wall_ms: u64, cpu_ms: u64, units: u64) -> Call {
        Call {
            phase: 1,
            start,
            end: start + ms(wall_ms),
            units,
            cpu: ms(cpu_ms),
        }
    }

    #[test]
    fn the_rate_is_the_median_call_per_cpu_second_and_the_wall_rate_is_all_in() {
        let t0 = Instant::now();
        // Calls of 1000 units taking 10 ms of wall time and 8 ms of CPU,
        // except the third, which took 50 ms of wall time and 30 of CPU
        // (disturbed).
        let calls: Vec<Call> = (0..5u64)
            .map(|i| {
                let (wall, cpu) = if i == 2 { (50, 30) } else { (10, 8) };
                call(t0 + ms(100 * i), wall, cpu, 1000)
            })
            .collect();
        let (rate, wall) = thread_rates(&calls).unwrap();
        assert!((rate - 1000.0 / 0.008).abs() < 1.0, "rate {rate}");
        // 5000 units over 90 ms of calls.
        assert!((wall - 5000.0 / 0.090).abs() < 1.0, "wall {wall}");
    }

    #[test]
    fn no_call_with_cpu_time_gives_no_rate() {
        let t0 = Instant::now();
        assert!(thread_rates(&[]).is_none());
        assert!(thread_rates(&[call(t0, 10, 0, 5)]).is_none());
    }

    #[test]
    fn mode_calls_count_only_wholly_inside_their_window_and_reference_calls_inside_the_run() {
        let t0 = Instant::now();
        let at = |m: u64| t0 + ms(m);
        let c = |phase, start, units| Call {
            phase,
            ..call(at(start), 10, 10, units)
        };
        let log = vec![
            c(0, 0, 1),   // before the run started: out
            c(0, 20, 2),  // reference: in
            c(1, 35, 3),  // mode, starts before its window: out
            c(1, 45, 4),  // mode, inside: in
            c(1, 55, 5),  // mode, ends after its window: out
            c(2, 70, 6),  // reference: in
            c(3, 85, 7),  // mode, inside its window: in
            c(4, 100, 8), // reference, ends after the run: out
        ];
        let windows = [(1, at(40), at(60)), (3, at(80), at(100))];
        let kept = classify(&log, at(15), at(105), &windows);
        assert_eq!(
            kept.iter().map(|c| c.units).collect::<Vec<_>>(),
            [2, 4, 6, 7]
        );
    }

    #[test]
    fn each_mode_phase_is_compared_with_the_reference_phases_around_it() {
        let t0 = Instant::now();
        // Two states of the machine: phases 0-2 run at 1000 units per 10 ms of
        // CPU, phases 3-6 twice as fast; the mode costs 2% in each.
        let mut log = Vec::new();
        for phase in 0..7u32 {
            for k in 0..5u64 {
                let fast = phase >= 3;
                let cpu_us = if is_mode_phase(phase) { 10_200 } else { 10_000 };
                let cpu_us = if fast { cpu_us / 2 } else { cpu_us };
                log.push(Call {
                    phase,
                    start: t0 + ms(100 * phase as u64 + 12 * k),
                    end: t0 + ms(100 * phase as u64 + 12 * k + 11),
                    units: 1000,
                    cpu: Duration::from_micros(cpu_us),
                });
            }
        }
        let (pairs, walls, nulls) = phase_ratios(&log);
        // Phase 1 sits in the slow state (ratio 0.98); phase 5 in the fast one
        // (0.98); phase 3 straddles the change (its neighbours are 2, slow,
        // and 4, fast): a pooled median would mix the states, the median of
        // the three pairs does not.
        assert_eq!(pairs.len(), 3);
        let mut p = pairs.clone();
        let m = median(&mut p).unwrap();
        assert!((m - 1.0 / 1.02).abs() < 1e-9, "{pairs:?}");
        assert_eq!(walls.len(), 3);
        // Reference phases 2 and 4 have reference phases on both sides.
        assert_eq!(nulls.len(), 2, "{nulls:?}");
    }

    #[test]
    fn the_median_of_nothing_is_none() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0]), Some(2.0));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
    }
}
