//! bf16 products for inference: the rounding and packing of the bf16 pair layout (see
//! `sclstm_core::Backend::write_packed`), the reference product (the spec) and the fast
//! one's kernels on AVX512_BF16 (driven by [`crate::packed`]).
//!
//! Products of two bf16 values are exact in f32; the fast kernel sums them in f32 with
//! `vdpbf16ps` (per f32 lane: the products of one pair along `k`, added to the
//! accumulator), at half the bytes of f32 and twice the multiply-adds per instruction.

use sclstm_core::{Gemm, NumError, Packed};

use crate::packed::word_at;

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

/// Packs a row-major `k × n` matrix into the pair layout: word `(p, j)` of `dst` holds
/// `src[2p, j]` rounded in its low half and `src[2p + 1, j]` (0 past row `k − 1`) in its
/// high half; the words row-major, or in the strip layout with `strips` (its padding
/// columns zero).
///
/// # Errors
/// [`NumError::BufferTooSmall`] when `src` holds fewer than `k·n` values or `dst` fewer
/// than `Packed::Bf16.elems(k, n, strips)`.
pub fn pack_pairs(
    k: usize,
    n: usize,
    strips: bool,
    src: &[f32],
    dst: &mut [u32],
) -> Result<(), NumError> {
    let words = Packed::Bf16.elems(k, n, strips);
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

/// The reference bf16 product: `A` rounded to bf16, `B` unpacked, every product and sum
/// in f64 over `p` in order, the result rounded to f32 once (plus the bias, and `C` when
/// accumulating). The operands were checked ([`crate::packed::gemm_naive`]).
pub(crate) fn gemm_bf16_naive(g: &Gemm, a: &[f32], b: &[u32], bias: Option<&[f32]>, c: &mut [f32]) {
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
}

/// The AVX512_BF16 kernels.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::{
        __m512, __m512bh, __m512i, _mm512_cvtne2ps_pbh, _mm512_dpbf16_ps, _mm512_mask_storeu_epi32,
        _mm512_maskz_loadu_epi32, _mm512_maskz_loadu_ps, _mm512_set1_epi32, _mm512_setzero_ps,
    };

    use crate::packed::x86::{Panel, Words};
    use crate::small_m::x86::{lanes, store_tile_f32};

    /// The bf16 pair layout's kernels.
    pub(crate) struct Pairs;

    impl Words for Pairs {
        const PER_WORD: usize = 2;

        /// Rounds `k` contiguous f32 to bf16 pairs (`⌈k/2⌉` words, the last one's high
        /// half 0 for an odd `k`), 32 values per conversion. The conversion rounds to
        /// nearest even as [`super::round`] does, and reads subnormal inputs as zero.
        #[target_feature(enable = "avx512f,avx512bf16")]
        unsafe fn pack_row(src: *const f32, k: usize, dst: *mut u32) -> f32 {
            // SAFETY (whole body): masked lanes are not accessed; the rest is in bounds.
            unsafe {
                let mut p = 0;
                while p < k {
                    let rest = (k - p).min(32);
                    let lo = _mm512_maskz_loadu_ps(lanes(rest), src.add(p));
                    let hi = _mm512_maskz_loadu_ps(lanes(rest.saturating_sub(16)), src.add(p + 16));
                    let words: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                    let count = rest.div_ceil(2);
                    _mm512_mask_storeu_epi32(dst.add(p / 2).cast(), lanes(count), words);
                    p += 32;
                }
            }
            1.0
        }

        #[target_feature(enable = "avx512f,avx512bf16")]
        unsafe fn tile<const M: usize>(p: &Panel, j0: usize, m0: u16, m1: u16) {
            // SAFETY (whole body): masked lanes are not accessed; the rest is in bounds.
            unsafe {
                let mut acc: [[__m512; 2]; M] = [[_mm512_setzero_ps(); 2]; M];
                for q in 0..p.kp {
                    let bp = p.b_row(j0, q);
                    let b0: __m512bh = std::mem::transmute(_mm512_maskz_loadu_epi32(m0, bp));
                    let b1: __m512bh =
                        std::mem::transmute(_mm512_maskz_loadu_epi32(m1, bp.add(16)));
                    for (i, acc_i) in acc.iter_mut().enumerate() {
                        let pair = *p.a.add(i * p.rsa + q) as i32;
                        let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                        acc_i[0] = _mm512_dpbf16_ps(acc_i[0], av, b0);
                        acc_i[1] = _mm512_dpbf16_ps(acc_i[1], av, b1);
                    }
                }
                store_tile_f32(acc, p.c.add(j0), p.rsc, [m0, m1], p.accumulate);
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
        let mut packed = vec![0u32; Packed::Bf16.elems(k, n, false)];
        pack_pairs(k, n, false, &b, &mut packed).unwrap();
        let mut c = vec![f32::NAN; m * n];
        crate::packed::gemm_naive(
            Packed::Bf16,
            &Gemm::new(m, n, k),
            &a,
            &packed,
            Some(&bias),
            &mut c,
        )
        .unwrap();
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
            crate::packed::gemm_naive(Packed::Bf16, &transposed, &a, &packed, None, &mut c),
            Err(NumError::ShapeMismatch { .. })
        ));
        let err = crate::packed::gemm_naive(
            Packed::Bf16,
            &Gemm::new(m, n, k + 2),
            &a,
            &packed,
            None,
            &mut c,
        );
        assert!(matches!(err, Err(NumError::BufferTooSmall { .. })));
    }
}
