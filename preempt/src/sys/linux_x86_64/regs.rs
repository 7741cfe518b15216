//! Register sets of a stopped thread: the general registers in one fixed
//! order, and the extended state as an XSAVE image in the standard
//! (non-compacted) format, whichever route the thread stopped by.
//!
//! The three routes produce the same [`Gprs`] array:
//! - call injection: the trampoline pushed every register (see `trampoline`);
//! - in-handler park: the kernel's `ucontext` holds them;
//! - polls and safe regions: [`spill_callee_saved`] stores the callee-saved
//!   ones (the caller-saved ones are dead across a call, or spilled to the
//!   stack by the compiler, where the stack scan finds them).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// Number of general-register words reported per thread.
pub const NGPRS: usize = 18;

/// Names of the words in a [`Gprs`] array, in order.
pub const GPR_NAMES: [&str; NGPRS] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip", "rflags",
];

/// General registers as words, in [`GPR_NAMES`] order.
pub type Gprs = [u64; NGPRS];

pub(crate) const RSP: usize = 7;

/// The frame the trampoline pushes, lowest address first. Its field order is
/// the reverse of the push order in `trampoline.rs`; a test checks the two
/// against each other by preempting a thread whose registers hold known values.
#[repr(C)]
pub(crate) struct TrampolineFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub rflags: u64,
    pub rbp: u64,
    pub rip: u64,
}

impl TrampolineFrame {
    /// The registers as they were at the interrupted instruction. The stack
    /// pointer is derived: above the frame sit the return address slot, then
    /// the 128-byte red zone the handler skipped, then the interrupted SP.
    pub(crate) fn to_gprs(&self) -> Gprs {
        let rip_slot = &self.rip as *const u64 as u64;
        let rsp = rip_slot + 8 + 128;
        [
            self.rax,
            self.rbx,
            self.rcx,
            self.rdx,
            self.rsi,
            self.rdi,
            self.rbp,
            rsp,
            self.r8,
            self.r9,
            self.r10,
            self.r11,
            self.r12,
            self.r13,
            self.r14,
            self.r15,
            self.rip,
            self.rflags,
        ]
    }
}

/// Reads the general registers out of a kernel `ucontext_t`.
///
/// # Safety
/// `uc` must point to the live `ucontext_t` the kernel passed to a signal
/// handler on this thread.
pub(crate) unsafe fn gprs_from_ucontext(uc: *const libc::ucontext_t) -> Gprs {
    // SAFETY: the caller guarantees `uc` is a live ucontext; gregs is a plain
    // array of 23 i64 indexed by the REG_* constants.
    let g = unsafe { &(*uc).uc_mcontext.gregs };
    let r = |i: libc::c_int| g[i as usize] as u64;
    [
        r(libc::REG_RAX),
        r(libc::REG_RBX),
        r(libc::REG_RCX),
        r(libc::REG_RDX),
        r(libc::REG_RSI),
        r(libc::REG_RDI),
        r(libc::REG_RBP),
        r(libc::REG_RSP),
        r(libc::REG_R8),
        r(libc::REG_R9),
        r(libc::REG_R10),
        r(libc::REG_R11),
        r(libc::REG_R12),
        r(libc::REG_R13),
        r(libc::REG_R14),
        r(libc::REG_R15),
        r(libc::REG_RIP),
        r(libc::REG_EFL),
    ]
}

/// The kernel's XSAVE image in a signal context: `(pointer, length)`. The
/// kernel writes the standard format and describes it in the software-reserved
/// bytes 464..512 of the legacy area (`struct _fpx_sw_bytes`); without the
/// magic only the 512-byte FXSAVE area is valid.
///
/// # Safety
/// `uc` must point to the live `ucontext_t` of a signal handler on this thread.
pub(crate) unsafe fn xsave_from_ucontext(uc: *const libc::ucontext_t) -> (usize, usize) {
    const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
    // SAFETY: caller contract; `fpregs` is null or points to the fpstate
    // the kernel placed in the signal frame, at least 512 bytes long.
    let fp = unsafe { (*uc).uc_mcontext.fpregs } as usize;
    if fp == 0 {
        return (0, 0);
    }
    // SAFETY: bytes 464..476 of the 512-byte legacy area are inside the image.
    let (magic, xstate_size) = unsafe {
        (
            std::ptr::read_unaligned((fp + 464) as *const u32),
            std::ptr::read_unaligned((fp + 464 + 16) as *const u32),
        )
    };
    if magic == FP_XSTATE_MAGIC1 && xstate_size as usize >= 576 {
        (fp, xstate_size as usize)
    } else {
        (fp, 512)
    }
}

