//! Gradient checking by central finite differences in f64.
//!
//! For every element `x_i` of every input, the numeric derivative is
//! `(L(x + ε e_i) − L(x − ε e_i)) / 2ε` with `ε = 1e-6`, compared with the tape's
//! analytic gradient. An element passes when
//! `|analytic − numeric| ≤ tol · (1 + max(|analytic|, |numeric|))`, i.e. an absolute
//! and a relative tolerance both equal to `tol` (default 1e-6); the reported error of an
//! element is `|a − n| / (1 + max(|a|, |n|))`, so "max error ≤ 1e-6" is the pass rule.
//!
//! This is the workspace's one finite-difference implementation ([`numeric_gradient`])
//! and one pass rule ([`fd_error`]): the layer tests, the CRF tests and the whole-model
//! checks use both.
//!
//! [`check`] is the reusable entry point (fused layers call it with their own graph);
//! [`registry`] lists the checks of every primitive op and of small composed graphs,
//! run by `sclstm gradcheck` and by this crate's tests.

use std::fmt;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sclstm_core::{FusedOp, Matrix, NumError};

use crate::{DropoutRate, ParamStore, Reduction, Tape, Var};

/// Finite-difference step.
pub const EPS: f64 = 1e-6;
/// Default pass threshold on the combined abs + rel error.
pub const TOL: f64 = 1e-6;

/// The worst element of a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Worst {
    /// Which input.
    pub input: usize,
    /// Flat (row-major) element index in that input.
    pub index: usize,
    /// Shape of that input.
    pub shape: (usize, usize),
    /// The tape's gradient.
    pub analytic: f64,
    /// The finite-difference gradient.
    pub numeric: f64,
}

/// Outcome of one gradient check.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Check name.
    pub name: String,
    /// Largest `|a − n| / (1 + max(|a|, |n|))` over all checked elements.
    pub max_error: f64,
    /// Where `max_error` occurred.
    pub worst: Option<Worst>,
    /// Elements compared.
    pub checked: usize,
    /// The threshold used.
    pub tol: f64,
}

impl Report {
    /// Whether every element is within tolerance.
    pub fn passed(&self) -> bool {
        self.max_error <= self.tol
    }
}

impl fmt::Display for Report {
    /// One line: `ok   matmul  max err 1.2e-10 (24 elements)`, plus the worst element on failure.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<4} {:<28} max err {:.2e} ({} elements)",
            if self.passed() { "ok" } else { "FAIL" },
            self.name,
            self.max_error,
            self.checked
        )?;
        if let (false, Some(w)) = (self.passed(), &self.worst) {
            write!(
                f,
                "; worst: input {} {:?} index {}: analytic {:.9e} numeric {:.9e}",
                w.input, w.shape, w.index, w.analytic, w.numeric
            )?;
        }
        Ok(())
    }
}

/// Runs `build` on a fresh tape with `inputs` as leaves; it must return a (1, 1) loss.
fn eval_loss<F>(inputs: &[Matrix<f64>], build: &F) -> Result<f64, NumError>
where
    F: Fn(&mut Tape<'_, f64>, &[Var]) -> Result<Var, NumError>,
{
    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|m| tape.leaf(m.clone())).collect();
    let loss = build(&mut tape, &vars)?;
    let v = tape.value(loss);
    if v.dim() != (1, 1) {
        return Err(NumError::NonScalarLoss {
            shape: vec![v.nrows(), v.ncols()],
        });
    }
    Ok(v[[0, 0]])
}

/// The error of one element under the pass rule of every finite-difference check in the
/// workspace: `|a − n| / (1 + max(|a|, |n|))` (an element passes when it is ≤ the
/// tolerance, by default [`TOL`]); NaN counts as infinitely wrong.
pub fn fd_error(analytic: f64, numeric: f64) -> f64 {
    let err = (analytic - numeric).abs() / (1.0 + analytic.abs().max(numeric.abs()));
    if err.is_nan() { f64::INFINITY } else { err }
}

