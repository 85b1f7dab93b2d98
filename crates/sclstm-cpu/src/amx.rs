//! int8 products on AMX tiles (Intel Sapphire Rapids on): `tdpbusd` sums `16 × 16`
//! blocks of `A`'s offset bytes against `B`'s int8 quads (see [`crate::int8`]), the same
//! exact integer sums as `vpdpbusd`, so the same results bit for bit. Stable Rust has
//! neither AMX intrinsics nor its target features, so the tile instructions are inline
//! assembly, and Linux must first grant the process the tile data state (`arch_prctl`).
//!
//! A tile product pays for 16 rows and 64 values of `k` whatever it uses, so only blocks
//! of at least that many, with `B`'s words in strips, run here (the layers' products
//! over all tokens, and per-step products of large inference batches); the rest run the
//! AVX512_VNNI register tiles.

use std::sync::OnceLock;

/// Environment variable that turns the AMX products off (`off`; `auto`, the default,
/// uses them where the CPU and the kernel allow), so that the AVX512_VNNI ones can be
/// measured on a CPU with AMX.
pub const AMX_ENV: &str = "SCLSTM_AMX";

/// Fewest rows of a block that runs on AMX tiles.
pub(crate) const MIN_ROWS: usize = 16;

/// Fewest values along `k` that run on AMX tiles (one tile's 64; below it, the tile
/// product is all padding and the VNNI tile is faster).
pub(crate) const MIN_K: usize = 64;

/// Whether [`AMX_ENV`] allows AMX (`Ok(false)` for `off`).
///
/// # Errors
/// A message naming the variable when its value is neither `auto` nor `off`.
pub fn allowed() -> Result<bool, String> {
    match std::env::var(AMX_ENV).ok().as_deref().map(str::trim) {
        None | Some("" | "auto") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(format!(
            "{AMX_ENV}={other:?} is not a setting: use auto or off"
        )),
    }
}

