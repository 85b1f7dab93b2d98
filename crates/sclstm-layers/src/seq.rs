//! Batch geometry shared by the layers and the CRF: time-major rows, lengths, the
//! longest-first order and the per-sentence reversal used by the reverse direction.
//!
//! A batch of `B` sentences padded to `T` steps is stored time-major: row `t·B + b` holds
//! step `t` of sentence `b`. Sentences are packed at the start of the time axis, so
//! sentence `b` occupies steps `0..lens[b]` and the rest is padding.

use std::borrow::Cow;

use sclstm_core::{Matrix, NumError, Real, STRIP, strip_len};
use sclstm_cpu::kernels::Kernels;

/// Steps `T` and batch size `B` of a time-major batch, with each sentence's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqShape {
    /// Padded length `T` (rows = `T·B`).
    pub steps: usize,
    /// Sentence lengths, one per batch entry (`B = lens.len()`), each `≤ steps`.
    pub lens: Vec<usize>,
}

impl SeqShape {
    /// Checks `rows = T·B` against `lens` and derives `T`.
    ///
    /// # Errors
    /// [`NumError::Empty`] for an empty batch or zero rows; [`NumError::ShapeMismatch`]
    /// when `rows` is not a multiple of `B` or a length exceeds `T`.
    pub fn new(op: &'static str, rows: usize, lens: &[usize]) -> Result<Self, NumError> {
        if lens.is_empty() {
            return Err(NumError::Empty { op, what: "batch" });
        }
        if rows == 0 {
            return Err(NumError::Empty {
                op,
                what: "time steps",
            });
        }
        let b = lens.len();
        if !rows.is_multiple_of(b) {
            return Err(NumError::ShapeMismatch {
                op,
                lhs: vec![rows],
                rhs: vec![b],
            });
        }
        let steps = rows / b;
        if let Some(&bad) = lens.iter().find(|&&l| l > steps) {
            return Err(NumError::ShapeMismatch {
                op,
                lhs: vec![steps, b],
                rhs: vec![bad],
            });
        }
        Ok(SeqShape {
            steps,
            lens: lens.to_vec(),
        })
    }

    /// Batch size `B`.
    pub fn batch(&self) -> usize {
        self.lens.len()
    }

    /// Rows `T·B`.
    pub fn rows(&self) -> usize {
        self.steps * self.lens.len()
    }

    /// Batch positions sorted by length, longest first (ties keep batch order). The layers
    /// run a batch in this order, so at every step the sentences still running are a
    /// prefix of the batch (see [`SeqShape::active`]).
    pub fn longest_first(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.batch()).collect();
        order.sort_by_key(|&b| std::cmp::Reverse(self.lens[b]));
        order
    }

    /// Per step `t`: how many sentences are longer than `t`. With the batch in
    /// [`SeqShape::longest_first`] order these are rows `0..active[t]` of step `t`, and
    /// the per-step recurrent products skip the finished sentences.
    pub fn active(&self) -> Vec<usize> {
        (0..self.steps)
            .map(|t| self.lens.iter().filter(|&&l| l > t).count())
            .collect()
    }

    /// The per-sentence reversal as a row permutation: entry `t·B + b` is the row that
    /// step `t` of the reversed sentence `b` reads, i.e. `(lens[b] − 1 − t)·B + b` inside
    /// the sentence and `t·B + b` (unchanged) on padding. It is its own inverse, so the
    /// same table maps inputs into reversed order and outputs back.
    pub fn reversal(&self) -> Vec<usize> {
        let b = self.batch();
        (0..self.rows())
            .map(|r| {
                let (t, bi) = (r / b, r % b);
                let len = self.lens[bi];
                if t < len { (len - 1 - t) * b + bi } else { r }
            })
            .collect()
    }
}

/// A matrix's elements in row-major order, borrowed when it is already contiguous.
pub(crate) fn row_major<R: Real>(m: &Matrix<R>) -> Cow<'_, [R]> {
    match m.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(m.iter().copied().collect()),
    }
}

