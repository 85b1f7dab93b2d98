//! Linear-chain CRF head: negative log-likelihood by the forward algorithm in log space,
//! its hand-written backward from forward-backward marginals, Viterbi decoding and
//! optional BIO-constrained decoding. Host code, generic over [`Real`]; O(T·L²) per
//! sentence with no allocation per position.
//!
//! # Model
//! For a sentence of length `n` with emissions `e_t ∈ R^L` (time-major rows of a
//! `(T·B, L)` matrix), transition matrix `A` (L × L, `A[i, j]` = score of tag `i`
//! followed by tag `j`), start vector `s` and end vector `z` (each `(1, L)`):
//!
//! ```text
//! score(y) = s[y_0] + Σ_{t<n} e_t[y_t] + Σ_{1≤t<n} A[y_{t-1}, y_t] + z[y_{n-1}]
//! log Z    = log Σ_y exp score(y)
//! NLL      = log Z − score(y*)                      (≥ 0)
//! ```
//!
//! The forward variables are `α_0[j] = s[j] + e_0[j]`,
//! `α_t[j] = e_t[j] + lse_i(α_{t-1}[i] + A[i, j])`, `log Z = lse_j(α_{n-1}[j] + z[j])`;
//! the backward variables `β_{n-1}[i] = z[i]`, `β_t[i] = lse_j(A[i, j] + e_{t+1}[j] + β_{t+1}[j])`.
//! Marginals are `p_t(j) = exp(α_t[j] + β_t[j] − log Z)` and
//! `p_t(i, j) = exp(α_{t-1}[i] + A[i, j] + e_t[j] + β_t[j] − log Z)`; the gradient of the
//! NLL is "expected minus observed" counts (derivation in `BACKWARD.md`).
//!
//! # Batch loss
//! [`crf_nll`] returns a 1×1 matrix: the **sum** of the per-sentence NLLs
//! ([`CrfReduction::Sum`]) or that sum divided by the number of sentences `B`
//! ([`CrfReduction::Mean`]). Sentences of length 0 contribute 0. Its [`FusedOp`] returns
//! gradients in the order **`[emissions, transitions, start, end]`**; padding rows of the
//! emissions get zero gradient.

use std::fmt;

use sclstm_core::{FusedOp, Matrix, NumError, Real};

use crate::Recorded;
use crate::seq::{SeqShape, row_major};

/// The CRF parameters.
#[derive(Debug, Clone, Copy)]
pub struct CrfWeights<'a, R> {
    /// `A` (L, L): `A[i, j]` scores tag `i` followed by tag `j`.
    pub transitions: &'a Matrix<R>,
    /// `s` (1, L): score of starting a sentence with each tag.
    pub start: &'a Matrix<R>,
    /// `z` (1, L): score of ending a sentence with each tag.
    pub end: &'a Matrix<R>,
}

/// How [`crf_nll`] reduces the per-sentence NLLs to one scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrfReduction {
    /// Sum over the sentences of the batch.
    Sum,
    /// Sum divided by the number of sentences `B`.
    Mean,
}

/// Allowed transitions for BIO-constrained decoding: `I-X` may only follow `B-X` or
/// `I-X`, and may not start a sentence. Tags that are not `B-`/`I-` (e.g. `O`, POS
/// tags) are unconstrained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BioConstraint {
    /// Number of tags `L`.
    tags: usize,
    /// `L` entries: tag may start a sentence.
    start: Vec<bool>,
    /// `L·L` entries, `[from·L + to]`: `to` may follow `from`.
    allowed: Vec<bool>,
}

