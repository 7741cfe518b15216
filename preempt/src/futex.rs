//! Futex wait and wake on an [`AtomicU32`], for code built on pardon that
//! parks threads the way the registry does (the benchmark suite's floor
//! measurements, a scheduler's idle threads). Raw system calls:
//! async-signal-safe, allocation-free.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `*word == expected`, for at most `timeout` if one is given.
/// Returns early on a wake, a signal or a spurious wake-up: callers loop,
/// rechecking their condition.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    crate::sys::futex_wait(word, expected, timeout)
}

/// Wakes up to `n` threads sleeping on `word`.
pub fn wake(word: &AtomicU32, n: i32) {
    crate::sys::futex_wake(word, n)
}
