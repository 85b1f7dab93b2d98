//! bf16 products for inference: the rounding and packing of the bf16 pair layout (see
//! `sclstm_core::Backend::write_bf16`), the reference product (the spec) and the fast
//! one on AVX512_BF16.
//!
//! A product `C (+)= A·B (+ bias)` reads `B` packed once (a weight, written when the
//! weights are) and rounds `A` (activations) to bf16 on the way in. Products of two bf16
//! values are exact in f32; the fast kernel sums them in f32 with `vdpbf16ps` (per f32
//! lane: the products of one pair along `k`, added to the accumulator), keeping an
//! `M × 32` block of `C` in registers as the f32 register tile does and streaming `B`'s
//! pair rows, at half the bytes of f32 and twice the multiply-adds per instruction.
//! Threads split `C` as for the f32 products ([`crate::gemm`]), so a fixed thread count
//! gives a fixed result.

use rayon::ThreadPool;
use sclstm_core::{Gemm, NumError, STRIP, strip_len};

use crate::kernels::Kernels;

/// Rounds an f32 to bf16 (its upper 16 bits), to nearest, ties to even; a NaN stays a
/// NaN (quiet), infinities stay infinite, values past the largest bf16 round to infinity.
pub fn round(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    let lsb = (bits >> 16) & 1;
    ((bits + 0x7fff + lsb) >> 16) as u16
}

/// The f32 value of a bf16 (exact).
pub fn widen(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// Words of a `k × n` matrix in the pair layout: `⌈k/2⌉·n`, or, with `strips`, the
/// `⌈k/2⌉ × n` words in the strip layout ([`strip_len`]).
pub fn pair_words(k: usize, n: usize, strips: bool) -> usize {
    if strips {
        strip_len(k.div_ceil(2), n)
    } else {
        k.div_ceil(2) * n
    }
}

/// Index of word `(p, j)` of a `⌈k/2⌉ × n` word matrix with `kp = ⌈k/2⌉` rows: row-major,
/// or in the strip layout.
fn word_at(kp: usize, n: usize, strips: bool, p: usize, j: usize) -> usize {
    if strips {
        (j / STRIP) * STRIP * kp + p * STRIP + j % STRIP
    } else {
        p * n + j
    }
}

/// Packs a row-major `k × n` matrix into the pair layout: word `(p, j)` of `dst` holds
/// `src[2p, j]` rounded in its low half and `src[2p + 1, j]` (0 past row `k − 1`) in its
/// high half; the words row-major, or in the strip layout with `strips` (its padding
/// columns zero).
///
/// # Errors
/// [`NumError::BufferTooSmall`] when `src` holds fewer than `k·n` values or `dst` fewer
/// than [`pair_words`].
pub fn pack_pairs(
    k: usize,
    n: usize,
    strips: bool,
    src: &[f32],
    dst: &mut [u32],
) -> Result<(), NumError> {
    let words = pair_words(k, n, strips);
    for (op, len, needed) in [
        ("pack_pairs (src)", src.len(), k * n),
        ("pack_pairs (dst)", dst.len(), words),
    ] {
        if len < needed {
            return Err(NumError::BufferTooSmall { op, len, needed });
        }
    }
    let kp = k.div_ceil(2);
    if strips {
        // Only the last strip's padding columns are not written below.
        dst[..words].fill(0);
    }
    for p in 0..kp {
        let lo = &src[2 * p * n..(2 * p + 1) * n];
        let hi = src.get((2 * p + 1) * n..(2 * p + 2) * n);
        for j in 0..n {
            let h = hi.map_or(0, |hi| round(hi[j]));
            dst[word_at(kp, n, strips, p, j)] = u32::from(round(lo[j])) | (u32::from(h) << 16);
        }
    }
    Ok(())
}

/// Checks a bf16 product's operands: neither stored transposed, `A`, bias and `C` as for
/// an f32 product, `B` holding [`pair_words`] of `k × n` from `b_off`.
///
/// # Errors
/// [`NumError::ShapeMismatch`] for a transposed operand, [`NumError::BufferTooSmall`]
/// naming the first operand that does not fit.
pub fn check_gemm_bf16(
    g: &Gemm,
    a_len: usize,
    b_len: usize,
    bias_len: Option<usize>,
    c_len: usize,
) -> Result<(), NumError> {
    if g.trans_a || g.trans_b {
        return Err(NumError::ShapeMismatch {
            op: "gemm_bf16 (operands must be stored plain, not transposed)",
            lhs: vec![usize::from(g.trans_a)],
            rhs: vec![usize::from(g.trans_b)],
        });
    }
    // B's words fit where an f32 `⌈k/2⌉ × n` matrix (in strips or not) would.
    let words = Gemm {
        k: g.k.div_ceil(2),
        ..*g
    };
    crate::gemm::check_gemm(&words, usize::MAX, b_len, None, usize::MAX)?;
    crate::gemm::check_gemm(g, a_len, usize::MAX, bias_len, c_len)
}

/// The reference bf16 product: `A` rounded to bf16, `B` unpacked, every product and sum
/// in f64 over `p` in order, the result rounded to f32 once (plus the bias, and `C` when
/// accumulating).
///
/// # Errors
/// As [`check_gemm_bf16`].
pub fn gemm_bf16_naive(
    g: &Gemm,
    a: &[f32],
    b: &[u32],
    bias: Option<&[f32]>,
    c: &mut [f32],
) -> Result<(), NumError> {
    check_gemm_bf16(g, a.len(), b.len(), bias.map(<[f32]>::len), c.len())?;
    let (m, n, k) = (g.m, g.n, g.k);
    let b_at = |p: usize, j: usize| {
        let w = b[g.b_off + word_at(k.div_ceil(2), n, g.b_strips, p / 2, j)];
        // The low half holds the even row of the pair.
        widen((w >> (16 * (p % 2))) as u16)
    };
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                let av = widen(round(a[g.a_off + i * k + p]));
                acc += f64::from(av) * f64::from(b_at(p, j));
            }
            if let Some(bias) = bias {
                acc += f64::from(bias[j]);
            }
            let cij = &mut c[g.c_off + i * n + j];
            *cij = if g.accumulate {
                (f64::from(*cij) + acc) as f32
            } else {
                acc as f32
            };
        }
    }
    Ok(())
}

