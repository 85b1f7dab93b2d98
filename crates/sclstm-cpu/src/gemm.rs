//! Matrix products on host slices: the naive reference kernel (the spec) and the fast
//! kernel (rayon across the output; the unpacked register-tile kernels of `small_m.rs`
//! where the CPU has them — AVX-512 for every product of row-major `A` and `B`, in row
//! chunks of 12; AVX2 + FMA in row chunks of 6 for products of at most 12 rows and for
//! every product with `B` in strips — else matrixmultiply's
//! packed AVX-512/AVX2/FMA microkernels). All implement exactly the contract of
//! [`sclstm_core::Gemm`]:
//!
//! `C[c_off..][i, j] (+)= Σ_p op(A)[i, p] · op(B)[p, j]  (+ bias[j])`
//!
//! Transposes are expressed as strides, never as copies: `A` stored `k × m` is read
//! with row stride 1 and column stride `m`. A `B` in the strip layout
//! ([`Gemm::b_strips`]) is a row of `k × STRIP` blocks: the register tiles read each
//! tile's columns from its strip, matrixmultiply runs once per strip.
//!
//! # Determinism
//! The fast kernel splits the output `C` into disjoint blocks (rows when `C` is tall,
//! columns when it is wide and short, as the recurrent products with `m` = batch are)
//! and hands one block to each thread. Every element of `C` is summed by one thread in
//! the order matrixmultiply's `k`-blocking gives it, so a fixed thread count gives a
//! fixed result, with no atomics and no reductions across threads.

use rayon::ThreadPool;
use rayon::prelude::*;
use sclstm_core::{Gemm, NumError, Real, STRIP};

use crate::small_m::{self, Isa, MAX_M};

/// Products below this many floating-point operations run on the calling thread:
/// splitting them costs more in rayon hand-off than it saves (a 10×408·408×1200
/// recurrent product is about 10 MFLOP and still gains from two threads).
pub const PAR_MIN_FLOPS: u64 = 4_000_000;

/// Blocks handed to threads are aligned to this many rows/columns so that every
/// block but the last fills whole microkernel tiles (32 = the f32 small-m tile width).
const SPLIT_ALIGN: usize = 32;

/// Columns of `B` a tall product walks at a time (a multiple of both register tile
/// widths): 256 columns × k = 408 rows of f32 is 418 KB, inside a 1 MB L2, so every
/// row chunk finds the block in cache. Unpacked and unblocked along `k` this beats
/// matrixmultiply by 10–20% at the layers' shapes (`gemm_gflops` example).
pub(crate) const TALL_COL_BLOCK: usize = 256;

// Blocks of a strip-layout `B` must start on a strip.
const _: () = assert!(SPLIT_ALIGN.is_multiple_of(STRIP) && TALL_COL_BLOCK.is_multiple_of(STRIP));

/// Checks that every operand of `g` fits its buffer (`B` in its plain or strip layout)
/// and that `B` is not both transposed and in strips.
///
/// # Errors
/// [`NumError::ShapeMismatch`] for a transposed `B` in strips;
/// [`NumError::BufferTooSmall`] naming the first operand that does not fit.
pub fn check_gemm(
    g: &Gemm,
    a_len: usize,
    b_len: usize,
    bias_len: Option<usize>,
    c_len: usize,
) -> Result<(), NumError> {
    let fits = |op: &'static str, len: usize, off: usize, count: usize| {
        let needed = if count == 0 { 0 } else { off + count };
        if len < needed {
            Err(NumError::BufferTooSmall { op, len, needed })
        } else {
            Ok(())
        }
    };
    if g.trans_b && g.b_strips {
        return Err(NumError::ShapeMismatch {
            op: "gemm (b is either stored transposed or in strips)",
            lhs: vec![usize::from(g.trans_b)],
            rhs: vec![usize::from(g.b_strips)],
        });
    }
    fits("gemm (a)", a_len, g.a_off, g.m * g.k)?;
    fits("gemm (b)", b_len, g.b_off, g.b_len())?;
    fits("gemm (c)", c_len, g.c_off, g.m * g.n)?;
    if let Some(len) = bias_len {
        fits("gemm (bias)", len, 0, g.n)?;
    }
    Ok(())
}

