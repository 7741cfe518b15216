//! A cache prefetch hint, for walks over many goroutines whose state is
//! cold (a stopped world's report of every parked goroutine).

/// Asks the CPU to bring the line holding `addr` into its caches. Only a
/// hint: any address is allowed, mapped or not, and nothing is read.
#[inline(always)]
pub(crate) fn prefetch(addr: usize) {
    // SAFETY: PREFETCHT0 never faults and has no architectural effect.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    };
}
