//! Polls: where a goroutine gives up its worker in poll mode once its
//! slice has run out (the back-edge checks a compiler without signal
//! preemption would put in every loop), as a function and as
//! [`PollStrategy`] types that loop code takes as a type parameter.

use std::sync::atomic::Ordering::Relaxed;

use pardon_preempt::PollStrategy;

use crate::worker::{goroutine, poll_slow};

/// A poll: if `sysmon` has asked the calling goroutine's slice to end
/// (poll mode), the goroutine goes to the back of its worker's queue (of
/// the global queue in a migrating runtime).
/// A load and a predicted branch otherwise; nothing outside a goroutine.
/// Also a point where a stop of the world may take the worker.
#[inline]
pub fn poll() {
    if let Some(mut me) = goroutine() {
        let wanted = me.proc_().want_yield.load(Relaxed);
        if wanted != 0 {
            poll_slow(me, wanted);
            // Perhaps resumed on another worker (a migrating runtime):
            // the record to poll is that one's.
            me = match goroutine() {
                Some(now) => now,
                None => return,
            };
        }
        if let Some(a) = me.attached() {
            a.poll();
        }
    }
}

/// Polls on every back edge.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoroutinePoll;

impl PollStrategy for GoroutinePoll {
    #[inline(always)]
    fn tick(&mut self) {
        poll();
    }
    #[inline(always)]
    fn between_calls(&mut self) {
        poll();
    }
}

/// Polls once every `N` back edges (a strip-mined loop: a counter instead
/// of a poll on most iterations).
#[derive(Clone, Copy, Debug, Default)]
pub struct GoroutineStripMined<const N: u32> {
    left: u32,
}

impl<const N: u32> PollStrategy for GoroutineStripMined<N> {
    const STRIP: usize = N as usize;

    #[inline(always)]
    fn tick(&mut self) {
        if self.left == 0 {
            self.left = N;
            poll();
        }
        self.left -= 1;
    }
    #[inline(always)]
    fn end_strip(&mut self) {
        poll();
    }
    #[inline(always)]
    fn between_calls(&mut self) {
        poll();
    }
}