/// The reference product: three plain loops, summing over `p` in order.
///
/// Computes `C = [C +] op(A)·op(B) [+ bias]` as described in [`Gemm`]; `C` need not
/// be initialised when `accumulate` is false.
///
/// # Errors
/// [`NumError::BufferTooSmall`] if an operand does not fit its buffer.
pub fn gemm_naive<R: Real>(
    g: &Gemm,
    a: &[R],
    b: &[R],
    bias: Option<&[R]>,
    c: &mut [R],
) -> Result<(), NumError> {
    check_gemm(g, a.len(), b.len(), bias.map(<[R]>::len), c.len())?;
    let (m, n, k) = (g.m, g.n, g.k);
    for i in 0..m {
        for j in 0..n {
            let mut acc = R::zero();
            for p in 0..k {
                let av = if g.trans_a {
                    a[g.a_off + p * m + i]
                } else {
                    a[g.a_off + i * k + p]
                };
                let bv = if g.trans_b {
                    b[g.b_off + j * k + p]
                } else if g.b_strips {
                    b[g.b_off + (j / STRIP) * STRIP * k + p * STRIP + j % STRIP]
                } else {
                    b[g.b_off + p * n + j]
                };
                acc += av * bv;
            }
            if let Some(bias) = bias {
                acc += bias[j];
            }
            let cij = &mut c[g.c_off + i * n + j];
            *cij = if g.accumulate { *cij + acc } else { acc };
        }
    }
    Ok(())
}

/// The fast product, split across `pool` when it is large enough (see
/// [`PAR_MIN_FLOPS`]; `pool = None` runs on the caller). Each block runs the
/// register-tile kernels where the CPU and the operand layout allow (see the module
/// docs) and matrixmultiply otherwise.
///
/// Same contract and errors as [`gemm_naive`].
///
/// # Errors
/// [`NumError::BufferTooSmall`] if an operand does not fit its buffer.
pub fn gemm_fast<R: Real>(
    g: &Gemm,
    a: &[R],
    b: &[R],
    bias: Option<&[R]>,
    c: &mut [R],
    pool: Option<&ThreadPool>,
) -> Result<(), NumError> {
    check_gemm(g, a.len(), b.len(), bias.map(<[R]>::len), c.len())?;
    if g.m == 0 || g.n == 0 {
        return Ok(());
    }
    let view = GemmView::new(g, a, b, bias, c);
    // SAFETY: the blocks are disjoint and inside `m × n`; bounds were checked above.
    split_output(g, pool, |r0, r1, c0, c1| unsafe {
        view.block(r0, r1, c0, c1)
    });
    Ok(())
}

/// Runs `block(r0, r1, c0, c1)` on disjoint blocks `C[r0..r1, c0..c1]` that together
/// cover the `m × n` output of `g`: one block on the calling thread for a product below
/// [`PAR_MIN_FLOPS`] (or without a pool), else one per thread of `pool`, split along
/// rows when there are enough of them and along columns otherwise (recurrent products:
/// `m` = batch, `n` = 4H), aligned to whole tiles.
pub(crate) fn split_output(
    g: &Gemm,
    pool: Option<&ThreadPool>,
    block: impl Fn(usize, usize, usize, usize) + Sync,
) {
    let threads = pool.map_or(1, ThreadPool::current_num_threads);
    let Some(pool) = pool.filter(|_| threads > 1 && g.flops() >= PAR_MIN_FLOPS) else {
        block(0, g.m, 0, g.n);
        return;
    };
    let by_rows = g.m >= SPLIT_ALIGN * threads && g.m >= g.n / 4;
    let len = if by_rows { g.m } else { g.n };
    let chunk = len.div_ceil(threads).div_ceil(SPLIT_ALIGN) * SPLIT_ALIGN;
    let blocks = len.div_ceil(chunk);
    pool.install(|| {
        (0..blocks).into_par_iter().for_each(|blk| {
            let lo = blk * chunk;
            let hi = (lo + chunk).min(len);
            if by_rows {
                block(lo, hi, 0, g.n);
            } else {
                block(0, g.m, lo, hi);
            }
        });
    });
}

