//! Linear-chain CRF head: negative log-likelihood by the forward algorithm, its
//! hand-written backward from forward-backward marginals, Viterbi decoding and optional
//! BIO-constrained decoding. Host code, generic over [`Real`]; O(T·L²) per sentence with
//! no allocation per position.
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
//! # Two evaluations of the same recursions
//! The log-space recursions above (`Lattice::forward`, `Lattice::backward`) are the
//! spec. They cost one `exp` per lattice edge (T·L² per sentence, three times for
//! NLL + gradient). [`crf_nll`], [`crf_log_partition`] and [`crf_marginals`] take a fast
//! path (`Scaled`) whenever the inputs allow it: the same recursions in linear space
//! with a renormalisation per step, so each step is a vector–matrix product and the only
//! `exp` calls are one per tag and step:
//!
//! ```text
//! c_j = max_i A[i, j]              E[i, j] = exp(A[i, j] − c_j) ∈ (0, 1]
//! g_0[j] = exp(s[j] + e_0[j] − k_0)       g_t[j] = exp(c_j + e_t[j] − k_t)   (t ≥ 1)
//!          (k_t = the maximum of the exponent over j, so max_j g_t[j] = 1)
//! α̂_0 = g_0,   M_0 = k_0
//! u_t = α̂_{t-1} E,   m_t = max_j u_t[j] g_t[j],   α̂_t = (u_t ⊙ g_t) / m_t,
//! M_t = M_{t-1} + k_t + ln m_t                    ⇒  α_t = M_t + ln α̂_t
//! log Z = M_{n-1} + max z + ln Σ_j α̂_{n-1}[j] exp(z[j] − max z)
//! β̂_{n-1} = exp(z − max z),   β̂_{t-1} ∝ E (g_t ⊙ β̂_t)  (renormalised to max 1)
//! p_t(j)    = α̂_t[j] β̂_t[j] / σ_t,                      σ_t = Σ_j α̂_t[j] β̂_t[j]
//! p_t(i, j) = α̂_{t-1}[i] E[i, j] g_t[j] β̂_t[j] / (m_t σ_t)
//! ```
//!
//! The last line follows from `Σ_{i,j} α̂_{t-1}[i] E[i, j] g_t[j] β̂_t[j] = Σ_j u_t[j] g_t[j] β̂_t[j]
//! = m_t σ_t`. Normalising by sums instead of `exp(α + β − log Z)` also avoids the
//! cancellation between `α + β` and `log Z`, which are large when emissions are.
//!
//! With `R` the largest spread `max_i A[i, j] − min_i A[i, j]` of a column of `A` (or the
//! spread of `z`), every renormalised quantity the recursions divide by is at least
//! `e^{−2R}` (`α̂` and `β̂` peak at 1; `β̂_t ≥ e^{−R}` elementwise; `E`'s column maxima are 1).
//! A term that underflows is therefore smaller than the least subnormal number, against
//! a sum of at least `e^{−2R}`. The fast path is taken when every input is finite and
//! `R ≤ −ln(min positive normal) / 3` (29 in f32, 236 in f64), which keeps that ratio far
//! below the rounding error; emissions may have any magnitude. Otherwise (e.g. transitions
//! of −10⁴ or −∞ used as hard constraints) the log-space spec runs.
//!
//! # Batch loss
//! [`crf_nll`] returns a 1×1 matrix: the **sum** of the per-sentence NLLs
//! ([`CrfReduction::Sum`]) or that sum divided by the number of sentences `B`
//! ([`CrfReduction::Mean`]). Sentences of length 0 contribute 0. Its [`FusedOp`] returns
//! gradients in the order **`[emissions, transitions, start, end]`**; padding rows of the
//! emissions get zero gradient.
//!
//! # Viterbi
//! [`viterbi_decode`] keeps only the max-plus scores `δ_t` in its forward sweep (a
//! vectorisable running maximum over rows of `A`) and recovers each back-pointer during
//! the trace-back by rescanning `δ_{t-1}[i] + A[i, y_t]` over `i`: the same floating-point
//! sums and the same first-maximum rule, so the same path, for L instead of L² work per
//! step.

use std::borrow::Cow;
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
    e: Cow<'a, [R]>,
    /// `A` row-major (L·L): `[i·L + j]`.
    a: Cow<'a, [R]>,
    /// `Aᵀ` (L·L): `[j·L + i]`, so the forward recursion reads contiguous columns.
    a_t: Vec<R>,
    /// Start scores (L).
    s: Cow<'a, [R]>,
    /// End scores (L).
    z: Cow<'a, [R]>,
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

/// Tables of the linear-space forward–backward (the fast path; equations in the module
/// docs). Built only when the inputs pass the range check of [`Scaled::new`].
struct Scaled<R: Real> {
    /// Number of tags `L`.
    l: usize,
    /// Row stride `L'` of the tables: `L` rounded up to a multiple of [`LANES`].
    lp: usize,
    /// `E` (L·L'), `[i·L' + j] = exp(A[i, j] − c_j)`, zero for `j ≥ L`: the forward step
    /// `u = α̂ E` adds rows.
    e: Vec<R>,
    /// `Eᵀ` (L·L'), `[j·L' + i]`, zero for `i ≥ L`: the backward step `E w` adds rows of `Eᵀ`.
    e_t: Vec<R>,
    /// `c` (L): column maxima of `A`.
    col_max: Vec<R>,
    /// `ẑ` (L): `exp(z − max z)`.
    z_hat: Vec<R>,
    /// `max z`.
    z_max: R,
}