/// Central differences (step [`EPS`]) of the scalar `f` w.r.t. every element of every
/// matrix of `inputs`, in the inputs' shapes: the one numeric gradient of the workspace.
///
/// # Errors
/// The first error of `f`.
pub fn numeric_gradient<E>(
    inputs: &[Matrix<f64>],
    mut f: impl FnMut(&[Matrix<f64>]) -> Result<f64, E>,
) -> Result<Vec<Matrix<f64>>, E> {
    let mut work = inputs.to_vec();
    let mut out = Vec::with_capacity(inputs.len());
    for k in 0..inputs.len() {
        let mut g = Matrix::zeros(inputs[k].dim());
        let cols = inputs[k].ncols();
        for index in 0..inputs[k].len() {
            let (r, c) = (index / cols, index % cols);
            let x = inputs[k][[r, c]];
            work[k][[r, c]] = x + EPS;
            let up = f(&work)?;
            work[k][[r, c]] = x - EPS;
            let down = f(&work)?;
            work[k][[r, c]] = x;
            g[[r, c]] = (up - down) / (2.0 * EPS);
        }
        out.push(g);
    }
    Ok(out)
}

/// Checks the gradient of the loss `build` computes w.r.t. every element of `inputs`.
///
/// `build` receives a fresh tape and the inputs as leaf vars; it is called `1 + 2·n`
/// times (`n` = total input elements), so anything random inside it must be seeded
/// inside it (e.g. a dropout mask) to be the same function each time.
///
/// # Errors
/// Whatever `build` or backward returns.
pub fn check<F>(name: &str, inputs: &[Matrix<f64>], build: F) -> Result<Report, NumError>
where
    F: Fn(&mut Tape<'_, f64>, &[Var]) -> Result<Var, NumError>,
{
    check_with(name, inputs, TOL, build)
}

/// [`check`] with an explicit tolerance.
///
/// # Errors
/// Whatever `build` or backward returns.
pub fn check_with<F>(
    name: &str,
    inputs: &[Matrix<f64>],
    tol: f64,
    build: F,
) -> Result<Report, NumError>
where
    F: Fn(&mut Tape<'_, f64>, &[Var]) -> Result<Var, NumError>,
{
    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|m| tape.leaf(m.clone())).collect();
    let loss = build(&mut tape, &vars)?;
    let grads = tape.backward(loss)?;
    let mut report = Report {
        name: name.to_string(),
        max_error: 0.0,
        worst: None,
        checked: 0,
        tol,
    };
    let numeric_grads = numeric_gradient(inputs, |work| eval_loss(work, &build))?;
    for (k, (input, numeric_k)) in inputs.iter().zip(&numeric_grads).enumerate() {
        let analytic = grads
            .get(vars[k])
            .map_or_else(|| Matrix::zeros(input.dim()), |g| g.to_dense());
        for index in 0..input.len() {
            let (r, c) = (index / input.ncols(), index % input.ncols());
            let numeric = numeric_k[[r, c]];
            let a = analytic[[r, c]];
            let err = fd_error(a, numeric);
            report.checked += 1;
            if err > report.max_error {
                report.max_error = err;
                report.worst = Some(Worst {
                    input: k,
                    index,
                    shape: input.dim(),
                    analytic: a,
                    numeric,
                });
            }
        }
    }
    Ok(report)
}

/// One registered check.
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// Name printed by `sclstm gradcheck`.
    pub name: &'static str,
    /// Runs the check.
    pub run: fn() -> Result<Report, NumError>,
}

/// A deterministic test matrix with entries `sin(0.7·k + seed)` (reproducible anywhere).
pub fn sin_matrix(rows: usize, cols: usize, seed: f64) -> Matrix<f64> {
    Matrix::from_shape_fn((rows, cols), |(i, j)| {
        ((i * cols + j) as f64 * 0.7 + seed).sin()
    })
}

/// A weighted sum `Σ W ⊙ Y` with fixed weights, so every output element gets a
/// distinct upstream gradient.
///
/// # Errors
/// A foreign var.
pub fn weighted_sum(tape: &mut Tape<'_, f64>, y: Var) -> Result<Var, NumError> {
    let (r, c) = tape.shape(y);
    let w = tape.leaf(sin_matrix(r, c, 0.3) + 0.5);
    let p = tape.mul(y, w)?;
    tape.sum(p)
}

