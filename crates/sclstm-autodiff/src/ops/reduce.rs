//! Reductions to a 1×1 scalar.

use sclstm_core::{Matrix, NumError, Real};

/// `y = Σ X`, as a (1, 1) matrix. Backward: `dX += dy` everywhere.
pub fn sum<R: Real>(x: &Matrix<R>) -> Matrix<R> {
    Matrix::from_elem((1, 1), x.sum())
}

/// `y = Σ X / n`, as a (1, 1) matrix. Backward: `dX += dy / n` everywhere.
///
/// # Errors
/// [`NumError::Empty`] if `X` has no element.
pub fn mean<R: Real>(x: &Matrix<R>) -> Result<Matrix<R>, NumError> {
    if x.is_empty() {
        return Err(NumError::Empty {
            op: "mean",
            what: "no elements",
        });
    }
    Ok(Matrix::from_elem(
        (1, 1),
        x.sum() / R::from_f64(x.len() as f64),
    ))
}

/// Backward of [`sum`] (with `scale = 1`) and [`mean`] (with `scale = 1/n`):
/// `dX += dy · scale`.
pub fn backward<R: Real>(d_y: &Matrix<R>, scale: R, d_x: &mut Matrix<R>) {
    let g = d_y[[0, 0]] * scale;
    d_x.mapv_inplace(|v| v + g);
}
