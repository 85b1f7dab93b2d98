//! Concatenation and slicing along the feature (column) axis.

use ndarray::{Axis, s};
use sclstm_core::{Matrix, NumError, Real};

use super::mismatch;

/// `Y = [X_1 | X_2 | …]`: all inputs have the same number of rows.
/// Backward: each `dX_i += dY[:, its columns]`.
///
/// # Errors
/// [`NumError::Empty`] with no input, [`NumError::ShapeMismatch`] if row counts differ.
pub fn forward<R: Real>(xs: &[&Matrix<R>]) -> Result<Matrix<R>, NumError> {
    let first = xs.first().ok_or(NumError::Empty {
        op: "concat",
        what: "no inputs",
    })?;
    for x in xs {
        if x.nrows() != first.nrows() {
            return Err(mismatch("concat", first.dim(), x.dim()));
        }
    }
    let views: Vec<_> = xs.iter().map(|x| x.view()).collect();
    Ok(ndarray::concatenate(Axis(1), &views).expect("internal: rows checked"))
}

/// `Y = X[:, start .. start + width]`. Backward: `dX[:, start .. start + width] += dY`.
///
/// # Errors
/// [`NumError::ShapeMismatch`] if the range exceeds the columns of `X`.
pub fn slice_cols<R: Real>(
    x: &Matrix<R>,
    start: usize,
    width: usize,
) -> Result<Matrix<R>, NumError> {
    if start + width > x.ncols() {
        return Err(mismatch("slice_cols", x.dim(), (start, width)));
    }
    Ok(x.slice(s![.., start..start + width]).to_owned())
}

/// Backward of [`slice_cols`] (and of [`forward`] per input): `dX[:, start..] += dY`.
pub fn slice_cols_backward<R: Real>(d_y: &Matrix<R>, start: usize, d_x: &mut Matrix<R>) {
    let mut part = d_x.slice_mut(s![.., start..start + d_y.ncols()]);
    part += d_y;
}