/// Every check of the primitive ops and of small composed graphs.
pub fn registry() -> Vec<GradCheck> {
    vec![
        GradCheck {
            name: "matmul",
            run: check_matmul,
        },
        GradCheck {
            name: "add",
            run: check_add,
        },
        GradCheck {
            name: "add_bias",
            run: check_add_bias,
        },
        GradCheck {
            name: "mul",
            run: check_mul,
        },
        GradCheck {
            name: "sigmoid",
            run: check_sigmoid,
        },
        GradCheck {
            name: "tanh",
            run: check_tanh,
        },
        GradCheck {
            name: "scale",
            run: check_scale,
        },
        GradCheck {
            name: "concat",
            run: check_concat,
        },
        GradCheck {
            name: "split",
            run: check_split,
        },
        GradCheck {
            name: "select_cols",
            run: check_select_cols,
        },
        GradCheck {
            name: "embedding",
            run: check_embedding,
        },
        GradCheck {
            name: "char_conv_maxpool",
            run: check_char_conv,
        },
        GradCheck {
            name: "dropout",
            run: check_dropout,
        },
        GradCheck {
            name: "cross_entropy_mean_masked",
            run: check_cross_entropy_mean,
        },
        GradCheck {
            name: "cross_entropy_sum",
            run: check_cross_entropy_sum,
        },
        GradCheck {
            name: "scalar_mix",
            run: check_scalar_mix,
        },
        GradCheck {
            name: "sum",
            run: check_sum,
        },
        GradCheck {
            name: "mean",
            run: check_mean,
        },
        GradCheck {
            name: "fused_op",
            run: check_fused,
        },
        GradCheck {
            name: "graph_fan_out",
            run: check_fan_out,
        },
        GradCheck {
            name: "graph_lstm_step_masked",
            run: check_lstm_step,
        },
        GradCheck {
            name: "graph_embedding_reused",
            run: check_embedding_reused,
        },
        GradCheck {
            name: "graph_param_store",
            run: check_param_graph,
        },
    ]
}

/// Runs every registered check; a check that errors is reported as failed.
pub fn run_all() -> Vec<Report> {
    registry()
        .into_iter()
        .map(|c| {
            (c.run)().unwrap_or_else(|e| Report {
                name: format!("{} (error: {e})", c.name),
                max_error: f64::INFINITY,
                worst: None,
                checked: 0,
                tol: TOL,
            })
        })
        .collect()
}

fn check_matmul() -> Result<Report, NumError> {
    check(
        "matmul",
        &[sin_matrix(3, 4, 0.1), sin_matrix(4, 5, 0.2)],
        |t, v| {
            let y = t.matmul(v[0], v[1])?;
            weighted_sum(t, y)
        },
    )
}

fn check_add() -> Result<Report, NumError> {
    check(
        "add",
        &[sin_matrix(2, 3, 0.1), sin_matrix(2, 3, 0.9)],
        |t, v| {
            let y = t.add(v[0], v[1])?;
            weighted_sum(t, y)
        },
    )
}

fn check_add_bias() -> Result<Report, NumError> {
    check(
        "add_bias",
        &[sin_matrix(4, 3, 0.1), sin_matrix(1, 3, 0.9)],
        |t, v| {
            let y = t.add_bias(v[0], v[1])?;
            weighted_sum(t, y)
        },
    )
}

fn check_mul() -> Result<Report, NumError> {
    check(
        "mul",
        &[sin_matrix(3, 3, 0.4), sin_matrix(3, 3, 1.9)],
        |t, v| {
            let y = t.mul(v[0], v[1])?;
            weighted_sum(t, y)
        },
    )
}

fn check_sigmoid() -> Result<Report, NumError> {
    check("sigmoid", &[sin_matrix(3, 4, 0.2) * 3.0], |t, v| {
        let y = t.sigmoid(v[0])?;
        weighted_sum(t, y)
    })
}

fn check_tanh() -> Result<Report, NumError> {
    check("tanh", &[sin_matrix(3, 4, 0.5) * 2.0], |t, v| {
        let y = t.tanh(v[0])?;
        weighted_sum(t, y)
    })
}

fn check_scale() -> Result<Report, NumError> {
    check("scale", &[sin_matrix(2, 2, 0.5)], |t, v| {
        let y = t.scale(v[0], 0.37)?;
        weighted_sum(t, y)
    })
}

fn check_concat() -> Result<Report, NumError> {
    let inputs = [
        sin_matrix(3, 2, 0.1),
        sin_matrix(3, 1, 0.2),
        sin_matrix(3, 4, 0.3),
    ];
    check("concat", &inputs, |t, v| {
        let y = t.concat(v)?;
        weighted_sum(t, y)
    })
}

