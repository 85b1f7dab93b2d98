//! ELMo's scalar mix of layers (Peters et al., 2018, Eq. 1):
//!
//! `Y = γ · Σ_{j<L} s_j H_j`, `s = softmax(w)`,
//!
//! for `L` layer outputs `H_j` (N, D) stored side by side in one matrix `H` (N, L·D)
//! (`H_j = H[:, j·D .. (j+1)·D]`), learned weights `w` (1, L) and a learned scale `γ`
//! (1, 1). With `M = Σ_j s_j H_j` (saved by the forward pass) the backward is
//!
//! - `dγ += Σ dY ⊙ M`;
//! - `dH_j += γ s_j dY`;
//! - with `g_j = γ Σ dY ⊙ H_j` (the gradient w.r.t. `s_j`), through the softmax
//!   Jacobian `∂s_j/∂w_i = s_j (δ_ij − s_i)`: `dw_i += s_i (g_i − Σ_j s_j g_j)`.

use sclstm_core::{Matrix, NumError, Real};

use super::mismatch;

/// What the backward needs: the mixing weights and the unscaled mix.
#[derive(Debug, Clone)]
pub struct ScalarMixCache<R> {
    /// `s = softmax(w)` (L).
    pub s: Vec<R>,
    /// `M = Σ_j s_j H_j` (N, D).
    pub mix: Matrix<R>,
}

/// `Y = γ Σ_j softmax(w)_j H_j` for `h` (N, L·D), `w` (1, L), `gamma` (1, 1); returns
/// `Y` (N, D) and the cache.
///
/// # Errors
/// [`NumError::ShapeMismatch`] unless `w` is (1, L) with `L ≥ 1` dividing the columns
/// of `h`, and `gamma` is (1, 1).
pub fn forward<R: Real>(
    h: &Matrix<R>,
    w: &Matrix<R>,
    gamma: &Matrix<R>,
) -> Result<(Matrix<R>, ScalarMixCache<R>), NumError> {
    let layers = w.ncols();
    if w.nrows() != 1 || layers == 0 || !h.ncols().is_multiple_of(layers) {
        return Err(mismatch("scalar_mix", h.dim(), w.dim()));
    }
    if gamma.dim() != (1, 1) {
        return Err(mismatch("scalar_mix", (1, 1), gamma.dim()));
    }
    let d = h.ncols() / layers;
    let max = w.iter().copied().fold(R::neg_infinity(), R::max);
    let e: Vec<R> = w.iter().map(|&v| (v - max).exp()).collect();
    let z = e.iter().copied().fold(R::zero(), |a, b| a + b);
    let s: Vec<R> = e.iter().map(|&v| v / z).collect();
    let mut mix = Matrix::zeros((h.nrows(), d));
    for (mut m, row) in mix.rows_mut().into_iter().zip(h.rows()) {
        for (j, &sj) in s.iter().enumerate() {
            for (mv, &hv) in m.iter_mut().zip(row.iter().skip(j * d).take(d)) {
                *mv += sj * hv;
            }
        }
    }
    let g = gamma[[0, 0]];
    let y = mix.mapv(|v| g * v);
    Ok((y, ScalarMixCache { s, mix }))
}

/// Backward of [`forward`]: adds into `d_w` (1, L), `d_gamma` (1, 1) and, when given,
/// `d_h` (N, L·D) (features that need no gradient pass `None`).
pub fn backward<R: Real>(
    d_y: &Matrix<R>,
    h: &Matrix<R>,
    gamma: &Matrix<R>,
    cache: &ScalarMixCache<R>,
    d_h: Option<&mut Matrix<R>>,
    d_w: &mut Matrix<R>,
    d_gamma: &mut Matrix<R>,
) {
    let layers = cache.s.len();
    let d = d_y.ncols();
    let g = gamma[[0, 0]];
    let dot = |j: usize| -> R {
        let mut acc = R::zero();
        for (dy_row, h_row) in d_y.rows().into_iter().zip(h.rows()) {
            for (&dy, &hv) in dy_row.iter().zip(h_row.iter().skip(j * d).take(d)) {
                acc += dy * hv;
            }
        }
        g * acc
    };
    let grad_s: Vec<R> = (0..layers).map(dot).collect();
    let mean = cache
        .s
        .iter()
        .zip(&grad_s)
        .fold(R::zero(), |a, (&s, &gs)| a + s * gs);
    for (i, (&s, &gs)) in cache.s.iter().zip(&grad_s).enumerate() {
        d_w[[0, i]] += s * (gs - mean);
    }
    let mut d_g = R::zero();
    for (&dy, &m) in d_y.iter().zip(cache.mix.iter()) {
        d_g += dy * m;
    }
    d_gamma[[0, 0]] += d_g;
    if let Some(d_h) = d_h {
        for (mut dh_row, dy_row) in d_h.rows_mut().into_iter().zip(d_y.rows()) {
            for (j, &s) in cache.s.iter().enumerate() {
                for (dh, &dy) in dh_row.iter_mut().skip(j * d).take(d).zip(dy_row.iter()) {
                    *dh += g * s * dy;
                }
            }
        }
    }
}
