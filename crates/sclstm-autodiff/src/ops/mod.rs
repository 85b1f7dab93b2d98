//! Primitive operations as plain forward / backward function pairs over host matrices.
//!
//! Convention (see `README.md` here): one file per op family; each forward checks
//! shapes once and returns a typed [`NumError`] naming the op and both shapes; each
//! backward **adds** into the gradient buffers it is given (`d_<input> += …`) and never
//! overwrites, so a variable used twice gets the sum of both contributions. The tape
//! (`crate::tape`) only records which function to call; the math lives here.

pub mod char_conv;
pub mod concat;
pub mod cross_entropy;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod matmul;
pub mod reduce;
pub mod scalar_mix;

use sclstm_core::{Matrix, NumError};

/// A `ShapeMismatch` error for `op` with two matrix shapes.
pub(crate) fn mismatch(op: &'static str, lhs: (usize, usize), rhs: (usize, usize)) -> NumError {
    NumError::ShapeMismatch {
        op,
        lhs: vec![lhs.0, lhs.1],
        rhs: vec![rhs.0, rhs.1],
    }
}

/// Fails unless both matrices have the same shape.
pub(crate) fn same_shape<R>(
    op: &'static str,
    a: &Matrix<R>,
    b: &Matrix<R>,
) -> Result<(), NumError> {
    if a.dim() == b.dim() {
        Ok(())
    } else {
        Err(mismatch(op, a.dim(), b.dim()))
    }
}
