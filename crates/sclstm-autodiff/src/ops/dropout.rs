//! Inverted dropout: `Y = X ⊙ M` with `M = 1/(1−p)` where kept, `0` where dropped.
//!
//! The mask is drawn from a caller-supplied seeded generator, so a run is reproducible.
//! Backward: `dX += dY ⊙ M`.

use rand::RngExt;
use sclstm_core::{Matrix, Real};

use crate::AutodiffError;

/// A dropout probability in `[0, 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropoutRate(f64);

impl DropoutRate {
    /// Validates a drop probability.
    ///
    /// # Errors
    /// [`AutodiffError::InvalidDropout`] unless `0 ≤ p < 1`.
    pub fn new(p: f64) -> Result<Self, AutodiffError> {
        if (0.0..1.0).contains(&p) {
            Ok(DropoutRate(p))
        } else {
            Err(AutodiffError::InvalidDropout(p))
        }
    }

    /// The drop probability.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// Draws the scaled keep mask of shape `shape`.
pub fn mask<R: Real>(shape: (usize, usize), p: DropoutRate, rng: &mut impl rand::Rng) -> Matrix<R> {
    let keep = R::from_f64(1.0 / (1.0 - p.0));
    Matrix::from_shape_simple_fn(shape, || {
        if rng.random_bool(p.0) {
            R::zero()
        } else {
            keep
        }
    })
}