/// Forward quantities of the fast path for a whole batch, saved for the backward.
struct ScaledForward<R: Real> {
    /// `α̂` (T·B·L), row `t·B + b`: `exp(α_t − M_t)`, maximum 1 per row.
    alpha: Vec<R>,
    /// `g` (T·B·L): the emission factors `g_t` of the module docs, maximum 1 per row.
    gain: Vec<R>,
    /// `1 / m_t` (T·B): inverse of the forward renormaliser (1 at `t = 0`).
    inv_renorm: Vec<R>,
    /// `log Z` (B), 0 for an empty sentence.
    log_z: Vec<R>,
}

/// Writes `g[j] = exp(x[j] + off[j] − k)` with `k = max_j (x[j] + off[j])` and returns `k`.
#[inline]
fn gain_row<R: Real>(g: &mut [R], x: &[R], off: &[R]) -> R {
    let k = x.iter().zip(off).fold(
        R::neg_infinity(),
        |m, (&x, &o)| if x + o > m { x + o } else { m },
    );
    for ((g, &x), &o) in g.iter_mut().zip(x).zip(off) {
        *g = (x + o - k).exp();
    }
    k
}

/// Width of the blocks the fast path's inner loops work on: rows are padded with zeros
/// to a multiple of it so those loops have no scalar remainder (8 f32 fill two SSE or
/// one AVX register).
const LANES: usize = 8;

/// `acc += coef · row`.
#[inline]
fn axpy<R: Real>(acc: &mut [R], coef: R, row: &[R]) {
    for (a, &r) in acc.iter_mut().zip(row) {
        *a += coef * r;
    }
}

/// `out = x M` for `x` (L) and `M` (L·L', rows padded to a multiple of [`LANES`] with
/// zeros): `out[j] = Σ_i x[i] M[i·L' + j]` for every `j < L'`. Each block of [`LANES`]
/// columns is summed in a fixed-size accumulator the compiler keeps in registers, so
/// `out` is written once instead of once per row.
#[inline]
fn vec_mat<R: Real>(out: &mut [R], x: &[R], m: &[R]) {
    let lp = out.len();
    for (blk, out_blk) in out.chunks_exact_mut(LANES).enumerate() {
        let mut acc = [R::zero(); LANES];
        for (&xi, m_row) in x.iter().zip(m.chunks_exact(lp)) {
            let m_blk = &m_row[blk * LANES..(blk + 1) * LANES];
            for k in 0..LANES {
                acc[k] += xi * m_blk[k];
            }
        }
        out_blk.copy_from_slice(&acc);
    }
}

/// Largest element of a non-empty row. A plain `>` select rather than `R::max`, whose
/// NaN handling keeps the loop scalar; the fast path only sees finite values.
#[inline]
fn row_max<R: Real>(v: &[R]) -> R {
    v.iter()
        .fold(R::neg_infinity(), |m, &x| if x > m { x } else { m })
}

impl<R: Real> Scaled<R> {
    /// The tables, or `None` when an input is not finite or a column of `A` (or `z`)
    /// spreads over more than `−ln(min positive normal) / 3`: then the log-space spec runs.
    fn new(lat: &Lattice<'_, R>) -> Option<Self> {
        let l = lat.l;
        let limit = -R::min_positive_value().ln() / R::from_f64(3.0);
        let all_finite = |v: &[R]| v.iter().all(|x| x.is_finite());
        if !(all_finite(&lat.a) && all_finite(&lat.s) && all_finite(&lat.z) && all_finite(&lat.e)) {
            return None;
        }
        let z_max = row_max(&lat.z);
        let z_min = lat.z.iter().fold(R::infinity(), |m, &x| m.min(x));
        if z_max - z_min > limit {
            return None;
        }
        let mut col_max = vec![R::zero(); l];
        for (j, c) in col_max.iter_mut().enumerate() {
            let col = &lat.a_t[j * l..(j + 1) * l];
            let lo = col.iter().fold(R::infinity(), |m, &x| m.min(x));
            *c = row_max(col);
            if *c - lo > limit {
                return None;
            }
        }
        let lp = l.div_ceil(LANES) * LANES;
        let mut e = vec![R::zero(); l * lp];
        let mut e_t = vec![R::zero(); l * lp];
        for i in 0..l {
            for j in 0..l {
                let v = (lat.a[i * l + j] - col_max[j]).exp();
                e[i * lp + j] = v;
                e_t[j * lp + i] = v;
            }
        }
        let z_hat = lat.z.iter().map(|&z| (z - z_max).exp()).collect();
        Some(Scaled {
            l,
            lp,
            e,
            e_t,
            col_max,
            z_hat,
            z_max,
        })
    }

    /// Runs the forward recursion of every sentence.
    fn forward(&self, lat: &Lattice<'_, R>) -> ScaledForward<R> {
        let (l, bsz) = (lat.l, lat.seq.batch());
        let rows = lat.seq.rows();
        let mut fwd = ScaledForward {
            alpha: vec![R::zero(); rows * l],
            gain: vec![R::zero(); rows * l],
            inv_renorm: vec![R::one(); rows],
            log_z: vec![R::zero(); bsz],
        };
        let mut u = vec![R::zero(); self.lp];
        for b in 0..bsz {
            fwd.log_z[b] = self.forward_sentence(lat, &mut fwd, b, &mut u);
        }
        fwd
    }

