//! Batch geometry shared by the layers and the CRF: time-major rows, lengths, masks and
//! the per-sentence reversal used by the reverse direction.
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

    /// The (T, B) mask: 1 where step `t` is inside sentence `b`, else 0.
    pub fn mask<R: Real>(&self) -> Vec<R> {
        let b = self.batch();
        (0..self.rows())
            .map(|r| {
                if r / b < self.lens[r % b] {
                    R::one()
                } else {
                    R::zero()
                }
            })
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

/// `mᵀ` in row-major order (a `(cols, rows)` matrix), copied in square tiles so that
/// both the reads and the writes stay within a few cache lines per tile.
pub(crate) fn transposed<R: Real>(m: &Matrix<R>) -> Vec<R> {
    const TILE: usize = 16;
    let (rows, cols) = m.dim();
    let src = row_major(m);
    let mut out = vec![R::zero(); rows * cols];
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c0 in (0..cols).step_by(TILE) {
            let c1 = (c0 + TILE).min(cols);
            for (r, row) in src[r0 * cols..r1 * cols].chunks_exact(cols).enumerate() {
                let r = r0 + r;
                for (c, &v) in row[c0..c1].iter().enumerate() {
                    out[(c0 + c) * rows + r] = v;
                }
            }
        }
    }
    out
}

/// Rows of `m` gathered through `perm` (`out[r] = m[perm[r]]`), or `m` itself as a flat
/// slice when `perm` is `None`.
pub(crate) fn gather_rows<'a, R: Real>(m: &'a Matrix<R>, perm: Option<&[usize]>) -> Cow<'a, [R]> {
    match perm {
        None => row_major(m),
        Some(perm) => {
            let mut out = Vec::with_capacity(m.len());
            for &src in perm {
                out.extend(m.row(src).iter().copied());
            }
            Cow::Owned(out)
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
        assert_eq!(
            s.mask::<f64>(),
            vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
        );
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
