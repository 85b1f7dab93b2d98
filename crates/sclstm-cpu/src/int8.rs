//! int8 products for inference: the quantization and packing of the int8 quad layout
//! (see `sclstm_core::Backend::write_packed`), the reference product (the spec) and the
//! fast one's kernels on AVX512_VNNI, on AVX-VNNI and on AVX2 (driven by
//! [`crate::packed`]).
//!
//! Weights are quantized per output column, layer inputs per row as a product starts
//! (dynamic quantization), both symmetrically to `[-127, 127]`. For AVX512_VNNI and
//! AVX-VNNI the inputs are stored offset by 128 as unsigned bytes, the operand
//! `vpdpbusd` takes (per i32 lane: the four products of one quad along `k`, added to the
//! accumulator); for AVX2 as signed 16-bit values, against `B`'s quads widened to 16
//! bits. The integer sums are exact, so every fast kernel gives the reference's result
//! bit for bit: the scaling after the sum is the same few f32 operations in the same
//! order.

use sclstm_core::{Gemm, NumError, Packed};

use crate::packed::word_at;

/// The quantization of `values` (a weight column or a row of `A`) whose largest `|v|` is
/// `largest`: the multiplier `127 / largest` and the scale `largest / 127`; `(0, 0)`
/// when every value is 0 or so small that the multiplier overflows (below 3.8e-37, read
/// as zeros), and `(0, NaN)` when one is a NaN or infinite, so that the product's result
/// is NaN.
fn quantization(largest: f32) -> (f32, f32) {
    let inv = 127.0 / largest;
    if !largest.is_finite() {
        (0.0, f32::NAN)
    } else if largest == 0.0 || !inv.is_finite() {
        (0.0, 0.0)
    } else {
        (inv, largest / 127.0)
    }
}

/// The largest `|v|` so far after `m`, NaN once any value was a NaN.
fn max_abs(m: f32, v: f32) -> f32 {
    if v.is_nan() || m.is_nan() {
        f32::NAN
    } else {
        m.max(v.abs())
    }
}

/// One value quantized with multiplier `inv`: `round(v · inv)` to nearest, ties to even.
/// Adding and subtracting 1.5·2²³ leaves the nearest integer (ties to even) of any
/// `|x| < 2²²` in IEEE f32 arithmetic, without a call to `rintf` on CPUs below SSE4.1;
/// here `|v · inv| ≤ 127`.
fn quantize(v: f32, inv: f32) -> i32 {
    const SHIFT: f32 = 12_582_912.0;
    ((v * inv + SHIFT) - SHIFT) as i32
}

/// Quantizes one row of `A` as the product does: returns its scale and writes its
/// values offset by 128 (`[1, 255]`; 128 for every value of a row whose scale is 0 or
/// NaN) to `out`.
pub fn quantize_row(row: &[f32], out: &mut [u8]) -> f32 {
    let (inv, scale) = quantization(row.iter().fold(0.0, |m, &v| max_abs(m, v)));
    for (o, &v) in out.iter_mut().zip(row) {
        *o = if scale.is_nan() {
            128
        } else {
            (quantize(v, inv) + 128) as u8
        };
    }
    scale
}

/// Packs a row-major `k × n` matrix into the int8 quad layout: column `j` quantized with
/// its own scale, word `(p, j)` holding rows `4p .. 4p + 4` in its bytes (0 past row
/// `k − 1`), the words row-major or in the strip layout with `strips` (its padding
/// columns zero), then the `n` scales and the `n` column sums.
///
/// # Errors
/// [`NumError::BufferTooSmall`] when `src` holds fewer than `k·n` values or `dst` fewer
/// than `Packed::Int8.elems(k, n, strips)`.
pub fn pack_quads(
    k: usize,
    n: usize,
    strips: bool,
    src: &[f32],
    dst: &mut [u32],
) -> Result<(), NumError> {
    let len = Packed::Int8.elems(k, n, strips);
    for (op, have, needed) in [
        ("pack_quads (src)", src.len(), k * n),
        ("pack_quads (dst)", dst.len(), len),
    ] {
        if have < needed {
            return Err(NumError::BufferTooSmall {
                op,
                len: have,
                needed,
            });
        }
    }
    let kp = k.div_ceil(4);
    let words = Packed::Int8.words(k, n, strips);
    let (body, cols) = dst[..len].split_at_mut(words);
    // The strip layout's padding columns and the last word row's padding bytes.
    body.fill(0);
    // Row by row (the source is row-major): the columns' largest values, then the
    // quantized values, each into its byte, and the columns' sums.
    let mut maxes = vec![0.0f32; n];
    for row in src[..k * n].chunks_exact(n.max(1)) {
        for (m, &v) in maxes.iter_mut().zip(row) {
            *m = max_abs(*m, v);
        }
    }
    let quant: Vec<(f32, f32)> = maxes.into_iter().map(quantization).collect();
    let (scales, sums) = cols.split_at_mut(n);
    sums.fill(0);
    for (p, row) in src[..k * n].chunks_exact(n.max(1)).enumerate() {
        let cols = row.iter().zip(&quant).zip(sums.iter_mut());
        for (j, ((&v, &(inv, scale)), sum)) in cols.enumerate() {
            let q = if scale.is_nan() { 0 } else { quantize(v, inv) };
            *sum = (*sum as i32 + q) as u32;
            body[word_at(kp, n, strips, p / 4, j)] |= u32::from(q as i8 as u8) << (8 * (p % 4));
        }
    }
    for (scale, &(_, s)) in scales.iter_mut().zip(&quant) {
        *scale = s.to_bits();
    }
    Ok(())
}

