//! The register-exactness loops, shared by preempt's tests and
//! pardon-sched's (`#[path]`-included there): each loads every register
//! from a pattern, spins without touching them, and stores them back.
//!
//! The spin loops export their start and end as symbols so a coordinator
//! can tell a stop inside the loop from one elsewhere; each function is
//! `#[inline(never)]`, so each label is emitted once.
#![allow(named_asm_labels, dead_code)]

pub const NGPR: usize = 14; // rax rbx rdx rsi rdi rbp r8..r15
pub const GPR_ORDER: [&str; NGPR] = [
    "rax", "rbx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
];
pub const FLAGS: usize = NGPR;
pub const MXCSR: usize = FLAGS + 1;
pub const RZ: usize = MXCSR + 1;
pub const VEC: usize = RZ + 16;
pub const WORDS: usize = VEC + 32 * 8;
pub const FLAGS_PATTERN: u64 = 0xC95 | 0x2; // CF PF AF SF DF OF, bit 1
pub const MXCSR_PATTERN: u64 = 0x7F80; // all exceptions masked, round toward zero

pub fn pattern(seed: u64) -> Vec<u64> {
    let mut v = vec![0u64; WORDS];
    let mut x = seed;
    for w in v.iter_mut() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *w = x | 1; // never zero
    }
    v[FLAGS] = FLAGS_PATTERN;
    v[MXCSR] = MXCSR_PATTERN;
    v
}

