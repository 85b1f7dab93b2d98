//! Prints the throughput ceiling of each register tile's inner loop on this core: the
//! instruction mix of one step along `k` of a 6-row pass (operands loaded from L1, the
//! accumulators in registers, nothing stored), run on its own, in G ops/s (two per
//! multiply-add, as the bench's GFLOP/s count them). A kernel's rate in `sclstm bench`
//! divided by its line here is how close it runs to what its instructions allow:
//!
//! - AVX2 f32 (`vfmadd231ps`): 12 multiply-adds of 8 lanes, 96 multiply-adds;
//! - AVX2 int8 (`vpmaddwd`): 2 widenings, 12 `vpmaddwd` and 12 `vpaddd`, 192 multiply-adds;
//! - AVX-VNNI int8 (`vpdpbusd` on 256 bits): 12 instructions, 384 multiply-adds.
//!
//! A mix this CPU lacks is skipped with a note.
//!
//! ```text
//! cargo run --release -p sclstm-cpu --example mix_ceilings
//! ```

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::time::Instant;

    /// Loop iterations per timed run.
    const ITERS: u64 = 50_000_000;

    /// Defines `fn $name(b, a)` running `ITERS` times the given instructions, which read
    /// 64 bytes at `rdi` (`B`) and 48 at `rsi` (the broadcast `A` values) and use the 16
    /// `ymm` registers.
    macro_rules! mix {
        ($name:ident, $($line:literal,)*) => {
            /// Runs the mix.
            ///
            /// # Safety
            /// The mix's instructions available; `b` valid for 64 reads, `a` for 48.
            unsafe fn $name(b: *const u8, a: *const u8) {
                // SAFETY: the caller's contract; every register written is declared.
                unsafe {
                    asm!(
                        "2:",
                        $($line,)*
                        "dec rcx",
                        "jnz 2b",
                        "vzeroupper",
                        in("rdi") b, in("rsi") a, inout("rcx") ITERS => _,
                        out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
                        out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
                        out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                        out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
                        options(nostack, readonly),
                    );
                }
            }
        };
    }

    mix!(
        fma_f32,
        "vmovups ymm12, ymmword ptr [rdi]",
        "vmovups ymm13, ymmword ptr [rdi + 32]",
        "vbroadcastss ymm14, dword ptr [rsi]",
        "vfmadd231ps ymm0, ymm14, ymm12",
        "vfmadd231ps ymm1, ymm14, ymm13",
        "vbroadcastss ymm14, dword ptr [rsi + 4]",
        "vfmadd231ps ymm2, ymm14, ymm12",
        "vfmadd231ps ymm3, ymm14, ymm13",
        "vbroadcastss ymm14, dword ptr [rsi + 8]",
        "vfmadd231ps ymm4, ymm14, ymm12",
        "vfmadd231ps ymm5, ymm14, ymm13",
        "vbroadcastss ymm14, dword ptr [rsi + 12]",
        "vfmadd231ps ymm6, ymm14, ymm12",
        "vfmadd231ps ymm7, ymm14, ymm13",
        "vbroadcastss ymm14, dword ptr [rsi + 16]",
        "vfmadd231ps ymm8, ymm14, ymm12",
        "vfmadd231ps ymm9, ymm14, ymm13",
        "vbroadcastss ymm14, dword ptr [rsi + 20]",
        "vfmadd231ps ymm10, ymm14, ymm12",
        "vfmadd231ps ymm11, ymm14, ymm13",
    );

    mix!(
        maddwd_int8,
        "vpmovsxbw ymm12, xmmword ptr [rdi]",
        "vpmovsxbw ymm13, xmmword ptr [rdi + 16]",
        "vpbroadcastq ymm14, qword ptr [rsi]",
        "vpmaddwd ymm15, ymm12, ymm14",
        "vpaddd ymm0, ymm0, ymm15",
        "vpmaddwd ymm15, ymm13, ymm14",
        "vpaddd ymm1, ymm1, ymm15",
        "vpbroadcastq ymm14, qword ptr [rsi + 8]",
        "vpmaddwd ymm15, ymm12, ymm14",
        "vpaddd ymm2, ymm2, ymm15",
        "vpmaddwd ymm15, ymm13, ymm14",
        "vpaddd ymm3, ymm3, ymm15",
        "vpbroadcastq ymm14, qword ptr [rsi + 16]",
        "vpmaddwd ymm15, ymm12, ymm14",
        "vpaddd ymm4, ymm4, ymm15",
        "vpmaddwd ymm15, ymm13, ymm14",
        "vpaddd ymm5, ymm5, ymm15",
        "vpbroadcastq ymm14, qword ptr [rsi + 24]",
        "vpmaddwd ymm15, ymm12, ymm14",
        "vpaddd ymm6, ymm6, ymm15",
        "vpmaddwd ymm15, ymm13, ymm14",
        "vpaddd ymm7, ymm7, ymm15",
        "vpbroadcastq ymm14, qword ptr [rsi + 32]",
        "vpmaddwd ymm15, ymm12, ymm14",
        "vpaddd ymm8, ymm8, ymm15",
        "vpmaddwd ymm15, ymm13, ymm14",
        "vpaddd ymm9, ymm9, ymm15",
        "vpbroadcastq ymm14, qword ptr [rsi + 40]",
        "vpmaddwd ymm15, ymm12, ymm14",
        "vpaddd ymm10, ymm10, ymm15",
        "vpmaddwd ymm15, ymm13, ymm14",
        "vpaddd ymm11, ymm11, ymm15",
    );

    mix!(
        dpbusd_int8,
        "vmovdqu ymm12, ymmword ptr [rdi]",
        "vmovdqu ymm13, ymmword ptr [rdi + 32]",
        "vpbroadcastd ymm14, dword ptr [rsi]",
        "{{vex}} vpdpbusd ymm0, ymm14, ymm12",
        "{{vex}} vpdpbusd ymm1, ymm14, ymm13",
        "vpbroadcastd ymm14, dword ptr [rsi + 4]",
        "{{vex}} vpdpbusd ymm2, ymm14, ymm12",
        "{{vex}} vpdpbusd ymm3, ymm14, ymm13",
        "vpbroadcastd ymm14, dword ptr [rsi + 8]",
        "{{vex}} vpdpbusd ymm4, ymm14, ymm12",
        "{{vex}} vpdpbusd ymm5, ymm14, ymm13",
        "vpbroadcastd ymm14, dword ptr [rsi + 12]",
        "{{vex}} vpdpbusd ymm6, ymm14, ymm12",
        "{{vex}} vpdpbusd ymm7, ymm14, ymm13",
        "vpbroadcastd ymm14, dword ptr [rsi + 16]",
        "{{vex}} vpdpbusd ymm8, ymm14, ymm12",
        "{{vex}} vpdpbusd ymm9, ymm14, ymm13",
        "vpbroadcastd ymm14, dword ptr [rsi + 20]",
        "{{vex}} vpdpbusd ymm10, ymm14, ymm12",
        "{{vex}} vpdpbusd ymm11, ymm14, ymm13",
    );

    /// A mix: its name, operations per iteration, whether this CPU has it, the loop and
    /// the data it reads.
    type Mix = (
        &'static str,
        f64,
        bool,
        unsafe fn(*const u8, *const u8),
        *const u8,
    );

    /// Prints the best of five runs of `run` in G ops/s, `ops` per iteration.
    fn report(name: &str, ops: f64, run: impl Fn()) {
        let best = (0..5)
            .map(|_| {
                let start = Instant::now();
                run();
                start.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        println!("{name:<56} {:7.1} G ops/s", ops * ITERS as f64 / best / 1e9);
    }

    /// Runs every mix this CPU has.
    pub fn main() {
        // Normal f32 values (the FMA mix slows down on subnormal ones) and small bytes.
        let floats = [0.5f32; 16];
        let bytes = [3u8; 64];
        let (f, b) = (floats.as_ptr().cast::<u8>(), bytes.as_ptr());
        let mixes: [Mix; 3] = [
            (
                "AVX2 f32 tile (12 vfmadd231ps)",
                192.0,
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
                fma_f32,
                f,
            ),
            (
                "AVX2 int8 tile (2 vpmovsxbw, 12 vpmaddwd, 12 vpaddd)",
                384.0,
                is_x86_feature_detected!("avx2"),
                maddwd_int8,
                b,
            ),
            (
                "AVX-VNNI int8 tile (12 vpdpbusd on 256 bits)",
                768.0,
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("avxvnni"),
                dpbusd_int8,
                b,
            ),
        ];
        for (name, ops, here, mix, data) in mixes {
            if here {
                // SAFETY: the CPU has the mix's instructions; `data` holds 64 bytes.
                report(name, ops, || unsafe { mix(data, data) });
            } else {
                println!("{name:<56} not on this CPU");
            }
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    x86::main();
    #[cfg(not(target_arch = "x86_64"))]
    println!("the mixes are x86-64 instructions");
}