    /// Forward recursion of sentence `b` into `fwd` (its rows); returns `log Z`.
    /// `u` (L') is scratch.
    fn forward_sentence(
        &self,
        lat: &Lattice<'_, R>,
        fwd: &mut ScaledForward<R>,
        b: usize,
        u: &mut [R],
    ) -> R {
        let (l, bsz, n) = (lat.l, lat.seq.batch(), lat.seq.lens[b]);
        if n == 0 {
            return R::zero();
        }
        let row = |t: usize| (t * bsz + b) * l;
        let r0 = row(0);
        let mut log_scale = gain_row(&mut fwd.gain[r0..r0 + l], lat.emit(0, b), &lat.s);
        fwd.alpha[r0..r0 + l].copy_from_slice(&fwd.gain[r0..r0 + l]);
        for t in 1..n {
            let (rp, r) = (row(t - 1), row(t));
            vec_mat(u, &fwd.alpha[rp..rp + l], &self.e);
            let u = &mut u[..l];
            let g = &mut fwd.gain[r..r + l];
            let k = gain_row(g, lat.emit(t, b), &self.col_max);
            for (uj, &gj) in u.iter_mut().zip(g.iter()) {
                *uj *= gj;
            }
            let m = row_max(u);
            let inv = R::one() / m;
            for (a, &v) in fwd.alpha[r..r + l].iter_mut().zip(u.iter()) {
                *a = v * inv;
            }
            fwd.inv_renorm[t * bsz + b] = inv;
            log_scale += k + m.ln();
        }
        let rl = row(n - 1);
        let tail: R = fwd.alpha[rl..rl + l]
            .iter()
            .zip(&self.z_hat)
            .map(|(&a, &z)| a * z)
            .sum();
        log_scale + self.z_max + tail.ln()
    }

    /// Backward recursion of sentence `b` (of a batch with lengths `lens`): writes
    /// `scale · p_t(j)` into the sentence's rows of `unary` (T·B·L) and, with `pair`, the
    /// factors of `scale · p_t(i, j)` for `t ≥ 1` into the sentence's rows of `pair`.
    fn marginals_sentence(
        &self,
        fwd: &ScaledForward<R>,
        lens: &[usize],
        b: usize,
        scale: R,
        unary: &mut [R],
        mut pair: Option<&mut PairFactors<R>>,
    ) {
        let (l, lp, bsz, n) = (self.l, self.lp, lens.len(), lens[b]);
        if n == 0 {
            return;
        }
        // β̂_t (L), w = g_t ⊙ β̂_t and the unnormalised β̂_{t-1} (L' each, zero padding):
        // one allocation per sentence.
        let mut scratch = vec![R::zero(); l + 2 * lp];
        let row = |t: usize| (t * bsz + b) * l;
        let (beta, rest) = scratch.split_at_mut(l);
        let (w, next) = rest.split_at_mut(lp);
        beta.copy_from_slice(&self.z_hat);
        for t in (0..n).rev() {
            let r = row(t);
            let alpha_t = &fwd.alpha[r..r + l];
            let sigma: R = alpha_t
                .iter()
                .zip(beta.iter())
                .map(|(&a, &bt)| a * bt)
                .sum();
            let d = scale / sigma;
            for ((p, &a), &bt) in unary[r..r + l].iter_mut().zip(alpha_t).zip(beta.iter()) {
                *p = d * a * bt;
            }
            if t == 0 {
                break;
            }
            for ((w, &g), &bt) in w.iter_mut().zip(&fwd.gain[r..r + l]).zip(beta.iter()) {
                *w = g * bt;
            }
            if let Some(pair) = pair.as_deref_mut() {
                let c = d * fwd.inv_renorm[t * bsz + b];
                let rp = row(t - 1);
                for (x, &a) in pair.x[r..r + l].iter_mut().zip(&fwd.alpha[rp..rp + l]) {
                    *x = c * a;
                }
                let rw = (t * bsz + b) * lp;
                pair.w[rw..rw + lp].copy_from_slice(w);
            }
            vec_mat(next, &w[..l], &self.e_t);
            let next = &next[..l];
            let inv = R::one() / row_max(next);
            for (bt, &v) in beta.iter_mut().zip(next.iter()) {
                *bt = v * inv;
            }
        }
    }
}

/// Factors of the pairwise marginals of a batch: `scale · p_t(i, j) = E[i, j] · x[i] · w[j]`
/// with `x` and `w` the rows `t·B + b`; rows with `t = 0` or in padding stay zero.
struct PairFactors<R: Real> {
    /// `x = scale · α̂_{t-1} / (m_t σ_t)` (T·B·L).
    x: Vec<R>,
    /// `w = g_t ⊙ β̂_t` (T·B·L'), zero padding.
    w: Vec<R>,
}

impl<R: Real> PairFactors<R> {
    /// Zeroed factors for `rows = T·B` rows.
    fn zeros(rows: usize, tables: &Scaled<R>) -> Self {
        PairFactors {
            x: vec![R::zero(); rows * tables.l],
            w: vec![R::zero(); rows * tables.lp],
        }
    }