fn check_split() -> Result<Report, NumError> {
    check("split", &[sin_matrix(3, 6, 0.1)], |t, v| {
        let parts = t.split(v[0], &[1, 3, 2])?;
        // Recombine out of order with a nonlinearity so each part matters differently.
        let a = t.tanh(parts[2])?;
        let y = t.concat(&[a, parts[0], parts[1]])?;
        weighted_sum(t, y)
    })
}

fn check_select_cols() -> Result<Report, NumError> {
    check("select_cols", &[sin_matrix(3, 6, 0.2)], |t, v| {
        // Out of order, with column 3 in two blocks: its gradient is the sum of both.
        let y = t.select_cols(v[0], &[(3, 2), (0, 1), (2, 2)])?;
        let y = t.tanh(y)?;
        weighted_sum(t, y)
    })
}

fn check_embedding() -> Result<Report, NumError> {
    // Repeated ids (2 appears three times) must sum; row 4 is never used (zero grad).
    check("embedding", &[sin_matrix(5, 3, 0.1)], |t, v| {
        let y = t.embedding(v[0], &[2, 0, 2, 3, 2])?;
        weighted_sum(t, y)
    })
}

fn check_char_conv() -> Result<Report, NumError> {
    // 3 words of widths 4 (padded), lengths 4, 1, 2; C_in = 2, C_out = 3. Padding rows
    // hold large values that must not leak (their gradient must be zero).
    let mut x = sin_matrix(12, 2, 0.1);
    for r in [5, 6, 7, 10, 11] {
        x.row_mut(r).fill(5.0);
    }
    let inputs = [x, sin_matrix(6, 3, 0.7), sin_matrix(1, 3, 0.2)];
    check("char_conv_maxpool", &inputs, |t, v| {
        let y = t.char_conv_maxpool(v[0], v[1], v[2], 4, &[4, 1, 2])?;
        weighted_sum(t, y)
    })
}

fn check_dropout() -> Result<Report, NumError> {
    check("dropout", &[sin_matrix(4, 5, 0.1)], |t, v| {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let rate = DropoutRate::new(0.4).expect("internal: valid rate");
        let y = t.dropout(v[0], rate, &mut rng)?;
        weighted_sum(t, y)
    })
}

fn check_cross_entropy_mean() -> Result<Report, NumError> {
    check(
        "cross_entropy_mean_masked",
        &[sin_matrix(5, 4, 0.3) * 2.0],
        |t, v| {
            // Row 2 is padding: its label is out of range on purpose and must be ignored.
            t.cross_entropy(
                v[0],
                &[1, 3, 99, 0, 2],
                &[true, true, false, true, true],
                Reduction::Mean,
            )
        },
    )
}

fn check_cross_entropy_sum() -> Result<Report, NumError> {
    check("cross_entropy_sum", &[sin_matrix(3, 3, 0.8)], |t, v| {
        t.cross_entropy(v[0], &[2, 0, 1], &[true; 3], Reduction::Sum)
    })
}

fn check_scalar_mix() -> Result<Report, NumError> {
    // Three layers of width 2 for four positions; non-uniform mixing logits, γ ≠ 1.
    check(
        "scalar_mix",
        &[
            sin_matrix(4, 6, 0.2),
            array_row(&[0.3, -0.8, 0.5]),
            array_row(&[1.7]),
        ],
        |t, v| {
            let y = t.scalar_mix(v[0], v[1], v[2])?;
            weighted_sum(t, y)
        },
    )
}

/// A (1, n) matrix.
fn array_row(values: &[f64]) -> Matrix<f64> {
    Matrix::from_shape_vec((1, values.len()), values.to_vec()).expect("internal: one row")
}

fn check_sum() -> Result<Report, NumError> {
    check("sum", &[sin_matrix(2, 3, 0.8)], |t, v| {
        let y = t.tanh(v[0])?;
        t.sum(y)
    })
}

fn check_mean() -> Result<Report, NumError> {
    check("mean", &[sin_matrix(2, 3, 0.8)], |t, v| {
        let y = t.tanh(v[0])?;
        t.mean(y)
    })
}

/// `Y = X ⊙ X` as a fused op, with a switchable (wrong) backward for the negative test.
#[derive(Debug)]
pub(crate) struct Square {
    pub(crate) x: Matrix<f64>,
    /// When true the backward returns `X` instead of `2X`.
    pub(crate) wrong: bool,
}