/// Loads every register from `inp`, spins `n` iterations touching nothing but
/// RCX (LEA and JRCXZ leave the flags alone), then stores everything to `out`.
///
/// # Safety
/// `inp` and `out` must each point to `WORDS` words; the CPU must have `avx512f`.
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn loop_zmm(inp: *const u64, out: *mut u64, n: u64) {
    // SAFETY: reads WORDS words at `inp`, writes WORDS words at `out`; saves
    // and restores rbx and rbp; leaves DF clear and MXCSR at its default.
    unsafe {
        std::arch::asm!(
                    "push rbx",
                    "push rbp",
                    "push rsi",
                    "push rdi",
                    "push qword ptr [rdi + 8*{fl}]",
                    "popfq",
                    "mov rax, [rdi + 8*{rz} + 0]", "mov [rsp - 8], rax",
                    "mov rax, [rdi + 8*{rz} + 8]", "mov [rsp - 16], rax",
                    "mov rax, [rdi + 8*{rz} + 16]", "mov [rsp - 24], rax",
                    "mov rax, [rdi + 8*{rz} + 24]", "mov [rsp - 32], rax",
                    "mov rax, [rdi + 8*{rz} + 32]", "mov [rsp - 40], rax",
                    "mov rax, [rdi + 8*{rz} + 40]", "mov [rsp - 48], rax",
                    "mov rax, [rdi + 8*{rz} + 48]", "mov [rsp - 56], rax",
                    "mov rax, [rdi + 8*{rz} + 56]", "mov [rsp - 64], rax",
                    "mov rax, [rdi + 8*{rz} + 64]", "mov [rsp - 72], rax",
                    "mov rax, [rdi + 8*{rz} + 72]", "mov [rsp - 80], rax",
                    "mov rax, [rdi + 8*{rz} + 80]", "mov [rsp - 88], rax",
                    "mov rax, [rdi + 8*{rz} + 88]", "mov [rsp - 96], rax",
                    "mov rax, [rdi + 8*{rz} + 96]", "mov [rsp - 104], rax",
                    "mov rax, [rdi + 8*{rz} + 104]", "mov [rsp - 112], rax",
                    "mov rax, [rdi + 8*{rz} + 112]", "mov [rsp - 120], rax",
                    "mov rax, [rdi + 8*{rz} + 120]", "mov [rsp - 128], rax",
                    "ldmxcsr [rdi + 8*{mx}]",
                    "vmovdqu64 zmm0, [rdi + 8*{v} + 0]",
                    "vmovdqu64 zmm1, [rdi + 8*{v} + 64]",
                    "vmovdqu64 zmm2, [rdi + 8*{v} + 128]",
                    "vmovdqu64 zmm3, [rdi + 8*{v} + 192]",
                    "vmovdqu64 zmm4, [rdi + 8*{v} + 256]",
                    "vmovdqu64 zmm5, [rdi + 8*{v} + 320]",
                    "vmovdqu64 zmm6, [rdi + 8*{v} + 384]",
                    "vmovdqu64 zmm7, [rdi + 8*{v} + 448]",
                    "vmovdqu64 zmm8, [rdi + 8*{v} + 512]",
                    "vmovdqu64 zmm9, [rdi + 8*{v} + 576]",
                    "vmovdqu64 zmm10, [rdi + 8*{v} + 640]",
                    "vmovdqu64 zmm11, [rdi + 8*{v} + 704]",
                    "vmovdqu64 zmm12, [rdi + 8*{v} + 768]",
                    "vmovdqu64 zmm13, [rdi + 8*{v} + 832]",
                    "vmovdqu64 zmm14, [rdi + 8*{v} + 896]",
                    "vmovdqu64 zmm15, [rdi + 8*{v} + 960]",
                    "vmovdqu64 zmm16, [rdi + 8*{v} + 1024]",
                    "vmovdqu64 zmm17, [rdi + 8*{v} + 1088]",
                    "vmovdqu64 zmm18, [rdi + 8*{v} + 1152]",
                    "vmovdqu64 zmm19, [rdi + 8*{v} + 1216]",
                    "vmovdqu64 zmm20, [rdi + 8*{v} + 1280]",
                    "vmovdqu64 zmm21, [rdi + 8*{v} + 1344]",
                    "vmovdqu64 zmm22, [rdi + 8*{v} + 1408]",
                    "vmovdqu64 zmm23, [rdi + 8*{v} + 1472]",
                    "vmovdqu64 zmm24, [rdi + 8*{v} + 1536]",
                    "vmovdqu64 zmm25, [rdi + 8*{v} + 1600]",
                    "vmovdqu64 zmm26, [rdi + 8*{v} + 1664]",
                    "vmovdqu64 zmm27, [rdi + 8*{v} + 1728]",
                    "vmovdqu64 zmm28, [rdi + 8*{v} + 1792]",
                    "vmovdqu64 zmm29, [rdi + 8*{v} + 1856]",
                    "vmovdqu64 zmm30, [rdi + 8*{v} + 1920]",
                    "vmovdqu64 zmm31, [rdi + 8*{v} + 1984]",
                    "mov rax, [rdi + 0]",
                    "mov rbx, [rdi + 8]",
                    "mov rdx, [rdi + 16]",
                    "mov rsi, [rdi + 24]",
                    "mov rbp, [rdi + 40]",
                    "mov r8, [rdi + 48]",
                    "mov r9, [rdi + 56]",
                    "mov r10, [rdi + 64]",
                    "mov r11, [rdi + 72]",
                    "mov r12, [rdi + 80]",
                    "mov r13, [rdi + 88]",
                    "mov r14, [rdi + 96]",
                    "mov r15, [rdi + 104]",
                    "mov rdi, [rdi + 32]",
                    ".globl pardon_test_loop_zmm_start", ".hidden pardon_test_loop_zmm_start", "pardon_test_loop_zmm_start:",
                    "2:",
                    "lea rcx, [rcx - 1]",
                    "jrcxz 3f",
                    "jmp 2b",
                    ".globl pardon_test_loop_zmm_end", ".hidden pardon_test_loop_zmm_end", "pardon_test_loop_zmm_end:",
                    "3:",
                    "xchg rdi, [rsp]",
                    "mov rdi, [rsp + 8]",
                    "mov [rdi + 0], rax",
                    "mov [rdi + 8], rbx",
                    "mov [rdi + 16], rdx",
                    "mov [rdi + 24], rsi",
                    "mov rax, [rsp]",
                    "mov [rdi + 32], rax",
                    "mov [rdi + 40], rbp",
                    "mov [rdi + 48], r8",
                    "mov [rdi + 56], r9",
                    "mov [rdi + 64], r10",
                    "mov [rdi + 72], r11",
                    "mov [rdi + 80], r12",
                    "mov [rdi + 88], r13",
                    "mov [rdi + 96], r14",
                    "mov [rdi + 104], r15",
                    "mov rax, [rsp - 8]", "mov [rdi + 8*{rz} + 0], rax",
                    "mov rax, [rsp - 16]", "mov [rdi + 8*{rz} + 8], rax",
                    "mov rax, [rsp - 24]", "mov [rdi + 8*{rz} + 16], rax",
                    "mov rax, [rsp - 32]", "mov [rdi + 8*{rz} + 24], rax",
                    "mov rax, [rsp - 40]", "mov [rdi + 8*{rz} + 32], rax",
                    "mov rax, [rsp - 48]", "mov [rdi + 8*{rz} + 40], rax",
                    "mov rax, [rsp - 56]", "mov [rdi + 8*{rz} + 48], rax",
                    "mov rax, [rsp - 64]", "mov [rdi + 8*{rz} + 56], rax",
                    "mov rax, [rsp - 72]", "mov [rdi + 8*{rz} + 64], rax",
                    "mov rax, [rsp - 80]", "mov [rdi + 8*{rz} + 72], rax",
                    "mov rax, [rsp - 88]", "mov [rdi + 8*{rz} + 80], rax",
                    "mov rax, [rsp - 96]", "mov [rdi + 8*{rz} + 88], rax",
                    "mov rax, [rsp - 104]", "mov [rdi + 8*{rz} + 96], rax",
                    "mov rax, [rsp - 112]", "mov [rdi + 8*{rz} + 104], rax",
                    "mov rax, [rsp - 120]", "mov [rdi + 8*{rz} + 112], rax",
                    "mov rax, [rsp - 128]", "mov [rdi + 8*{rz} + 120], rax",
                    "pushfq",
                    "pop rax",
                    "mov [rdi + 8*{fl}], rax",
                    "stmxcsr [rdi + 8*{mx}]",
                    "vmovdqu64 [rdi + 8*{v} + 0], zmm0",
                    "vmovdqu64 [rdi + 8*{v} + 64], zmm1",
                    "vmovdqu64 [rdi + 8*{v} + 128], zmm2",
                    "vmovdqu64 [rdi + 8*{v} + 192], zmm3",
                    "vmovdqu64 [rdi + 8*{v} + 256], zmm4",
                    "vmovdqu64 [rdi + 8*{v} + 320], zmm5",
                    "vmovdqu64 [rdi + 8*{v} + 384], zmm6",
                    "vmovdqu64 [rdi + 8*{v} + 448], zmm7",
                    "vmovdqu64 [rdi + 8*{v} + 512], zmm8",
                    "vmovdqu64 [rdi + 8*{v} + 576], zmm9",
                    "vmovdqu64 [rdi + 8*{v} + 640], zmm10",
                    "vmovdqu64 [rdi + 8*{v} + 704], zmm11",
                    "vmovdqu64 [rdi + 8*{v} + 768], zmm12",
                    "vmovdqu64 [rdi + 8*{v} + 832], zmm13",
                    "vmovdqu64 [rdi + 8*{v} + 896], zmm14",
                    "vmovdqu64 [rdi + 8*{v} + 960], zmm15",
                    "vmovdqu64 [rdi + 8*{v} + 1024], zmm16",
                    "vmovdqu64 [rdi + 8*{v} + 1088], zmm17",
                    "vmovdqu64 [rdi + 8*{v} + 1152], zmm18",
                    "vmovdqu64 [rdi + 8*{v} + 1216], zmm19",
                    "vmovdqu64 [rdi + 8*{v} + 1280], zmm20",
                    "vmovdqu64 [rdi + 8*{v} + 1344], zmm21",
                    "vmovdqu64 [rdi + 8*{v} + 1408], zmm22",
                    "vmovdqu64 [rdi + 8*{v} + 1472], zmm23",
                    "vmovdqu64 [rdi + 8*{v} + 1536], zmm24",
                    "vmovdqu64 [rdi + 8*{v} + 1600], zmm25",
                    "vmovdqu64 [rdi + 8*{v} + 1664], zmm26",
                    "vmovdqu64 [rdi + 8*{v} + 1728], zmm27",
                    "vmovdqu64 [rdi + 8*{v} + 1792], zmm28",
                    "vmovdqu64 [rdi + 8*{v} + 1856], zmm29",
                    "vmovdqu64 [rdi + 8*{v} + 1920], zmm30",
                    "vmovdqu64 [rdi + 8*{v} + 1984], zmm31",
                    "cld",
                    "mov dword ptr [rsp - 8], 0x1f80",
                    "ldmxcsr [rsp - 8]",
                    "pop rdi",
                    "pop rsi",
                    "pop rbp",
                    "pop rbx",
                    rz = const RZ,
                    fl = const FLAGS,
                    mx = const MXCSR,
                    v = const VEC,
                    inout("rdi") inp => _,
                    inout("rsi") out => _,
                    inout("rcx") n => _,
                    out("rax") _, out("rdx") _,
                    out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                    out("r12") _, out("r13") _, out("r14") _, out("r15") _,
                    out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _, out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _, out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _, out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _, out("zmm28") _, out("zmm29") _, out("zmm30") _, out("zmm31") _,
        );
    }
}