/// Writes the bias into a `rows × cols` block of `C` (row stride `rsc`), added to it when
/// `accumulate`: the product is then accumulated onto it (`beta = 1`). `bias` points at
/// the block's first column.
///
/// # Safety
/// `c` and `bias` must be valid for the block; no other thread may touch it.
pub(crate) unsafe fn seed_bias<R: Real>(
    c: *mut R,
    rsc: isize,
    rows: usize,
    cols: usize,
    bias: *const R,
    accumulate: bool,
) {
    // SAFETY: the caller's contract.
    unsafe {
        for i in 0..rows {
            let row = c.offset(i as isize * rsc);
            for j in 0..cols {
                let bj = *bias.add(j);
                let cij = row.add(j);
                *cij = if accumulate { *cij + bj } else { bj };
            }
        }
    }
}

/// The fast product without the small-m kernel: matrixmultiply alone, on the calling
/// thread. Kept as a selectable variant for benchmarks and as a second reference.
///
/// # Errors
/// [`NumError::BufferTooSmall`] if an operand does not fit its buffer.
pub fn gemm_matrixmultiply<R: Real>(
    g: &Gemm,
    a: &[R],
    b: &[R],
    bias: Option<&[R]>,
    c: &mut [R],
) -> Result<(), NumError> {
    check_gemm(g, a.len(), b.len(), bias.map(<[R]>::len), c.len())?;
    if g.m == 0 || g.n == 0 {
        return Ok(());
    }
    let view = GemmView {
        kernel: None,
        ..GemmView::new(g, a, b, bias, c)
    };
    // SAFETY: the whole output block belongs to this call; bounds were checked.
    unsafe { view.block(0, g.m, 0, g.n) };
    Ok(())
}

/// Raw strided views of the operands of one checked product, shareable across threads.
struct GemmView<R> {
    n: usize,
    k: usize,
    a: *const R,
    rsa: isize,
    csa: isize,
    b: *const R,
    rsb: isize,
    csb: isize,
    /// Elements from one strip of `B` to the next when `B` is in the strip layout, else 0.
    strip_k: usize,
    c: *mut R,
    bias: Option<*const R>,
    accumulate: bool,
    /// The register-tile kernel for products with a row-major `B` (`None`:
    /// matrixmultiply for everything).
    kernel: Option<Isa>,
}

// SAFETY: the pointers come from slices borrowed for the whole call of `gemm_fast`;
// threads only read A, B and bias, and write disjoint blocks of C.
unsafe impl<R: Send> Send for GemmView<R> {}
// SAFETY: as above.
unsafe impl<R: Sync> Sync for GemmView<R> {}

impl<R: Real> GemmView<R> {
    fn new(g: &Gemm, a: &[R], b: &[R], bias: Option<&[R]>, c: &mut [R]) -> Self {
        let (m, n, k) = (g.m, g.n, g.k);
        let (rsa, csa) = if g.trans_a { (1, m) } else { (k, 1) };
        let (rsb, csb) = match (g.trans_b, g.b_strips) {
            (true, _) => (1, k),
            (false, true) => (STRIP, 1),
            (false, false) => (n, 1),
        };
        GemmView {
            n,
            k,
            a: a.as_ptr().wrapping_add(g.a_off),
            rsa: rsa as isize,
            csa: csa as isize,
            b: b.as_ptr().wrapping_add(g.b_off),
            rsb: rsb as isize,
            csb: csb as isize,
            strip_k: if g.b_strips { STRIP * k } else { 0 },
            c: c.as_mut_ptr().wrapping_add(g.c_off),
            bias: bias.map(<[R]>::as_ptr),
            accumulate: g.accumulate,
            kernel: Isa::detect(),
        }
    }