impl FusedOp<f64> for Square {
    fn name(&self) -> &'static str {
        "square"
    }

    fn backward(&self, d_out: &Matrix<f64>) -> Result<Vec<Option<Matrix<f64>>>, NumError> {
        let factor = if self.wrong { 1.0 } else { 2.0 };
        Ok(vec![Some(d_out * &self.x * factor)])
    }
}

/// Builds `Σ W ⊙ square(X)` through the fused-op path.
pub(crate) fn square_loss(t: &mut Tape<'_, f64>, x: Var, wrong: bool) -> Result<Var, NumError> {
    let xv = t.value(x).clone();
    let y = t.push_fused(&[x], &xv * &xv, Box::new(Square { x: xv, wrong }));
    weighted_sum(t, y)
}

fn check_fused() -> Result<Report, NumError> {
    check("fused_op", &[sin_matrix(2, 3, 0.5)], |t, v| {
        square_loss(t, v[0], false)
    })
}

fn check_fan_out() -> Result<Report, NumError> {
    // x is used four times: z = x ⊙ x + tanh(x) · W, loss = Σ w ⊙ (z + x).
    check(
        "graph_fan_out",
        &[sin_matrix(3, 3, 0.2), sin_matrix(3, 3, 1.1)],
        |t, v| {
            let sq = t.mul(v[0], v[0])?;
            let th = t.tanh(v[0])?;
            let p = t.matmul(th, v[1])?;
            let z = t.add(sq, p)?;
            let y = t.add(z, v[0])?;
            weighted_sum(t, y)
        },
    )
}

