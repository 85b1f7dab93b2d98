//! Inverted dropout: `Y = X ⊙ M` with `M = 1/(1−p)` where kept, `0` where dropped.
//!
//! The mask is drawn from a caller-supplied seeded generator, so a run is reproducible.
//! Backward: `dX += dY ⊙ M`.

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

/// Draws the scaled keep mask of shape `shape`: each element is dropped when a fresh
/// 32-bit draw is below `p · 2³²` (two draws per 64-bit output of `rng`, in row-major
/// order), so the mask is a pure function of the generator's state.
pub fn mask<R: Real>(shape: (usize, usize), p: DropoutRate, rng: &mut impl rand::Rng) -> Matrix<R> {
    let keep = R::from_f64(1.0 / (1.0 - p.0));
    let threshold = (p.0 * 4_294_967_296.0) as u64;
    let pick = |draw: u32| {
        if u64::from(draw) < threshold {
            R::zero()
        } else {
            keep
        }
    };
    let mut m = Matrix::zeros(shape);
    let flat = m
        .as_slice_mut()
        .expect("internal: a fresh matrix is contiguous");
    let mut pairs = flat.chunks_exact_mut(2);
    for pair in &mut pairs {
        let r = rng.next_u64();
        pair[0] = pick(r as u32);
        pair[1] = pick((r >> 32) as u32);
    }
    if let [last] = pairs.into_remainder() {
        *last = pick(rng.next_u32());
    }
    m
}
