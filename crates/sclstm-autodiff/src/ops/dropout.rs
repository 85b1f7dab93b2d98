//! Inverted dropout: `Y = X ⊙ M` with `M = 1/(1−p)` where kept, `0` where dropped.
//!
//! The mask is drawn from a caller-supplied seeded generator, so a run is reproducible.
//! Backward: `dX += dY ⊙ M` ([`super::elementwise::mul_backward`]).

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rayon::ThreadPool;
use rayon::prelude::*;
use sclstm_core::{Matrix, Real};
use sclstm_cpu::kernels::Kernels;

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

/// Mask elements drawn by one task when the masks are drawn on a pool.
const PAR_WORDS: usize = 1 << 14;

/// `Y = X ⊙ M` and the scaled keep mask `M`: element `i` (row-major) is dropped when the
/// generator's 32-bit word `i` from where it stands (two per 64-bit output, low half first)
/// is below `p · 2³²`, and the generator is left after the last word used. The mask is a
/// pure function of the generator's state: with `pool`, runs of words are drawn on its
/// threads from copies of the generator set to their offsets in the stream, so the result
/// does not depend on the pool.
pub fn forward<R: Real>(
    x: &Matrix<R>,
    p: DropoutRate,
    rng: &mut ChaCha8Rng,
    pool: Option<&ThreadPool>,
) -> (Matrix<R>, Matrix<R>) {
    let keep = R::from_f64(1.0 / (1.0 - p.0));
    // p < 1, so p · 2³² < 2³² and the threshold fits in 32 bits.
    let threshold = (p.0 * 4_294_967_296.0) as u32;
    let shape = x.dim();
    let xs = x.as_standard_layout();
    let xs = xs
        .as_slice()
        .expect("internal: a standard-layout matrix is contiguous");
    let (mut y, mut mask) = (vec![R::zero(); xs.len()], vec![R::zero(); xs.len()]);
    let start = rng.get_word_pos();
    let base = &*rng;
    let draw = |offset: usize, x: &[R], y: &mut [R], mask: &mut [R]| {
        let mut rng = base.clone();
        rng.set_word_pos(start + offset as u128);
        let mut words = [0u32; 1024];
        let chunks = x
            .chunks(1024)
            .zip(y.chunks_mut(1024))
            .zip(mask.chunks_mut(1024));
        for ((x, y), mask) in chunks {
            let words = &mut words[..x.len()];
            // The generator's words in order (its bytes, read little-endian).
            rng.fill(words);
            apply_mask_on(Kernels::active(), x, y, mask, words, threshold, keep);
        }
    };
    match pool {
        Some(pool) if xs.len() >= 2 * PAR_WORDS => pool.install(|| {
            xs.par_chunks(PAR_WORDS)
                .zip(y.par_chunks_mut(PAR_WORDS))
                .zip(mask.par_chunks_mut(PAR_WORDS))
                .enumerate()
                .for_each(|(i, ((x, y), mask))| draw(i * PAR_WORDS, x, y, mask));
        }),
        _ => draw(0, xs, &mut y, &mut mask),
    }
    rng.set_word_pos(start + xs.len() as u128);
    let y = Matrix::from_shape_vec(shape, y).expect("internal: the shape holds the values");
    let mask = Matrix::from_shape_vec(shape, mask).expect("internal: the shape holds the mask");
    (y, mask)
}

sclstm_cpu::on_vector_unit! {
    /// `mask[i] = 0` where `words[i] < threshold`, else `keep`; `y = x ⊙ mask`, on the
    /// vector unit of `kernels`.
    fn apply_mask_on<R: Real>(
        x: &[R],
        y: &mut [R],
        mask: &mut [R],
        words: &[u32],
        threshold: u32,
        keep: R,
    ) {
        for (((&x, y), m), &draw) in x.iter().zip(y).zip(mask).zip(words) {
            // A branch-free select: a drop is a coin flip no predictor can learn.
            *m = if draw < threshold { R::zero() } else { keep };
            *y = x * *m;
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::super::elementwise;
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
    fn every_vector_unit_masks_bit_for_bit_like_the_scalar_loop() {
        // An odd length (a ragged tail on every lane width), words on both sides of the
        // threshold and equal to it, and inputs with signed zeros and infinities.
        let n = 1029;
        let words: Vec<u32> = (0..n as u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let threshold = words[5];
        let x: Vec<f32> = (0..n)
            .map(|i| match i % 7 {
                0 => -0.0,
                1 => f32::INFINITY,
                _ => (i as f32 * 0.31).sin() * 1e3,
            })
            .collect();
        let run = |kernels: Kernels| {
            let (mut y, mut mask) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            apply_mask_on(kernels, &x, &mut y, &mut mask, &words, threshold, 1.25);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            (bits(&y), bits(&mask))
        };
        // The baseline build's loop is the reference.
        let scalar = run(Kernels::Portable);
        assert!(scalar.1.contains(&0) && scalar.1.contains(&1.25f32.to_bits()));
        for kernels in Kernels::available() {
            assert_eq!(run(kernels), scalar, "{}", kernels.name());
        }
    }

    #[test]
    fn masks_follow_the_documented_draws_on_any_pool_and_leave_the_generator_after_them() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        // Sizes around the 1024-word fill run, the 16-word ChaCha block and the pool's runs,
        // odd and even, from a generator already part-way into a block.
        let cases = [
            ((1, 1), 0.5, 0),
            ((3, 5), 0.3, 1),
            ((32, 32), 0.5, 7),
            ((41, 53), 0.1, 3),
            ((7, 293), 0.9, 0),
            ((5, 13_107), 0.5, 5),
        ];
        for (shape, p, skip) in cases {
            for pool in [None, Some(&pool)] {
                let mut a = ChaCha8Rng::seed_from_u64(17);
                for _ in 0..skip {
                    a.next_u32();
                }
                let mut b = a.clone();
                let x = Matrix::from_shape_fn(shape, |(i, j)| (i * 3 + j) as f64 * 0.25 - 2.0);
                let rate = DropoutRate::new(p).expect("valid");
                let (y, m) = forward(&x, rate, &mut a, pool);
                let want = one_by_one(shape.0 * shape.1, p, &mut b);
                assert_eq!(m.dim(), shape);
                assert_eq!(m.iter().copied().collect::<Vec<_>>(), want, "{shape:?}");
                assert_eq!(y, &x * &m, "{shape:?}");
                let mut d_x = Matrix::from_elem(shape, 0.5);
                elementwise::mul_backward(&x, &m, &mut d_x, pool);
                assert_eq!(d_x, (&x * &m).mapv(|v| v + 0.5), "{shape:?}");
                assert_eq!(
                    a.next_u64(),
                    b.next_u64(),
                    "{shape:?}: the generators part in step"
                );
            }
        }
    }
}
