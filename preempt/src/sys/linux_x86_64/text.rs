//! Where the executable's own code lies, for deciding whether an
//! interrupted instruction is a point where a thread may be switched away
//! from (`yielding`).
//!
//! A thread interrupted inside a shared library (libc above all) may hold
//! one of its locks: `malloc`'s arena lock, `stdio`'s, the dynamic
//! loader's. If a scheduler switched that thread to other work, the first
//! of it to call the same function would wait for ever for a lock held by
//! code that cannot run until it finishes. Code linked into the executable
//! (Rust's own, std included) is the program's, and what the program does
//! there is its business (see the sched crate's safety contract). So the
//! rule is: yield only at an instruction inside an executable segment of
//! the main program. The vDSO, libc, libpthread, libgcc and anything
//! `dlopen`ed are all outside it.

use std::sync::OnceLock;

/// The lowest start and highest end of the main program's executable
/// `PT_LOAD` segments, or `(0, 0)` if they cannot be found.
pub(crate) fn exe_text_range() -> (usize, usize) {
    static RANGE: OnceLock<(usize, usize)> = OnceLock::new();
    *RANGE.get_or_init(find)
}

fn find() -> (usize, usize) {
    let mut range = (usize::MAX, 0usize);
    // SAFETY: the callback only reads the entries glibc passes it, for the
    // duration of the call, and writes through the pointer we give it.
    unsafe {
        libc::dl_iterate_phdr(
            Some(callback),
            &mut range as *mut (usize, usize) as *mut libc::c_void,
        )
    };
    if range.0 >= range.1 {
        (0, 0)
    } else {
        range
    }
}

/// Visits the first object only: glibc lists the main program first.
unsafe extern "C" fn callback(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: glibc passes a valid entry for the duration of the call, and
    // `data` is the `(usize, usize)` given to `dl_iterate_phdr`.
    let (info, range) = unsafe { (&*info, &mut *(data as *mut (usize, usize))) };
    for i in 0..info.dlpi_phnum as usize {
        // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
            let lo = info.dlpi_addr as usize + ph.p_vaddr as usize;
            let hi = lo + ph.p_memsz as usize;
            range.0 = range.0.min(lo);
            range.1 = range.1.max(hi);
        }
    }
    1 // stop after the main program
}