    /// `Σ_{b,t} scale · p_t(i, j)` (L·L): `E[i, j] · Σ_r x_r[i] w_r[j]`, one register
    /// block of [`LANES`] columns at a time.
    fn expected_transitions(&self, tables: &Scaled<R>) -> Vec<R> {
        let (l, lp) = (tables.l, tables.lp);
        let mut d_a = vec![R::zero(); l * l];
        for (i, (d_row, e_row)) in d_a
            .chunks_exact_mut(l)
            .zip(tables.e.chunks_exact(lp))
            .enumerate()
        {
            for blk in 0..lp / LANES {
                let mut acc = [R::zero(); LANES];
                for (x_row, w_row) in self.x.chunks_exact(l).zip(self.w.chunks_exact(lp)) {
                    let xi = x_row[i];
                    let w_blk = &w_row[blk * LANES..(blk + 1) * LANES];
                    for k in 0..LANES {
                        acc[k] += xi * w_blk[k];
                    }
                }
                let cols = blk * LANES..((blk + 1) * LANES).min(l);
                for (j, &v) in cols.zip(&acc) {
                    d_row[j] = e_row[j] * v;
                }
            }
        }
        d_a
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
    if let Some(sc) = Scaled::new(&lat) {
        return Ok(sc.forward(&lat).log_z);
    }
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
    let (bsz, l) = (lat.seq.batch(), lat.l);
    let mut out = vec![R::zero(); emissions.len()];
    if let Some(sc) = Scaled::new(&lat) {
        let fwd = sc.forward(&lat);
        for b in 0..bsz {
            sc.marginals_sentence(&fwd, lens, b, R::one(), &mut out, None);
        }
    } else {
        let mut alpha = vec![R::zero(); emissions.len()];
        let mut beta = vec![R::zero(); emissions.len()];
        for b in 0..bsz {
            let log_z = lat.forward(b, &mut alpha);
            lat.backward(b, &mut beta);
            for t in 0..lat.seq.lens[b] {
                let r = (t * bsz + b) * l;
                for j in r..r + l {
                    out[j] = (alpha[j] + beta[j] - log_z).exp();
                }
            }
        }
    }
    Ok(Matrix::from_shape_vec(emissions.dim(), out).expect("internal: T·B·L marginals"))
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
    let saved = match Scaled::new(&lat) {
        Some(tables) => {
            let fwd = tables.forward(&lat);
            Saved::Scaled { tables, fwd }
        }
        None => {
            let mut alpha = vec![R::zero(); emissions.len()];
            let log_z = (0..bsz).map(|b| lat.forward(b, &mut alpha)).collect();
            Saved::Log {
                emissions: emissions.clone(),
                transitions: w.transitions.clone(),
                start: w.start.clone(),
                end: w.end.clone(),
                alpha,
                log_z,
            }
        }
    };
    let log_z = match &saved {
        Saved::Scaled { fwd, .. } => &fwd.log_z,
        Saved::Log { log_z, .. } => log_z,
    };
    let mut total = R::zero();
    for (b, &lz) in log_z.iter().enumerate() {
        total += lz - lat.path_score(b, tags);
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
        dims: (lat.seq.rows(), lat.l),
        tags: tags.to_vec(),
        lens: lens.to_vec(),
        saved,
        scale,
    };
    Ok((out, Some(Box::new(node))))
}

/// What the forward of [`crf_nll`] saves for the backward, by the path it took.
enum Saved<R: Real> {
    /// Fast path: its tables and forward quantities.
    Scaled {
        /// `E`, `Eᵀ`, column maxima, `ẑ`.
        tables: Scaled<R>,
        /// `α̂`, `g`, `1/m_t`, `log Z`.
        fwd: ScaledForward<R>,
    },
    /// Log-space spec: the inputs and the forward variables.
    Log {
        /// Emissions (T·B, L).
        emissions: Matrix<R>,
        /// `A` (L, L).
        transitions: Matrix<R>,
        /// Start scores (1, L).
        start: Matrix<R>,
        /// End scores (1, L).
        end: Matrix<R>,
        /// Forward variables `α` (T·B·L), row `t·B + b`.
        alpha: Vec<R>,
        /// `log Z` per sentence (B).
        log_z: Vec<R>,
    },
}

/// The recorded CRF NLL: gold tags, lengths and the saved forward state.
struct CrfNllOp<R: Real> {
    /// `(T·B, L)` of the emissions.
    dims: (usize, usize),
    /// Gold tags (T·B).
    tags: Vec<usize>,
    /// Sentence lengths (B).
    lens: Vec<usize>,
    /// Forward state of the path taken.
    saved: Saved<R>,
    /// 1 for a sum, 1/B for a mean.
    scale: R,
}

impl<R: Real> fmt::Debug for CrfNllOp<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = match self.saved {
            Saved::Scaled { .. } => "scaled",
            Saved::Log { .. } => "log-space",
        };
        f.debug_struct("CrfNllOp")
            .field("emissions", &self.dims)
            .field("lens", &self.lens)
            .field("path", &path)
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
        let (rows, l) = self.dims;
        let bsz = self.lens.len();
        let row = |t: usize, b: usize| (t * bsz + b) * l;
        let mut d_e = vec![R::zero(); rows * l];
        let mut d_a = vec![R::zero(); l * l];
        let mut d_s = vec![R::zero(); l];
        let mut d_z = vec![R::zero(); l];
        // Expected counts g · p.
        match &self.saved {
            Saved::Scaled { tables, fwd } => {
                let mut pair = PairFactors::zeros(rows, tables);
                for (b, &n) in self.lens.iter().enumerate() {
                    if n == 0 {
                        continue;
                    }
                    tables.marginals_sentence(fwd, &self.lens, b, g, &mut d_e, Some(&mut pair));
                    let (r0, rl) = (row(0, b), row(n - 1, b));
                    axpy(&mut d_s, R::one(), &d_e[r0..r0 + l]);
                    axpy(&mut d_z, R::one(), &d_e[rl..rl + l]);
                }
                d_a = pair.expected_transitions(tables);
            }
            Saved::Log {
                emissions,
                transitions,
                start,
                end,
                alpha,
                log_z,
            } => {
                let w = CrfWeights {
                    transitions,
                    start,
                    end,
                };
                let lat = Lattice::new(op, emissions, &self.lens, w)?;
                let mut beta = vec![R::zero(); rows * l];
                for (b, &n) in self.lens.iter().enumerate() {
                    if n == 0 {
                        continue;
                    }
                    lat.backward(b, &mut beta);
                    let lz = log_z[b];
                    for t in 0..n {
                        // Unary marginals p_t(j) = exp(α_t[j] + β_t[j] − log Z).
                        let r = row(t, b);
                        for j in 0..l {
                            d_e[r + j] = g * (alpha[r + j] + beta[r + j] - lz).exp();
                        }
                        if t == 0 {
                            axpy(&mut d_s, R::one(), &d_e[r..r + l]);
                        }
                        if t == n - 1 {
                            axpy(&mut d_z, R::one(), &d_e[r..r + l]);
                        }
                        if t == 0 {
                            // Pairwise marginals need a predecessor.
                            continue;
                        }
                        // p_t(i, j) = exp(α_{t-1}[i] + A[i, j] + e_t[j] + β_t[j] − log Z).
                        let rp = row(t - 1, b);
                        let e_t = lat.emit(t, b);
                        for (i, &ap) in alpha[rp..rp + l].iter().enumerate() {
                            let a_row = &lat.a[i * l..(i + 1) * l];
                            for j in 0..l {
                                d_a[i * l + j] +=
                                    g * (ap + a_row[j] + e_t[j] + beta[r + j] - lz).exp();
                            }
                        }
                    }
                }
            }
        }
        // Minus the observed counts of the gold path.
        for (b, &n) in self.lens.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let y = |t: usize| self.tags[t * bsz + b];
            for t in 0..n {
                d_e[row(t, b) + y(t)] -= g;
                if t > 0 {
                    d_a[y(t - 1) * l + y(t)] -= g;
                }
            }
            d_s[y(0)] -= g;
            d_z[y(n - 1)] -= g;
        }
        let mat = |dim: (usize, usize), v: Vec<R>| {
            Matrix::from_shape_vec(dim, v).expect("internal: gradient buffer matches its shape")
        };
        Ok(vec![
            Some(mat((rows, l), d_e)),
            Some(mat((l, l), d_a)),
            Some(mat((1, l), d_s)),
            Some(mat((1, l), d_z)),
        ])
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
    // A disallowed transition scores −∞: `p + (−∞)` never beats the running maximum,
    // exactly as if the predecessor were skipped. `a` (L·L') is padded with −∞ columns
    // for the blocked forward sweep; `a_t` (L·L) serves the trace-back.
    let lp = l.div_ceil(LANES) * LANES;
    let mut a = vec![R::neg_infinity(); l * lp];
    let mut a_t = Cow::Borrowed(&lat.a_t[..]);
    for i in 0..l {
        for j in 0..l {
            if constraint.is_none_or(|c| c.allows(i, j)) {
                a[i * lp + j] = lat.a[i * l + j];
            } else {
                a_t.to_mut()[j * l + i] = R::neg_infinity();
            }
        }
    }
    // Max-plus scores δ (T, L), reused by every sentence, and one padded row.
    let mut delta = vec![R::zero(); steps * l];
    let mut best = vec![R::neg_infinity(); lp];
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
            // δ_t[j] = e_t[j] + max_i (δ_{t-1}[i] + A[i, j]).
            vec_mat_max_plus(&mut best, &lo[(t - 1) * l..], &a);
            for ((c, &m), &e) in hi[..l].iter_mut().zip(&best).zip(lat.emit(t, b)) {
                *c = m + e;
            }
        }
        let mut path = vec![0; n];
        path[n - 1] = first_argmax(delta[(n - 1) * l..n * l].iter().zip(lat.z.iter()));
        for t in (1..n).rev() {
            // The back-pointer of (t, y_t): the first i maximising δ_{t-1}[i] + A[i, y_t].
            let col = &a_t[path[t] * l..(path[t] + 1) * l];
            path[t - 1] = first_argmax(delta[(t - 1) * l..t * l].iter().zip(col));
        }
        paths.push(path);
    }
    Ok(paths)
}