/// Whether this process runs int8 products on AMX tiles: [`AMX_ENV`] allows it, the CPU
/// has AMX-TILE, AMX-INT8 and AVX512_VNNI (for the blocks too small for a tile), and the
/// kernel granted the tile state. Decided once per process.
pub fn usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            allowed().unwrap_or(false)
                && std::is_x86_feature_detected!("avx512vnni")
                && x86::cpu_has_amx_int8()
                && x86::request_tile_state()
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        false
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::{__cpuid_count, __m512i, _mm512_loadu_si512};
    use std::cell::Cell;

    use sclstm_core::STRIP;

    use crate::gemm::seed_bias;
    use crate::int8::x86::{Sums, Vnni};
    use crate::packed::x86::{View, Words};
    use crate::small_m::x86::{lanes, store_tile_f32};

    /// Words of `k` (four values each) one tile spans: 64 bytes per tile row.
    const KB: usize = 16;
    /// Rows of `C` one pass computes: two `A` tiles of 16 rows.
    const ROWS: usize = 32;

    /// CPUID leaf 7: AMX-TILE (EDX bit 24) and AMX-INT8 (EDX bit 25).
    pub(super) fn cpu_has_amx_int8() -> bool {
        // Leaf 7 reads as zeros where the CPU lacks it.
        let leaf = __cpuid_count(7, 0);
        leaf.edx & (1 << 24) != 0 && leaf.edx & (1 << 25) != 0
    }

    /// Asks Linux for the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM,
    /// XFEATURE_XTILEDATA)`), granted to the whole process; false when refused (an older
    /// kernel, or a hypervisor that hides the state).
    pub(super) fn request_tile_state() -> bool {
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: the system call reads its two integer arguments and changes only the
        // process's permissions; `syscall` clobbers rcx and r11, declared.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret == 0
    }

    /// The tile configuration (palette 1): `tmm0`–`tmm3` the `2 × 2` accumulator tiles
    /// of `C` (16 rows of 16 i32), `tmm4`, `tmm5` two `A` tiles (16 rows of 64 bytes),
    /// `tmm6`, `tmm7` two `B` tiles (16 word rows of 16 columns).
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    impl Config {
        fn full() -> Config {
            let mut c = [0u8; 64];
            c[0] = 1;
            for t in 0..8 {
                c[16 + 2 * t] = 64;
                c[48 + t] = 16;
            }
            Config(c)
        }
    }

    thread_local! {
        /// Each thread's `A` rows packed (rows padded to whole tiles along `k`), their
        /// scales, and each strip's last partial word rows padded with zeros to a tile.
        static SCRATCH: Cell<(Vec<u32>, Vec<f32>, Vec<u32>)> =
            const { Cell::new((Vec::new(), Vec::new(), Vec::new())) };
    }

    /// Computes the block `C[r0..r1, c0..c1]` of `v` (an int8 product, `B` in strips) on
    /// AMX tiles, as [`View::block`] does with the VNNI kernel: the same result.
    ///
    /// # Safety
    /// [`super::usable`] is true; `v.strips`; the block lies inside `m × n`, starts on a
    /// strip (`c0` a multiple of `STRIP`), and no other thread touches it.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn block(v: &View, r0: usize, r1: usize, c0: usize, c1: usize) {
        debug_assert!(v.strips && c0.is_multiple_of(STRIP));
        let (rows, n) = (r1 - r0, v.n);
        let kp = v.k.div_ceil(4);
        let blocks = kp.div_ceil(KB);
        // Row stride of the packed A in words: whole tiles along k.
        let rsa = blocks * KB;
        let tail = kp % KB;
        let strips = (c1 - c0).div_ceil(STRIP);
        // The thread's scratch, taken for the call (no closure: it would not inherit
        // this function's target feature) and put back at the end.
        let (mut words, mut scales, mut tails) = SCRATCH.take();
        // A tile reads 16 rows: the rows past `rows` in the last pass are read (never
        // stored), so the buffer covers whole passes.
        let padded = rows.div_ceil(ROWS) * ROWS * rsa;
        if words.len() < padded {
            words.resize(padded, 0);
        }
        scales.resize(rows, 0.0);
        // Room for B's last word rows of each strip, padded to a whole tile.
        if tails.len() < strips * KB * STRIP {
            tails.resize(strips * KB * STRIP, 0);
        }
        // SAFETY (whole body): offsets stay inside the checked operands and the scratch;
        // AMX is available (caller).
        unsafe {
            for (i, scale) in scales.iter_mut().enumerate() {
                let row = v.a.add((r0 + i) * v.k);
                *scale = Vnni::pack_row(row, v.k, words.as_mut_ptr().add(i * rsa));
            }
            // Strip `s` of B: `kp` word rows of STRIP words.
            let strip_at = |s: usize| v.b.add((c0 / STRIP + s) * STRIP * kp);
            // Each strip's last `tail` word rows, then zeros to a whole tile: the words
            // of A they meet past `kp` then add nothing, whatever they hold.
            if tail > 0 {
                for (s, tile) in tails.chunks_exact_mut(KB * STRIP).take(strips).enumerate() {
                    let from = strip_at(s).add((kp - tail) * STRIP);
                    let (last, pad) = tile.split_at_mut(tail * STRIP);
                    last.copy_from_slice(std::slice::from_raw_parts(from, tail * STRIP));
                    pad.fill(0);
                }
            }
            let c = v.c.add(r0 * n + c0);
            let config = Config::full();
            asm!("ldtilecfg [{0}]", in(reg) config.0.as_ptr(), options(nostack));
            let mut sums = [0i32; ROWS * STRIP];
            // Row passes outside, strips inside: a pass's rows of A and of C stay in
            // cache while all of B (the layers' weights: under 1 MB) streams by.
            for i0 in (0..rows).step_by(ROWS) {
                let h = ROWS.min(rows - i0);
                let mut accumulate = v.accumulate;
                if let Some(bias) = v.bias {
                    let at = c.add(i0 * n);
                    seed_bias(at, n as isize, h, c1 - c0, bias.add(c0), accumulate);
                    accumulate = true;
                }
                let a = words.as_ptr().add(i0 * rsa);
                for s in 0..strips {
                    for blk in 0..blocks {
                        let b = if tail > 0 && blk == blocks - 1 {
                            tails.as_ptr().add(s * KB * STRIP)
                        } else {
                            strip_at(s).add(blk * KB * STRIP)
                        };
                        pass(a.add(blk * KB), rsa * 4, b, blk == 0);
                    }
                    store(sums.as_mut_ptr());
                    let j0 = s * STRIP;
                    let w = STRIP.min(c1 - c0 - j0);
                    let masks = [lanes(w), lanes(w.saturating_sub(16))];
                    let cols = v.cols.add(c0 + j0);
                    for i in 0..h {
                        let row = sums.as_ptr().add(i * STRIP);
                        let acc: [[__m512i; 2]; 1] = [[
                            _mm512_loadu_si512(row.cast()),
                            _mm512_loadu_si512(row.add(16).cast()),
                        ]];
                        let out = Sums {
                            row_scales: scales.as_ptr().add(i0 + i),
                            col_scales: cols.cast(),
                            col_sums: cols.add(n).cast(),
                            masks,
                        }
                        .scaled(acc);
                        let at = c.add((i0 + i) * n + j0);
                        store_tile_f32(out, at, n as isize, masks, accumulate);
                    }
                }
            }
            asm!("tilerelease", options(nostack));
        }
        SCRATCH.set((words, scales, tails));
    }

    /// One step along `k` of a `32 × 32` pass: loads two `A` tiles (16 rows each, `rsa`
    /// bytes apart, at `a`) and two `B` tiles (the two 16-column halves of a strip's 16
    /// word rows at `b`) and adds their products into `tmm0`–`tmm3`, zeroed first when
    /// `first`.
    ///
    /// # Safety
    /// The tiles are configured ([`Config::full`]); `a` readable for 32 rows of 64 bytes
    /// `rsa` bytes apart, `b` for 16 rows of `STRIP` words.
    #[inline(always)]
    unsafe fn pass(a: *const u32, rsa: usize, b: *const u32, first: bool) {
        // SAFETY: the caller's contract; the instructions touch only tile registers and
        // the memory described.
        unsafe {
            if first {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack)
                );
            }
            asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tdpbusd tmm1, tmm4, tmm7",
                "tdpbusd tmm2, tmm5, tmm6",
                "tdpbusd tmm3, tmm5, tmm7",
                a0 = in(reg) a,
                a1 = in(reg) a.byte_add(16 * rsa),
                sa = in(reg) rsa,
                b0 = in(reg) b,
                b1 = in(reg) b.add(16),
                sb = in(reg) STRIP * 4,
                options(nostack, readonly),
            );
        }
    }

    /// Stores the `32 × 32` i32 sums of `tmm0`–`tmm3` row-major at `out`.
    ///
    /// # Safety
    /// The tiles are configured; `out` writable for `32 × 32` i32.
    #[inline(always)]
    unsafe fn store(out: *mut i32) {
        // SAFETY: the caller's contract.
        unsafe {
            asm!(
                "tilestored [{o0} + {s}*1], tmm0",
                "tilestored [{o1} + {s}*1], tmm1",
                "tilestored [{o2} + {s}*1], tmm2",
                "tilestored [{o3} + {s}*1], tmm3",
                o0 = in(reg) out,
                o1 = in(reg) out.add(16),
                o2 = in(reg) out.add(16 * STRIP),
                o3 = in(reg) out.add(16 * STRIP + 16),
                s = in(reg) STRIP * 4,
                options(nostack),
            );
        }
    }
}

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use sclstm_core::{Gemm, Packed};

    use crate::packed::{Kernel, gemm_naive, kernels_here, pack, x86::View};

    #[test]
    fn the_tiles_give_the_reference_result_bit_for_bit_or_are_not_offered() {
        if !super::usable() {
            // Without AMX (or with it refused) no product may pick the tiles.
            assert!(!kernels_here(Packed::Int8).contains(&Kernel::Int8Amx));
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        // One and two tile rows, a partial pass, k of one tile, a partial last tile,
        // ragged columns, a block starting past column and row 0.
        let shapes = [(16, 32, 64), (33, 47, 256), (70, 64, 601), (100, 1200, 600)];
        for (m, n, k) in shapes {
            let mut a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            // A row with a NaN: NaN across its row of C.
            a[(m - 1) * k + 3] = f32::NAN;
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let bias: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut packed = vec![0u32; Packed::Int8.elems(k, n, true)];
            pack(Packed::Int8, k, n, true, &b, &mut packed).unwrap();
            for (accumulate, with_bias) in [(false, false), (true, true), (false, true)] {
                let g = Gemm {
                    accumulate,
                    b_strips: true,
                    ..Gemm::new(m, n, k)
                };
                let start: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                let bias = with_bias.then_some(&bias[..]);
                let mut want = start.clone();
                gemm_naive(Packed::Int8, &g, &a, &packed, bias, &mut want).unwrap();
                let mut got = start.clone();
                let words = Packed::Int8.words(k, n, true);
                let view = View {
                    k,
                    n,
                    a: a.as_ptr(),
                    b: packed.as_ptr(),
                    strips: true,
                    cols: packed[words..].as_ptr(),
                    bias: bias.map(<[f32]>::as_ptr),
                    c: got.as_mut_ptr(),
                    accumulate,
                };
                // A block past row 16 and column 32 where the shape has room: what lies
                // outside it stays as given.
                let r0 = if m >= 32 { 16 } else { 0 };
                let c0 = if n > 32 { 32 } else { 0 };
                // SAFETY: AMX is usable; B is in strips; the block lies inside m × n and
                // starts on a strip.
                unsafe { super::x86::block(&view, r0, m, c0, n) };
                for i in 0..m {
                    for j in 0..n {
                        let (w, x) = (want[i * n + j], got[i * n + j]);
                        let expect = if i >= r0 && j >= c0 {
                            w
                        } else {
                            start[i * n + j]
                        };
                        assert!(
                            expect.to_bits() == x.to_bits() || expect.is_nan() && x.is_nan(),
                            "{m}×{n}×{k} acc {accumulate} bias {with_bias} at ({i}, {j}): \
                             {expect} vs {x}"
                        );
                    }
                }
            }
        }
    }
}
