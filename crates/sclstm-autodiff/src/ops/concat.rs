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
    let width = xs.iter().map(|x| x.ncols()).sum();
    Ok(row_major_rows(first.nrows(), width, |r, row| {
        for x in xs {
            extend_row(row, x, r, 0, x.ncols());
        }
    }))
}

/// `Y = [X[:, s_1 .. s_1 + w_1] | X[:, s_2 .. s_2 + w_2] | …]`: the column blocks
/// `(start, width)` of `X` side by side, in the order given (they may repeat or overlap).
/// One pass over the rows, where slicing each block and concatenating the slices would
/// copy every value twice. Backward: [`select_cols_backward`].
///
/// # Errors
/// [`NumError::ShapeMismatch`] if a block exceeds the columns of `X`.
pub fn select_cols<R: Real>(
    x: &Matrix<R>,
    blocks: &[(usize, usize)],
) -> Result<Matrix<R>, NumError> {
    let outside = |&&(s, w): &&(usize, usize)| s.checked_add(w).is_none_or(|end| end > x.ncols());
    if let Some(&bad) = blocks.iter().find(outside) {
        return Err(mismatch("select_cols", x.dim(), bad));
    }
    let width = blocks.iter().map(|&(_, w)| w).sum();
    Ok(row_major_rows(x.nrows(), width, |r, row| {
        for &(start, w) in blocks {
            extend_row(row, x, r, start, w);
        }
    }))
}

/// Backward of [`select_cols`]: each block's columns of `dY` are added into its
/// columns of `dX`.
pub fn select_cols_backward<R: Real>(
    d_y: &Matrix<R>,
    blocks: &[(usize, usize)],
    d_x: &mut Matrix<R>,
) {
    let mut offset = 0;
    for &(start, w) in blocks {
        let mut part = d_x.slice_mut(s![.., start..start + w]);
        part += &d_y.slice(s![.., offset..offset + w]);
        offset += w;
    }
}

/// A row-major `(rows, width)` matrix whose row `r` is what `fill(r, out)` appends to
/// `out` (exactly `width` values): written once, with no zero fill first.
fn row_major_rows<R: Real>(
    rows: usize,
    width: usize,
    mut fill: impl FnMut(usize, &mut Vec<R>),
) -> Matrix<R> {
    let mut data = Vec::with_capacity(rows * width);
    for r in 0..rows {
        fill(r, &mut data);
    }
    Matrix::from_shape_vec((rows, width), data).expect("internal: every row has its width")
}

/// Appends `x[r, start .. start + width]` to `out` (a slice copy when the row is
/// contiguous).
fn extend_row<R: Real>(out: &mut Vec<R>, x: &Matrix<R>, r: usize, start: usize, width: usize) {
    let row = x.row(r);
    match row.as_slice() {
        Some(v) => out.extend_from_slice(&v[start..start + width]),
        None => out.extend(row.slice(s![start..start + width]).iter().copied()),
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::{forward, select_cols, select_cols_backward};

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

    #[test]
    fn select_cols_takes_blocks_in_the_given_order_and_adds_back_overlaps() {
        let x = array![[1.0f64, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]];
        let blocks = [(2, 2), (0, 1), (1, 2)];
        let y = select_cols(&x, &blocks).unwrap();
        assert!(y.is_standard_layout());
        assert_eq!(
            y,
            array![[3.0, 4.0, 1.0, 2.0, 3.0], [7.0, 8.0, 5.0, 6.0, 7.0]]
        );
        // A column-major input reads the same.
        let xt = x.t().to_owned().reversed_axes();
        assert_eq!(select_cols(&xt, &blocks).unwrap(), y);
        let mut d_x = ndarray::Array2::zeros((2, 4));
        select_cols_backward(&y, &blocks, &mut d_x);
        // Column 2 is selected twice (blocks one and three), column 1 once, column 3 once.
        assert_eq!(d_x, array![[1.0, 2.0, 6.0, 4.0], [5.0, 6.0, 14.0, 8.0]]);
        assert!(select_cols(&x, &[(3, 2)]).is_err());
        assert!(select_cols(&x, &[(usize::MAX, 2)]).is_err());
    }
}
