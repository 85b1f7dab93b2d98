//! Masked log-softmax + cross-entropy, the loss of the softmax tagging heads.
//!
//! For logits `Z` (N, C), labels `y_r` and a mask, with `p_r = softmax(Z_r)`:
//!
//! `L = s · Σ_{r unmasked} −log p_r[y_r]`,  `s = 1 / #unmasked` ([`Reduction::Mean`],
//! the mean over real tokens, padding excluded) or `s = 1` ([`Reduction::Sum`]).
//!
//! Backward: `dZ_r += dL · s · (p_r − onehot(y_r))` for unmasked rows, 0 for masked
//! ones; each row of the gradient sums to zero.

use sclstm_core::{Matrix, NumError, Real};

/// How the per-token losses are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// Mean over unmasked tokens.
    Mean,
    /// Sum over unmasked tokens.
    Sum,
}

/// State the backward needs.
#[derive(Debug, Clone)]
pub struct CrossEntropyCache<R> {
    /// Softmax probabilities (N, C); masked rows are zero.
    pub probs: Matrix<R>,
    /// Label per row.
    pub labels: Vec<usize>,
    /// Whether each row counts.
    pub mask: Vec<bool>,
    /// The reduction factor `s`.
    pub scale: R,
}

/// Row-wise `log softmax(Z)` computed as `Z − max − log Σ exp(Z − max)`.
pub fn log_softmax<R: Real>(z: &Matrix<R>) -> Matrix<R> {
    let mut out = z.clone();
    for mut row in out.rows_mut() {
        let max = row.fold(R::neg_infinity(), |m, &v| m.max(v));
        let lse = row.iter().map(|&v| (v - max).exp()).sum::<R>().ln() + max;
        row.mapv_inplace(|v| v - lse);
    }
    out
}

/// Forward pass: returns the (1, 1) loss and the cache.
///
/// # Errors
/// [`NumError::ShapeMismatch`] if `labels` / `mask` lengths differ from the rows of `Z`;
/// [`NumError::Empty`] if every row is masked; [`NumError::IndexOutOfRange`] for an
/// unmasked label ≥ C; [`NumError::NonFinite`] for a NaN / infinite logit in an
/// unmasked row.
pub fn forward<R: Real>(
    z: &Matrix<R>,
    labels: &[usize],
    mask: &[bool],
    reduction: Reduction,
) -> Result<(Matrix<R>, CrossEntropyCache<R>), NumError> {
    let op = "cross_entropy";
    let (n, c) = z.dim();
    if labels.len() != n || mask.len() != n {
        return Err(NumError::ShapeMismatch {
            op,
            lhs: vec![n, c],
            rhs: vec![labels.len(), mask.len()],
        });
    }
    let count = mask.iter().filter(|&&m| m).count();
    if count == 0 {
        return Err(NumError::Empty {
            op,
            what: "every token is masked",
        });
    }
    for (r, (&y, &m)) in labels.iter().zip(mask).enumerate() {
        if !m {
            continue;
        }
        if y >= c {
            return Err(NumError::IndexOutOfRange {
                op,
                index: y,
                bound: c,
            });
        }
        if let Some(j) = z.row(r).iter().position(|v| !v.is_finite()) {
            return Err(NumError::NonFinite {
                op,
                index: r * c + j,
                value: z[[r, j]].to_f64(),
            });
        }
    }
    let scale = match reduction {
        Reduction::Mean => R::one() / R::from_f64(count as f64),
        Reduction::Sum => R::one(),
    };
    let mut probs = Matrix::zeros((n, c));
    let mut total = R::zero();
    for r in (0..n).filter(|&r| mask[r]) {
        let row = z.row(r);
        let max = row.fold(R::neg_infinity(), |m, &v| m.max(v));
        let sum: R = row.iter().map(|&v| (v - max).exp()).sum();
        let lse = sum.ln() + max;
        total += lse - row[labels[r]];
        for (p, &v) in probs.row_mut(r).iter_mut().zip(row) {
            *p = (v - lse).exp();
        }
    }
    let loss = Matrix::from_elem((1, 1), total * scale);
    let cache = CrossEntropyCache {
        probs,
        labels: labels.to_vec(),
        mask: mask.to_vec(),
        scale,
    };
    Ok((loss, cache))
}

/// Backward pass: `d_z[r] += dL · s · (p_r − onehot(y_r))` for unmasked rows.
pub fn backward<R: Real>(d_loss: &Matrix<R>, cache: &CrossEntropyCache<R>, d_z: &mut Matrix<R>) {
    let g = d_loss[[0, 0]] * cache.scale;
    for r in (0..d_z.nrows()).filter(|&r| cache.mask[r]) {
        let mut row = d_z.row_mut(r);
        row.scaled_add(g, &cache.probs.row(r));
        row[cache.labels[r]] -= g;
    }
}
