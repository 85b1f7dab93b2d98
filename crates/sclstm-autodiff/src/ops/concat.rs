//! Concatenation and slicing along the feature (column) axis.

use ndarray::s;
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
    // Filled block by block into a row-major result (`ndarray::concatenate` along the
    // columns returns a column-major array, which every later product would copy).
    let mut y = Matrix::zeros((first.nrows(), xs.iter().map(|x| x.ncols()).sum()));
    let mut start = 0;
    for x in xs {
        y.slice_mut(s![.., start..start + x.ncols()]).assign(*x);
        start += x.ncols();
    }
    Ok(y)
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
    // Row by row (a strided view's `to_owned` walks it element by element).
    let mut y = Matrix::zeros((x.nrows(), width));
    y.assign(&x.slice(s![.., start..start + width]));
    Ok(y)
}

/// Backward of [`slice_cols`] (and of [`forward`] per input): `dX[:, start..] += dY`.
pub fn slice_cols_backward<R: Real>(d_y: &Matrix<R>, start: usize, d_x: &mut Matrix<R>) {
    let mut part = d_x.slice_mut(s![.., start..start + d_y.ncols()]);
    part += d_y;
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::forward;

    #[test]
    fn concat_is_row_major_and_in_order() {
        let a = array![[1.0f64, 2.0], [3.0, 4.0]];
        let b = array![[5.0f64], [6.0]];
        let y = forward(&[&a, &b]).unwrap();
        assert!(
            y.is_standard_layout(),
            "later products read it as a flat slice"
        );
        assert_eq!(y, array![[1.0, 2.0, 5.0], [3.0, 4.0, 6.0]]);
    }
}