impl BioConstraint {
    /// Builds the constraint from tag names indexed by tag id (`"O"`, `"B-PER"`, `"I-PER"`, …).
    pub fn from_tags<S: AsRef<str>>(names: &[S]) -> Self {
        let tags = names.len();
        let parsed: Vec<(char, &str)> = names
            .iter()
            .map(|n| {
                let n = n.as_ref();
                match (n.strip_prefix("B-"), n.strip_prefix("I-")) {
                    (Some(ty), _) => ('B', ty),
                    (_, Some(ty)) => ('I', ty),
                    _ => ('O', ""),
                }
            })
            .collect();
        let start = parsed.iter().map(|&(k, _)| k != 'I').collect();
        let mut allowed = vec![true; tags * tags];
        for (from, &(kf, tf)) in parsed.iter().enumerate() {
            for (to, &(kt, tt)) in parsed.iter().enumerate() {
                if kt == 'I' {
                    allowed[from * tags + to] = kf != 'O' && tf == tt;
                }
            }
        }
        BioConstraint {
            tags,
            start,
            allowed,
        }
    }

    /// Number of tags the constraint was built for.
    pub fn num_tags(&self) -> usize {
        self.tags
    }

    /// Whether tag `to` may directly follow tag `from`.
    pub fn allows(&self, from: usize, to: usize) -> bool {
        self.allowed[from * self.tags + to]
    }

    /// Whether a sentence may start with tag `to`.
    pub fn allows_start(&self, to: usize) -> bool {
        self.start[to]
    }
}

/// `log Σ exp(v)` over an iterator that can be replayed, stable for large values;
/// `-∞` when every term is `-∞`.
#[inline]
fn log_sum_exp<R: Real, I: Iterator<Item = R> + Clone>(it: I) -> R {
    let m = it.clone().fold(R::neg_infinity(), R::max);
    if m == R::neg_infinity() {
        return m;
    }
    m + it.map(|v| (v - m).exp()).sum::<R>().ln()
}

/// Validated, row-major views of one CRF call.
struct Lattice<'a, R: Real> {
    /// Emissions (T·B·L), row `t·B + b`.
    e: std::borrow::Cow<'a, [R]>,
    /// `A` row-major (L·L): `[i·L + j]`.
    a: std::borrow::Cow<'a, [R]>,
    /// `Aᵀ` (L·L): `[j·L + i]`, so the forward recursion reads contiguous columns.
    a_t: Vec<R>,
    /// Start scores (L).
    s: std::borrow::Cow<'a, [R]>,
    /// End scores (L).
    z: std::borrow::Cow<'a, [R]>,
    /// Sequence geometry.
    seq: SeqShape,
    /// Number of tags `L`.
    l: usize,
}

