//! The fast path: forward–backward in linear space with per-step renormalisation.

use super::*;

/// Tables of the linear-space forward–backward (the fast path; equations in the module
/// docs). Built only when the inputs pass the range check of [`Scaled::new`].
pub(super) struct Scaled<R: Real> {
    /// Number of tags `L`.
    pub(super) l: usize,
    /// Row stride `L'` of the tables: `L` rounded up to a multiple of [`LANES`].
    pub(super) lp: usize,
    /// `E` (L·L'), `[i·L' + j] = exp(A[i, j] − c_j)`, zero for `j ≥ L`: the forward step
    /// `u = α̂ E` adds rows.
    pub(super) e: Vec<R>,
    /// `Eᵀ` (L·L'), `[j·L' + i]`, zero for `i ≥ L`: the backward step `E w` adds rows of `Eᵀ`.
    pub(super) e_t: Vec<R>,
    /// `c` (L): column maxima of `A`.
    pub(super) col_max: Vec<R>,
    /// `ẑ` (L): `exp(z − max z)`.
    pub(super) z_hat: Vec<R>,
    /// `max z`.
    pub(super) z_max: R,
}

/// Forward quantities of the fast path for a whole batch, saved for the backward.
pub(super) struct ScaledForward<R: Real> {
    /// `α̂` (T·B·L), row `t·B + b`: `exp(α_t − M_t)`, maximum 1 per row.
    pub(super) alpha: Vec<R>,
    /// `g` (T·B·L): the emission factors `g_t` of the module docs, maximum 1 per row.
    pub(super) gain: Vec<R>,
    /// `1 / m_t` (T·B): inverse of the forward renormaliser (1 at `t = 0`).
    pub(super) inv_renorm: Vec<R>,
    /// `log Z` (B), 0 for an empty sentence.
    pub(super) log_z: Vec<R>,
}

/// Writes `g[j] = exp(x[j] + off[j] − k)` with `k = max_j (x[j] + off[j])` and returns `k`.
#[inline]
pub(super) fn gain_row<R: Real>(g: &mut [R], x: &[R], off: &[R]) -> R {
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
pub(super) const LANES: usize = 8;

/// `acc += coef · row`.
#[inline]
pub(super) fn axpy<R: Real>(acc: &mut [R], coef: R, row: &[R]) {
    for (a, &r) in acc.iter_mut().zip(row) {
        *a += coef * r;
    }
}

/// `out = x M` for `x` (L) and `M` (L·L', rows padded to a multiple of [`LANES`] with
/// zeros): `out[j] = Σ_i x[i] M[i·L' + j]` for every `j < L'`. Each block of [`LANES`]
/// columns is summed in a fixed-size accumulator the compiler keeps in registers, so
/// `out` is written once instead of once per row.
#[inline]
pub(super) fn vec_mat<R: Real>(out: &mut [R], x: &[R], m: &[R]) {
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
pub(super) fn row_max<R: Real>(v: &[R]) -> R {
    v.iter()
        .fold(R::neg_infinity(), |m, &x| if x > m { x } else { m })
}

impl<R: Real> Scaled<R> {
    /// The tables, or `None` when an input is not finite or a column of `A` (or `z`)
    /// spreads over more than `−ln(min positive normal) / 3`: then the log-space spec runs.
    pub(super) fn new(lat: &Lattice<'_, R>) -> Option<Self> {
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
    pub(super) fn forward(&self, lat: &Lattice<'_, R>) -> ScaledForward<R> {
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
    pub(super) fn forward_sentence(
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
    pub(super) fn marginals_sentence(
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
pub(super) struct PairFactors<R: Real> {
    /// `x = scale · α̂_{t-1} / (m_t σ_t)` (T·B·L).
    pub(super) x: Vec<R>,
    /// `w = g_t ⊙ β̂_t` (T·B·L'), zero padding.
    pub(super) w: Vec<R>,
}

impl<R: Real> PairFactors<R> {
    /// Zeroed factors for `rows = T·B` rows.
    pub(super) fn zeros(rows: usize, tables: &Scaled<R>) -> Self {
        PairFactors {
            x: vec![R::zero(); rows * tables.l],
            w: vec![R::zero(); rows * tables.lp],
        }
    }

    /// `Σ_{b,t} scale · p_t(i, j)` (L·L): `E[i, j] · Σ_r x_r[i] w_r[j]`, one register
    /// block of [`LANES`] columns at a time.
    pub(super) fn expected_transitions(&self, tables: &Scaled<R>) -> Vec<R> {
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