/// Whether the fast kernel runs on this machine: the CPU has AVX512_BF16 and the
/// AVX-512 kernel set is active (`SCLSTM_KERNELS` may force a smaller one).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Kernels::active() == Kernels::Avx512 && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Why the fast kernel does not run here (`None` when it does).
pub fn unavailable_reason() -> Option<String> {
    if available() {
        return None;
    }
    Some(format!(
        "bf16 products need AVX512_BF16 and the avx512 kernel set; this CPU ({}) runs the {} set{}",
        crate::kernels::cpu_model(),
        Kernels::active().name(),
        if cfg!(target_arch = "x86_64") && Kernels::available().contains(&Kernels::Avx512) {
            " and has no AVX512_BF16"
        } else {
            ""
        }
    ))
}

/// The fast bf16 product, split across `pool` as the f32 products are (see
/// `gemm::split_output`).
///
/// # Errors
/// As [`check_gemm_bf16`]; [`NumError::Backend`] when [`available`] is false.
pub fn gemm_bf16_fast(
    g: &Gemm,
    a: &[f32],
    b: &[u32],
    bias: Option<&[f32]>,
    c: &mut [f32],
    pool: Option<&ThreadPool>,
) -> Result<(), NumError> {
    if let Some(message) = unavailable_reason() {
        return Err(NumError::Backend {
            backend: "cpu".into(),
            kind: sclstm_core::BackendErrorKind::Unavailable,
            message,
        });
    }
    check_gemm_bf16(g, a.len(), b.len(), bias.map(<[f32]>::len), c.len())?;
    if g.m == 0 || g.n == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    {
        let view = x86::View {
            k: g.k,
            n: g.n,
            // Offsets as pointer arithmetic: with `k = 0` nothing is read, and an offset
            // past the end is then no error.
            a: a.as_ptr().wrapping_add(g.a_off),
            b: b.as_ptr().wrapping_add(g.b_off),
            strips: g.b_strips,
            bias: bias.map(<[f32]>::as_ptr),
            c: c.as_mut_ptr().wrapping_add(g.c_off),
            accumulate: g.accumulate,
        };
        // SAFETY: `available()` vouches for the instructions; the operands were checked
        // and the blocks `split_output` hands out are disjoint and inside `m × n`.
        crate::gemm::split_output(g, pool, |r0, r1, c0, c1| unsafe {
            view.block(r0, r1, c0, c1)
        });
        Ok(())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = pool;
        unreachable!("internal: available() is false off x86_64")
    }
}

