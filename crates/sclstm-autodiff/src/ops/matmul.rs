//! Matrix product `Y = A · B` on the fast CPU gemm.
//!
//! Backward: `dA += dY · Bᵀ`, `dB += Aᵀ · dY`, both as one gemm with the transpose
//! expressed as a stride and `accumulate` set.

use rayon::ThreadPool;
use sclstm_core::{Gemm, Matrix, NumError, Real};
use sclstm_cpu::gemm::gemm_fast;

use super::mismatch;

/// `C (+)= op(A)·op(B)` on matrices of any memory layout (copies only non-standard ones).
pub(crate) fn gemm_into<R: Real>(
    g: Gemm,
    a: &Matrix<R>,
    b: &Matrix<R>,
    c: &mut Matrix<R>,
    pool: Option<&ThreadPool>,
) -> Result<(), NumError> {
    let a = a.as_standard_layout();
    let b = b.as_standard_layout();
    let a = a
        .as_slice()
        .expect("internal: standard layout is contiguous");
    let b = b
        .as_slice()
        .expect("internal: standard layout is contiguous");
    if let Some(cs) = c.as_slice_mut() {
        return gemm_fast(&g, a, b, None, cs, pool);
    }
    let mut tmp = Matrix::zeros(c.dim());
    let ts = tmp
        .as_slice_mut()
        .expect("internal: fresh matrix is contiguous");
    gemm_fast(
        &Gemm {
            accumulate: false,
            ..g
        },
        a,
        b,
        None,
        ts,
        pool,
    )?;
    if g.accumulate {
        *c += &tmp;
    } else {
        c.assign(&tmp);
    }
    Ok(())
}

/// `Y = A · B` with `A` (m, k), `B` (k, n), `Y` (m, n).
///
/// # Errors
/// [`NumError::ShapeMismatch`] if the inner dimensions differ.
pub fn forward<R: Real>(
    a: &Matrix<R>,
    b: &Matrix<R>,
    pool: Option<&ThreadPool>,
) -> Result<Matrix<R>, NumError> {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    if k != k2 {
        return Err(mismatch("matmul", a.dim(), b.dim()));
    }
    let mut y = Matrix::zeros((m, n));
    gemm_into(Gemm::new(m, n, k), a, b, &mut y, pool)?;
    Ok(y)
}

/// Adds `dY · Bᵀ` to `d_a` (when given) and `Aᵀ · dY` to `d_b` (when given).
///
/// # Errors
/// Only on inconsistent shapes (an internal bug when called from the tape).
pub fn backward<R: Real>(
    d_y: &Matrix<R>,
    a: &Matrix<R>,
    b: &Matrix<R>,
    d_a: Option<&mut Matrix<R>>,
    d_b: Option<&mut Matrix<R>>,
    pool: Option<&ThreadPool>,
) -> Result<(), NumError> {
    let ((m, k), (_, n)) = (a.dim(), b.dim());
    if let Some(d_a) = d_a {
        // (m, n) · (n, k): B stored (k, n) is read transposed.
        let g = Gemm {
            trans_b: true,
            accumulate: true,
            ..Gemm::new(m, k, n)
        };
        gemm_into(g, d_y, b, d_a, pool)?;
    }
    if let Some(d_b) = d_b {
        // (k, m) · (m, n): A stored (m, k) is read transposed.
        let g = Gemm {
            trans_a: true,
            accumulate: true,
            ..Gemm::new(k, n, m)
        };
        gemm_into(g, a, d_y, d_b, pool)?;
    }
    Ok(())
}