impl<'a, R: Real> Lattice<'a, R> {
    fn new(
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
    fn emit(&self, t: usize, b: usize) -> &[R] {
        let r = t * self.seq.batch() + b;
        &self.e[r * self.l..(r + 1) * self.l]
    }

    /// Forward variables of sentence `b` into `alpha` ((T, B, L) layout, rows
    /// `0..lens[b]` of this sentence written); returns `log Z` (0 for an empty sentence).
    fn forward(&self, b: usize, alpha: &mut [R]) -> R {
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
    fn backward(&self, b: usize, beta: &mut [R]) {
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
    fn path_score(&self, b: usize, tags: &[usize]) -> R {
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
    fn check_tags(&self, op: &'static str, tags: &[usize]) -> Result<(), NumError> {
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

/// `log Z` of every sentence (0 for an empty one).
///
/// # Errors
/// [`NumError::ShapeMismatch`] / [`NumError::Empty`] for inconsistent shapes.
pub fn crf_log_partition<R: Real>(
    emissions: &Matrix<R>,
    lens: &[usize],
    w: CrfWeights<'_, R>,
) -> Result<Vec<R>, NumError> {
    let lat = Lattice::new("crf_log_partition", emissions, lens, w)?;
    let mut alpha = vec![R::zero(); emissions.len()];
    Ok((0..lat.seq.batch())
        .map(|b| lat.forward(b, &mut alpha))
        .collect())
}

/// Score of the given tag paths (time-major, `T·B`), one per sentence.
///
/// # Errors
/// Shape errors as [`crf_log_partition`]; [`NumError::IndexOutOfRange`] for a tag `≥ L`.
pub fn crf_path_scores<R: Real>(
    emissions: &Matrix<R>,
    tags: &[usize],
    lens: &[usize],
    w: CrfWeights<'_, R>,
) -> Result<Vec<R>, NumError> {
    let lat = Lattice::new("crf_path_scores", emissions, lens, w)?;
    lat.check_tags("crf_path_scores", tags)?;
    Ok((0..lat.seq.batch())
        .map(|b| lat.path_score(b, tags))
        .collect())
}

/// Per-position tag marginals `p_t(j)`, `(T·B, L)`; padding rows are zero.
///
/// # Errors
/// As [`crf_log_partition`].
pub fn crf_marginals<R: Real>(
    emissions: &Matrix<R>,
    lens: &[usize],
    w: CrfWeights<'_, R>,
) -> Result<Matrix<R>, NumError> {
    let lat = Lattice::new("crf_marginals", emissions, lens, w)?;
    let mut alpha = vec![R::zero(); emissions.len()];
    let mut beta = vec![R::zero(); emissions.len()];
    let mut out = Matrix::zeros(emissions.dim());
    let (bsz, l) = (lat.seq.batch(), lat.l);
    for b in 0..bsz {
        let log_z = lat.forward(b, &mut alpha);
        lat.backward(b, &mut beta);
        for t in 0..lat.seq.lens[b] {
            let r = t * bsz + b;
            for j in 0..l {
                out[(r, j)] = (alpha[r * l + j] + beta[r * l + j] - log_z).exp();
            }
        }
    }
    Ok(out)
}

/// The CRF negative log-likelihood of gold `tags` (time-major, `T·B`; padding entries
/// ignored), reduced as `reduction` says, as a 1×1 matrix; with `record`, the
/// [`FusedOp`] whose backward gives `[d emissions, d transitions, d start, d end]`.
///
/// # Errors
/// [`NumError::ShapeMismatch`] / [`NumError::Empty`] for inconsistent shapes,
/// [`NumError::IndexOutOfRange`] for a gold tag `≥ L`.
pub fn crf_nll<R: Real>(
    emissions: &Matrix<R>,
    tags: &[usize],
    lens: &[usize],
    w: CrfWeights<'_, R>,
    reduction: CrfReduction,
    record: bool,
) -> Result<Recorded<R>, NumError> {
    let op = "crf_nll";
    let lat = Lattice::new(op, emissions, lens, w)?;
    lat.check_tags(op, tags)?;
    let bsz = lat.seq.batch();
    let mut alpha = vec![R::zero(); emissions.len()];
    let mut log_z = Vec::with_capacity(bsz);
    let mut total = R::zero();
    for b in 0..bsz {
        let lz = lat.forward(b, &mut alpha);
        total += lz - lat.path_score(b, tags);
        log_z.push(lz);
    }
    let scale = match reduction {
        CrfReduction::Sum => R::one(),
        CrfReduction::Mean => R::one() / R::from_f64(bsz as f64),
    };
    let out = Matrix::from_elem((1, 1), total * scale);
    if !record {
        return Ok((out, None));
    }
    let node = CrfNllOp {
        emissions: emissions.clone(),
        transitions: w.transitions.clone(),
        start: w.start.clone(),
        end: w.end.clone(),
        tags: tags.to_vec(),
        lens: lens.to_vec(),
        alpha,
        log_z,
        scale,
    };
    Ok((out, Some(Box::new(node))))
}

/// The recorded CRF NLL: inputs and forward variables saved for the backward.
struct CrfNllOp<R: Real> {
    /// Emissions (T·B, L).
    emissions: Matrix<R>,
    /// `A` (L, L).
    transitions: Matrix<R>,
    /// Start scores (1, L).
    start: Matrix<R>,
    /// End scores (1, L).
    end: Matrix<R>,
    /// Gold tags (T·B).
    tags: Vec<usize>,
    /// Sentence lengths (B).
    lens: Vec<usize>,
    /// Forward variables `α` (T·B·L), row `t·B + b`.
    alpha: Vec<R>,
    /// `log Z` per sentence (B).
    log_z: Vec<R>,
    /// 1 for a sum, 1/B for a mean.
    scale: R,
}

impl<R: Real> fmt::Debug for CrfNllOp<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrfNllOp")
            .field("emissions", &self.emissions.dim())
            .field("lens", &self.lens)
            .field("scale", &self.scale)
            .finish()
    }
}

impl<R: Real> FusedOp<R> for CrfNllOp<R> {
    fn name(&self) -> &'static str {
        "crf_nll"
    }

    fn backward(&self, d_out: &Matrix<R>) -> Result<Vec<Option<Matrix<R>>>, NumError> {
        let op = "crf_nll_backward";
        if d_out.dim() != (1, 1) {
            return Err(NumError::ShapeMismatch {
                op,
                lhs: vec![d_out.nrows(), d_out.ncols()],
                rhs: vec![1, 1],
            });
        }
        let g = d_out[(0, 0)] * self.scale;
        let w = CrfWeights {
            transitions: &self.transitions,
            start: &self.start,
            end: &self.end,
        };
        let lat = Lattice::new(op, &self.emissions, &self.lens, w)?;
        let (bsz, l) = (lat.seq.batch(), lat.l);
        let mut beta = vec![R::zero(); self.emissions.len()];
        let mut d_e = Matrix::<R>::zeros(self.emissions.dim());
        let mut d_a = Matrix::<R>::zeros((l, l));
        let mut d_s = Matrix::<R>::zeros((1, l));
        let mut d_z = Matrix::<R>::zeros((1, l));
        let alpha = &self.alpha;
        for b in 0..bsz {
            let n = self.lens[b];
            if n == 0 {
                continue;
            }
            lat.backward(b, &mut beta);
            let lz = self.log_z[b];
            let y = |t: usize| self.tags[t * bsz + b];
            let row = |t: usize| (t * bsz + b) * l;
            for t in 0..n {
                // Unary marginals: d e_t[j] = p_t(j) − [y_t = j].
                let (a_t, b_t) = (&alpha[row(t)..row(t) + l], &beta[row(t)..row(t) + l]);
                let mut d_row = d_e.row_mut(t * bsz + b);
                for (j, d) in d_row.iter_mut().enumerate() {
                    let p = (a_t[j] + b_t[j] - lz).exp();
                    *d = g * p;
                    if t == 0 {
                        d_s[(0, j)] += g * p;
                    }
                    if t == n - 1 {
                        d_z[(0, j)] += g * p;
                    }
                }
                d_row[y(t)] -= g;
                if t == 0 {
                    // Pairwise marginals need a predecessor.
                    continue;
                }
                // d A[i, j] += p_t(i, j) − [y_{t-1} = i, y_t = j].
                let a_prev = &alpha[row(t - 1)..row(t - 1) + l];
                let e_t = lat.emit(t, b);
                for (i, &ap) in a_prev.iter().enumerate() {
                    let a_row = &lat.a[i * l..(i + 1) * l];
                    for j in 0..l {
                        d_a[(i, j)] += g * (ap + a_row[j] + e_t[j] + b_t[j] - lz).exp();
                    }
                }
                d_a[(y(t - 1), y(t))] -= g;
            }
            d_s[(0, y(0))] -= g;
            d_z[(0, y(n - 1))] -= g;
        }
        Ok(vec![Some(d_e), Some(d_a), Some(d_s), Some(d_z)])
    }
}

/// Viterbi decoding: the highest-scoring tag path of each sentence (`lens[b]` tags).
/// With a [`BioConstraint`], disallowed starts and transitions are excluded. Ties go to
/// the lowest tag id.
///
/// # Errors
/// As [`crf_log_partition`]; [`NumError::ShapeMismatch`] when the constraint was built
/// for a different number of tags.
pub fn viterbi_decode<R: Real>(
    emissions: &Matrix<R>,
    lens: &[usize],
    w: CrfWeights<'_, R>,
    constraint: Option<&BioConstraint>,
) -> Result<Vec<Vec<usize>>, NumError> {
    let op = "viterbi_decode";
    let lat = Lattice::new(op, emissions, lens, w)?;
    let (bsz, l, steps) = (lat.seq.batch(), lat.l, lat.seq.steps);
    if let Some(c) = constraint
        && c.num_tags() != l
    {
        return Err(NumError::ShapeMismatch {
            op,
            lhs: vec![c.num_tags()],
            rhs: vec![l],
        });
    }
    let start_ok = |j: usize| constraint.is_none_or(|c| c.allows_start(j));
    let step_ok = |i: usize, j: usize| constraint.is_none_or(|c| c.allows(i, j));
    // Scratch reused by every sentence: scores δ (T, L) and back-pointers (T, L).
    let mut delta = vec![R::zero(); steps * l];
    let mut back = vec![0usize; steps * l];
    let mut paths = Vec::with_capacity(bsz);
    for b in 0..bsz {
        let n = lat.seq.lens[b];
        if n == 0 {
            paths.push(Vec::new());
            continue;
        }
        for (j, (d, (&s, &e))) in delta[..l]
            .iter_mut()
            .zip(lat.s.iter().zip(lat.emit(0, b)))
            .enumerate()
        {
            *d = if start_ok(j) {
                s + e
            } else {
                R::neg_infinity()
            };
        }
        for t in 1..n {
            let (lo, hi) = delta.split_at_mut(t * l);
            let prev = &lo[(t - 1) * l..];
            let e_t = lat.emit(t, b);
            for j in 0..l {
                let col = &lat.a_t[j * l..(j + 1) * l];
                let (mut best, mut arg) = (R::neg_infinity(), 0);
                for (i, (&p, &a)) in prev.iter().zip(col).enumerate() {
                    let v = p + a;
                    if step_ok(i, j) && v > best {
                        best = v;
                        arg = i;
                    }
                }
                hi[j] = best + e_t[j];
                back[t * l + j] = arg;
            }
        }
        let last = &delta[(n - 1) * l..n * l];
        let (mut best, mut arg) = (R::neg_infinity(), 0);
        for (j, (&d, &z)) in last.iter().zip(lat.z.iter()).enumerate() {
            if d + z > best {
                best = d + z;
                arg = j;
            }
        }
        let mut path = vec![0; n];
        path[n - 1] = arg;
        for t in (1..n).rev() {
            path[t - 1] = back[t * l + path[t]];
        }
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::{
        BioConstraint, CrfReduction, CrfWeights, crf_log_partition, crf_marginals, crf_nll,
        crf_path_scores, viterbi_decode,
    };
    use ndarray::Array2;
    use sclstm_core::NumError;

    type M = Array2<f64>;

    fn det(rows: usize, cols: usize, seed: f64) -> M {
        Array2::from_shape_fn((rows, cols), |(r, c)| {
            1.5 * (((r * cols + c) as f64 + 1.0) * 0.917 + seed).sin()
        })
    }

    /// A batch: T = 4, B = 4 with lengths 4, 2, 1, 3 and L = 3 tags.
    struct Case {
        e: M,
        a: M,
        s: M,
        z: M,
        lens: Vec<usize>,
        tags: Vec<usize>,
    }

    impl Case {
        fn new(seed: f64) -> Self {
            let lens = vec![4, 2, 1, 3];
            let (t, b, l) = (4, lens.len(), 3);
            let tags = (0..t * b).map(|k| (k * 7 + 1) % l).collect();
            Case {
                e: det(t * b, l, seed),
                a: det(l, l, seed + 1.0),
                s: det(1, l, seed + 2.0),
                z: det(1, l, seed + 3.0),
                lens,
                tags,
            }
        }

        fn w(&self) -> CrfWeights<'_, f64> {
            CrfWeights {
                transitions: &self.a,
                start: &self.s,
                end: &self.z,
            }
        }
    }

    /// Every tag path of length `n` over `l` tags.
    fn all_paths(n: usize, l: usize) -> Vec<Vec<usize>> {
        (0..l.pow(n as u32))
            .map(|mut code| {
                (0..n)
                    .map(|_| {
                        let y = code % l;
                        code /= l;
                        y
                    })
                    .collect()
            })
            .collect()
    }

    /// Path score written out from the definition, independent of the lattice code.
    fn score(c: &Case, b: usize, y: &[usize]) -> f64 {
        let bsz = c.lens.len();
        let mut s = c.s[(0, y[0])] + c.z[(0, y[y.len() - 1])];
        for (t, &yt) in y.iter().enumerate() {
            s += c.e[(t * bsz + b, yt)];
            if t > 0 {
                s += c.a[(y[t - 1], yt)];
            }
        }
        s
    }

    #[test]
    fn log_partition_and_path_scores_match_brute_force() {
        let c = Case::new(0.3);
        let log_z = crf_log_partition(&c.e, &c.lens, c.w()).unwrap();
        let scores = crf_path_scores(&c.e, &c.tags, &c.lens, c.w()).unwrap();
        let bsz = c.lens.len();
        for (b, &n) in c.lens.iter().enumerate() {
            let brute: f64 = all_paths(n, 3)
                .iter()
                .map(|y| score(&c, b, y).exp())
                .sum::<f64>()
                .ln();
            assert!(
                (log_z[b] - brute).abs() < 1e-12,
                "sentence {b}: {} vs {brute}",
                log_z[b]
            );
            let gold: Vec<usize> = (0..n).map(|t| c.tags[t * bsz + b]).collect();
            assert!((scores[b] - score(&c, b, &gold)).abs() < 1e-12);
        }
    }

    #[test]
    fn marginals_match_brute_force_and_sum_to_one() {
        let c = Case::new(1.7);
        let p = crf_marginals(&c.e, &c.lens, c.w()).unwrap();
        let bsz = c.lens.len();
        for (b, &n) in c.lens.iter().enumerate() {
            let paths = all_paths(n, 3);
            let z: f64 = paths.iter().map(|y| score(&c, b, y).exp()).sum();
            for t in 0..4 {
                let r = t * bsz + b;
                if t >= n {
                    assert!(p.row(r).iter().all(|&v| v == 0.0), "padding row {r}");
                    continue;
                }
                let sum: f64 = p.row(r).sum();
                assert!((sum - 1.0).abs() < 1e-12, "row {r} sums to {sum}");
                for j in 0..3 {
                    let brute: f64 = paths
                        .iter()
                        .filter(|y| y[t] == j)
                        .map(|y| score(&c, b, y).exp())
                        .sum::<f64>()
                        / z;
                    assert!(
                        (p[(r, j)] - brute).abs() < 1e-12,
                        "p_{t}({j}) of sentence {b}"
                    );
                }
            }
        }
    }

    /// Expected-minus-observed counts by enumerating every path of every sentence.
    fn brute_gradients(c: &Case) -> [M; 4] {
        let bsz = c.lens.len();
        let (mut de, mut da, mut ds, mut dz) = (
            M::zeros(c.e.dim()),
            M::zeros((3, 3)),
            M::zeros((1, 3)),
            M::zeros((1, 3)),
        );
        for (b, &n) in c.lens.iter().enumerate() {
            let paths = all_paths(n, 3);
            let z: f64 = paths.iter().map(|y| score(c, b, y).exp()).sum();
            let gold: Vec<usize> = (0..n).map(|t| c.tags[t * bsz + b]).collect();
            let mut add = |y: &[usize], w: f64| {
                ds[(0, y[0])] += w;
                dz[(0, y[n - 1])] += w;
                for t in 0..n {
                    de[(t * bsz + b, y[t])] += w;
                    if t > 0 {
                        da[(y[t - 1], y[t])] += w;
                    }
                }
            };
            for y in &paths {
                add(y, score(c, b, y).exp() / z);
            }
            add(&gold, -1.0);
        }
        [de, da, ds, dz]
    }

    fn nll(c: &Case, red: CrfReduction) -> f64 {
        crf_nll(&c.e, &c.tags, &c.lens, c.w(), red, false)
            .unwrap()
            .0[(0, 0)]
    }

    #[test]
    fn gradient_matches_enumeration_and_finite_differences() {
        for (red, scale) in [(CrfReduction::Sum, 1.0), (CrfReduction::Mean, 0.25)] {
            let mut c = Case::new(0.9);
            let (out, node) = crf_nll(&c.e, &c.tags, &c.lens, c.w(), red, true).unwrap();
            let node = node.unwrap();
            assert_eq!(node.name(), "crf_nll");
            let g: Vec<M> = node
                .backward(&Array2::from_elem((1, 1), 2.0))
                .unwrap()
                .into_iter()
                .map(|g| g.unwrap())
                .collect();
            let brute = brute_gradients(&c);
            let names = ["emissions", "transitions", "start", "end"];
            for k in 0..4 {
                for (idx, (&got, &want)) in g[k].iter().zip(brute[k].iter()).enumerate() {
                    let want = 2.0 * scale * want;
                    assert!(
                        (got - want).abs() < 1e-12,
                        "{} {:?} entry {idx}: {got} vs {want}",
                        names[k],
                        g[k].dim()
                    );
                }
            }
            // Central finite differences of the reduced loss (d_out = 2).
            let eps = 1e-6;
            for k in 0..4 {
                for idx in 0..g[k].len() {
                    let cols = g[k].ncols();
                    let (r, col) = (idx / cols, idx % cols);
                    let m = match k {
                        0 => &mut c.e,
                        1 => &mut c.a,
                        2 => &mut c.s,
                        _ => &mut c.z,
                    };
                    let orig = m[(r, col)];
                    m[(r, col)] = orig + eps;
                    let up = nll(&c, red);
                    let m = match k {
                        0 => &mut c.e,
                        1 => &mut c.a,
                        2 => &mut c.s,
                        _ => &mut c.z,
                    };
                    m[(r, col)] = orig - eps;
                    let down = nll(&c, red);
                    let m = match k {
                        0 => &mut c.e,
                        1 => &mut c.a,
                        2 => &mut c.s,
                        _ => &mut c.z,
                    };
                    m[(r, col)] = orig;
                    let num = 2.0 * (up - down) / (2.0 * eps);
                    let got = g[k][(r, col)];
                    assert!(
                        (got - num).abs() <= 1e-8 + 1e-6 * num.abs(),
                        "{} {:?} at ({r}, {col}): {got} vs finite difference {num}",
                        names[k],
                        g[k].dim()
                    );
                }
            }
            // The reported loss is the reduced sum of per-sentence NLLs.
            let log_z = crf_log_partition(&c.e, &c.lens, c.w()).unwrap();
            let sc = crf_path_scores(&c.e, &c.tags, &c.lens, c.w()).unwrap();
            let want: f64 = log_z.iter().zip(&sc).map(|(z, s)| z - s).sum::<f64>() * scale;
            assert!((out[(0, 0)] - want).abs() < 1e-12);
        }
    }

    #[test]
    fn nll_is_non_negative() {
        for seed in 0..20 {
            let mut c = Case::new(seed as f64 * 0.77);
            // Sharpen the scores so some sentences are near-deterministic.
            c.e.mapv_inplace(|v| v * (1.0 + seed as f64));
            let (out, _) =
                crf_nll(&c.e, &c.tags, &c.lens, c.w(), CrfReduction::Sum, false).unwrap();
            assert!(out[(0, 0)] >= 0.0, "seed {seed}: {}", out[(0, 0)]);
        }
    }

    #[test]
    fn viterbi_matches_brute_force_argmax() {
        for seed in 0..5 {
            let c = Case::new(seed as f64 * 1.3);
            let paths = viterbi_decode(&c.e, &c.lens, c.w(), None).unwrap();
            for (b, &n) in c.lens.iter().enumerate() {
                let best = all_paths(n, 3)
                    .into_iter()
                    .max_by(|x, y| score(&c, b, x).total_cmp(&score(&c, b, y)))
                    .unwrap();
                assert_eq!(paths[b], best, "seed {seed}, sentence {b}");
            }
        }
    }

    #[test]
    fn bio_constrained_viterbi_matches_brute_force_over_valid_paths() {
        let names = ["O", "B-X", "I-X"];
        let bio = BioConstraint::from_tags(&names);
        let valid = |y: &[usize]| y[0] != 2 && y.windows(2).all(|w| w[1] != 2 || w[0] != 0);
        let mut changed = 0;
        for seed in 0..8 {
            let mut c = Case::new(seed as f64 * 0.61);
            // Favour I-X so the constraint has something to prevent.
            c.e.column_mut(2).mapv_inplace(|v| v + 1.0);
            let free = viterbi_decode(&c.e, &c.lens, c.w(), None).unwrap();
            let paths = viterbi_decode(&c.e, &c.lens, c.w(), Some(&bio)).unwrap();
            for (b, &n) in c.lens.iter().enumerate() {
                let best = all_paths(n, 3)
                    .into_iter()
                    .filter(|y| valid(y))
                    .max_by(|x, y| score(&c, b, x).total_cmp(&score(&c, b, y)))
                    .unwrap();
                assert_eq!(paths[b], best, "seed {seed}, sentence {b}");
                changed += usize::from(free[b] != paths[b]);
            }
        }
        assert!(
            changed > 0,
            "the constraint never changed a decision: the test is vacuous"
        );
    }

    #[test]
    fn bio_constraint_reads_tag_names() {
        let bio = BioConstraint::from_tags(&["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "NN"]);
        assert!(!bio.allows_start(2) && !bio.allows_start(4));
        assert!(bio.allows_start(0) && bio.allows_start(1) && bio.allows_start(5));
        assert!(bio.allows(1, 2) && bio.allows(2, 2) && bio.allows(3, 4) && bio.allows(4, 4));
        assert!(!bio.allows(0, 2) && !bio.allows(3, 2) && !bio.allows(2, 4) && !bio.allows(5, 2));
        assert!(bio.allows(2, 0) && bio.allows(0, 1) && bio.allows(4, 3) && bio.allows(2, 5));
    }

    #[test]
    fn bad_inputs_are_rejected() {
        let c = Case::new(0.0);
        let mut tags = c.tags.clone();
        tags[0] = 3;
        let err = crf_nll(&c.e, &tags, &c.lens, c.w(), CrfReduction::Sum, false).unwrap_err();
        assert!(
            matches!(
                err,
                NumError::IndexOutOfRange {
                    index: 3,
                    bound: 3,
                    ..
                }
            ),
            "{err}"
        );
        // A padding position may hold anything.
        let mut tags = c.tags.clone();
        tags[15] = 99; // step 3 of sentence 3 (length 3)
        assert!(crf_nll(&c.e, &tags, &c.lens, c.w(), CrfReduction::Sum, false).is_ok());
        let a = M::zeros((2, 3));
        let w = CrfWeights {
            transitions: &a,
            ..c.w()
        };
        assert!(matches!(
            crf_log_partition(&c.e, &c.lens, w),
            Err(NumError::ShapeMismatch { .. })
        ));
        let bio = BioConstraint::from_tags(&["O", "B-X"]);
        assert!(matches!(
            viterbi_decode(&c.e, &c.lens, c.w(), Some(&bio)),
            Err(NumError::ShapeMismatch { .. })
        ));
        let (_, node) = crf_nll(&c.e, &c.tags, &c.lens, c.w(), CrfReduction::Sum, true).unwrap();
        assert!(node.unwrap().backward(&M::zeros((1, 2))).is_err());
    }
}