/// The reference int8 product: each row of `A` quantized ([`quantize_row`]), the integer
/// sum over `p` against `B`'s quads, scaled by the row's and the column's scales in f32
/// (plus the bias, and `C` when accumulating), as the module docs say. The operands were
/// checked ([`crate::packed::gemm_naive`]).
pub(crate) fn gemm_int8_naive(g: &Gemm, a: &[f32], b: &[u32], bias: Option<&[f32]>, c: &mut [f32]) {
    let (m, n, k) = (g.m, g.n, g.k);
    let kp = k.div_ceil(4);
    let b = &b[g.b_off..g.b_off + Packed::Int8.elems(k, n, g.b_strips)];
    let (words, cols) = b.split_at(b.len() - 2 * n);
    let q_at = |p: usize, j: usize| {
        (words[word_at(kp, n, g.b_strips, p / 4, j)] >> (8 * (p % 4))) as u8 as i8
    };
    let mut row = vec![0u8; k];
    for i in 0..m {
        let t = quantize_row(&a[g.a_off + i * k..g.a_off + (i + 1) * k], &mut row);
        for j in 0..n {
            let dot: i32 = (0..k)
                .map(|p| i32::from(row[p]) * i32::from(q_at(p, j)))
                .sum();
            let d = (dot - 128 * cols[n + j] as i32) as f32;
            let v = d * (t * f32::from_bits(cols[j]));
            let cij = &mut c[g.c_off + i * n + j];
            let mut accumulate = g.accumulate;
            if let Some(bias) = bias {
                *cij = if accumulate { *cij + bias[j] } else { bias[j] };
                accumulate = true;
            }
            *cij = if accumulate { *cij + v } else { v };
        }
    }
}