/// Offsets and sizes of the XSAVE components this crate reports as words.
#[derive(Clone, Copy, Debug)]
pub(crate) struct XsaveLayout {
    /// Bytes XSAVE writes for the features enabled in XCR0 (CPUID 0xD.0 EBX).
    pub size: u32,
    /// `(component bit, offset, length)` for AVX (2), opmask (5), ZMM_Hi256 (6)
    /// and Hi16_ZMM (7), where present.
    pub comps: [(u32, u32, u32); 4],
    pub ncomps: usize,
    pub has_xsave: bool,
}

static LAYOUT: OnceLock<XsaveLayout> = OnceLock::new();

/// The XSAVE area size the trampoline reserves; read by the assembly.
pub(crate) static XSAVE_SIZE: AtomicU32 = AtomicU32::new(0);

fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = std::arch::x86_64::__cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Reads the XSAVE geometry from CPUID once. Called before the first handler
/// is installed, never from a handler.
pub(crate) fn xsave_layout() -> XsaveLayout {
    *LAYOUT.get_or_init(|| {
        let (_, _, ecx1, _) = cpuid(1, 0);
        let has_xsave = ecx1 & (1 << 26) != 0 && ecx1 & (1 << 27) != 0;
        let mut l = XsaveLayout {
            size: 512,
            comps: [(0, 0, 0); 4],
            ncomps: 0,
            has_xsave,
        };
        if has_xsave {
            let (xcr0_lo, size, _, _) = cpuid(0xd, 0);
            l.size = size;
            for bit in [2u32, 5, 6, 7] {
                if xcr0_lo & (1 << bit) != 0 {
                    let (len, off, _, _) = cpuid(0xd, bit);
                    if len != 0 && off + len <= size {
                        l.comps[l.ncomps] = (bit, off, len);
                        l.ncomps += 1;
                    }
                }
            }
        }
        // The trampoline aligns RSP to 64 and subtracts this: round it up so
        // the image stays 64-byte aligned (XSAVE faults otherwise). CPUID's
        // size is not always a multiple of 64 (2696 bytes with AVX-512 and
        // PKRU, for one).
        XSAVE_SIZE.store(l.size.next_multiple_of(64), Ordering::Relaxed);
        l
    })
}

/// Calls `f` with each 64-bit word of vector state in an XSAVE image: XMM0-15
/// from the legacy area, then every extended component whose bit is set in
/// the header's XSTATE_BV (a clear bit means "in its initial state", zero).
///
/// # Safety
/// `(ptr, len)` must describe a readable XSAVE image in standard format, as
/// produced by the trampoline or the kernel, that stays valid during the call.
pub(crate) unsafe fn for_each_vector_word(ptr: usize, len: usize, mut f: impl FnMut(u64)) {
    if ptr == 0 || len < 416 {
        return;
    }
    // XMM0..15: legacy area bytes 160..416.
    for off in (160..416).step_by(8) {
        // SAFETY: within the 512-byte legacy area, which the caller vouches for.
        f(unsafe { std::ptr::read_unaligned((ptr + off) as *const u64) });
    }
    if len < 576 {
        return;
    }
    // SAFETY: the header's first word (XSTATE_BV) is at 512, inside `len`.
    let bv = unsafe { std::ptr::read_unaligned((ptr + 512) as *const u64) };
    let layout = xsave_layout();
    for &(bit, off, clen) in &layout.comps[..layout.ncomps] {
        let (off, clen) = (off as usize, clen as usize);
        if bv & (1 << bit) == 0 || off + clen > len {
            continue;
        }
        for w in (off..off + clen).step_by(8) {
            // SAFETY: `w + 8 <= off + clen <= len`.
            f(unsafe { std::ptr::read_unaligned((ptr + w) as *const u64) });
        }
    }
}

/// The stack pointer in a register set.
#[inline(always)]
pub(crate) fn stack_pointer(g: &Gprs) -> usize {
    g[RSP] as usize
}

/// Stores the callee-saved registers and the stack pointer of the caller into
/// `out` (rbx, rbp, r12-r15 and rsp in their [`GPR_NAMES`] slots; the others
/// are zero). Used where a thread stops itself: at a poll or on entering a safe
/// region. Values only the caller's callers hold in callee-saved registers
/// would otherwise be invisible to the collector.
#[inline(always)]
pub fn spill_callee_saved(out: &mut Gprs) {
    *out = [0; NGPRS];
    let p = out.as_mut_ptr();
    // SAFETY: writes six words at fixed offsets inside `out` (18 words long);
    // reads registers without modifying any.
    unsafe {
        std::arch::asm!(
            "mov [{p} + 8], rbx",
            "mov [{p} + 48], rbp",
            "mov [{p} + 56], rsp",
            "mov [{p} + 96], r12",
            "mov [{p} + 104], r13",
            "mov [{p} + 112], r14",
            "mov [{p} + 120], r15",
            p = in(reg) p,
            options(nostack, preserves_flags),
        );
    }
}
