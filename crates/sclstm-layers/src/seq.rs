//! Batch geometry shared by the layers and the CRF: time-major rows, lengths, the
//! longest-first order and the per-sentence reversal used by the reverse direction.
//!
//! A batch of `B` sentences padded to `T` steps is stored time-major: row `t·B + b` holds
//! step `t` of sentence `b`. Sentences are packed at the start of the time axis, so
//! sentence `b` occupies steps `0..lens[b]` and the rest is padding.

use std::borrow::Cow;

use sclstm_core::{Matrix, NumError, Real};

/// Steps `T` and batch size `B` of a time-major batch, with each sentence's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqShape {
    /// Padded length `T` (rows = `T·B`).
    pub steps: usize,
    /// Sentence lengths, one per batch entry (`B = lens.len()`), each `≤ steps`.
    pub lens: Vec<usize>,
}

impl SeqShape {
    /// Checks `rows = T·B` against `lens` and derives `T`.
    ///
    /// # Errors
    /// [`NumError::Empty`] for an empty batch or zero rows; [`NumError::ShapeMismatch`]
    /// when `rows` is not a multiple of `B` or a length exceeds `T`.
    pub fn new(op: &'static str, rows: usize, lens: &[usize]) -> Result<Self, NumError> {
        if lens.is_empty() {
            return Err(NumError::Empty { op, what: "batch" });
        }
        if rows == 0 {
            return Err(NumError::Empty {
                op,
                what: "time steps",
            });
        }
        let b = lens.len();
        if !rows.is_multiple_of(b) {
            return Err(NumError::ShapeMismatch {
                op,
                lhs: vec![rows],
                rhs: vec![b],
            });
        }
        let steps = rows / b;
        if let Some(&bad) = lens.iter().find(|&&l| l > steps) {
            return Err(NumError::ShapeMismatch {
                op,
                lhs: vec![steps, b],
                rhs: vec![bad],
            });
        }
        Ok(SeqShape {
            steps,
            lens: lens.to_vec(),
        })
    }

    /// Batch size `B`.
    pub fn batch(&self) -> usize {
        self.lens.len()
    }

    /// Rows `T·B`.
    pub fn rows(&self) -> usize {
        self.steps * self.lens.len()
    }

    /// Batch positions sorted by length, longest first (ties keep batch order). The layers
    /// run a batch in this order, so at every step the sentences still running are a
    /// prefix of the batch (see [`SeqShape::active`]).
    pub fn longest_first(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.batch()).collect();
        order.sort_by_key(|&b| std::cmp::Reverse(self.lens[b]));
        order
    }

    /// Per step `t`: how many sentences are longer than `t`. With the batch in
    /// [`SeqShape::longest_first`] order these are rows `0..active[t]` of step `t`, and
    /// the per-step recurrent products skip the finished sentences.
    pub fn active(&self) -> Vec<usize> {
        (0..self.steps)
            .map(|t| self.lens.iter().filter(|&&l| l > t).count())
            .collect()
    }

    /// The per-sentence reversal as a row permutation: entry `t·B + b` is the row that
    /// step `t` of the reversed sentence `b` reads, i.e. `(lens[b] − 1 − t)·B + b` inside
    /// the sentence and `t·B + b` (unchanged) on padding. It is its own inverse, so the
    /// same table maps inputs into reversed order and outputs back.
    pub fn reversal(&self) -> Vec<usize> {
        let b = self.batch();
        (0..self.rows())
            .map(|r| {
                let (t, bi) = (r / b, r % b);
                let len = self.lens[bi];
                if t < len { (len - 1 - t) * b + bi } else { r }
            })
            .collect()
    }
}

/// A matrix's elements in row-major order, borrowed when it is already contiguous.
pub(crate) fn row_major<R: Real>(m: &Matrix<R>) -> Cow<'_, [R]> {
    match m.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(m.iter().copied().collect()),
    }
}

/// Writes `mᵀ` in row-major order (a `(cols, rows)` matrix) into `out`, which must hold
/// exactly `rows · cols` elements; every one is overwritten. Works in `TILE × TILE`
/// blocks staged through a small local array, so both the reads from `m` and the writes
/// to `out` are contiguous runs of `TILE` elements (a plain element-by-element transpose
/// writes with a stride of a whole row and misses the cache on almost every store).
pub(crate) fn transpose_into<R: Real>(m: &Matrix<R>, out: &mut [R]) {
    const TILE: usize = 16;
    let (rows, cols) = m.dim();
    assert_eq!(
        out.len(),
        rows * cols,
        "internal: transpose_into's output size"
    );
    let src = row_major(m);
    let mut tile = [[R::zero(); TILE]; TILE];
    for r0 in (0..rows).step_by(TILE) {
        let nr = TILE.min(rows - r0);
        for c0 in (0..cols).step_by(TILE) {
            let nc = TILE.min(cols - c0);
            for (i, line) in tile.iter_mut().enumerate().take(nr) {
                let start = (r0 + i) * cols + c0;
                line[..nc].copy_from_slice(&src[start..start + nc]);
            }
            for (j, column) in out[c0 * rows..(c0 + nc) * rows]
                .chunks_exact_mut(rows)
                .enumerate()
            {
                for (o, line) in column[r0..r0 + nr].iter_mut().zip(&tile) {
                    *o = line[j];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SeqShape;
    use sclstm_core::NumError;

    #[test]
    fn reversal_keeps_padding_at_the_end_and_is_an_involution() {
        let s = SeqShape::new("t", 8, &[4, 2]).unwrap();
        let p = s.reversal();
        // Sentence 0 (len 4): rows 0,2,4,6 → 6,4,2,0; sentence 1 (len 2): 1,3 → 3,1; 5,7 stay.
        assert_eq!(p, vec![6, 3, 4, 1, 2, 5, 0, 7]);
        for (r, &q) in p.iter().enumerate() {
            assert_eq!(p[q], r);
        }
    }

    #[test]
    fn longest_first_makes_the_running_sentences_a_prefix() -> Result<(), NumError> {
        let seq = SeqShape::new("t", 16, &[2, 4, 1, 4])?;
        assert_eq!(seq.longest_first(), vec![1, 3, 0, 2]);
        assert_eq!(seq.active(), vec![4, 3, 2, 2]);
        Ok(())
    }

    #[test]
    fn transposed_matches_the_definition_on_ragged_tiles() {
        for (r, c) in [(1, 1), (3, 17), (33, 16), (40, 45)] {
            let m = ndarray::Array2::from_shape_fn((r, c), |(i, j)| (i * 100 + j) as f64);
            let mut t = vec![f64::NAN; r * c];
            super::transpose_into(&m, &mut t);
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(t[j * r + i], m[(i, j)], "({i}, {j}) of {r}×{c}");
                }
            }
        }
    }

    #[test]
    fn bad_geometry_is_rejected() {
        assert!(matches!(
            SeqShape::new("t", 7, &[3, 2]),
            Err(NumError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            SeqShape::new("t", 4, &[3, 2]),
            Err(NumError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            SeqShape::new("t", 4, &[]),
            Err(NumError::Empty { .. })
        ));
        assert!(matches!(
            SeqShape::new("t", 0, &[0]),
            Err(NumError::Empty { .. })
        ));
    }
}
