//! Viterbi decoding: the best tag path under emissions and transitions (max-plus sweeps).

use super::*;

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
pub(super) fn vec_mat_max_plus<R: Real>(out: &mut [R], x: &[R], m: &[R]) {
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
pub(super) fn first_argmax<'a, R: Real>(pairs: impl Iterator<Item = (&'a R, &'a R)>) -> usize {
    let (mut best, mut arg) = (R::neg_infinity(), 0);
    for (i, (&x, &y)) in pairs.enumerate() {
        if x + y > best {
            best = x + y;
            arg = i;
        }
    }
    arg
}