fn check_lstm_step() -> Result<Report, NumError> {
    // One LSTM step from primitives (paper Eq. 1) with a masked softmax head:
    // gates = x·U + h·W + b, [i f g o] split, c = i⊙g + f⊙c0, h = o⊙tanh(c).
    let (b, d, h) = (3, 2, 2);
    let inputs = [
        sin_matrix(b, d, 0.1),
        sin_matrix(b, h, 0.2) * 0.5,
        sin_matrix(b, h, 0.3),
        sin_matrix(d, 4 * h, 0.4),
        sin_matrix(h, 4 * h, 0.5),
        sin_matrix(1, 4 * h, 0.6),
        sin_matrix(h, 3, 0.7),
    ];
    check("graph_lstm_step_masked", &inputs, |t, v| {
        let (x, h0, c0, u, w, bias, out) = (v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
        let xu = t.matmul(x, u)?;
        let hw = t.matmul(h0, w)?;
        let pre = t.add(xu, hw)?;
        let pre = t.add_bias(pre, bias)?;
        let parts = t.split(pre, &[h, h, h, h])?;
        let i = t.sigmoid(parts[0])?;
        let f = t.sigmoid(parts[1])?;
        let g = t.tanh(parts[2])?;
        let o = t.sigmoid(parts[3])?;
        let ig = t.mul(i, g)?;
        let fc = t.mul(f, c0)?;
        let c = t.add(ig, fc)?;
        let tc = t.tanh(c)?;
        let hh = t.mul(o, tc)?;
        let logits = t.matmul(hh, out)?;
        let ce = t.cross_entropy(logits, &[0, 2, 1], &[true, false, true], Reduction::Mean)?;
        t.scale(ce, 0.7)
    })
}

fn check_embedding_reused() -> Result<Report, NumError> {
    // One table feeds two lookups (sparse rows merged) and a dense matmul (sparse
    // rows added into a dense gradient).
    check(
        "graph_embedding_reused",
        &[sin_matrix(6, 3, 0.4), sin_matrix(3, 3, 0.8)],
        |t, v| {
            let a = t.embedding(v[0], &[5, 1, 5])?;
            let b = t.embedding(v[0], &[1, 2, 0])?;
            let ab = t.mul(a, b)?;
            let first = t.slice_cols(v[0], 0, 3)?;
            let dense = t.matmul(first, v[1])?;
            let ys = weighted_sum(t, ab)?;
            let yd = weighted_sum(t, dense)?;
            t.add(ys, yd)
        },
    )
}

fn check_param_graph() -> Result<Report, NumError> {
    // Parameters entered from a store must get the same gradients as leaves: compare
    // the store path against the finite differences of the leaf path.
    let table = sin_matrix(6, 2, 0.1);
    let w = sin_matrix(2, 2, 0.9);
    let ids = [4, 1, 4];
    let mut store = ParamStore::new();
    let table_id = store
        .add("emb", table.clone())
        .expect("internal: a fresh store has no duplicate names");
    let w_id = store
        .add("w", w.clone())
        .expect("internal: a fresh store has no duplicate names");
    let mut tape = Tape::with_params(&store);
    let tv = tape.param(table_id)?;
    let wv = tape.param(w_id)?;
    let e = tape.embedding(tv, &ids)?;
    let y = tape.matmul(e, wv)?;
    let loss = weighted_sum(&mut tape, y)?;
    let grads = tape.backward(loss)?.into_param_grads();
    let mut report = check("graph_param_store", &[table, w], |t, v| {
        let e = t.embedding(v[0], &ids)?;
        let y = t.matmul(e, v[1])?;
        weighted_sum(t, y)
    })?;
    // The store path must agree with the leaf path that was just verified.
    let mut leaf_tape = Tape::new();
    let lt = leaf_tape.leaf(store.get(table_id).clone());
    let lw = leaf_tape.leaf(store.get(w_id).clone());
    let e = leaf_tape.embedding(lt, &ids)?;
    let y = leaf_tape.matmul(e, lw)?;
    let loss = weighted_sum(&mut leaf_tape, y)?;
    let leaf = leaf_tape.backward(loss)?;
    for (pid, var) in [(table_id, lt), (w_id, lw)] {
        let a = grads.get(pid).map(|g| g.to_dense());
        let b = leaf.get(var).map(|g| g.to_dense());
        if a != b {
            report.max_error = f64::INFINITY;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_check_passes() {
        let reports = run_all();
        assert_eq!(reports.len(), registry().len());
        for r in &reports {
            assert!(r.passed(), "{r}");
            assert!(r.checked > 0, "{r}");
        }
    }

    #[test]
    fn checker_rejects_a_wrong_backward() {
        let r = check("square_wrong", &[sin_matrix(2, 3, 0.5)], |t, v| {
            square_loss(t, v[0], true)
        })
        .unwrap();
        assert!(!r.passed(), "{r}");
        assert!(r.max_error > 1e-2);
        let w = r.worst.as_ref().unwrap();
        // Wrong by a factor 2 exactly: analytic = numeric / 2.
        assert!((w.analytic * 2.0 - w.numeric).abs() < 1e-6, "{r}");
        assert!(r.to_string().starts_with("FAIL"));
    }

    #[test]
    fn worst_element_names_the_wrong_input_and_index() {
        // Input 0 has a correct gradient, input 1 one half too small everywhere: the
        // worst element is input 1's largest numeric gradient 2·x·w (the error
        // |n/2| / (1 + |n|) grows with |n|).
        let inputs = [sin_matrix(2, 2, 0.1), sin_matrix(3, 2, 0.9)];
        let r = check("mixed", &inputs, |t, v| {
            let sq = t.mul(v[0], v[0])?;
            let good = weighted_sum(t, sq)?;
            let bad = square_loss(t, v[1], true)?;
            t.add(good, bad)
        })
        .unwrap();
        assert!(!r.passed(), "{r}");
        assert_eq!(r.checked, 4 + 6);
        let w = sin_matrix(3, 2, 0.3) + 0.5;
        let grad = &inputs[1] * &w * 2.0;
        let grad = grad.as_slice().unwrap();
        let largest = (0..6)
            .max_by(|&a, &b| grad[a].abs().total_cmp(&grad[b].abs()))
            .unwrap();
        let worst = r.worst.as_ref().unwrap();
        assert_eq!(
            (worst.input, worst.index, worst.shape),
            (1, largest, (3, 2)),
            "{r}"
        );
        assert!((worst.numeric - grad[largest]).abs() < 1e-8, "{r}");
        assert!(r.to_string().contains("worst: input 1 (3, 2)"), "{r}");
    }

    #[test]
    fn a_non_scalar_loss_is_an_error() {
        let err = check("not_a_loss", &[sin_matrix(2, 3, 0.5)], |t, v| t.tanh(v[0])).unwrap_err();
        assert!(
            matches!(&err, NumError::NonScalarLoss { shape } if shape == &[2, 3]),
            "{err}"
        );
    }
}
