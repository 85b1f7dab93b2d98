//! Character convolution (kernel 3, padding 1) followed by max-pooling over each word.
//!
//! Input `X` is (N·W, C_in): word `n` occupies rows `n·W .. n·W + W`, of which the first
//! `len_n` are its characters (the rest is padding and is never read). With
//! `x_{n,t}` = row `n·W + t` for `0 ≤ t < len_n` and zero outside, the convolution is
//!
//! `z_{n,t} = [x_{n,t−1} | x_{n,t} | x_{n,t+1}] · K + b`,  `K` (3·C_in, C_out), `b` (1, C_out)
//!
//! and the output is `Y[n, c] = max_{0 ≤ t < len_n} z_{n,t}[c]` (N, C_out).
//!
//! The forward builds one im2col matrix `P` (Σ len_n, 3·C_in) for all words, so the
//! convolution is a single gemm `Z = P·K + b`. Backward, with `a(n, c)` the argmax row:
//! `dZ[a(n,c), c] = dY[n, c]` (zero elsewhere), `dK += Pᵀ·dZ`, `db += Σ_n dY[n]`,
//! `dP = dZ·Kᵀ`, and `dP` is scattered back (col2im) into `dX` rows; padding rows get 0.

use ndarray::s;
use rayon::ThreadPool;
use sclstm_core::{Gemm, Matrix, NumError, Real};

use super::matmul::gemm_into;
use super::mismatch;
use crate::grads::col_sums;

/// State the backward needs.
#[derive(Debug, Clone)]
pub struct CharConvCache<R> {
    /// im2col of the input: (Σ len, 3·C_in).
    pub patches: Matrix<R>,
    /// Row of `patches` holding the max, per (word, channel): (N, C_out) flattened.
    pub argmax: Vec<usize>,
    /// Word length in characters, per word.
    pub lengths: Vec<usize>,
    /// Rows per word in the input (W).
    pub width: usize,
}

/// Forward pass; returns `Y` (N, C_out) and the cache.
///
/// # Errors
/// [`NumError::ShapeMismatch`] if `X` is not (N·W, C_in), `K` not (3·C_in, C_out) or
/// `b` not (1, C_out); [`NumError::Empty`] for no word or a word of length 0;
/// [`NumError::IndexOutOfRange`] for a length above `W`.
pub fn forward<R: Real>(
    x: &Matrix<R>,
    kernel: &Matrix<R>,
    bias: &Matrix<R>,
    width: usize,
    lengths: &[usize],
    pool: Option<&ThreadPool>,
) -> Result<(Matrix<R>, CharConvCache<R>), NumError> {
    let op = "char_conv_maxpool";
    let n = lengths.len();
    if n == 0 {
        return Err(NumError::Empty {
            op,
            what: "no words",
        });
    }
    let c_in = x.ncols();
    if x.nrows() != n * width {
        return Err(mismatch(op, x.dim(), (n * width, c_in)));
    }
    if kernel.nrows() != 3 * c_in {
        return Err(mismatch(op, x.dim(), kernel.dim()));
    }
    let c_out = kernel.ncols();
    if bias.dim() != (1, c_out) {
        return Err(mismatch(op, kernel.dim(), bias.dim()));
    }
    for &len in lengths {
        if len == 0 {
            return Err(NumError::Empty {
                op,
                what: "word of length 0",
            });
        }
        if len > width {
            return Err(NumError::IndexOutOfRange {
                op,
                index: len,
                bound: width + 1,
            });
        }
    }
    let total: usize = lengths.iter().sum();
    let mut patches = Matrix::zeros((total, 3 * c_in));
    let mut row = 0;
    for (w, &len) in lengths.iter().enumerate() {
        for t in 0..len {
            for (tap, src) in [(0, t.checked_sub(1)), (1, Some(t)), (2, Some(t + 1))] {
                if let Some(src) = src.filter(|&s| s < len) {
                    patches
                        .slice_mut(s![row, tap * c_in..(tap + 1) * c_in])
                        .assign(&x.row(w * width + src));
                }
            }
            row += 1;
        }
    }
    let mut z = Matrix::zeros((total, c_out));
    for mut r in z.rows_mut() {
        r.assign(&bias.row(0));
    }
    let g = Gemm {
        accumulate: true,
        ..Gemm::new(total, c_out, 3 * c_in)
    };
    gemm_into(g, &patches, kernel, &mut z, pool)?;
    let mut y = Matrix::zeros((n, c_out));
    let mut argmax = vec![0; n * c_out];
    let mut start = 0;
    for (w, &len) in lengths.iter().enumerate() {
        for c in 0..c_out {
            let mut best = start;
            for r in start + 1..start + len {
                if z[[r, c]] > z[[best, c]] {
                    best = r;
                }
            }
            y[[w, c]] = z[[best, c]];
            argmax[w * c_out + c] = best;
        }
        start += len;
    }
    let cache = CharConvCache {
        patches,
        argmax,
        lengths: lengths.to_vec(),
        width,
    };
    Ok((y, cache))
}

/// Backward pass: adds into `d_x` (N·W, C_in), `d_kernel` (3·C_in, C_out) and
/// `d_bias` (1, C_out), each when given.
///
/// # Errors
/// Only on inconsistent shapes (an internal bug when called from the tape).
pub fn backward<R: Real>(
    d_y: &Matrix<R>,
    kernel: &Matrix<R>,
    cache: &CharConvCache<R>,
    d_x: Option<&mut Matrix<R>>,
    d_kernel: Option<&mut Matrix<R>>,
    d_bias: Option<&mut Matrix<R>>,
    pool: Option<&ThreadPool>,
) -> Result<(), NumError> {
    let (n, c_out) = d_y.dim();
    let total = cache.patches.nrows();
    let c3 = cache.patches.ncols();
    let mut d_z = Matrix::zeros((total, c_out));
    for w in 0..n {
        for c in 0..c_out {
            d_z[[cache.argmax[w * c_out + c], c]] += d_y[[w, c]];
        }
    }
    if let Some(d_bias) = d_bias {
        *d_bias += &col_sums(d_y);
    }
    if let Some(d_kernel) = d_kernel {
        let g = Gemm {
            trans_a: true,
            accumulate: true,
            ..Gemm::new(c3, c_out, total)
        };
        gemm_into(g, &cache.patches, &d_z, d_kernel, pool)?;
    }
    if let Some(d_x) = d_x {
        let mut d_p = Matrix::zeros((total, c3));
        let g = Gemm {
            trans_b: true,
            ..Gemm::new(total, c3, c_out)
        };
        gemm_into(g, &d_z, kernel, &mut d_p, pool)?;
        let c_in = c3 / 3;
        let mut row = 0;
        for (w, &len) in cache.lengths.iter().enumerate() {
            for t in 0..len {
                for (tap, src) in [(0, t.checked_sub(1)), (1, Some(t)), (2, Some(t + 1))] {
                    if let Some(src) = src.filter(|&s| s < len) {
                        let mut dst = d_x.row_mut(w * cache.width + src);
                        dst += &d_p.slice(s![row, tap * c_in..(tap + 1) * c_in]);
                    }
                }
                row += 1;
            }
        }
    }
    Ok(())
}
