//! Tests of the CRF: every path against the log-space reference, brute-force enumeration
//! and finite differences.

use super::{
    BioConstraint, CrfNllOp, CrfReduction, CrfWeights, Lattice, Saved, Scaled, crf_log_partition,
    crf_marginals, crf_nll, crf_path_scores, viterbi_decode,
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
                    sclstm_autodiff::gradcheck::fd_error(got, num)
                        <= sclstm_autodiff::gradcheck::TOL,
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
        let (out, _) = crf_nll(&c.e, &c.tags, &c.lens, c.w(), CrfReduction::Sum, false).unwrap();
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
                    let terms: Vec<f64> = (0..l).map(|i| alpha[t - 1][i] + c.a[(i, j)]).collect();
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
                        d_a[(i, j)] +=
                            (alpha[t - 1][i] + c.a[(i, j)] + e(t, j) + beta[t][j] - log_z).exp();
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