/// The max-plus analogue of [`vec_mat`]: `out[j] = max_i (x[i] + M[i·L' + j])`, taken
/// in row order with `>` so a NaN sum never wins, for `M` padded with −∞. Written out
/// rather than sharing a generic fold with [`vec_mat`]: the shared version decodes
/// 23 tags about 20% slower (`cpu_crf/viterbi/23`).
#[inline]
fn vec_mat_max_plus<R: Real>(out: &mut [R], x: &[R], m: &[R]) {
    let lp = out.len();
    for (blk, out_blk) in out.chunks_exact_mut(LANES).enumerate() {
        let mut acc = [R::neg_infinity(); LANES];
        for (&xi, m_row) in x.iter().zip(m.chunks_exact(lp)) {
            let m_blk = &m_row[blk * LANES..(blk + 1) * LANES];
            for k in 0..LANES {
                let v = xi + m_blk[k];
                acc[k] = if v > acc[k] { v } else { acc[k] };
            }
        }
        out_blk.copy_from_slice(&acc);
    }
}

/// Index of the first maximum of `x + y` over the pairs (0 when every sum is `−∞` or NaN).
#[inline]
fn first_argmax<'a, R: Real>(pairs: impl Iterator<Item = (&'a R, &'a R)>) -> usize {
    let (mut best, mut arg) = (R::neg_infinity(), 0);
    for (i, (&x, &y)) in pairs.enumerate() {
        if x + y > best {
            best = x + y;
            arg = i;
        }
    }
    arg
}

