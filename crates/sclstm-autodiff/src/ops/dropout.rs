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
/// 32-bit draw is below `p · 2³²` (the generator's 32-bit words in order, row-major: two
/// per 64-bit output), so the mask is a pure function of the generator's state.
pub fn mask<R: Real>(shape: (usize, usize), p: DropoutRate, rng: &mut impl rand::Rng) -> Matrix<R> {
    let keep = R::from_f64(1.0 / (1.0 - p.0));
    // p < 1, so p · 2³² < 2³² and the threshold fits in 32 bits.
    let threshold = (p.0 * 4_294_967_296.0) as u32;
    let mut draws = vec![0u32; shape.0 * shape.1];
    fill_words(rng, &mut draws);
    // A branch-free select: a drop is a coin flip the branch predictor cannot learn.
    let values = draws
        .iter()
        .map(|&draw| if draw < threshold { R::zero() } else { keep })
        .collect();
    Matrix::from_shape_vec(shape, values).expect("internal: the shape holds the draws")
}

/// Fills `words` with the generator's next 32-bit words, in the order `next_u32` returns them.
fn fill_words(rng: &mut impl rand::Rng, words: &mut [u32]) {
    let mut bytes = [0u8; 4096];
    for chunk in words.chunks_mut(bytes.len() / 4) {
        let bytes = &mut bytes[..4 * chunk.len()];
        rng.fill_bytes(bytes);
        for (w, b) in chunk.iter_mut().zip(bytes.chunks_exact(4)) {
            *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// The documented draw order, one element at a time: the low then the high half of each
    /// 64-bit output, a lone 32-bit draw for an odd last element.
    fn one_by_one(n: usize, p: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let threshold = (p * 4_294_967_296.0) as u64;
        let pick = |d: u32| {
            if u64::from(d) < threshold {
                0.0
            } else {
                1.0 / (1.0 - p)
            }
        };
        let mut out = Vec::with_capacity(n);
        while out.len() + 2 <= n {
            let r = rng.next_u64();
            out.extend([pick(r as u32), pick((r >> 32) as u32)]);
        }
        if out.len() < n {
            out.push(pick(rng.next_u32()));
        }
        out
    }

    #[test]
    fn mask_follows_the_documented_draws_and_leaves_the_generator_where_they_end() {
        // Sizes around the 1024-word fill chunk and the 16-word ChaCha block, odd and even,
        // from a generator already part-way into a block.
        for (shape, p, skip) in [
            ((1, 1), 0.5, 0),
            ((3, 5), 0.3, 1),
            ((32, 32), 0.5, 7),
            ((41, 53), 0.1, 3),
            ((7, 293), 0.9, 0),
        ] {
            let mut a = ChaCha8Rng::seed_from_u64(17);
            for _ in 0..skip {
                a.next_u32();
            }
            let mut b = a.clone();
            let m = mask::<f64>(shape, DropoutRate::new(p).expect("valid"), &mut a);
            let want = one_by_one(shape.0 * shape.1, p, &mut b);
            assert_eq!(m.dim(), shape);
            assert_eq!(m.iter().copied().collect::<Vec<_>>(), want, "{shape:?}");
            assert_eq!(
                a.next_u64(),
                b.next_u64(),
                "{shape:?}: the generators part in step"
            );
        }
    }
}