/// Loads every register from `inp`, spins `n` iterations touching nothing but
/// RCX (LEA and JRCXZ leave the flags alone), then stores everything to `out`.
///
/// # Safety
/// `inp` and `out` must each point to `WORDS` words; the CPU must have `avx`.
#[inline(never)]
#[target_feature(enable = "avx")]
unsafe fn loop_ymm(inp: *const u64, out: *mut u64, n: u64) {
    // SAFETY: reads WORDS words at `inp`, writes WORDS words at `out`; saves
    // and restores rbx and rbp; leaves DF clear and MXCSR at its default.
    unsafe {
        std::arch::asm!(
                    "push rbx",
                    "push rbp",
                    "push rsi",
                    "push rdi",
                    "push qword ptr [rdi + 8*{fl}]",
                    "popfq",
                    "mov rax, [rdi + 8*{rz} + 0]", "mov [rsp - 8], rax",
                    "mov rax, [rdi + 8*{rz} + 8]", "mov [rsp - 16], rax",
                    "mov rax, [rdi + 8*{rz} + 16]", "mov [rsp - 24], rax",
                    "mov rax, [rdi + 8*{rz} + 24]", "mov [rsp - 32], rax",
                    "mov rax, [rdi + 8*{rz} + 32]", "mov [rsp - 40], rax",
                    "mov rax, [rdi + 8*{rz} + 40]", "mov [rsp - 48], rax",
                    "mov rax, [rdi + 8*{rz} + 48]", "mov [rsp - 56], rax",
                    "mov rax, [rdi + 8*{rz} + 56]", "mov [rsp - 64], rax",
                    "mov rax, [rdi + 8*{rz} + 64]", "mov [rsp - 72], rax",
                    "mov rax, [rdi + 8*{rz} + 72]", "mov [rsp - 80], rax",
                    "mov rax, [rdi + 8*{rz} + 80]", "mov [rsp - 88], rax",
                    "mov rax, [rdi + 8*{rz} + 88]", "mov [rsp - 96], rax",
                    "mov rax, [rdi + 8*{rz} + 96]", "mov [rsp - 104], rax",
                    "mov rax, [rdi + 8*{rz} + 104]", "mov [rsp - 112], rax",
                    "mov rax, [rdi + 8*{rz} + 112]", "mov [rsp - 120], rax",
                    "mov rax, [rdi + 8*{rz} + 120]", "mov [rsp - 128], rax",
                    "ldmxcsr [rdi + 8*{mx}]",
                    "vmovdqu ymm0, [rdi + 8*{v} + 0]",
                    "vmovdqu ymm1, [rdi + 8*{v} + 64]",
                    "vmovdqu ymm2, [rdi + 8*{v} + 128]",
                    "vmovdqu ymm3, [rdi + 8*{v} + 192]",
                    "vmovdqu ymm4, [rdi + 8*{v} + 256]",
                    "vmovdqu ymm5, [rdi + 8*{v} + 320]",
                    "vmovdqu ymm6, [rdi + 8*{v} + 384]",
                    "vmovdqu ymm7, [rdi + 8*{v} + 448]",
                    "vmovdqu ymm8, [rdi + 8*{v} + 512]",
                    "vmovdqu ymm9, [rdi + 8*{v} + 576]",
                    "vmovdqu ymm10, [rdi + 8*{v} + 640]",
                    "vmovdqu ymm11, [rdi + 8*{v} + 704]",
                    "vmovdqu ymm12, [rdi + 8*{v} + 768]",
                    "vmovdqu ymm13, [rdi + 8*{v} + 832]",
                    "vmovdqu ymm14, [rdi + 8*{v} + 896]",
                    "vmovdqu ymm15, [rdi + 8*{v} + 960]",
                    "mov rax, [rdi + 0]",
                    "mov rbx, [rdi + 8]",
                    "mov rdx, [rdi + 16]",
                    "mov rsi, [rdi + 24]",
                    "mov rbp, [rdi + 40]",
                    "mov r8, [rdi + 48]",
                    "mov r9, [rdi + 56]",
                    "mov r10, [rdi + 64]",
                    "mov r11, [rdi + 72]",
                    "mov r12, [rdi + 80]",
                    "mov r13, [rdi + 88]",
                    "mov r14, [rdi + 96]",
                    "mov r15, [rdi + 104]",
                    "mov rdi, [rdi + 32]",
                    ".globl pardon_test_loop_ymm_start", ".hidden pardon_test_loop_ymm_start", "pardon_test_loop_ymm_start:",
                    "2:",
                    "lea rcx, [rcx - 1]",
                    "jrcxz 3f",
                    "jmp 2b",
                    ".globl pardon_test_loop_ymm_end", ".hidden pardon_test_loop_ymm_end", "pardon_test_loop_ymm_end:",
                    "3:",
                    "xchg rdi, [rsp]",
                    "mov rdi, [rsp + 8]",
                    "mov [rdi + 0], rax",
                    "mov [rdi + 8], rbx",
                    "mov [rdi + 16], rdx",
                    "mov [rdi + 24], rsi",
                    "mov rax, [rsp]",
                    "mov [rdi + 32], rax",
                    "mov [rdi + 40], rbp",
                    "mov [rdi + 48], r8",
                    "mov [rdi + 56], r9",
                    "mov [rdi + 64], r10",
                    "mov [rdi + 72], r11",
                    "mov [rdi + 80], r12",
                    "mov [rdi + 88], r13",
                    "mov [rdi + 96], r14",
                    "mov [rdi + 104], r15",
                    "mov rax, [rsp - 8]", "mov [rdi + 8*{rz} + 0], rax",
                    "mov rax, [rsp - 16]", "mov [rdi + 8*{rz} + 8], rax",
                    "mov rax, [rsp - 24]", "mov [rdi + 8*{rz} + 16], rax",
                    "mov rax, [rsp - 32]", "mov [rdi + 8*{rz} + 24], rax",
                    "mov rax, [rsp - 40]", "mov [rdi + 8*{rz} + 32], rax",
                    "mov rax, [rsp - 48]", "mov [rdi + 8*{rz} + 40], rax",
                    "mov rax, [rsp - 56]", "mov [rdi + 8*{rz} + 48], rax",
                    "mov rax, [rsp - 64]", "mov [rdi + 8*{rz} + 56], rax",
                    "mov rax, [rsp - 72]", "mov [rdi + 8*{rz} + 64], rax",
                    "mov rax, [rsp - 80]", "mov [rdi + 8*{rz} + 72], rax",
                    "mov rax, [rsp - 88]", "mov [rdi + 8*{rz} + 80], rax",
                    "mov rax, [rsp - 96]", "mov [rdi + 8*{rz} + 88], rax",
                    "mov rax, [rsp - 104]", "mov [rdi + 8*{rz} + 96], rax",
                    "mov rax, [rsp - 112]", "mov [rdi + 8*{rz} + 104], rax",
                    "mov rax, [rsp - 120]", "mov [rdi + 8*{rz} + 112], rax",
                    "mov rax, [rsp - 128]", "mov [rdi + 8*{rz} + 120], rax",
                    "pushfq",
                    "pop rax",
                    "mov [rdi + 8*{fl}], rax",
                    "stmxcsr [rdi + 8*{mx}]",
                    "vmovdqu [rdi + 8*{v} + 0], ymm0",
                    "vmovdqu [rdi + 8*{v} + 64], ymm1",
                    "vmovdqu [rdi + 8*{v} + 128], ymm2",
                    "vmovdqu [rdi + 8*{v} + 192], ymm3",
                    "vmovdqu [rdi + 8*{v} + 256], ymm4",
                    "vmovdqu [rdi + 8*{v} + 320], ymm5",
                    "vmovdqu [rdi + 8*{v} + 384], ymm6",
                    "vmovdqu [rdi + 8*{v} + 448], ymm7",
                    "vmovdqu [rdi + 8*{v} + 512], ymm8",
                    "vmovdqu [rdi + 8*{v} + 576], ymm9",
                    "vmovdqu [rdi + 8*{v} + 640], ymm10",
                    "vmovdqu [rdi + 8*{v} + 704], ymm11",
                    "vmovdqu [rdi + 8*{v} + 768], ymm12",
                    "vmovdqu [rdi + 8*{v} + 832], ymm13",
                    "vmovdqu [rdi + 8*{v} + 896], ymm14",
                    "vmovdqu [rdi + 8*{v} + 960], ymm15",
                    "cld",
                    "mov dword ptr [rsp - 8], 0x1f80",
                    "ldmxcsr [rsp - 8]",
                    "pop rdi",
                    "pop rsi",
                    "pop rbp",
                    "pop rbx",
                    rz = const RZ,
                    fl = const FLAGS,
                    mx = const MXCSR,
                    v = const VEC,
                    inout("rdi") inp => _,
                    inout("rsi") out => _,
                    inout("rcx") n => _,
                    out("rax") _, out("rdx") _,
                    out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                    out("r12") _, out("r13") _, out("r14") _, out("r15") _,
                    out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _, out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
        );
    }
}

