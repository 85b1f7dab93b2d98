//! Embedding lookup: gather rows of a table by id.
//!
//! Backward produces a sparse [`RowGrad`]: only the rows that were looked up, each the
//! sum of the output-row gradients at the positions holding its id. A 400k-row table
//! therefore costs `O(#distinct ids · dim)` per step, never a dense gradient.

use sclstm_core::{Matrix, NumError, Real};

use crate::grads::RowGrad;

/// `Y[p] = table[ids[p]]`: `table` (V, d), `Y` (ids.len(), d).
///
/// # Errors
/// [`NumError::IndexOutOfRange`] for an id ≥ V.
pub fn forward<R: Real>(table: &Matrix<R>, ids: &[usize]) -> Result<Matrix<R>, NumError> {
    let v = table.nrows();
    if let Some(&bad) = ids.iter().find(|&&i| i >= v) {
        return Err(NumError::IndexOutOfRange {
            op: "embedding",
            index: bad,
            bound: v,
        });
    }
    Ok(table.select(ndarray::Axis(0), ids))
}

/// `d_table[ids[p]] += dY[p]` as sparse rows of a `n_rows`-row table.
pub fn backward<R: Real>(d_y: &Matrix<R>, ids: &[usize], n_rows: usize) -> RowGrad<R> {
    RowGrad::from_ids(n_rows, ids, d_y)
}