    /// Computes the block `C[r0..r1, c0..c1]`.
    ///
    /// # Safety
    /// The ranges must lie inside `m × n`, and no other thread may touch that block.
    unsafe fn block(&self, r0: usize, r1: usize, c0: usize, c1: usize) {
        let (rows, cols) = (r1 - r0, c1 - c0);
        let n = self.n as isize;
        // SAFETY (whole body): offsets stay inside the checked operands.
        unsafe {
            let c = self.c.offset(r0 as isize * n + c0 as isize);
            let mut beta = if self.accumulate { R::one() } else { R::zero() };
            if let Some(bias) = self.bias {
                seed_bias(c, n, rows, cols, bias.add(c0), self.accumulate);
                beta = R::one();
            }
            let a = self.a.offset(r0 as isize * self.rsa);
            let b = b_columns(self.b, c0, self.csb, self.strip_k);
            strided_gemm(
                self.kernel,
                rows,
                self.k,
                cols,
                a,
                self.rsa,
                self.csa,
                b,
                self.rsb,
                self.csb,
                self.strip_k,
                beta,
                c,
                n,
                1,
            );
        }
    }
}

/// `B` from column `j` on: `j` columns along a strided `B`, or the start of the strip
/// holding column `j` (a strip boundary: blocks and column blocks are multiples of
/// [`STRIP`]) when `strip_k > 0`.
///
/// # Safety
/// The result must stay inside `B`.
unsafe fn b_columns<R>(b: *const R, j: usize, csb: isize, strip_k: usize) -> *const R {
    // SAFETY: the caller's contract.
    unsafe {
        if strip_k == 0 {
            b.offset(j as isize * csb)
        } else {
            debug_assert_eq!(
                j % STRIP,
                0,
                "internal: a strip-layout block starts mid-strip"
            );
            b.add(j / STRIP * strip_k)
        }
    }
}