#[cfg(test)]
mod tests {
    use super::{
        BioConstraint, CrfNllOp, CrfReduction, CrfWeights, Lattice, Saved, Scaled,
        crf_log_partition, crf_marginals, crf_nll, crf_path_scores, viterbi_decode,
    };
    use ndarray::Array2;
    use sclstm_core::{FusedOp, NumError, Real};

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

    /// A general batch for the fast-path checks: `T` steps, lengths `lens`, `l` tags,
    /// emissions `emit_scale · sin(..)`, transitions `trans_scale · sin(..)`.
    struct Big {
        e: M,
        a: M,
        s: M,
        z: M,
        lens: Vec<usize>,
        tags: Vec<usize>,
    }

    impl Big {
        fn new(lens: &[usize], l: usize, emit_scale: f64, trans_scale: f64, seed: f64) -> Self {
            let (t, b) = (lens.iter().copied().max().unwrap_or(0).max(1), lens.len());
            let wave = |rows: usize, cols: usize, k: f64, scale: f64| {
                Array2::from_shape_fn((rows, cols), |(r, c)| {
                    scale * (((r * cols + c) as f64 + 1.0) * 0.7311 + seed + k).sin()
                })
            };
            Big {
                e: wave(t * b, l, 0.0, emit_scale),
                a: wave(l, l, 1.0, trans_scale),
                s: wave(1, l, 2.0, 0.5),
                z: wave(1, l, 3.0, 0.5),
                lens: lens.to_vec(),
                tags: (0..t * b).map(|k| (k * 5 + 3) % l).collect(),
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

    /// `log Σ exp`, written out independently of the module's helpers.
    fn ref_lse(v: &[f64]) -> f64 {
        let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if m == f64::NEG_INFINITY {
            return m;
        }
        m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    }

    /// Straightforward log-space forward–backward: the summed NLL and its gradients
    /// `[d e, d A, d s, d z]` (d_out = 1), every quantity a fresh `Vec` per position.
    fn reference_nll(c: &Big) -> (f64, [M; 4]) {
        let (bsz, l) = (c.lens.len(), c.a.nrows());
        let mut grads = [
            M::zeros(c.e.dim()),
            M::zeros((l, l)),
            M::zeros((1, l)),
            M::zeros((1, l)),
        ];
        let mut nll = 0.0;
        for (b, &n) in c.lens.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let e = |t: usize, j: usize| c.e[(t * bsz + b, j)];
            let mut alpha = vec![(0..l).map(|j| c.s[(0, j)] + e(0, j)).collect::<Vec<_>>()];
            for t in 1..n {
                let next = (0..l)
                    .map(|j| {
                        let terms: Vec<f64> =
                            (0..l).map(|i| alpha[t - 1][i] + c.a[(i, j)]).collect();
                        e(t, j) + ref_lse(&terms)
                    })
                    .collect();
                alpha.push(next);
            }
            let mut beta = vec![vec![0.0; l]; n];
            beta[n - 1] = (0..l).map(|i| c.z[(0, i)]).collect();
            for t in (0..n - 1).rev() {
                beta[t] = (0..l)
                    .map(|i| {
                        let terms: Vec<f64> = (0..l)
                            .map(|j| c.a[(i, j)] + e(t + 1, j) + beta[t + 1][j])
                            .collect();
                        ref_lse(&terms)
                    })
                    .collect();
            }
            let last: Vec<f64> = (0..l).map(|j| alpha[n - 1][j] + c.z[(0, j)]).collect();
            let log_z = ref_lse(&last);
            let y = |t: usize| c.tags[t * bsz + b];
            let mut gold = c.s[(0, y(0))] + c.z[(0, y(n - 1))];
            for t in 0..n {
                gold += e(t, y(t));
                if t > 0 {
                    gold += c.a[(y(t - 1), y(t))];
                }
            }
            nll += log_z - gold;
            let [d_e, d_a, d_s, d_z] = &mut grads;
            for t in 0..n {
                for j in 0..l {
                    let p = (alpha[t][j] + beta[t][j] - log_z).exp();
                    d_e[(t * bsz + b, j)] += p;
                    if t == 0 {
                        d_s[(0, j)] += p;
                    }
                    if t == n - 1 {
                        d_z[(0, j)] += p;
                    }
                    if t > 0 {
                        for i in 0..l {
                            d_a[(i, j)] += (alpha[t - 1][i] + c.a[(i, j)] + e(t, j) + beta[t][j]
                                - log_z)
                                .exp();
                        }
                    }
                }
                d_e[(t * bsz + b, y(t))] -= 1.0;
                if t > 0 {
                    d_a[(y(t - 1), y(t))] -= 1.0;
                }
            }
            d_s[(0, y(0))] -= 1.0;
            d_z[(0, y(n - 1))] -= 1.0;
        }
        (nll, grads)
    }

    /// Asserts `|got − want| ≤ abs + rel·|want|` entrywise, naming the entry on failure.
    fn assert_close(what: &str, got: &[f64], want: &[f64], abs: f64, rel: f64) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                g.is_finite() && (g - w).abs() <= abs + rel * w.abs(),
                "{what} entry {k} of {}: {g} vs reference {w}",
                got.len()
            );
        }
    }

    /// Loss and gradients of `crf_nll` (sum, d_out = 1) converted to f64, with the
    /// node's `Debug` text (which names the path taken).
    fn nll_and_grads<R: Real>(
        e: &Array2<R>,
        w: CrfWeights<'_, R>,
        c: &Big,
    ) -> (f64, Vec<Vec<f64>>, String) {
        let (out, node) = crf_nll(e, &c.tags, &c.lens, w, CrfReduction::Sum, true).unwrap();
        let node = node.unwrap();
        let grads = node
            .backward(&Array2::from_elem((1, 1), R::one()))
            .unwrap()
            .into_iter()
            .map(|g| g.unwrap().iter().map(|&v| Real::to_f64(v)).collect())
            .collect();
        (Real::to_f64(out[(0, 0)]), grads, format!("{node:?}"))
    }

    fn flat(m: &M) -> Vec<f64> {
        m.iter().copied().collect()
    }

    #[test]
    fn fast_path_matches_the_log_space_spec() {
        let shapes: [(&[usize], usize); 5] = [
            (&[6, 3, 0], 1),
            (&[5, 5], 2),
            (&[7, 1, 4], 5),
            (&[6, 6, 2], 9),
            (&[3, 8], 11),
        ];
        for (k, &(lens, l)) in shapes.iter().enumerate() {
            let c = Big::new(lens, l, 3.0, 2.0, k as f64 * 0.37);
            let lat = Lattice::new("test", &c.e, &c.lens, c.w()).unwrap();
            let tables = Scaled::new(&lat).expect("moderate inputs take the fast path");
            let fwd = tables.forward(&lat);
            // The spec: log-space α, log Z and the node built on them.
            let mut alpha = vec![0.0; c.e.len()];
            let log_z: Vec<f64> = (0..c.lens.len())
                .map(|b| lat.forward(b, &mut alpha))
                .collect();
            assert_close("log Z", &fwd.log_z, &log_z, 1e-12, 1e-12);
            let spec = CrfNllOp {
                dims: c.e.dim(),
                tags: c.tags.clone(),
                lens: c.lens.clone(),
                saved: Saved::Log {
                    emissions: c.e.clone(),
                    transitions: c.a.clone(),
                    start: c.s.clone(),
                    end: c.z.clone(),
                    alpha,
                    log_z,
                },
                scale: 1.0,
            };
            let d_out = Array2::from_elem((1, 1), 1.0);
            let want = spec.backward(&d_out).unwrap();
            let (_, got, path) = nll_and_grads(&c.e, c.w(), &c);
            assert!(path.contains("\"scaled\""), "{path}");
            for (name, (g, w)) in ["d e", "d A", "d s", "d z"]
                .iter()
                .zip(got.iter().zip(&want))
            {
                assert_close(name, g, &flat(w.as_ref().unwrap()), 1e-12, 1e-10);
            }
            // Marginals: each row of a sentence sums to 1; padding rows are zero.
            let p = crf_marginals(&c.e, &c.lens, c.w()).unwrap();
            for (r, row) in p.rows().into_iter().enumerate() {
                let inside = r / c.lens.len() < c.lens[r % c.lens.len()];
                let want = if inside { 1.0 } else { 0.0 };
                assert!((row.sum() - want).abs() < 1e-12, "shape {k}, row {r}");
            }
        }
    }

    /// Checks the NLL (absolute tolerance `nll_abs`) and all four gradients of `c`
    /// against [`reference_nll`], and that the path named `path` ran; returns the NLL.
    fn matches_reference(c: &Big, path: &str, nll_abs: f64) -> f64 {
        let (want_nll, want) = reference_nll(c);
        let (nll, got, ran) = nll_and_grads(&c.e, c.w(), c);
        assert!(ran.contains(&format!("\"{path}\"")), "{ran}");
        assert_close("nll", &[nll], &[want_nll], nll_abs, 1e-12);
        for (name, (g, w)) in ["d e", "d A", "d s", "d z"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            assert_close(name, g, &flat(w), 1e-12, 1e-9);
        }
        want_nll
    }

    #[test]
    fn large_emissions_match_a_log_space_reference_in_f64() {
        // Emissions of ±50 put α and log Z near ±300 and make most marginals tiny.
        let c = Big::new(&[7, 4, 7], 6, 50.0, 3.0, 0.2);
        let want_nll = matches_reference(&c, "scaled", 1e-9);
        let log_z = crf_log_partition(&c.e, &c.lens, c.w()).unwrap();
        let scores = crf_path_scores(&c.e, &c.tags, &c.lens, c.w()).unwrap();
        let sum: f64 = log_z.iter().zip(&scores).map(|(z, s)| z - s).sum();
        assert_close("Σ (log Z − score)", &[sum], &[want_nll], 1e-9, 1e-12);
    }

    #[test]
    fn f32_fast_path_stays_finite_and_accurate_at_the_range_limit() {
        // ±50 emissions and transitions spreading 25 per column (just under the f32
        // limit of 29): the scaled recursions must still agree with f64 log space.
        let c64 = Big::new(&[9, 5, 9], 7, 50.0, 12.5, 1.1);
        let to32 = |m: &M| m.mapv(|v| v as f32);
        let (e, a, s, z) = (to32(&c64.e), to32(&c64.a), to32(&c64.s), to32(&c64.z));
        // The reference sees exactly the f32 inputs.
        let to64 = |m: &Array2<f32>| m.mapv(f64::from);
        let c = Big {
            e: to64(&e),
            a: to64(&a),
            s: to64(&s),
            z: to64(&z),
            ..c64
        };
        let spread = (0..7)
            .map(|j| {
                let col = c.a.column(j);
                col.fold(f64::MIN, |m, &v| m.max(v)) - col.fold(f64::MAX, |m, &v| m.min(v))
            })
            .fold(0.0, f64::max);
        assert!(spread > 20.0 && spread < 29.0, "spread {spread}");
        let w = CrfWeights {
            transitions: &a,
            start: &s,
            end: &z,
        };
        let (want_nll, want) = reference_nll(&c);
        let (nll, got, path) = nll_and_grads(&e, w, &c);
        assert!(path.contains("\"scaled\""), "{path}");
        assert_close("nll", &[nll], &[want_nll], 1e-4, 1e-6);
        for (name, (g, w)) in ["d e", "d A", "d s", "d z"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            assert_close(name, g, &flat(w), 1e-5, 1e-5);
        }
    }

    #[test]
    fn hard_constraint_transitions_take_the_log_space_path() {
        // −10⁴ and −∞ transitions (hard constraints) spread beyond the fast path's limit.
        let mut c = Big::new(&[6, 3, 6], 5, 4.0, 2.0, 0.8);
        c.a[(0, 2)] = -1e4;
        c.a[(3, 1)] = f64::NEG_INFINITY;
        // Keep the gold paths off the forbidden transition so the NLL stays finite.
        for k in 0..c.tags.len() {
            if k >= 3 && c.tags[k - 3] == 3 && c.tags[k] == 1 {
                c.tags[k] = 4;
            }
        }
        let lat = Lattice::new("test", &c.e, &c.lens, c.w()).unwrap();
        assert!(Scaled::new(&lat).is_none());
        matches_reference(&c, "log-space", 1e-10);
        let p = crf_marginals(&c.e, &c.lens, c.w()).unwrap();
        let sums: Vec<f64> = p.rows().into_iter().map(|r| r.sum()).collect();
        let want_sums: Vec<f64> = (0..p.nrows())
            .map(|r| f64::from(u8::from(r / 3 < c.lens[r % 3])))
            .collect();
        assert_close("marginal row sums", &sums, &want_sums, 1e-12, 0.0);
        // A moderate spread takes the fast path again.
        c.a[(0, 2)] = -1.0;
        c.a[(3, 1)] = -1.0;
        let lat = Lattice::new("test", &c.e, &c.lens, c.w()).unwrap();
        assert!(Scaled::new(&lat).is_some());
    }

    /// Viterbi written out with stored back-pointers (first maximum wins).
    fn reference_viterbi(c: &Big, bio: Option<&BioConstraint>) -> Vec<Vec<usize>> {
        let (bsz, l) = (c.lens.len(), c.a.nrows());
        let start_ok = |j: usize| bio.is_none_or(|b| b.allows_start(j));
        let ok = |i: usize, j: usize| bio.is_none_or(|b| b.allows(i, j));
        c.lens
            .iter()
            .enumerate()
            .map(|(b, &n)| {
                if n == 0 {
                    return Vec::new();
                }
                let mut delta: Vec<f64> = (0..l)
                    .map(|j| {
                        if start_ok(j) {
                            c.s[(0, j)] + c.e[(b, j)]
                        } else {
                            f64::NEG_INFINITY
                        }
                    })
                    .collect();
                let mut back = vec![vec![0; l]; n];
                for (t, back_t) in back.iter_mut().enumerate().skip(1) {
                    let next: Vec<f64> = (0..l)
                        .map(|j| {
                            let (mut best, mut arg) = (f64::NEG_INFINITY, 0);
                            for (i, &d) in delta.iter().enumerate() {
                                let v = d + c.a[(i, j)];
                                if ok(i, j) && v > best {
                                    (best, arg) = (v, i);
                                }
                            }
                            back_t[j] = arg;
                            best + c.e[(t * bsz + b, j)]
                        })
                        .collect();
                    delta = next;
                }
                let (mut best, mut arg) = (f64::NEG_INFINITY, 0);
                for (j, &d) in delta.iter().enumerate() {
                    if d + c.z[(0, j)] > best {
                        (best, arg) = (d + c.z[(0, j)], j);
                    }
                }
                let mut path = vec![arg; n];
                for t in (1..n).rev() {
                    path[t - 1] = back[t][path[t]];
                }
                path
            })
            .collect()
    }

    #[test]
    fn viterbi_matches_a_back_pointer_reference_with_ties() {
        // 11 tags (two lane blocks, one partial); integer scores make many ties, which
        // must go to the lowest tag id exactly as with stored back-pointers.
        let names = [
            "O", "B-A", "I-A", "B-B", "I-B", "B-C", "I-C", "B-D", "I-D", "NN", "VB",
        ];
        let bio = BioConstraint::from_tags(&names);
        for seed in 0..6 {
            let mut c = Big::new(&[8, 5, 1, 8], names.len(), 2.0, 1.5, seed as f64 * 0.9);
            for m in [&mut c.e, &mut c.a, &mut c.s, &mut c.z] {
                m.mapv_inplace(f64::round);
            }
            for constraint in [None, Some(&bio)] {
                let got = viterbi_decode(&c.e, &c.lens, c.w(), constraint).unwrap();
                assert_eq!(
                    got,
                    reference_viterbi(&c, constraint),
                    "seed {seed}, constrained {}",
                    constraint.is_some()
                );
            }
        }
    }
}