/// Writes `mᵀ` in row-major order (a `(cols, rows)` matrix) into `out`, which must hold
/// exactly `rows · cols` elements; every one is overwritten. Works in `TILE × TILE`
/// blocks, so both the reads from `m` and the writes to `out` are contiguous runs of
/// `TILE` elements (a plain element-by-element transpose writes with a stride of a whole
/// row and misses the cache on almost every store): in f32 with the AVX-512 or AVX2
/// kernel set ([`Kernels::active`]) each block is transposed in registers (16 × 16 or
/// 8 × 8), otherwise staged through a small local array. All only move values, so the
/// result is the same on every path.
pub(crate) fn transpose_into<R: Real>(m: &Matrix<R>, out: &mut [R]) {
    let (rows, cols) = m.dim();
    assert_eq!(
        out.len(),
        rows * cols,
        "internal: transpose_into's output size"
    );
    transpose_slice(&row_major(m), rows, cols, out);
}

/// [`transpose_into`] on a row-major `(rows, cols)` slice.
fn transpose_slice<R: Real>(src: &[R], rows: usize, cols: usize, out: &mut [R]) {
    transpose_with(Kernels::active(), src, rows, cols, out);
}

/// [`transpose_slice`] with the kernels of `set` (f32 only; other types take the tiles).
fn transpose_with<R: Real>(set: Kernels, src: &[R], rows: usize, cols: usize, out: &mut [R]) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(src), Some(dst)) = (R::as_f32(src), R::as_f32_mut(out))
        && set.runs_here()
    {
        match set {
            // SAFETY: the set's instructions were detected at run time.
            Kernels::Avx512 => return unsafe { x86::transpose_f32_avx512(src, rows, cols, dst) },
            // SAFETY: as above.
            Kernels::AvxVnni | Kernels::Avx2 => {
                return unsafe { x86::transpose_f32_avx2(src, rows, cols, dst) };
            }
            Kernels::Portable => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = set;
    transpose_tiles(src, rows, cols, out, 0, 0);
}

/// Writes `m` (a `k × n` matrix) in the strip layout of `sclstm_core::backend` into
/// `out`, which must hold exactly `strip_len(k, n)` elements; every one is overwritten
/// (the padding of the last strip with zeros).
pub(crate) fn strips_into<R: Real>(m: &Matrix<R>, out: &mut [R]) {
    both_strips_into(m, None, Some(out));
}

/// Writes `mᵀ` (a `cols × rows` matrix for `m` of `(rows, cols)`) in the strip layout
/// into `out`, which must hold exactly `strip_len(cols, rows)` elements; every one is
/// overwritten. Strip `s` of `mᵀ` is the transpose of rows `STRIP·s ..` of `m`, a
/// contiguous block, so whole strips go through [`transpose_into`]'s kernels.
pub(crate) fn transpose_strips_into<R: Real>(m: &Matrix<R>, out: &mut [R]) {
    both_strips_into(m, Some(out), None);
}

/// [`transpose_strips_into`] into `t` and [`strips_into`] into `plain`, either or both,
/// in one pass over `m`: each block of [`STRIP`] rows is read from memory once and
/// written to both while it sits in the cache (a weight's two copies in training).
pub(crate) fn both_strips_into<R: Real>(
    m: &Matrix<R>,
    mut t: Option<&mut [R]>,
    mut plain: Option<&mut [R]>,
) {
    let (rows, cols) = m.dim();
    if let Some(t) = &t {
        let want = strip_len(cols, rows);
        assert_eq!(t.len(), want, "internal: the transposed strips' size");
    }
    if let Some(plain) = &plain {
        let want = strip_len(rows, cols);
        assert_eq!(plain.len(), want, "internal: the strips' size");
    }
    let src = row_major(m);
    for r0 in (0..rows).step_by(STRIP) {
        let h = STRIP.min(rows - r0);
        let block = &src[r0 * cols..(r0 + h) * cols];
        if let Some(t) = t.as_deref_mut() {
            let strip = &mut t[r0 * cols..(r0 + STRIP) * cols];
            if h == STRIP {
                transpose_slice(block, STRIP, cols, strip);
            } else {
                for (p, line) in strip.chunks_exact_mut(STRIP).enumerate() {
                    for (j, v) in line.iter_mut().enumerate() {
                        *v = if j < h {
                            block[j * cols + p]
                        } else {
                            R::zero()
                        };
                    }
                }
            }
        }
        if let Some(plain) = plain.as_deref_mut() {
            // Rows `r0 ..` are lines `r0 ..` of every strip of `m`.
            for (s, strip) in plain.chunks_exact_mut(STRIP * rows).enumerate() {
                let (j0, w) = (s * STRIP, STRIP.min(cols - s * STRIP));
                let lines = &mut strip[r0 * STRIP..(r0 + h) * STRIP];
                for (line, row) in lines.chunks_exact_mut(STRIP).zip(block.chunks_exact(cols)) {
                    line[..w].copy_from_slice(&row[j0..j0 + w]);
                    line[w..].fill(R::zero());
                }
            }
        }
    }
}

/// Side of the square tiles [`transpose_tiles`] moves through the stack.
const TILE: usize = 16;

/// Transposes the `(rows, cols)` row-major `src` into `out` (`(cols, rows)` row-major)
/// tile by tile, so that both sides are read and written in cache lines, except the
/// block of the first `done_rows` rows and `done_cols` columns (both multiples of
/// [`TILE`]), which a vector kernel has already moved.
fn transpose_tiles<R: Real>(
    src: &[R],
    rows: usize,
    cols: usize,
    out: &mut [R],
    done_rows: usize,
    done_cols: usize,
) {
    let mut tile = [[R::zero(); TILE]; TILE];
    for r0 in (0..rows).step_by(TILE) {
        let nr = TILE.min(rows - r0);
        let c_start = if r0 + nr <= done_rows { done_cols } else { 0 };
        for c0 in (c_start..cols).step_by(TILE) {
            let nc = TILE.min(cols - c0);
            for (i, line) in tile.iter_mut().enumerate().take(nr) {
                let start = (r0 + i) * cols + c0;
                if nc == TILE {
                    // A fixed-length copy compiles to vector moves (a variable-length
                    // one to a `memcpy` call per 16 values).
                    let full: &[R; TILE] = src[start..start + TILE]
                        .try_into()
                        .expect("internal: a full tile line has TILE values");
                    *line = *full;
                } else {
                    line[..nc].copy_from_slice(&src[start..start + nc]);
                }
            }
            for (j, column) in out[c0 * rows..(c0 + nc) * rows]
                .chunks_exact_mut(rows)
                .enumerate()
            {
                for (o, line) in column[r0..r0 + nr].iter_mut().zip(&tile) {
                    *o = line[j];
                }
            }
        }
    }
}

/// The f32 transposes on AVX-512 and AVX2: whole 16 × 16 or 8 × 8 blocks transposed in
/// registers.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256, __m512, _mm256_loadu_ps, _mm256_permute2f128_ps, _mm256_setzero_ps,
        _mm256_shuffle_ps, _mm256_storeu_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps,
        _mm512_castpd_ps, _mm512_castps_pd, _mm512_loadu_ps, _mm512_setzero_ps,
        _mm512_shuffle_f32x4, _mm512_storeu_ps, _mm512_unpackhi_pd, _mm512_unpackhi_ps,
        _mm512_unpacklo_pd, _mm512_unpacklo_ps,
    };

    /// [`super::transpose_into`] for f32: every whole 16 × 16 block in registers (16
    /// loads, 64 shuffles, 16 stores), the ragged right and bottom edges by the tiles.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `src` and `out` hold `rows · cols` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_f32_avx512(
        src: &[f32],
        rows: usize,
        cols: usize,
        out: &mut [f32],
    ) {
        assert!(src.len() >= rows * cols && out.len() >= rows * cols);
        let (full_r, full_c) = (rows / 16 * 16, cols / 16 * 16);
        for r0 in (0..full_r).step_by(16) {
            for c0 in (0..full_c).step_by(16) {
                let mut v = [_mm512_setzero_ps(); 16];
                for (i, reg) in v.iter_mut().enumerate() {
                    // SAFETY: row r0 + i < rows and columns c0..c0 + 16 ≤ cols.
                    *reg = unsafe { _mm512_loadu_ps(src.as_ptr().add((r0 + i) * cols + c0)) };
                }
                let t = transpose16(v);
                for (j, reg) in t.iter().enumerate() {
                    // SAFETY: output row c0 + j < cols, columns r0..r0 + 16 ≤ rows.
                    unsafe { _mm512_storeu_ps(out.as_mut_ptr().add((c0 + j) * rows + r0), *reg) };
                }
            }
        }
        // The ragged right columns of the full rows, and the ragged bottom rows.
        super::transpose_tiles(src, rows, cols, out, full_r, full_c);
    }

    /// [`super::transpose_into`] for f32 on AVX2: every whole 8 × 8 block in registers (8
    /// loads, 24 shuffles, 8 stores), the ragged right and bottom edges by the tiles.
    ///
    /// # Safety
    /// The CPU must support AVX2; `src` and `out` hold `rows · cols` values.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_f32_avx2(
        src: &[f32],
        rows: usize,
        cols: usize,
        out: &mut [f32],
    ) {
        assert!(src.len() >= rows * cols && out.len() >= rows * cols);
        let (full_r, full_c) = (rows / 8 * 8, cols / 8 * 8);
        for r0 in (0..full_r).step_by(8) {
            for c0 in (0..full_c).step_by(8) {
                let mut v = [_mm256_setzero_ps(); 8];
                for (i, reg) in v.iter_mut().enumerate() {
                    // SAFETY: row r0 + i < rows and columns c0..c0 + 8 ≤ cols.
                    *reg = unsafe { _mm256_loadu_ps(src.as_ptr().add((r0 + i) * cols + c0)) };
                }
                let t = transpose8(v);
                for (j, reg) in t.iter().enumerate() {
                    // SAFETY: output row c0 + j < cols, columns r0..r0 + 8 ≤ rows.
                    unsafe { _mm256_storeu_ps(out.as_mut_ptr().add((c0 + j) * rows + r0), *reg) };
                }
            }
        }
        super::transpose_tiles(src, rows, cols, out, full_r, full_c);
    }

    /// Transposes 8 rows of 8 values: 32-bit interleaves, 64-bit shuffles, then the
    /// 128-bit halves swapped across registers.
    #[target_feature(enable = "avx2")]
    fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let mut t = r;
        for k in 0..4 {
            t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
            t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
        }
        // u[4h + j]: column j (and j + 4 in the high half) of rows 4h..4h + 4.
        let mut u = t;
        for h in 0..2 {
            let (a, b, c, d) = (t[4 * h], t[4 * h + 1], t[4 * h + 2], t[4 * h + 3]);
            u[4 * h] = _mm256_shuffle_ps::<0x44>(a, c);
            u[4 * h + 1] = _mm256_shuffle_ps::<0xee>(a, c);
            u[4 * h + 2] = _mm256_shuffle_ps::<0x44>(b, d);
            u[4 * h + 3] = _mm256_shuffle_ps::<0xee>(b, d);
        }
        let mut out = u;
        for j in 0..4 {
            out[j] = _mm256_permute2f128_ps::<0x20>(u[j], u[4 + j]);
            out[4 + j] = _mm256_permute2f128_ps::<0x31>(u[j], u[4 + j]);
        }
        out
    }

    /// Transposes 16 rows of 16 values: 32-bit, then 64-bit interleaves, then two
    /// rounds of 128-bit lane shuffles.
    #[target_feature(enable = "avx512f")]
    fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
        let pd = _mm512_castps_pd;
        let ps = _mm512_castpd_ps;
        let mut t = r;
        for k in 0..8 {
            t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
            t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
        }
        let mut u = t;
        for k in 0..4 {
            let (a, b, c, d) = (t[4 * k], t[4 * k + 1], t[4 * k + 2], t[4 * k + 3]);
            u[4 * k] = ps(_mm512_unpacklo_pd(pd(a), pd(c)));
            u[4 * k + 1] = ps(_mm512_unpackhi_pd(pd(a), pd(c)));
            u[4 * k + 2] = ps(_mm512_unpacklo_pd(pd(b), pd(d)));
            u[4 * k + 3] = ps(_mm512_unpackhi_pd(pd(b), pd(d)));
        }
        let mut w = u;
        for k in 0..2 {
            for j in 0..4 {
                let (a, b) = (u[8 * k + j], u[8 * k + 4 + j]);
                w[8 * k + j] = _mm512_shuffle_f32x4::<0x88>(a, b);
                w[8 * k + 4 + j] = _mm512_shuffle_f32x4::<0xdd>(a, b);
            }
        }
        let mut out = w;
        for j in 0..8 {
            out[j] = _mm512_shuffle_f32x4::<0x88>(w[j], w[8 + j]);
            out[8 + j] = _mm512_shuffle_f32x4::<0xdd>(w[j], w[8 + j]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::SeqShape;
    use sclstm_core::NumError;

    #[test]
    fn reversal_keeps_padding_at_the_end_and_is_an_involution() {
        let s = SeqShape::new("t", 8, &[4, 2]).unwrap();
        let p = s.reversal();
        // Sentence 0 (len 4): rows 0,2,4,6 → 6,4,2,0; sentence 1 (len 2): 1,3 → 3,1; 5,7 stay.
        assert_eq!(p, vec![6, 3, 4, 1, 2, 5, 0, 7]);
        for (r, &q) in p.iter().enumerate() {
            assert_eq!(p[q], r);
        }
    }

    #[test]
    fn longest_first_makes_the_running_sentences_a_prefix() -> Result<(), NumError> {
        let seq = SeqShape::new("t", 16, &[2, 4, 1, 4])?;
        assert_eq!(seq.longest_first(), vec![1, 3, 0, 2]);
        assert_eq!(seq.active(), vec![4, 3, 2, 2]);
        Ok(())
    }

    #[test]
    fn transposed_matches_the_definition_on_ragged_tiles() {
        // f64 takes the tiles; f32 the vector kernel where the CPU has one, with ragged
        // edges of every kind (none, right, bottom, both) and sizes below one block.
        let sizes = [
            (1, 1),
            (3, 17),
            (33, 16),
            (40, 45),
            (16, 32),
            (48, 20),
            (300, 1200),
        ];
        for (r, c) in sizes {
            let m = ndarray::Array2::from_shape_fn((r, c), |(i, j)| (i * 10_000 + j) as f64);
            let mut t = vec![f64::NAN; r * c];
            super::transpose_into(&m, &mut t);
            let m32 = m.mapv(|v| v as f32);
            let mut t32 = vec![f32::NAN; r * c];
            super::transpose_into(&m32, &mut t32);
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(t[j * r + i], m[(i, j)], "f64 ({i}, {j}) of {r}×{c}");
                    assert_eq!(t32[j * r + i], m32[(i, j)], "f32 ({i}, {j}) of {r}×{c}");
                }
            }
        }
    }

    #[test]
    fn every_kernel_set_transposes_like_the_definition() {
        // Each set this CPU runs (AVX-512's 16 × 16 blocks, AVX2's 8 × 8, the tiles), on
        // sizes with every kind of ragged edge for both block sizes, into NaN-filled output.
        let sizes = [
            (1, 1),
            (7, 9),
            (8, 8),
            (9, 24),
            (17, 40),
            (33, 16),
            (300, 1200),
        ];
        for set in sclstm_cpu::kernels::Kernels::available() {
            for (r, c) in sizes {
                let m: Vec<f32> = (0..r * c).map(|v| v as f32).collect();
                let mut t = vec![f32::NAN; r * c];
                super::transpose_with(set, &m, r, c, &mut t);
                for i in 0..r {
                    for j in 0..c {
                        assert_eq!(t[j * r + i], m[i * c + j], "{set:?} ({i}, {j}) of {r}×{c}");
                    }
                }
            }
        }
    }

    #[test]
    fn strips_match_the_layout_definition() {
        // Element (p, j) of a k × n matrix sits at (j / STRIP)·STRIP·k + p·STRIP + j % STRIP;
        // the padding of the last strip is zero. Widths below, at and across a strip,
        // f64 (tiles) and f32 (the vector transpose where the CPU has one).
        use sclstm_core::{STRIP, strip_len};
        for (r, c) in [(1, 1), (3, 17), (32, 5), (33, 40), (64, 31), (70, 300)] {
            let m = ndarray::Array2::from_shape_fn((r, c), |(i, j)| (i * 10_000 + j) as f64);
            let m32 = m.mapv(|v| v as f32);
            let at = |k: usize, p: usize, j: usize| (j / STRIP) * STRIP * k + p * STRIP + j % STRIP;
            // `m` itself (k = r, n = c) and its transpose (k = c, n = r).
            let mut plain = vec![f64::NAN; strip_len(r, c)];
            super::strips_into(&m, &mut plain);
            let mut t = vec![f64::NAN; strip_len(c, r)];
            super::transpose_strips_into(&m, &mut t);
            let mut t32 = vec![f32::NAN; strip_len(c, r)];
            super::transpose_strips_into(&m32, &mut t32);
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(plain[at(r, i, j)], m[(i, j)], "({i}, {j}) of {r}×{c}");
                    assert_eq!(t[at(c, j, i)], m[(i, j)], "ᵀ ({j}, {i}) of {c}×{r}");
                    assert_eq!(t32[at(c, j, i)], m32[(i, j)], "f32 ᵀ ({j}, {i}) of {c}×{r}");
                }
            }
            // Both at once: the same elements.
            let (mut t2, mut plain2) = (vec![f64::NAN; t.len()], vec![f64::NAN; plain.len()]);
            super::both_strips_into(&m, Some(&mut t2), Some(&mut plain2));
            assert_eq!((&t2, &plain2), (&t, &plain), "{r}×{c} in one pass");
            let mut t2_32 = vec![f32::NAN; t32.len()];
            let mut plain32 = vec![f32::NAN; plain.len()];
            super::both_strips_into(&m32, Some(&mut t2_32), Some(&mut plain32));
            assert_eq!(t2_32, t32, "{r}×{c} f32 ᵀ in one pass");
            assert!(
                plain32.iter().zip(&plain).all(|(&a, &b)| f64::from(a) == b),
                "{r}×{c} f32 in one pass"
            );
            let written = r * c;
            let zeros = |v: &[f64]| v.iter().filter(|&&x| x == 0.0).count();
            // Every other element is padding, and zero (m itself holds one 0, at (0, 0)).
            assert_eq!(zeros(&plain), plain.len() - written + 1, "{r}×{c} padding");
            assert_eq!(zeros(&t), t.len() - written + 1, "{r}×{c} ᵀ padding");
            assert!(
                t32.iter().all(|x| !x.is_nan()),
                "{r}×{c} f32 ᵀ fully written"
            );
        }
    }

    #[test]
    fn bad_geometry_is_rejected() {
        assert!(matches!(
            SeqShape::new("t", 7, &[3, 2]),
            Err(NumError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            SeqShape::new("t", 4, &[3, 2]),
            Err(NumError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            SeqShape::new("t", 4, &[]),
            Err(NumError::Empty { .. })
        ));
        assert!(matches!(
            SeqShape::new("t", 0, &[0]),
            Err(NumError::Empty { .. })
        ));
    }
}