/// `C = A·B + beta·C` on strided operands: the register-tile kernel `kernel` where it
/// applies (row-major `B` and `C`; tall products as [`Isa::tall`] says) or the transposed-`B`
/// AVX-512 kernel for tiny-m products, else matrixmultiply's `sgemm` /
/// `dgemm` for f32 / f64 (any other `Real` falls back to a plain loop). With
/// `beta = 0`, `C` is never read (so NaN there does not propagate). With `strip_k > 0`,
/// `B` is in the strip layout from its first column on (`rsb` = [`STRIP`], `csb` = 1,
/// `strip_k` elements per strip); where no register tile serves it, matrixmultiply runs
/// once per strip.
///
/// # Safety
/// Every pointer must be valid for the strided `m × k`, `k × n`, `m × n` regions (`B`'s
/// strips for a strip-layout `B`).
#[allow(clippy::too_many_arguments)]
unsafe fn strided_gemm<R: Real>(
    kernel: Option<Isa>,
    m: usize,
    k: usize,
    n: usize,
    a: *const R,
    rsa: isize,
    csa: isize,
    b: *const R,
    rsb: isize,
    csb: isize,
    strip_k: usize,
    beta: R,
    c: *mut R,
    rsc: isize,
    csc: isize,
) {
    // The register-tile kernels exist for f32 and f64 (the `Real` views say which).
    let tiled_type = R::f32_ptr(a).is_some() || R::f64_ptr(a).is_some();
    // SAFETY: the caller's contract.
    unsafe {
        // Tall products only with a row-major A as well: a transposed A (the weight
        // gradients `dGᵀ·X`) is read down its columns, a page apart per step of `k`, and
        // in a training step (cold caches, TLB misses) matrixmultiply's packing wins.
        let tile_kernel = kernel.filter(|isa| {
            tiled_type && csc == 1 && csb == 1 && (m <= MAX_M || isa.tall(strip_k > 0) && csa == 1)
        });
        if let Some(isa) = tile_kernel {
            // Row chunks of at most `isa.rows()` over one L2-sized block of B's columns
            // at a time, so that every chunk reads the block from cache; nothing is
            // packed. Tiny-m products (recurrent steps) are a single chunk.
            let mut j0 = 0;
            while j0 < n {
                let w = TALL_COL_BLOCK.min(n - j0);
                let mut i0 = 0;
                while i0 < m {
                    // Chunks of even height (7 rows as 4 + 3, not 6 + 1): a chunk of
                    // one or two rows reuses each load of `B` too little.
                    let h = (m - i0).div_ceil((m - i0).div_ceil(isa.rows()));
                    small_m::gemm(
                        isa,
                        h,
                        k,
                        w,
                        a.offset(i0 as isize * rsa),
                        rsa,
                        csa,
                        b_columns(b, j0, csb, strip_k),
                        rsb,
                        strip_k,
                        beta,
                        c.offset(i0 as isize * rsc + j0 as isize),
                        rsc,
                    );
                    i0 += h;
                }
                j0 += w;
            }
            return;
        }
        if strip_k > 0 {
            // Each strip is a plain k × STRIP matrix.
            for j0 in (0..n).step_by(STRIP) {
                let b = b_columns(b, j0, csb, strip_k);
                let c = c.offset(j0 as isize * csc);
                let w = STRIP.min(n - j0);
                strided_gemm_mm(m, k, w, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
            }
            return;
        }
        if kernel.is_some() && tiled_type && csc == 1 && small_m::usable_t(m, csa, rsb) {
            // Tiny-m products with a transposed B (recurrent backward): dot products.
            return small_m::gemm_t(m, k, n, a, rsa, b, csb, beta, c, rsc);
        }
        strided_gemm_mm(m, k, n, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
}

/// [`strided_gemm`] without the small-m kernel: matrixmultiply, or plain loops for a
/// `Real` other than f32 / f64.
///
/// # Safety
/// As for [`strided_gemm`].
#[allow(clippy::too_many_arguments)]
unsafe fn strided_gemm_mm<R: Real>(
    m: usize,
    k: usize,
    n: usize,
    a: *const R,
    rsa: isize,
    csa: isize,
    b: *const R,
    rsb: isize,
    csb: isize,
    beta: R,
    c: *mut R,
    rsc: isize,
    csc: isize,
) {
    let f32s = (R::f32_ptr(a), R::f32_ptr(b), R::f32_ptr_mut(c));
    let f64s = (R::f64_ptr(a), R::f64_ptr(b), R::f64_ptr_mut(c));
    // SAFETY: the caller's contract; the `Real` views are the same pointers.
    unsafe {
        if let (Some(a), Some(b), Some(c)) = f32s {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a,
                rsa,
                csa,
                b,
                rsb,
                csb,
                Real::to_f64(beta) as f32,
                c,
                rsc,
                csc,
            );
        } else if let (Some(a), Some(b), Some(c)) = f64s {
            matrixmultiply::dgemm(
                m,
                k,
                n,
                1.0,
                a,
                rsa,
                csa,
                b,
                rsb,
                csb,
                Real::to_f64(beta),
                c,
                rsc,
                csc,
            );
        } else {
            for i in 0..m as isize {
                for j in 0..n as isize {
                    let mut acc = R::zero();
                    for p in 0..k as isize {
                        acc += *a.offset(i * rsa + p * csa) * *b.offset(p * rsb + j * csb);
                    }
                    let cij = c.offset(i * rsc + j * csc);
                    *cij = if beta == R::zero() {
                        acc
                    } else {
                        acc + beta * *cij
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random<R: Real>(rng: &mut ChaCha8Rng, len: usize) -> Vec<R> {
        (0..len)
            .map(|_| R::from_f64(rng.random_range(-1.0..1.0)))
            .collect()
    }

    /// `b` (`k × n`, row-major) in the strip layout, written out from its definition.
    fn to_strips<R: Real>(b: &[R], k: usize, n: usize) -> Vec<R> {
        let mut out = vec![R::zero(); sclstm_core::strip_len(k, n)];
        for p in 0..k {
            for j in 0..n {
                out[(j / STRIP) * STRIP * k + p * STRIP + j % STRIP] = b[p * n + j];
            }
        }
        out
    }

    /// Fast vs naive for every transpose / B layout / accumulate / bias combination at
    /// one size.
    fn compare<R: Real>(m: usize, n: usize, k: usize, pool: Option<&ThreadPool>, tol: f64) {
        let mut rng = ChaCha8Rng::seed_from_u64((m * 131 + n * 17 + k) as u64);
        for trans_a in [false, true] {
            for (trans_b, b_strips) in [(false, false), (true, false), (false, true)] {
                for accumulate in [false, true] {
                    for with_bias in [false, true] {
                        let g = Gemm {
                            trans_a,
                            trans_b,
                            b_strips,
                            accumulate,
                            a_off: 3,
                            b_off: 1,
                            c_off: 2,
                            ..Gemm::new(m, n, k)
                        };
                        let a = random::<R>(&mut rng, 3 + m * k);
                        let b = random::<R>(&mut rng, 1 + k * n + 5);
                        // The strip layout holds the same matrix: the plain product of
                        // `b` is the reference for both.
                        let (g_ref, b_ref) = (
                            Gemm {
                                b_strips: false,
                                ..g
                            },
                            b.clone(),
                        );
                        let b = if b_strips {
                            let mut strips = vec![b[0]];
                            strips.extend(to_strips(&b[1..1 + k * n], k, n));
                            strips.extend(&b[1 + k * n..]);
                            strips
                        } else {
                            b
                        };
                        let bias = random::<R>(&mut rng, n);
                        let init: Vec<R> = if accumulate {
                            random(&mut rng, 2 + m * n + 4)
                        } else {
                            vec![R::nan(); 2 + m * n + 4]
                        };
                        let mut c_ref = init.clone();
                        let bias = with_bias.then_some(bias.as_slice());
                        gemm_naive(&g_ref, &a, &b_ref, bias, &mut c_ref).unwrap();
                        let mut results = Vec::new();
                        let mut c_naive = init.clone();
                        gemm_naive(&g, &a, &b, bias, &mut c_naive).unwrap();
                        results.push(("naive".to_string(), c_naive));
                        let mut c_fast = init.clone();
                        gemm_fast(&g, &a, &b, bias, &mut c_fast, pool).unwrap();
                        results.push(("fast".to_string(), c_fast));
                        let mut c_mm = init.clone();
                        gemm_matrixmultiply(&g, &a, &b, bias, &mut c_mm).unwrap();
                        results.push(("matrixmultiply".to_string(), c_mm));
                        // Every register-tile kernel this CPU has, not only the best one.
                        for isa in Isa::available() {
                            let mut c_k = init.clone();
                            let view = GemmView {
                                kernel: Some(isa),
                                ..GemmView::new(&g, &a, &b, bias, &mut c_k)
                            };
                            // SAFETY: sizes match the buffers (the naive call checked them).
                            unsafe { view.block(0, m, 0, n) };
                            results.push((format!("{isa:?}"), c_k));
                        }
                        for (name, got) in &results {
                            for (idx, (x, y)) in c_ref.iter().zip(got).enumerate() {
                                let inside = idx >= 2 && idx < 2 + m * n;
                                let (x, y) = (Real::to_f64(*x), Real::to_f64(*y));
                                if inside {
                                    assert!(
                                        (x - y).abs() <= tol * (1.0 + x.abs()),
                                        "{name} {m}x{n}x{k} ta={trans_a} tb={trans_b} \
                                         strips={b_strips} acc={accumulate} \
                                         bias={with_bias} idx={idx}: naive {x} got {y}"
                                    );
                                } else {
                                    // Padding around C must be untouched.
                                    assert!(
                                        x.is_nan() && y.is_nan() || x == y,
                                        "{name} padding idx {idx}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    const SIZES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (1, 7, 3),
        (3, 1, 5),
        (5, 17, 1),
        (13, 19, 23),
        (10, 130, 41),
        (12, 64, 32),
        (3, 5, 600),
        (67, 45, 33),
        // Masked last tiles of both widths, and a tall product wider than one column block.
        (7, 9, 4),
        (11, 47, 6),
        (29, 300, 9),
        // One and two rows: the AVX2 32-column tiles, then a 16-column and a masked one.
        (1, 83, 5),
        (2, 83, 7),
        // Four and six rows: the AVX-512 64-column tiles, then a 32-column and a masked
        // one (after two wide tiles, a masked one alone).
        (4, 115, 9),
        (6, 130, 11),
    ];

    #[test]
    fn fast_matches_naive_f64_single_thread() {
        for &(m, n, k) in SIZES {
            compare::<f64>(m, n, k, None, 1e-12);
        }
    }

    #[test]
    fn fast_matches_naive_f32_single_thread() {
        for &(m, n, k) in SIZES {
            compare::<f32>(m, n, k, None, 1e-4);
        }
    }

    #[test]
    fn fast_matches_naive_large_two_threads() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        // Tall (row split), wide-and-short (column split, the recurrent shape), square.
        compare::<f32>(150, 120, 230, Some(&pool), 1e-4);
        compare::<f32>(10, 1200, 408, Some(&pool), 1e-4);
        compare::<f64>(130, 131, 257, Some(&pool), 1e-12);
    }

    #[test]
    fn parallel_result_is_deterministic() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let g = Gemm::new(64, 300, 257);
        let a = random::<f32>(&mut rng, 64 * 257);
        let b = random::<f32>(&mut rng, 257 * 300);
        let mut c1 = vec![0.0; 64 * 300];
        let mut c2 = vec![1.0; 64 * 300];
        gemm_fast(&g, &a, &b, None, &mut c1, Some(&pool)).unwrap();
        gemm_fast(&g, &a, &b, None, &mut c2, Some(&pool)).unwrap();
        assert_eq!(c1, c2);
    }

    #[test]
    fn strip_layout_gives_the_plain_layouts_bits() {
        // The register tiles sum every element over `k` in the same order whatever the
        // layout of B, so moving the layers' weights into strips changes no result.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for (m, n, k) in [
            (10, 1200, 300),
            (4, 300, 1200),
            (1, 300, 300),
            (172, 1200, 600),
        ] {
            let a = random::<f32>(&mut rng, m * k);
            let b = random::<f32>(&mut rng, k * n);
            let strips = to_strips(&b, k, n);
            let plain = Gemm {
                accumulate: true,
                ..Gemm::new(m, n, k)
            };
            let striped = Gemm {
                b_strips: true,
                ..plain
            };
            // Whether a tile kernel serves a plain `B` of `m` rows as it serves strips (the
            // AVX2 tiles leave a tall plain product to matrixmultiply, so there the layouts
            // differ in rounding only).
            let tiles_both = |isa: Isa| m <= MAX_M || isa.tall(false);
            // The active kernels.
            let pools = if Isa::detect().is_none_or(tiles_both) {
                vec![None, Some(&pool)]
            } else {
                Vec::new()
            };
            for p in pools {
                let init = random::<f32>(&mut rng, m * n);
                let (mut c1, mut c2) = (init.clone(), init);
                gemm_fast(&plain, &a, &b, None, &mut c1, p).unwrap();
                gemm_fast(&striped, &a, &strips, None, &mut c2, p).unwrap();
                assert!(
                    c1.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{m}×{k}·{k}×{n}, pool {}",
                    p.is_some()
                );
            }
            // Every register-tile kernel of this CPU, tall products included, wherever
            // it serves both layouts.
            for isa in Isa::available().into_iter().filter(|&isa| tiles_both(isa)) {
                let init = random::<f32>(&mut rng, m * n);
                let (mut c1, mut c2) = (init.clone(), init);
                for (g, b, c) in [(&plain, &b, &mut c1), (&striped, &strips, &mut c2)] {
                    let view = GemmView {
                        kernel: Some(isa),
                        ..GemmView::new(g, &a, b, None, c)
                    };
                    // SAFETY: the sizes match the buffers.
                    unsafe { view.block(0, m, 0, n) };
                }
                assert!(
                    c1.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{isa:?} {m}×{k}·{k}×{n}"
                );
            }
        }
    }

    #[test]
    fn strips_are_refused_with_a_transposed_b_or_a_short_buffer() {
        let g = Gemm {
            b_strips: true,
            ..Gemm::new(2, 33, 3)
        };
        let (a, mut c) = (vec![0.0f32; 6], vec![0.0f32; 66]);
        // 33 columns take two strips: 3 · 64 elements, not 3 · 33.
        let err = gemm_fast(&g, &a, &[0.0; 99], None, &mut c, None).unwrap_err();
        assert_eq!(
            err,
            NumError::BufferTooSmall {
                op: "gemm (b)",
                len: 99,
                needed: 192
            }
        );
        let t = Gemm { trans_b: true, ..g };
        let err = gemm_fast(&t, &a, &[0.0; 192], None, &mut c, None).unwrap_err();
        assert!(matches!(err, NumError::ShapeMismatch { .. }), "{err:?}");
    }

    #[test]
    fn empty_operands_with_offsets_are_fine() {
        // k = 0: A and B are never read, whatever their offsets.
        let g = Gemm {
            a_off: 9,
            b_off: 9,
            ..Gemm::new(1, 2, 0)
        };
        let mut c = vec![f32::NAN; 2];
        gemm_fast(&g, &[], &[], None, &mut c, None).unwrap();
        assert_eq!(c, vec![0.0, 0.0]);
    }

    #[test]
    fn k_zero_gives_bias_or_keeps_c() {
        let g = Gemm::new(2, 3, 0);
        let bias = [1.0f64, 2.0, 3.0];
        let mut c = vec![f64::NAN; 6];
        gemm_fast(&g, &[], &[], Some(&bias), &mut c, None).unwrap();
        assert_eq!(c, vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        let mut c = vec![f64::NAN; 6];
        gemm_fast(&g, &[], &[], None, &mut c, None).unwrap();
        assert_eq!(c, vec![0.0; 6]);
    }

    #[test]
    fn too_small_buffers_are_errors() {
        let g = Gemm::new(2, 3, 4);
        let a = vec![0.0f32; 7];
        let b = vec![0.0f32; 12];
        let mut c = vec![0.0f32; 6];
        let err = gemm_fast(&g, &a, &b, None, &mut c, None).unwrap_err();
        assert_eq!(
            err,
            NumError::BufferTooSmall {
                op: "gemm (a)",
                len: 7,
                needed: 8
            }
        );
        let err = gemm_naive(&g, &[0.0f32; 8], &b, Some(&[0.0; 2]), &mut c).unwrap_err();
        assert!(matches!(
            err,
            NumError::BufferTooSmall {
                op: "gemm (bias)",
                ..
            }
        ));
    }
}