/// The AVX512_BF16 kernels.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m512, __m512bh, __m512i, _mm512_cvtne2ps_pbh, _mm512_dpbf16_ps, _mm512_mask_storeu_epi32,
        _mm512_maskz_loadu_epi32, _mm512_maskz_loadu_ps, _mm512_set1_epi32, _mm512_setzero_ps,
    };
    use std::cell::RefCell;

    use sclstm_core::STRIP;

    use crate::gemm::{TALL_COL_BLOCK, seed_bias};
    use crate::small_m::x86::store_tile_f32;

    /// Rows of `C` a register tile holds: `2·12` accumulators, two `B` vectors and the
    /// broadcast in 27 of the 32 registers, as for the f32 tile.
    const ROWS: usize = 12;

    thread_local! {
        /// Each thread's `A` rows rounded to bf16 pairs, reused across calls.
        static A_PAIRS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    }

    /// The operands of one checked product (pointers at their offsets; `A` and `C`
    /// row-major with `k` and `n` columns, `B` in the pair layout with `n` columns, its
    /// words in strips when `strips`).
    pub(super) struct View {
        pub(super) k: usize,
        pub(super) n: usize,
        pub(super) a: *const f32,
        pub(super) b: *const u32,
        pub(super) strips: bool,
        pub(super) bias: Option<*const f32>,
        pub(super) c: *mut f32,
        pub(super) accumulate: bool,
    }

    // SAFETY: the pointers come from slices borrowed for the whole call of
    // `gemm_bf16_fast`; threads only read A, B and bias, and write disjoint blocks of C.
    unsafe impl Sync for View {}

    impl View {
        /// Computes the block `C[r0..r1, c0..c1]`.
        ///
        /// # Safety
        /// AVX512_BF16 available; the block lies inside `m × n` and no other thread
        /// touches it.
        pub(super) unsafe fn block(&self, r0: usize, r1: usize, c0: usize, c1: usize) {
            let (rows, kp, n) = (r1 - r0, self.k.div_ceil(2), self.n);
            A_PAIRS.with_borrow_mut(|pairs| {
                // `round_row` writes every word of the rows, so old contents never show.
                if pairs.len() < rows * kp {
                    pairs.resize(rows * kp, 0);
                }
                // SAFETY (whole body): offsets stay inside the checked operands.
                unsafe {
                    for i in 0..rows {
                        let row = self.a.add((r0 + i) * self.k);
                        round_row(row, self.k, pairs.as_mut_ptr().add(i * kp));
                    }
                    let c = self.c.add(r0 * n + c0);
                    let mut accumulate = self.accumulate;
                    if let Some(bias) = self.bias {
                        seed_bias(c, n as isize, rows, c1 - c0, bias.add(c0), accumulate);
                        accumulate = true;
                    }
                    // Row chunks of ROWS over one L2-sized block of B's columns at a
                    // time, as for the f32 tall products.
                    let mut j0 = c0;
                    while j0 < c1 {
                        let w = TALL_COL_BLOCK.min(c1 - j0);
                        let mut i0 = 0;
                        while i0 < rows {
                            let h = ROWS.min(rows - i0);
                            // Strip-layout blocks start on a strip (split_output
                            // and TALL_COL_BLOCK keep multiples of STRIP).
                            let (b, rsb, strip) = if self.strips {
                                (self.b.add(j0 / STRIP * STRIP * kp), STRIP, STRIP * kp)
                            } else {
                                (self.b.add(j0), n, 0)
                            };
                            let panel = Panel {
                                kp,
                                w,
                                a: pairs.as_ptr().add(i0 * kp),
                                b,
                                rsb,
                                strip,
                                c: c.add(i0 * n + (j0 - c0)),
                                rsc: n as isize,
                                accumulate,
                            };
                            panel.run(h);
                            i0 += h;
                        }
                        j0 += w;
                    }
                }
            });
        }
    }

    /// Rounds `k` contiguous f32 to bf16 pairs (`⌈k/2⌉` words, the last one's high half
    /// 0 for an odd `k`), 32 values per conversion. The conversion rounds to nearest
    /// even as [`super::round`] does, and reads subnormal inputs as zero.
    ///
    /// # Safety
    /// AVX512_BF16 available; `src` valid for `k` reads, `dst` for `⌈k/2⌉` writes.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn round_row(src: *const f32, k: usize, dst: *mut u32) {
        // SAFETY (whole body): masked lanes are not accessed; the rest is in bounds.
        unsafe {
            let mut p = 0;
            while p < k {
                let rest = (k - p).min(32);
                let lanes = |n: usize| ((1u32 << n.min(16)) - 1) as u16;
                let lo = _mm512_maskz_loadu_ps(lanes(rest), src.add(p));
                let hi = _mm512_maskz_loadu_ps(lanes(rest.saturating_sub(16)), src.add(p + 16));
                let words: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                let count = rest.div_ceil(2);
                _mm512_mask_storeu_epi32(dst.add(p / 2).cast(), lanes(count), words);
                p += 32;
            }
        }
    }

    /// One register-tile pass: rows of `A` in pairs (`kp` words per row), `w` columns
    /// of `B` (row stride `rsb` words; `strip` words from one strip to the next in the
    /// strip layout, else 0) and `C` (row stride `rsc`).
    struct Panel {
        kp: usize,
        w: usize,
        a: *const u32,
        b: *const u32,
        rsb: usize,
        strip: usize,
        c: *mut f32,
        rsc: isize,
        accumulate: bool,
    }

    impl Panel {
        /// Computes the panel's `h` rows (`1 ≤ h ≤ ROWS`).
        ///
        /// # Safety
        /// As for [`View::block`]; the panel lies inside the block.
        unsafe fn run(&self, h: usize) {
            // SAFETY: forwarded; `h` selects a tile of exactly that height.
            unsafe {
                match h {
                    1 => self.tiles::<1>(),
                    2 => self.tiles::<2>(),
                    3 => self.tiles::<3>(),
                    4 => self.tiles::<4>(),
                    5 => self.tiles::<5>(),
                    6 => self.tiles::<6>(),
                    7 => self.tiles::<7>(),
                    8 => self.tiles::<8>(),
                    9 => self.tiles::<9>(),
                    10 => self.tiles::<10>(),
                    11 => self.tiles::<11>(),
                    12 => self.tiles::<12>(),
                    _ => unreachable!("internal: row chunks have 1..=ROWS rows"),
                }
            }
        }

        /// All `w` columns in `M × 32` tiles, the last one masked.
        ///
        /// # Safety
        /// As for [`Panel::run`].
        #[target_feature(enable = "avx512f,avx512bf16")]
        unsafe fn tiles<const M: usize>(&self) {
            let lanes = |n: usize| ((1u32 << n.min(16)) - 1) as u16;
            // SAFETY: the tiles stay inside the panel.
            unsafe {
                for t in 0..self.w / 32 {
                    self.tile::<M>(t * 32, u16::MAX, u16::MAX);
                }
                let tail = self.w % 32;
                if tail > 0 {
                    let j0 = self.w - tail;
                    self.tile::<M>(j0, lanes(tail), lanes(tail.saturating_sub(16)));
                }
            }
        }

        /// One `M × 32` tile at column `j0`; `m0` / `m1` mask the columns of the two
        /// halves (masked-out lanes are neither loaded from `B` nor stored to `C`).
        ///
        /// # Safety
        /// As for [`Panel::run`]; the unmasked columns lie inside the panel.
        #[target_feature(enable = "avx512f,avx512bf16")]
        unsafe fn tile<const M: usize>(&self, j0: usize, m0: u16, m1: u16) {
            // SAFETY (whole body): masked lanes are not accessed; the rest is in bounds.
            unsafe {
                let mut acc: [[__m512; 2]; M] = [[_mm512_setzero_ps(); 2]; M];
                // Tiles are 32 = STRIP columns wide, so each starts a strip.
                let col = if self.strip == 0 {
                    j0
                } else {
                    j0 / STRIP * self.strip
                };
                for p in 0..self.kp {
                    let bp = self.b.add(p * self.rsb + col).cast::<i32>();
                    let b0: __m512bh = std::mem::transmute(_mm512_maskz_loadu_epi32(m0, bp));
                    let b1: __m512bh =
                        std::mem::transmute(_mm512_maskz_loadu_epi32(m1, bp.add(16)));
                    for (i, acc_i) in acc.iter_mut().enumerate() {
                        let pair = *self.a.add(i * self.kp + p) as i32;
                        let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                        acc_i[0] = _mm512_dpbf16_ps(acc_i[0], av, b0);
                        acc_i[1] = _mm512_dpbf16_ps(acc_i[1], av, b1);
                    }
                }
                store_tile_f32(acc, self.c.add(j0), self.rsc, [m0, m1], self.accumulate);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn rounding_is_to_nearest_even_and_keeps_specials() {
        // 1 + 2^-8 lies halfway between two bf16 (1 and 1 + 2^-7): ties to the even one.
        assert_eq!(round(1.0 + 2f32.powi(-8)), round(1.0));
        assert_eq!(round(1.0 + 3.0 * 2f32.powi(-8)), round(1.0 + 2f32.powi(-6)));
        // Just above halfway rounds up.
        assert_eq!(
            widen(round(1.0 + 2f32.powi(-8) + 2f32.powi(-20))),
            1.0 + 2f32.powi(-7)
        );
        for x in [0.0, -0.0, 1.5, -3.25, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!(
                widen(round(x)).to_bits(),
                x.to_bits(),
                "{x} is exact in bf16"
            );
        }
        assert!(widen(round(f32::NAN)).is_nan());
        assert!(
            widen(round(f32::from_bits(0x7f80_0001))).is_nan(),
            "a low-bit NaN"
        );
        assert_eq!(widen(round(f32::MAX)), f32::INFINITY);
        // Relative error at most half a unit in the 8th significant bit (2^-8).
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..10_000 {
            let x: f32 = rng.random_range(-1e6..1e6);
            assert!(
                (widen(round(x)) - x).abs() <= x.abs() * 2f32.powi(-8),
                "{x}"
            );
        }
    }

    #[test]
    fn packing_puts_pairs_along_k_and_zero_past_the_last_row() {
        // 3 × 2: rows 0 and 1 share the first word row; row 2 pairs with zero.
        let src = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut dst = [0u32; 4];
        pack_pairs(3, 2, false, &src, &mut dst).unwrap();
        let half = |w: u32, hi: bool| widen(if hi { (w >> 16) as u16 } else { w as u16 });
        assert_eq!([half(dst[0], false), half(dst[0], true)], [1.0, 3.0]);
        assert_eq!([half(dst[1], false), half(dst[1], true)], [2.0, 4.0]);
        assert_eq!([half(dst[2], false), half(dst[2], true)], [5.0, 0.0]);
        assert_eq!([half(dst[3], false), half(dst[3], true)], [6.0, 0.0]);
        let short = pack_pairs(3, 2, false, &src, &mut [0; 3]).unwrap_err();
        assert!(matches!(short, NumError::BufferTooSmall { needed: 4, .. }));
        assert!(pack_pairs(3, 2, false, &src[..5], &mut dst).is_err());
        // In strips: one strip of 32 word columns, the two real ones first, zeros after.
        let mut strips = vec![u32::MAX; 64];
        pack_pairs(3, 2, true, &src, &mut strips).unwrap();
        assert_eq!(&strips[..2], &dst[..2]);
        assert_eq!(&strips[32..34], &dst[2..4]);
        assert!(strips[2..32].iter().chain(&strips[34..]).all(|&w| w == 0));
    }

    /// A random `rows × cols` matrix with entries in ±1.
    fn random(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    #[test]
    fn the_reference_is_the_f64_product_of_the_rounded_operands() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (m, n, k) = (3, 5, 7);
        let (a, b, bias) = (
            random(&mut rng, m * k),
            random(&mut rng, k * n),
            random(&mut rng, n),
        );
        let mut packed = vec![0u32; pair_words(k, n, false)];
        pack_pairs(k, n, false, &b, &mut packed).unwrap();
        let mut c = vec![f32::NAN; m * n];
        gemm_bf16_naive(&Gemm::new(m, n, k), &a, &packed, Some(&bias), &mut c).unwrap();
        let r = |x: f32| f64::from(widen(round(x)));
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|p| r(a[i * k + p]) * r(b[p * n + j]))
                    .sum::<f64>()
                    + f64::from(bias[j]);
                assert_eq!(c[i * n + j], want as f32);
                // And it is a bf16 product: far from exact f32 at this size.
                let exact: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum::<f32>() + bias[j];
                assert!((c[i * n + j] - exact).abs() < 0.05);
            }
        }
        let transposed = Gemm {
            trans_b: true,
            ..Gemm::new(m, n, k)
        };
        assert!(matches!(
            gemm_bf16_naive(&transposed, &a, &packed, None, &mut c),
            Err(NumError::ShapeMismatch { .. })
        ));
        let err = gemm_bf16_naive(&Gemm::new(m, n, k + 2), &a, &packed, None, &mut c);
        assert!(matches!(err, Err(NumError::BufferTooSmall { .. })));
    }

    /// Sums of `|A||B|` per output element, the scale of its f32 summation error.
    fn magnitude(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| f64::from(a[i * k + p].abs() * b[p * n + j].abs()))
                    .sum();
            }
        }
        out
    }

    #[test]
    fn the_fast_kernel_agrees_with_the_reference_or_is_refused() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        // Tiny-m recurrent shapes, tall projections, odd k, ragged column tails, a
        // product large enough to split across threads (by columns and by rows).
        let shapes = [
            (1, 1, 1),
            (10, 1200, 300),
            (7, 33, 5),
            (12, 64, 2),
            (13, 31, 17),
            (25, 300, 601),
            (300, 1200, 58),
            (3, 17, 0),
        ];
        for ((m, n, k), strips) in shapes.into_iter().flat_map(|s| [(s, false), (s, true)]) {
            let (a, b) = (random(&mut rng, m * k), random(&mut rng, k * n));
            let bias = random(&mut rng, n);
            let mut packed = vec![0u32; pair_words(k, n, strips)];
            pack_pairs(k, n, strips, &b, &mut packed).unwrap();
            let scale = magnitude(&a, &b, m, n, k);
            for (accumulate, with_bias, threads) in [
                (false, false, 1),
                (true, true, 2),
                (false, true, 2),
                (true, false, 1),
            ] {
                let g = Gemm {
                    accumulate,
                    b_strips: strips,
                    ..Gemm::new(m, n, k)
                };
                let start = random(&mut rng, m * n);
                let fill = |c: &mut Vec<f32>| {
                    if accumulate {
                        c.clone_from(&start);
                    } else {
                        c.fill(f32::NAN);
                    }
                };
                let (mut want, mut got) = (vec![0.0; m * n], vec![0.0; m * n]);
                fill(&mut want);
                fill(&mut got);
                let bias = with_bias.then_some(&bias[..]);
                gemm_bf16_naive(&g, &a, &packed, bias, &mut want).unwrap();
                let pool = (threads > 1).then_some(&pool);
                let result = gemm_bf16_fast(&g, &a, &packed, bias, &mut got, pool);
                if !available() {
                    let err = result.unwrap_err();
                    assert!(err.to_string().contains("AVX512_BF16"), "{err}");
                    continue;
                }
                result.unwrap();
                for (idx, ((&w, &x), &s)) in want.iter().zip(&got).zip(&scale).enumerate() {
                    // f32 summation of k exact products: well inside k·2^-24·Σ|a||b|.
                    let tol = 1e-6 + (k as f64) * 6e-8 * s;
                    assert!(
                        (f64::from(w) - f64::from(x)).abs() <= tol,
                        "{m}×{n}×{k} strips {strips} acc {accumulate} bias {with_bias} at {idx}: \
                         {w} vs {x}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_fast_kernel_touches_only_its_block_and_gives_one_result_per_thread_count() {
        if !available() {
            assert!(unavailable_reason().is_some());
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (m, n, k) = (40, 700, 300);
        let (a, b) = (random(&mut rng, m * k), random(&mut rng, k * n));
        let mut packed = vec![0u32; pair_words(k, n, false) + 5];
        pack_pairs(k, n, false, &b, &mut packed[5..]).unwrap();
        // C at an offset inside a larger buffer: the rest stays as it was.
        let g = Gemm {
            c_off: 3,
            b_off: 5,
            ..Gemm::new(m, n, k)
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut one = vec![-7.0f32; m * n + 9];
        gemm_bf16_fast(&g, &a, &packed, None, &mut one, None).unwrap();
        let mut again = vec![-7.0f32; m * n + 9];
        gemm_bf16_fast(&g, &a, &packed, None, &mut again, None).unwrap();
        assert_eq!(one, again, "deterministic");
        let mut two = vec![-7.0f32; m * n + 9];
        gemm_bf16_fast(&g, &a, &packed, None, &mut two, Some(&pool)).unwrap();
        for buf in [&one, &two] {
            assert!(buf[..3].iter().chain(&buf[3 + m * n..]).all(|&x| x == -7.0));
        }
        // Per element, one thread sums in one order: the same result at both counts,
        // and with B's words in strips.
        assert_eq!(one, two);
        let mut strips = vec![0u32; pair_words(k, n, true) + 5];
        pack_pairs(k, n, true, &b, &mut strips[5..]).unwrap();
        let mut striped = vec![-7.0f32; m * n + 9];
        let gs = Gemm {
            b_strips: true,
            ..g
        };
        gemm_bf16_fast(&gs, &a, &strips, None, &mut striped, Some(&pool)).unwrap();
        assert_eq!(one, striped);
        // An empty inner dimension reads nothing, whatever the offsets: C = bias.
        let empty = Gemm {
            a_off: 9,
            b_off: 9,
            ..Gemm::new(2, 3, 0)
        };
        let mut c = vec![f32::NAN; 6];
        gemm_bf16_fast(&empty, &[], &[], Some(&[1.0, 2.0, 3.0]), &mut c, None).unwrap();
        assert_eq!(c, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }
}
