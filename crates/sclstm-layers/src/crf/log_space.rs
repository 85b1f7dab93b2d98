//! The log-space forward–backward recursions: the reference the scaled path is checked
//! against, and its fallback when a transition column spreads too widely for f32.

use super::*;

/// `log Σ exp(v)` over an iterator that can be replayed, stable for large values;
/// `-∞` when every term is `-∞`.
#[inline]
pub(super) fn log_sum_exp<R: Real, I: Iterator<Item = R> + Clone>(it: I) -> R {
    let m = it.clone().fold(R::neg_infinity(), R::max);
    if m == R::neg_infinity() {
        return m;
    }
    m + it.map(|v| (v - m).exp()).sum::<R>().ln()
}

/// Validated, row-major views of one CRF call.
pub(super) struct Lattice<'a, R: Real> {
    /// Emissions (T·B·L), row `t·B + b`.
    pub(super) e: Cow<'a, [R]>,
    /// `A` row-major (L·L): `[i·L + j]`.
    pub(super) a: Cow<'a, [R]>,
    /// `Aᵀ` (L·L): `[j·L + i]`, so the forward recursion reads contiguous columns.
    pub(super) a_t: Vec<R>,
    /// Start scores (L).
    pub(super) s: Cow<'a, [R]>,
    /// End scores (L).
    pub(super) z: Cow<'a, [R]>,
    /// Sequence geometry.
    pub(super) seq: SeqShape,
    /// Number of tags `L`.
    pub(super) l: usize,
}

impl<'a, R: Real> Lattice<'a, R> {
    pub(super) fn new(
        op: &'static str,
        emissions: &'a Matrix<R>,
        lens: &[usize],
        w: CrfWeights<'a, R>,
    ) -> Result<Self, NumError> {
        let seq = SeqShape::new(op, emissions.nrows(), lens)?;
        let l = emissions.ncols();
        if l == 0 {
            return Err(NumError::Empty {
                op,
                what: "tag set",
            });
        }
        for (m, rows) in [(w.transitions, l), (w.start, 1), (w.end, 1)] {
            if m.dim() != (rows, l) {
                return Err(NumError::ShapeMismatch {
                    op,
                    lhs: vec![m.nrows(), m.ncols()],
                    rhs: vec![rows, l],
                });
            }
        }
        let a = row_major(w.transitions);
        let mut a_t = vec![R::zero(); l * l];
        for i in 0..l {
            for j in 0..l {
                a_t[j * l + i] = a[i * l + j];
            }
        }
        Ok(Lattice {
            e: row_major(emissions),
            a,
            a_t,
            s: row_major(w.start),
            z: row_major(w.end),
            seq,
            l,
        })
    }

    /// Emission row of step `t`, sentence `b`.
    #[inline]
    pub(super) fn emit(&self, t: usize, b: usize) -> &[R] {
        let r = t * self.seq.batch() + b;
        &self.e[r * self.l..(r + 1) * self.l]
    }

    /// Forward variables of sentence `b` into `alpha` ((T, B, L) layout, rows
    /// `0..lens[b]` of this sentence written); returns `log Z` (0 for an empty sentence).
    pub(super) fn forward(&self, b: usize, alpha: &mut [R]) -> R {
        let (l, bsz, n) = (self.l, self.seq.batch(), self.seq.lens[b]);
        if n == 0 {
            return R::zero();
        }
        let row = |t: usize| (t * bsz + b) * l;
        for ((a0, &s), &e) in alpha[row(0)..row(0) + l]
            .iter_mut()
            .zip(self.s.iter())
            .zip(self.emit(0, b))
        {
            *a0 = s + e;
        }
        for t in 1..n {
            let (lo, hi) = alpha.split_at_mut(row(t));
            let prev = &lo[row(t - 1)..row(t - 1) + l];
            let cur = &mut hi[..l];
            for (j, (c, &e)) in cur.iter_mut().zip(self.emit(t, b)).enumerate() {
                let col = &self.a_t[j * l..(j + 1) * l];
                *c = e + log_sum_exp(prev.iter().zip(col).map(|(&p, &a)| p + a));
            }
        }
        let last = &alpha[row(n - 1)..row(n - 1) + l];
        log_sum_exp(last.iter().zip(self.z.iter()).map(|(&a, &z)| a + z))
    }

    /// Backward variables of sentence `b` into `beta` ((T, B, L) layout).
    pub(super) fn backward(&self, b: usize, beta: &mut [R]) {
        let (l, bsz, n) = (self.l, self.seq.batch(), self.seq.lens[b]);
        if n == 0 {
            return;
        }
        let row = |t: usize| (t * bsz + b) * l;
        beta[row(n - 1)..row(n - 1) + l].copy_from_slice(&self.z);
        for t in (0..n - 1).rev() {
            let (lo, hi) = beta.split_at_mut(row(t + 1));
            let next = &hi[..l];
            let cur = &mut lo[row(t)..row(t) + l];
            let e_next = self.emit(t + 1, b);
            for (i, c) in cur.iter_mut().enumerate() {
                let a_row = &self.a[i * l..(i + 1) * l];
                *c = log_sum_exp(
                    a_row
                        .iter()
                        .zip(e_next)
                        .zip(next)
                        .map(|((&a, &e), &bt)| a + e + bt),
                );
            }
        }
    }

    /// Score of the tag path `tags` (time-major, T·B) for sentence `b`.
    pub(super) fn path_score(&self, b: usize, tags: &[usize]) -> R {
        let (bsz, n) = (self.seq.batch(), self.seq.lens[b]);
        if n == 0 {
            return R::zero();
        }
        let y = |t: usize| tags[t * bsz + b];
        let mut score = self.s[y(0)] + self.z[y(n - 1)];
        for t in 0..n {
            score += self.emit(t, b)[y(t)];
            if t > 0 {
                score += self.a[y(t - 1) * self.l + y(t)];
            }
        }
        score
    }

    /// Checks gold tags: `T·B` entries, each `< L` inside a sentence.
    pub(super) fn check_tags(&self, op: &'static str, tags: &[usize]) -> Result<(), NumError> {
        if tags.len() != self.seq.rows() {
            return Err(NumError::ShapeMismatch {
                op,
                lhs: vec![tags.len()],
                rhs: vec![self.seq.rows()],
            });
        }
        let bsz = self.seq.batch();
        for (r, &y) in tags.iter().enumerate() {
            if r / bsz < self.seq.lens[r % bsz] && y >= self.l {
                return Err(NumError::IndexOutOfRange {
                    op,
                    index: y,
                    bound: self.l,
                });
            }
        }
        Ok(())
    }
}
