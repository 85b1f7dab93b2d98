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

mod constraint;
mod log_space;
mod scaled;
mod viterbi;

pub use constraint::BioConstraint;
use log_space::*;
use scaled::*;
pub use viterbi::viterbi_decode;

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

#[cfg(test)]
mod tests;