/// Loads every register from `inp`, spins `n` iterations touching nothing but
/// RCX (LEA and JRCXZ leave the flags alone), then stores everything to `out`.
///
/// # Safety
/// `inp` and `out` must each point to `WORDS` words; the CPU must have `sse2`.
#[inline(never)]
#[target_feature(enable = "sse2")]
unsafe fn loop_xmm(inp: *const u64, out: *mut u64, n: u64) {
    // SAFETY: reads WORDS words at `inp`, writes WORDS words at `out`; saves
    // and restores rbx and rbp; leaves DF clear and MXCSR at its default.
    unsafe {
        std::arch::asm!(
                    "push rbx",
                    "push rbp",
                    "push rsi",
                    "push rdi",
                    "push qword ptr [rdi + 8*{fl}]",
                    "popfq",
                    "mov rax, [rdi + 8*{rz} + 0]", "mov [rsp - 8], rax",
                    "mov rax, [rdi + 8*{rz} + 8]", "mov [rsp - 16], rax",
                    "mov rax, [rdi + 8*{rz} + 16]", "mov [rsp - 24], rax",
                    "mov rax, [rdi + 8*{rz} + 24]", "mov [rsp - 32], rax",
                    "mov rax, [rdi + 8*{rz} + 32]", "mov [rsp - 40], rax",
                    "mov rax, [rdi + 8*{rz} + 40]", "mov [rsp - 48], rax",
                    "mov rax, [rdi + 8*{rz} + 48]", "mov [rsp - 56], rax",
                    "mov rax, [rdi + 8*{rz} + 56]", "mov [rsp - 64], rax",
                    "mov rax, [rdi + 8*{rz} + 64]", "mov [rsp - 72], rax",
                    "mov rax, [rdi + 8*{rz} + 72]", "mov [rsp - 80], rax",
                    "mov rax, [rdi + 8*{rz} + 80]", "mov [rsp - 88], rax",
                    "mov rax, [rdi + 8*{rz} + 88]", "mov [rsp - 96], rax",
                    "mov rax, [rdi + 8*{rz} + 96]", "mov [rsp - 104], rax",
                    "mov rax, [rdi + 8*{rz} + 104]", "mov [rsp - 112], rax",
                    "mov rax, [rdi + 8*{rz} + 112]", "mov [rsp - 120], rax",
                    "mov rax, [rdi + 8*{rz} + 120]", "mov [rsp - 128], rax",
                    "ldmxcsr [rdi + 8*{mx}]",
                    "movdqu xmm0, [rdi + 8*{v} + 0]",
                    "movdqu xmm1, [rdi + 8*{v} + 64]",
                    "movdqu xmm2, [rdi + 8*{v} + 128]",
                    "movdqu xmm3, [rdi + 8*{v} + 192]",
                    "movdqu xmm4, [rdi + 8*{v} + 256]",
                    "movdqu xmm5, [rdi + 8*{v} + 320]",
                    "movdqu xmm6, [rdi + 8*{v} + 384]",
                    "movdqu xmm7, [rdi + 8*{v} + 448]",
                    "movdqu xmm8, [rdi + 8*{v} + 512]",
                    "movdqu xmm9, [rdi + 8*{v} + 576]",
                    "movdqu xmm10, [rdi + 8*{v} + 640]",
                    "movdqu xmm11, [rdi + 8*{v} + 704]",
                    "movdqu xmm12, [rdi + 8*{v} + 768]",
                    "movdqu xmm13, [rdi + 8*{v} + 832]",
                    "movdqu xmm14, [rdi + 8*{v} + 896]",
                    "movdqu xmm15, [rdi + 8*{v} + 960]",
                    "mov rax, [rdi + 0]",
                    "mov rbx, [rdi + 8]",
                    "mov rdx, [rdi + 16]",
                    "mov rsi, [rdi + 24]",
                    "mov rbp, [rdi + 40]",
                    "mov r8, [rdi + 48]",
                    "mov r9, [rdi + 56]",
                    "mov r10, [rdi + 64]",
                    "mov r11, [rdi + 72]",
                    "mov r12, [rdi + 80]",
                    "mov r13, [rdi + 88]",
                    "mov r14, [rdi + 96]",
                    "mov r15, [rdi + 104]",
                    "mov rdi, [rdi + 32]",
                    ".globl pardon_test_loop_xmm_start", ".hidden pardon_test_loop_xmm_start", "pardon_test_loop_xmm_start:",
                    "2:",
                    "lea rcx, [rcx - 1]",
                    "jrcxz 3f",
                    "jmp 2b",
                    ".globl pardon_test_loop_xmm_end", ".hidden pardon_test_loop_xmm_end", "pardon_test_loop_xmm_end:",
                    "3:",
                    "xchg rdi, [rsp]",
                    "mov rdi, [rsp + 8]",
                    "mov [rdi + 0], rax",
                    "mov [rdi + 8], rbx",
                    "mov [rdi + 16], rdx",
                    "mov [rdi + 24], rsi",
                    "mov rax, [rsp]",
                    "mov [rdi + 32], rax",
                    "mov [rdi + 40], rbp",
                    "mov [rdi + 48], r8",
                    "mov [rdi + 56], r9",
                    "mov [rdi + 64], r10",
                    "mov [rdi + 72], r11",
                    "mov [rdi + 80], r12",
                    "mov [rdi + 88], r13",
                    "mov [rdi + 96], r14",
                    "mov [rdi + 104], r15",
                    "mov rax, [rsp - 8]", "mov [rdi + 8*{rz} + 0], rax",
                    "mov rax, [rsp - 16]", "mov [rdi + 8*{rz} + 8], rax",
                    "mov rax, [rsp - 24]", "mov [rdi + 8*{rz} + 16], rax",
                    "mov rax, [rsp - 32]", "mov [rdi + 8*{rz} + 24], rax",
                    "mov rax, [rsp - 40]", "mov [rdi + 8*{rz} + 32], rax",
                    "mov rax, [rsp - 48]", "mov [rdi + 8*{rz} + 40], rax",
                    "mov rax, [rsp - 56]", "mov [rdi + 8*{rz} + 48], rax",
                    "mov rax, [rsp - 64]", "mov [rdi + 8*{rz} + 56], rax",
                    "mov rax, [rsp - 72]", "mov [rdi + 8*{rz} + 64], rax",
                    "mov rax, [rsp - 80]", "mov [rdi + 8*{rz} + 72], rax",
                    "mov rax, [rsp - 88]", "mov [rdi + 8*{rz} + 80], rax",
                    "mov rax, [rsp - 96]", "mov [rdi + 8*{rz} + 88], rax",
                    "mov rax, [rsp - 104]", "mov [rdi + 8*{rz} + 96], rax",
                    "mov rax, [rsp - 112]", "mov [rdi + 8*{rz} + 104], rax",
                    "mov rax, [rsp - 120]", "mov [rdi + 8*{rz} + 112], rax",
                    "mov rax, [rsp - 128]", "mov [rdi + 8*{rz} + 120], rax",
                    "pushfq",
                    "pop rax",
                    "mov [rdi + 8*{fl}], rax",
                    "stmxcsr [rdi + 8*{mx}]",
                    "movdqu [rdi + 8*{v} + 0], xmm0",
                    "movdqu [rdi + 8*{v} + 64], xmm1",
                    "movdqu [rdi + 8*{v} + 128], xmm2",
                    "movdqu [rdi + 8*{v} + 192], xmm3",
                    "movdqu [rdi + 8*{v} + 256], xmm4",
                    "movdqu [rdi + 8*{v} + 320], xmm5",
                    "movdqu [rdi + 8*{v} + 384], xmm6",
                    "movdqu [rdi + 8*{v} + 448], xmm7",
                    "movdqu [rdi + 8*{v} + 512], xmm8",
                    "movdqu [rdi + 8*{v} + 576], xmm9",
                    "movdqu [rdi + 8*{v} + 640], xmm10",
                    "movdqu [rdi + 8*{v} + 704], xmm11",
                    "movdqu [rdi + 8*{v} + 768], xmm12",
                    "movdqu [rdi + 8*{v} + 832], xmm13",
                    "movdqu [rdi + 8*{v} + 896], xmm14",
                    "movdqu [rdi + 8*{v} + 960], xmm15",
                    "cld",
                    "mov dword ptr [rsp - 8], 0x1f80",
                    "ldmxcsr [rsp - 8]",
                    "pop rdi",
                    "pop rsi",
                    "pop rbp",
                    "pop rbx",
                    rz = const RZ,
                    fl = const FLAGS,
                    mx = const MXCSR,
                    v = const VEC,
                    inout("rdi") inp => _,
                    inout("rsi") out => _,
                    inout("rcx") n => _,
                    out("rax") _, out("rdx") _,
                    out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                    out("r12") _, out("r13") _, out("r14") _, out("r15") _,
                    out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
        );
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Width {
    Zmm,
    Ymm,
    Xmm,
}

extern "C" {
    static pardon_test_loop_zmm_start: u8;
    static pardon_test_loop_zmm_end: u8;
    static pardon_test_loop_ymm_start: u8;
    static pardon_test_loop_ymm_end: u8;
    static pardon_test_loop_xmm_start: u8;
    static pardon_test_loop_xmm_end: u8;
}

impl Width {
    /// The address range of the variant's spin loop.
    pub fn loop_range(self) -> std::ops::Range<u64> {
        // Taking an extern static's address is safe; its contents are never read.
        let (a, b) = match self {
            Width::Zmm => (
                &raw const pardon_test_loop_zmm_start,
                &raw const pardon_test_loop_zmm_end,
            ),
            Width::Ymm => (
                &raw const pardon_test_loop_ymm_start,
                &raw const pardon_test_loop_ymm_end,
            ),
            Width::Xmm => (
                &raw const pardon_test_loop_xmm_start,
                &raw const pardon_test_loop_xmm_end,
            ),
        };
        a as u64..b as u64 + 1
    }

    pub fn best() -> Width {
        if std::arch::is_x86_feature_detected!("avx512f") {
            Width::Zmm
        } else if std::arch::is_x86_feature_detected!("avx") {
            Width::Ymm
        } else {
            Width::Xmm
        }
    }
    /// Which of the 8 words of each 64-byte vector slot the variant uses.
    pub fn live(self, reg: usize, word: usize) -> bool {
        match self {
            Width::Zmm => reg < 32,
            Width::Ymm => reg < 16 && word < 4,
            Width::Xmm => reg < 16 && word < 2,
        }
    }
    pub fn run(self, inp: &[u64], out: &mut [u64], n: u64) {
        assert!(inp.len() == WORDS && out.len() == WORDS);
        // SAFETY: both buffers are WORDS long; `best()` checked the feature.
        unsafe {
            match self {
                Width::Zmm => loop_zmm(inp.as_ptr(), out.as_mut_ptr(), n),
                Width::Ymm => loop_ymm(inp.as_ptr(), out.as_mut_ptr(), n),
                Width::Xmm => loop_xmm(inp.as_ptr(), out.as_mut_ptr(), n),
            }
        }
    }
}

pub fn compare(width: Width, inp: &[u64], out: &[u64]) -> Vec<String> {
    let mut bad = Vec::new();
    for (i, name) in GPR_ORDER.iter().enumerate() {
        if inp[i] != out[i] {
            bad.push(format!("{name}: {:#x} != {:#x}", out[i], inp[i]));
        }
    }
    // IF (bit 9) is always set in user mode.
    if out[FLAGS] & 0xFFF != (inp[FLAGS] | 0x200) & 0xFFF {
        bad.push(format!("rflags: {:#x} != {:#x}", out[FLAGS], inp[FLAGS]));
    }
    if out[MXCSR] & 0xFFFF_FFFF != inp[MXCSR] {
        bad.push(format!("mxcsr: {:#x} != {:#x}", out[MXCSR], inp[MXCSR]));
    }
    for i in 0..16 {
        if out[RZ + i] != inp[RZ + i] {
            bad.push(format!("red zone word {i}"));
        }
    }
    for r in 0..32 {
        for w in 0..8 {
            if width.live(r, w) && out[VEC + 8 * r + w] != inp[VEC + 8 * r + w] {
                bad.push(format!("vector {r} word {w}"));
            }
        }
    }
    bad
}