/// The kernels: AVX512_VNNI's, AVX-VNNI's and AVX2's.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::{
        __m512, __m512i, _CMP_UNORD_Q, _mm512_abs_ps, _mm512_add_epi32, _mm512_cmp_ps_mask,
        _mm512_cvtepi32_ps, _mm512_cvtps_epi32, _mm512_dpbusd_epi32,
        _mm512_mask_cvtepi32_storeu_epi8, _mm512_maskz_loadu_epi32, _mm512_maskz_loadu_ps,
        _mm512_max_ps, _mm512_mul_ps, _mm512_reduce_max_ps, _mm512_set1_epi32, _mm512_set1_ps,
        _mm512_setzero_ps, _mm512_setzero_si512, _mm512_slli_epi32, _mm512_sub_epi32,
    };

    use std::arch::x86_64::{
        __m128i, __m256, __m256i, _CMP_UNORD_Q as UNORD, _mm_add_epi16, _mm_loadu_si128,
        _mm_maskload_epi32, _mm_packs_epi32, _mm_packus_epi16, _mm_set1_epi16, _mm_storel_epi64,
        _mm_storeu_si128, _mm256_add_epi32, _mm256_add_ps, _mm256_andnot_ps,
        _mm256_castsi256_si128, _mm256_cmp_ps, _mm256_cvtepi8_epi16, _mm256_cvtepi32_ps,
        _mm256_cvtps_epi32, _mm256_dpbusd_avx_epi32, _mm256_extracti128_si256, _mm256_hadd_epi32,
        _mm256_loadu_ps, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maskload_epi32,
        _mm256_maskload_ps, _mm256_maskstore_ps, _mm256_max_ps, _mm256_movemask_ps, _mm256_mul_ps,
        _mm256_or_ps, _mm256_permute4x64_epi64, _mm256_set1_epi32, _mm256_set1_epi64x,
        _mm256_set1_ps, _mm256_setzero_ps, _mm256_setzero_si256, _mm256_slli_epi32,
        _mm256_storeu_ps, _mm256_sub_epi32,
    };

    use crate::packed::x86::{Panel, Words};
    use crate::small_m::avx2::lanes_f32;
    use crate::small_m::x86::{lanes, store_tile_f32};

    /// The int8 quad layout's kernels on AVX512_VNNI.
    pub(crate) struct Vnni;

    impl Words for Vnni {
        const PER_WORD: usize = 4;

        /// Quantizes `k` contiguous f32 as [`super::quantize_row`] does, 16 values per
        /// conversion (`vcvtps2dq` rounds to nearest even), into `⌈k/4⌉` words.
        #[target_feature(enable = "avx512f")]
        unsafe fn pack_row(src: *const f32, k: usize, dst: *mut u32) -> f32 {
            // SAFETY (whole body): masked lanes are not accessed; the rest is in bounds.
            unsafe {
                let (mut max, mut nan) = (_mm512_setzero_ps(), 0u16);
                for p in (0..k).step_by(16) {
                    let x = _mm512_maskz_loadu_ps(lanes(k - p), src.add(p));
                    nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
                    max = _mm512_max_ps(max, _mm512_abs_ps(x));
                }
                let max = if nan != 0 {
                    f32::NAN
                } else {
                    _mm512_reduce_max_ps(max)
                };
                let (inv, scale) = super::quantization(max);
                let (inv, offset) = (_mm512_set1_ps(inv), _mm512_set1_epi32(128));
                // Whole words: the last one's bytes past `k` get 128 (a zero input).
                let bytes = k.div_ceil(4) * 4;
                for p in (0..bytes).step_by(16) {
                    let x = _mm512_maskz_loadu_ps(lanes(k.saturating_sub(p)), src.add(p));
                    let q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(x, inv)), offset);
                    // A NaN row: `x · 0` may be NaN, whose conversion is not 0.
                    let q = if scale.is_nan() { offset } else { q };
                    _mm512_mask_cvtepi32_storeu_epi8(
                        dst.cast::<u8>().add(p).cast(),
                        lanes(bytes - p),
                        q,
                    );
                }
                scale
            }
        }

        #[target_feature(enable = "avx512f,avx512vnni")]
        unsafe fn tile<const M: usize>(p: &Panel, j0: usize, m0: u16, m1: u16) {
            // SAFETY (whole body): masked lanes are not accessed; the rest is in bounds.
            unsafe {
                let mut acc: [[__m512i; 2]; M] = [[_mm512_setzero_si512(); 2]; M];
                for q in 0..p.kp {
                    let bp = p.b_row(j0, q);
                    let b0 = _mm512_maskz_loadu_epi32(m0, bp);
                    let b1 = _mm512_maskz_loadu_epi32(m1, bp.add(16));
                    for (i, acc_i) in acc.iter_mut().enumerate() {
                        let av = _mm512_set1_epi32(*p.a.add(i * p.rsa + q) as i32);
                        acc_i[0] = _mm512_dpbusd_epi32(acc_i[0], av, b0);
                        acc_i[1] = _mm512_dpbusd_epi32(acc_i[1], av, b1);
                    }
                }
                let out = Sums {
                    row_scales: p.row_scales,
                    col_scales: p.col_scales.add(j0),
                    col_sums: p.col_sums.add(j0),
                    masks: [m0, m1],
                }
                .scaled(acc);
                store_tile_f32(out, p.c.add(j0), p.rsc, [m0, m1], p.accumulate);
            }
        }
    }

    /// What turns an `M × 32` block of integer sums over `A`'s offset bytes into f32
    /// results: the rows' scales, the 32 columns' scales and sums, and the masks of the
    /// two 16-column halves (masked-out columns are not read).
    pub(crate) struct Sums {
        pub(crate) row_scales: *const f32,
        pub(crate) col_scales: *const f32,
        pub(crate) col_sums: *const i32,
        pub(crate) masks: [u16; 2],
    }

    impl Sums {
        /// `(Σ (a + 128)·q − 128·Σ q) · (row scale · column scale)` for each element of
        /// `acc` (row `i`: its two halves), as the reference computes it.
        ///
        /// # Safety
        /// AVX-512F available; `M` row scales and the unmasked columns' scales and sums
        /// readable.
        #[inline]
        #[target_feature(enable = "avx512f")]
        pub(crate) unsafe fn scaled<const M: usize>(
            &self,
            acc: [[__m512i; 2]; M],
        ) -> [[__m512; 2]; M] {
            // SAFETY (whole body): masked lanes are not accessed; the rest is in bounds.
            unsafe {
                let col = |h: usize| {
                    let sums = self.col_sums.add(16 * h).cast();
                    let sums = _mm512_maskz_loadu_epi32(self.masks[h], sums);
                    let scales = _mm512_maskz_loadu_ps(self.masks[h], self.col_scales.add(16 * h));
                    (_mm512_slli_epi32::<7>(sums), scales)
                };
                let cols = [col(0), col(1)];
                let mut out: [[__m512; 2]; M] = [[_mm512_setzero_ps(); 2]; M];
                for (i, (out_i, acc_i)) in out.iter_mut().zip(&acc).enumerate() {
                    let t = _mm512_set1_ps(*self.row_scales.add(i));
                    for h in 0..2 {
                        let d = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc_i[h], cols[h].0));
                        out_i[h] = _mm512_mul_ps(d, _mm512_mul_ps(t, cols[h].1));
                    }
                }
                out
            }
        }
    }

    /// The int8 quad layout's kernels on AVX2. `vpmaddubsw` would take the quads as
    /// `vpdpbusd` does, but saturates its 16-bit pair sums for 8-bit inputs; instead each
    /// quad of `B` is widened to four i16 and a row of `A` is packed as signed i16 (two
    /// words per quad, no offset), so that `vpmaddwd` sums pairs exactly into i32: the
    /// integer sums, and so the results, are the reference's.
    pub(crate) struct Avx2;

    impl Words for Avx2 {
        const PER_WORD: usize = 4;
        const A_WORDS: usize = 2;
        /// A row of `A` in i16 takes twice the bytes of an int8 one: 6 rows of `k = 600`
        /// (7 KB) and a 32-column tile of `B` (19 KB) stay inside a 32 KB L1, 12 rows do
        /// not (3% faster SC-LSTM inference at one and two threads on Zen 4, AVX2 forced).
        const CHUNK_ROWS: usize = ROWS_256;

        /// Quantizes `k` contiguous f32 as [`super::quantize_row`] does, into `⌈k/4⌉`
        /// quads of i16, zeros past `k` and for a row whose scale is NaN.
        #[target_feature(enable = "avx2")]
        unsafe fn pack_row(src: *const f32, k: usize, dst: *mut u32) -> f32 {
            // SAFETY: `dst` holds the quads' `4·⌈k/4⌉` i16.
            unsafe {
                quantize_into(
                    src,
                    k,
                    dst.cast::<i16>(),
                    0,
                    |q| q as i16,
                    |out, q| _mm_storeu_si128(out.cast(), q),
                )
            }
        }

        #[target_feature(enable = "avx2")]
        unsafe fn tile<const M: usize>(p: &Panel, j0: usize, m0: u16, m1: u16) {
            // SAFETY: forwarded.
            unsafe { passes::<Avx2, M>(p, j0, m0, m1) }
        }
    }

    /// The int8 quad layout's kernels on AVX-VNNI: AVX512_VNNI's operands (rows of `A`
    /// offset by 128 as unsigned bytes, one word per quad) and its `vpdpbusd` on 256-bit
    /// vectors, in passes of up to [`ROWS_256`] rows × 16 columns.
    pub(crate) struct AvxVnni;

    impl Words for AvxVnni {
        const PER_WORD: usize = 4;

        /// Quantizes `k` contiguous f32 as [`super::quantize_row`] does, into `⌈k/4⌉`
        /// words of offset bytes (128 past `k` and for a row whose scale is NaN).
        #[target_feature(enable = "avx2")]
        unsafe fn pack_row(src: *const f32, k: usize, dst: *mut u32) -> f32 {
            let offset = _mm_set1_epi16(128);
            // SAFETY: `dst` holds the words' `4·⌈k/4⌉` bytes.
            unsafe {
                quantize_into(
                    src,
                    k,
                    dst.cast::<u8>(),
                    128,
                    |q| (q + 128) as u8,
                    |out, q| {
                        // Values in [1, 255]: the unsigned pack keeps them.
                        let q = _mm_add_epi16(q, offset);
                        _mm_storel_epi64(out.cast(), _mm_packus_epi16(q, q));
                    },
                )
            }
        }

        #[target_feature(enable = "avx2,avxvnni")]
        unsafe fn tile<const M: usize>(p: &Panel, j0: usize, m0: u16, m1: u16) {
            // SAFETY: forwarded.
            unsafe { passes::<AvxVnni, M>(p, j0, m0, m1) }
        }
    }

    /// Quantizes `k` contiguous f32 as [`super::quantize_row`] does into the `4·⌈k/4⌉`
    /// values of `T` at `out`: eight at a time through `store8` (given them as i16;
    /// `vcvtps2dq` rounds to nearest even, as [`super::quantize`]), the rest through
    /// `one`, and `pad` past `k` and everywhere for a row whose scale is NaN. Returns the
    /// row's scale.
    ///
    /// # Safety
    /// AVX2 available; `src` valid for `k` reads, `out` for `4·⌈k/4⌉` writes (and
    /// `store8` for eight from where it is given).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn quantize_into<T: Copy>(
        src: *const f32,
        k: usize,
        out: *mut T,
        pad: T,
        one: impl Fn(i32) -> T,
        store8: impl Fn(*mut T, __m128i),
    ) -> f32 {
        // SAFETY (whole body): every access is below `k` in `src` and below the
        // `4·⌈k/4⌉` values of `out`.
        unsafe {
            let (inv, scale) = super::quantization(largest_abs(src, k));
            let len = k.div_ceil(4) * 4;
            let start = if scale.is_nan() {
                0
            } else {
                let body = k / 8 * 8;
                for p in (0..body).step_by(8) {
                    store8(out.add(p), quantize8(src.add(p), inv));
                }
                for p in body..k {
                    *out.add(p) = one(super::quantize(*src.add(p), inv));
                }
                k
            };
            for p in start..len {
                *out.add(p) = pad;
            }
            scale
        }
    }

    /// The largest `|v|` of `k` contiguous f32 as [`super::max_abs`] folds them (NaN
    /// when one is a NaN), eight at a time.
    ///
    /// # Safety
    /// AVX2 available; `src` valid for `k` reads.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn largest_abs(src: *const f32, k: usize) -> f32 {
        // SAFETY (whole body): every access is below `k`.
        unsafe {
            let body = k / 8 * 8;
            let (mut max, mut nan) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let sign = _mm256_set1_ps(-0.0);
            for p in (0..body).step_by(8) {
                let x = _mm256_loadu_ps(src.add(p));
                nan = _mm256_or_ps(nan, _mm256_cmp_ps::<UNORD>(x, x));
                max = _mm256_max_ps(max, _mm256_andnot_ps(sign, x));
            }
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), max);
            let mut largest = if _mm256_movemask_ps(nan) != 0 {
                f32::NAN
            } else {
                lanes.into_iter().fold(0.0, f32::max)
            };
            for p in body..k {
                largest = super::max_abs(largest, *src.add(p));
            }
            largest
        }
    }

    /// Eight contiguous f32 quantized with multiplier `inv` (`vcvtps2dq` rounds to
    /// nearest even, as [`super::quantize`]), as eight i16.
    ///
    /// # Safety
    /// AVX2 available; `src` valid for 8 reads.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn quantize8(src: *const f32, inv: f32) -> __m128i {
        // SAFETY: the caller's contract.
        let x = unsafe { _mm256_loadu_ps(src) };
        let q = _mm256_cvtps_epi32(_mm256_mul_ps(x, _mm256_set1_ps(inv)));
        _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q))
    }

    /// Most rows one pass of a 256-bit kernel keeps in registers: `2·R` accumulators,
    /// two `B` vectors and the broadcast in 15 of the 16.
    const ROWS_256: usize = 6;

    /// A 256-bit kernel's pass over one group of a tile's columns.
    trait Pass {
        /// Columns of `B` a pass covers.
        const GROUP: usize;

        /// Rows `i0 .. i0 + R` of the group at column `g` of the tile at `j0`, its first
        /// `width` columns real; with `MASKED` only those are loaded and stored.
        ///
        /// # Safety
        /// The kernel's CPU features available; as for [`Words::tile`], the rows and
        /// unmasked columns inside the panel.
        unsafe fn rows<const R: usize, const MASKED: bool>(
            p: &Panel,
            j0: usize,
            g: usize,
            i0: usize,
            width: usize,
        );
    }

    /// An `M`-row tile of a 256-bit kernel: its columns in groups of `K::GROUP`, each
    /// in passes of at most [`ROWS_256`] rows (as even as they can be, so that no pass
    /// streams B for a row or two).
    ///
    /// # Safety
    /// As for [`Words::tile`], with `K`'s CPU features available.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn passes<K: Pass, const M: usize>(p: &Panel, j0: usize, m0: u16, m1: u16) {
        // The driver's masks select the tile's first columns (`lanes`).
        let cols = (u32::from(m0) | u32::from(m1) << 16).count_ones() as usize;
        // SAFETY: the groups and rows stay inside the tile.
        unsafe {
            for g in (0..cols).step_by(K::GROUP) {
                let width = (cols - g).min(K::GROUP);
                let mut i0 = 0;
                while i0 < M {
                    let h = (M - i0).div_ceil((M - i0).div_ceil(ROWS_256));
                    if width == K::GROUP {
                        pass::<K, false>(p, j0, g, i0, h, width);
                    } else {
                        pass::<K, true>(p, j0, g, i0, h, width);
                    }
                    i0 += h;
                }
            }
        }
    }

    /// `K::rows` with `R = h`.
    ///
    /// # Safety
    /// As for [`Pass::rows`]; `1 ≤ h ≤ ROWS_256`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn pass<K: Pass, const MASKED: bool>(
        p: &Panel,
        j0: usize,
        g: usize,
        i0: usize,
        h: usize,
        width: usize,
    ) {
        // SAFETY: forwarded; `h` selects a pass of exactly that height.
        unsafe {
            match h {
                1 => K::rows::<1, MASKED>(p, j0, g, i0, width),
                2 => K::rows::<2, MASKED>(p, j0, g, i0, width),
                3 => K::rows::<3, MASKED>(p, j0, g, i0, width),
                4 => K::rows::<4, MASKED>(p, j0, g, i0, width),
                5 => K::rows::<5, MASKED>(p, j0, g, i0, width),
                6 => K::rows::<6, MASKED>(p, j0, g, i0, width),
                _ => unreachable!("internal: passes have 1..=ROWS_256 rows"),
            }
        }
    }

    impl Pass for AvxVnni {
        const GROUP: usize = 16;

        #[inline]
        #[target_feature(enable = "avx2,avxvnni")]
        unsafe fn rows<const R: usize, const MASKED: bool>(
            p: &Panel,
            j0: usize,
            g: usize,
            i0: usize,
            width: usize,
        ) {
            // SAFETY (whole body): masked lanes are not accessed; the rest is in bounds.
            unsafe {
                let masks = [lanes_f32(width), lanes_f32(width.saturating_sub(8))];
                let load_words = |ptr: *const i32, h: usize| {
                    if MASKED {
                        _mm256_maskload_epi32(ptr, masks[h])
                    } else {
                        _mm256_loadu_si256(ptr.cast())
                    }
                };
                let load = |ptr: *const f32, h: usize| {
                    if MASKED {
                        _mm256_maskload_ps(ptr, masks[h])
                    } else {
                        _mm256_loadu_ps(ptr)
                    }
                };
                let a = p.a.add(i0 * p.rsa);
                let mut acc = [[_mm256_setzero_si256(); 2]; R];
                for q in 0..p.kp {
                    let w = p.b_row(j0, q).add(g);
                    let (b0, b1) = (load_words(w, 0), load_words(w.add(8), 1));
                    for (i, acc_i) in acc.iter_mut().enumerate() {
                        let av = _mm256_set1_epi32(*a.add(i * p.rsa + q) as i32);
                        acc_i[0] = _mm256_dpbusd_avx_epi32(acc_i[0], av, b0);
                        acc_i[1] = _mm256_dpbusd_avx_epi32(acc_i[1], av, b1);
                    }
                }
                // As `Sums::scaled`: `(Σ (a + 128)·q − 128·Σ q) · (row scale · column
                // scale)`, then added to `C` when accumulating.
                let at = j0 + g;
                let cols: [(__m256i, __m256); 2] = std::array::from_fn(|h| {
                    let sums = load_words(p.col_sums.add(at + 8 * h), h);
                    let scales = load(p.col_scales.add(at + 8 * h), h);
                    (_mm256_slli_epi32::<7>(sums), scales)
                });
                for (i, acc_i) in acc.iter().enumerate() {
                    let t = _mm256_set1_ps(*p.row_scales.add(i0 + i));
                    let row = p.c.offset((i0 + i) as isize * p.rsc).add(at);
                    for (h, (&sums, &(col_sums, scales))) in acc_i.iter().zip(&cols).enumerate() {
                        let d = _mm256_cvtepi32_ps(_mm256_sub_epi32(sums, col_sums));
                        let v = _mm256_mul_ps(d, _mm256_mul_ps(t, scales));
                        let dst = row.add(8 * h);
                        let v = if p.accumulate {
                            _mm256_add_ps(load(dst, h), v)
                        } else {
                            v
                        };
                        if MASKED {
                            _mm256_maskstore_ps(dst, masks[h], v);
                        } else {
                            _mm256_storeu_ps(dst, v);
                        }
                    }
                }
            }
        }
    }

    impl Pass for Avx2 {
        const GROUP: usize = 8;

        /// Each `B` word row's two halves widened to i16 once per pass, then per row
        /// two `vpmaddwd` against the row's quad broadcast.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn rows<const R: usize, const MASKED: bool>(
            p: &Panel,
            j0: usize,
            g: usize,
            i0: usize,
            width: usize,
        ) {
            // SAFETY (whole body): masked lanes are not accessed; the rest is in bounds.
            unsafe {
                let mask = lanes_f32(width);
                let (mask_lo, mask_hi) = (
                    _mm256_castsi256_si128(mask),
                    _mm256_extracti128_si256::<1>(mask),
                );
                let a = p.a.add(i0 * p.rsa);
                let mut acc = [[_mm256_setzero_si256(); 2]; R];
                for q in 0..p.kp {
                    // Words of columns g..g+4 and g+4..g+8: four bytes along `k` each.
                    let w = p.b_row(j0, q).add(g);
                    let (lo, hi) = if MASKED {
                        (
                            _mm_maskload_epi32(w, mask_lo),
                            _mm_maskload_epi32(w.add(4), mask_hi),
                        )
                    } else {
                        (_mm_loadu_si128(w.cast()), _mm_loadu_si128(w.add(4).cast()))
                    };
                    let (lo, hi) = (_mm256_cvtepi8_epi16(lo), _mm256_cvtepi8_epi16(hi));
                    for (i, acc_i) in acc.iter_mut().enumerate() {
                        let quad = a.add(i * p.rsa + 2 * q).cast::<i64>().read_unaligned();
                        let av = _mm256_set1_epi64x(quad);
                        acc_i[0] = _mm256_add_epi32(acc_i[0], _mm256_madd_epi16(lo, av));
                        acc_i[1] = _mm256_add_epi32(acc_i[1], _mm256_madd_epi16(hi, av));
                    }
                }
                // Lanes hold half quads, column by column ([c0 c0 c1 c1 | c2 c2 c3 c3] and
                // the same for c4..c7): add the halves, then put the columns in order.
                let at = j0 + g;
                let load = |ptr: *const f32| {
                    if MASKED {
                        _mm256_maskload_ps(ptr, mask)
                    } else {
                        _mm256_loadu_ps(ptr)
                    }
                };
                let scales = load(p.col_scales.add(at));
                for (i, acc_i) in acc.iter().enumerate() {
                    let sums = _mm256_hadd_epi32(acc_i[0], acc_i[1]);
                    let sums = _mm256_permute4x64_epi64::<0b11_01_10_00>(sums);
                    let t = _mm256_set1_ps(*p.row_scales.add(i0 + i));
                    let v = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(t, scales));
                    let dst = p.c.offset((i0 + i) as isize * p.rsc).add(at);
                    let v = if p.accumulate {
                        _mm256_add_ps(load(dst), v)
                    } else {
                        v
                    };
                    if MASKED {
                        _mm256_maskstore_ps(dst, mask, v);
                    } else {
                        _mm256_storeu_ps(dst, v);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_is_symmetric_per_row_and_keeps_zeros_and_non_finite_rows() {
        let mut out = [0u8; 4];
        let t = quantize_row(&[0.5, -1.0, 0.25, 0.0], &mut out);
        assert_eq!(t, 1.0 / 127.0);
        // 0.5·127 = 63.5 ties to 64 (even); 0.25·127 = 31.75 rounds to 32.
        assert_eq!(out, [128 + 64, 128 - 127, 128 + 32, 128]);
        assert_eq!(quantize_row(&[0.0; 4], &mut out), 0.0);
        assert_eq!(out, [128; 4]);
        for bad in [f32::NAN, f32::INFINITY] {
            assert!(quantize_row(&[1.0, bad, 2.0, 3.0], &mut out).is_nan());
            assert_eq!(out, [128; 4]);
        }
        // Values too small for the multiplier to exist read as zeros.
        assert_eq!(quantize_row(&[1e-39, -2e-39, 0.0, 3e-39], &mut out), 0.0);
        assert_eq!(out, [128; 4]);
        assert_eq!(
            quantize_row(&[1e-36, 0.0, 0.0, 0.0], &mut out),
            1e-36 / 127.0
        );
        assert_eq!(out[0], 255);
        // Every value comes back within half a step of its scale.
        let row: Vec<f32> = (0..50)
            .map(|i| ((i * 37) % 23) as f32 / 7.0 - 1.5)
            .collect();
        let mut q = vec![0u8; 50];
        let t = quantize_row(&row, &mut q);
        for (&v, &b) in row.iter().zip(&q) {
            assert!((f32::from(b) - 128.0) * t - v <= 0.5 * t + 1e-6, "{v}");
        }
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        for i in -1020..=1020 {
            let x = i as f32 / 8.0;
            assert_eq!(quantize(x, 1.0), x.round_ties_even() as i32, "{x}");
        }
        assert_eq!([quantize(2.5, 1.0), quantize(-0.5, 1.0)], [2, 0]);
    }

    #[test]
    fn packing_puts_quads_along_k_then_scales_and_sums() {
        // 5 × 2: rows 0–3 fill the first word row; row 4 shares the second with zeros.
        let src = [1.0, -2.0, 0.5, 4.0, -1.0, 1.0, 0.25, -4.0, 0.0, 2.0];
        let mut dst = vec![u32::MAX; Packed::Int8.elems(5, 2, false)];
        assert_eq!(dst.len(), 2 * 2 + 4);
        pack_quads(5, 2, false, &src, &mut dst).unwrap();
        let bytes = |w: u32| w.to_le_bytes().map(|b| b as i8);
        // Column 0: max 1, so q = v·127 (0.25·127 = 31.75 → 32, 0.5·127 = 63.5 → 64).
        assert_eq!(bytes(dst[0]), [127, 64, -127, 32]);
        assert_eq!(bytes(dst[2]), [0, 0, 0, 0]);
        // Column 1: max 4, so q = v·31.75 (−2·31.75 = −63.5 → −64, 2·31.75 = 63.5 → 64).
        assert_eq!(bytes(dst[1]), [-64, 127, 32, -127]);
        assert_eq!(bytes(dst[3]), [64, 0, 0, 0]);
        assert_eq!(f32::from_bits(dst[4]), 1.0 / 127.0);
        assert_eq!(f32::from_bits(dst[5]), 4.0 / 127.0);
        assert_eq!(
            [dst[6] as i32, dst[7] as i32],
            [127 + 64 - 127 + 32, -64 + 127 + 32 - 127 + 64]
        );
        // In strips: one strip of 32 word columns, zeros past the real ones, then the
        // same scales and sums.
        let mut strips = vec![u32::MAX; Packed::Int8.elems(5, 2, true)];
        pack_quads(5, 2, true, &src, &mut strips).unwrap();
        assert_eq!(&strips[..2], &dst[..2]);
        assert_eq!(&strips[32..34], &dst[2..4]);
        assert!(strips[2..32].iter().chain(&strips[34..64]).all(|&w| w == 0));
        assert_eq!(&strips[64..], &dst[4..]);
        let short = pack_quads(5, 2, false, &src, &mut [0; 7]).unwrap_err();
        assert!(matches!(short, NumError::BufferTooSmall { needed: 8, .. }));
        assert!(pack_quads(5, 2, false, &src[..9], &mut dst).is_err());
    }

    #[test]
    fn the_reference_is_close_to_the_f64_product() {
        let (m, n, k) = (3, 5, 40);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 13) % 17) as f32 / 8.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 7) % 19) as f32 / 9.0 - 1.0)
            .collect();
        let bias = [0.5, -0.25, 1.0, 0.0, 2.0];
        let mut packed = vec![0u32; Packed::Int8.elems(k, n, false)];
        pack_quads(k, n, false, &b, &mut packed).unwrap();
        let naive = |a: &[f32], c: &mut [f32]| {
            let g = Gemm::new(m, n, k);
            crate::packed::gemm_naive(Packed::Int8, &g, a, &packed, Some(&bias), c).unwrap();
        };
        let mut c = vec![f32::NAN; m * n];
        naive(&a, &mut c);
        for i in 0..m {
            for j in 0..n {
                let exact: f64 = (0..k)
                    .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j]))
                    .sum::<f64>()
                    + f64::from(bias[j]);
                let scale: f64 = (0..k)
                    .map(|p| f64::from(a[i * k + p].abs() * b[p * n + j].abs()))
                    .sum();
                // Each operand within half a step (1/254 of its largest value).
                assert!(
                    (f64::from(c[i * n + j]) - exact).abs() <= 0.02 * scale,
                    "{i} {j}"
                );
            }
        }
        // A row with a NaN gives NaN; the other rows do not change.
        let mut bad = a.clone();
        bad[k + 3] = f32::NAN;
        let mut c2 = vec![0.0; m * n];
        naive(&bad, &mut c2);
        assert!(c2[n..2 * n].iter().all(|v| v.is_nan()));
        assert_eq!(c2[..n], c[..n]);
        assert_eq!(c2[2 * n..], c[2 * n..]);
    }
}
