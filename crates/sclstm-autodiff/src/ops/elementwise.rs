//! Elementwise ops: add, broadcast bias, product, sigmoid, tanh, scalar scale.

use ndarray::Zip;
use rayon::ThreadPool;
use rayon::prelude::*;
use sclstm_core::{Matrix, NumError, Real};

use super::{mismatch, same_shape};
use crate::grads::col_sums;

/// `Y = A + B` (same shape). Backward: `dA += dY`, `dB += dY`.
///
/// # Errors
/// [`NumError::ShapeMismatch`] if the shapes differ.
pub fn add<R: Real>(a: &Matrix<R>, b: &Matrix<R>) -> Result<Matrix<R>, NumError> {
    same_shape("add", a, b)?;
    Ok(a + b)
}

/// `Y = X + 1·bias` with `X` (n, d) and `bias` (1, d) added to every row.
/// Backward: `dX += dY`, `d_bias += Σ_rows dY`.
///
/// # Errors
/// [`NumError::ShapeMismatch`] unless `bias` is (1, d).
pub fn add_bias<R: Real>(x: &Matrix<R>, bias: &Matrix<R>) -> Result<Matrix<R>, NumError> {
    if bias.nrows() != 1 || bias.ncols() != x.ncols() {
        return Err(mismatch("add_bias", x.dim(), bias.dim()));
    }
    Ok(x + bias)
}

/// Backward of [`add_bias`] for the bias: `d_bias += Σ_rows dY`.
pub fn add_bias_backward_bias<R: Real>(d_y: &Matrix<R>, d_bias: &mut Matrix<R>) {
    *d_bias += &col_sums(d_y);
}

/// `Y = A ⊙ B` (same shape). Backward: `dA += dY ⊙ B`, `dB += dY ⊙ A`.
///
/// # Errors
/// [`NumError::ShapeMismatch`] if the shapes differ.
pub fn mul<R: Real>(a: &Matrix<R>, b: &Matrix<R>) -> Result<Matrix<R>, NumError> {
    same_shape("mul", a, b)?;
    Ok(a * b)
}

/// Elements per task when [`mul_backward`] runs on a pool.
const PAR_ELEMS: usize = 1 << 14;

/// Backward of [`mul`] for one factor: `d_a += d_y ⊙ other`; in runs on `pool` when it has
/// one and the operands are contiguous (elementwise, so the same result either way).
pub fn mul_backward<R: Real>(
    d_y: &Matrix<R>,
    other: &Matrix<R>,
    d_a: &mut Matrix<R>,
    pool: Option<&ThreadPool>,
) {
    match (d_a.as_slice_mut(), d_y.as_slice(), other.as_slice(), pool) {
        (Some(da), Some(dy), Some(o), Some(pool)) if da.len() >= 2 * PAR_ELEMS => {
            pool.install(|| {
                da.par_chunks_mut(PAR_ELEMS)
                    .zip(dy.par_chunks(PAR_ELEMS))
                    .zip(o.par_chunks(PAR_ELEMS))
                    .for_each(|((da, dy), o)| {
                        for ((da, &dy), &o) in da.iter_mut().zip(dy).zip(o) {
                            *da += dy * o;
                        }
                    });
            });
        }
        _ => Zip::from(d_a)
            .and(d_y)
            .and(other)
            .for_each(|da, &dy, &o| *da += dy * o),
    }
}

/// `Y = σ(X) = 1 / (1 + e^{-X})`.
pub fn sigmoid<R: Real>(x: &Matrix<R>) -> Matrix<R> {
    x.mapv(Real::sigmoid)
}

/// Backward of [`sigmoid`] from its output: `dX += dY ⊙ Y ⊙ (1 − Y)` (σ' = σ(1 − σ)).
pub fn sigmoid_backward<R: Real>(d_y: &Matrix<R>, y: &Matrix<R>, d_x: &mut Matrix<R>) {
    Zip::from(d_x)
        .and(d_y)
        .and(y)
        .for_each(|dx, &dy, &y| *dx += dy * y * (R::one() - y));
}

/// `Y = tanh(X)`.
pub fn tanh<R: Real>(x: &Matrix<R>) -> Matrix<R> {
    x.mapv(R::tanh)
}

/// Backward of [`tanh`] from its output: `dX += dY ⊙ (1 − Y²)` (tanh' = 1 − tanh²).
pub fn tanh_backward<R: Real>(d_y: &Matrix<R>, y: &Matrix<R>, d_x: &mut Matrix<R>) {
    Zip::from(d_x)
        .and(d_y)
        .and(y)
        .for_each(|dx, &dy, &y| *dx += dy * (R::one() - y * y));
}

/// `Y = s · X` (the λ weighting of a task loss, paper Eq. 4). Backward: `dX += s · dY`.
pub fn scale<R: Real>(x: &Matrix<R>, s: R) -> Matrix<R> {
    x * s
}

/// Backward of [`scale`]: `dX += s · dY`.
pub fn scale_backward<R: Real>(d_y: &Matrix<R>, s: R, d_x: &mut Matrix<R>) {
    d_x.scaled_add(s, d_y);
}
