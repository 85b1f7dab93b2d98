//! Three-way checks: hand-written BPTT (the fused op recorded on the tape) = the same
//! single-direction layer composed from primitive tape ops (matmul, add, add_bias,
//! sigmoid, tanh, mul, split, concat, sum) = central finite differences, in f64.
//!
//! The tape has no transpose or row-slicing op, so the composed layer takes the
//! transposed weights (`W_ihᵀ`, `W_hhᵀ`, `U_kᵀ`, `W_kᵀ`) and one input leaf per time
//! step; its gradients are mapped back (transposed, stacked by step) to the fused
//! layout before comparing.

use ndarray::s;
use sclstm_autodiff::{Tape, Var};
use sclstm_core::NumError;
use sclstm_layers::sc_lstm_forward;

use crate::common::{M, compare, compare_fd, det, numeric_grads};
use crate::lstm_checks::{Spec, workspace};

/// Position of each fused-layout input: what it is and how the composed layer takes it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    /// The shared input, one leaf per step.
    X,
    /// A separate task input, one leaf per step.
    TaskX,
    /// A weight matrix, taken transposed.
    Weight,
    /// A bias row, taken as is.
    Bias,
}

fn slots(spec: &Spec) -> Vec<Slot> {
    let n_sep = spec.tasks.iter().flatten().count();
    let mut v = vec![Slot::X];
    v.extend(std::iter::repeat_n(Slot::TaskX, n_sep));
    for _ in 0..(1 + spec.tasks.len()) * spec.dirs {
        v.extend([Slot::Weight, Slot::Weight, Slot::Bias]);
    }
    v
}

/// Leaves of the composed layer and its loss.
struct Composed {
    loss: Var,
    /// Per fused-layout input: its leaves (one per step for inputs, one for parameters).
    leaves: Vec<Vec<Var>>,
}

/// Builds `Σ out ⊙ weights` for a single-direction (SC-)LSTM from primitive ops.
fn build_composed(
    tape: &mut Tape<'_, f64>,
    spec: &Spec,
    v: &[M],
    weights: &M,
) -> Result<Composed, NumError> {
    assert_eq!(spec.dirs, 1, "the composed layer is single-direction");
    let (bsz, h, steps) = (spec.lens.len(), spec.hidden, spec.steps);
    let kinds = slots(spec);
    let mut leaves = Vec::with_capacity(v.len());
    for (m, kind) in v.iter().zip(&kinds) {
        leaves.push(match kind {
            Slot::X | Slot::TaskX => (0..steps)
                .map(|t| tape.leaf(m.slice(s![t * bsz..(t + 1) * bsz, ..]).to_owned()))
                .collect(),
            Slot::Weight => vec![tape.leaf(m.t().to_owned())],
            Slot::Bias => vec![tape.leaf(m.clone())],
        });
    }
    let n_sep = spec.tasks.iter().flatten().count();
    let p = 1 + n_sep;
    let (w_ih_t, w_hh_t, b) = (leaves[p][0], leaves[p + 1][0], leaves[p + 2][0]);
    // Task j: its input leaves (per step) and (U_kᵀ, W_kᵀ, b_k).
    let mut sep = 1;
    let mut tasks = Vec::new();
    for (j, t) in spec.tasks.iter().enumerate() {
        let input = if t.is_some() {
            sep += 1;
            sep - 1
        } else {
            0
        };
        let q0 = p + 3 + 3 * j;
        tasks.push((input, leaves[q0][0], leaves[q0 + 1][0], leaves[q0 + 2][0]));
    }

    let zeros = tape.leaf(M::zeros((bsz, h)));
    let (mut h_prev, mut c_prev) = (zeros, zeros);
    let mut q_prev = vec![zeros; spec.tasks.len()];
    let mut loss: Option<Var> = None;
    for (t, &x_t) in leaves[0].iter().enumerate() {
        let mask = M::from_shape_fn((bsz, h), |(b, _)| if t < spec.lens[b] { 1.0 } else { 0.0 });
        let mask = tape.leaf(mask);
        let xw = tape.matmul(x_t, w_ih_t)?;
        let hw = tape.matmul(h_prev, w_hh_t)?;
        let pre = tape.add(xw, hw)?;
        let pre = tape.add_bias(pre, b)?;
        let parts = tape.split(pre, &[h, h, h, h])?;
        let i = tape.sigmoid(parts[0])?;
        let f = tape.sigmoid(parts[1])?;
        let g = tape.tanh(parts[2])?;
        let o = tape.sigmoid(parts[3])?;
        // c_t = m·(i·g + f·c_{t-1}),  h_t = o·tanh(c_t)   (Eq. 1, masked)
        let ig = tape.mul(i, g)?;
        let fc = tape.mul(f, c_prev)?;
        let c = tape.add(ig, fc)?;
        let c = tape.mul(mask, c)?;
        let tc = tape.tanh(c)?;
        let h_t = tape.mul(o, tc)?;
        let mut cols = vec![h_t];
        for (k, &(input, u_t, w_t, b_k)) in tasks.iter().enumerate() {
            // o^k_t = σ(x^k_t U_kᵀ + q^k_{t-1} W_kᵀ + b_k),  q^k_t = o^k_t·tanh(c_t)   (Eq. 2)
            let xu = tape.matmul(leaves[input][t], u_t)?;
            let qw = tape.matmul(q_prev[k], w_t)?;
            let a = tape.add(xu, qw)?;
            let a = tape.add_bias(a, b_k)?;
            let o_k = tape.sigmoid(a)?;
            let q = tape.mul(o_k, tc)?;
            cols.push(q);
            q_prev[k] = q;
        }
        let out_t = tape.concat(&cols)?;
        let w_t = tape.leaf(weights.slice(s![t * bsz..(t + 1) * bsz, ..]).to_owned());
        let prod = tape.mul(out_t, w_t)?;
        let term = tape.sum(prod)?;
        loss = Some(match loss {
            None => term,
            Some(l) => tape.add(l, term)?,
        });
        h_prev = h_t;
        c_prev = c;
    }
    Ok(Composed {
        loss: loss.expect("internal: at least one step"),
        leaves,
    })
}

/// The composed layer's loss value for fused-layout inputs `v`.
fn composed_loss(spec: &Spec, v: &[M], weights: &M) -> f64 {
    let mut tape = Tape::<f64>::new();
    let c = build_composed(&mut tape, spec, v, weights).expect("composed forward");
    tape.value(c.loss)[(0, 0)]
}

/// The composed layer's gradients, mapped back to the fused layout.
fn composed_grads(spec: &Spec, v: &[M], weights: &M) -> Vec<M> {
    let mut tape = Tape::<f64>::new();
    let c = build_composed(&mut tape, spec, v, weights).expect("composed forward");
    let grads = tape.backward(c.loss).expect("composed backward");
    let dense = |var: Var, dim: (usize, usize)| {
        grads
            .get(var)
            .map_or_else(|| M::zeros(dim), |g| g.to_dense())
    };
    let bsz = spec.lens.len();
    slots(spec)
        .iter()
        .zip(&c.leaves)
        .zip(v)
        .map(|((kind, vars), m)| match kind {
            Slot::X | Slot::TaskX => {
                let mut g = M::zeros(m.dim());
                for (t, &var) in vars.iter().enumerate() {
                    g.slice_mut(s![t * bsz..(t + 1) * bsz, ..])
                        .assign(&dense(var, (bsz, m.ncols())));
                }
                g
            }
            Slot::Weight => dense(vars[0], (m.ncols(), m.nrows())).t().to_owned(),
            Slot::Bias => dense(vars[0], m.dim()),
        })
        .collect()
}

/// The hand-written BPTT, recorded as a fused node on the tape and back-propagated by it.
fn fused_through_tape(spec: &Spec, v: &[M], weights: &M) -> (f64, Vec<M>) {
    let ws = workspace();
    let mut tape = Tape::<f64>::new();
    let vars: Vec<Var> = v.iter().map(|m| tape.leaf(m.clone())).collect();
    let values: Vec<M> = vars.iter().map(|&x| tape.value(x).clone()).collect();
    let (out, node) = sc_lstm_forward(&ws, &spec.args(&values), true).expect("fused forward");
    let y = tape.push_fused(&vars, out, node.expect("recorded"));
    let w = tape.leaf(weights.clone());
    let prod = tape.mul(y, w).expect("mul");
    let loss = tape.sum(prod).expect("sum");
    let grads = tape
        .backward(loss)
        .expect("backward through the fused node");
    let g = vars
        .iter()
        .zip(v)
        .map(|(&x, m)| {
            grads
                .get(x)
                .map_or_else(|| M::zeros(m.dim()), |g| g.to_dense())
        })
        .collect();
    (tape.value(loss)[(0, 0)], g)
}

fn three_way(spec: &Spec) {
    let v = spec.inputs(0.71);
    let names = spec.args(&v).input_names();
    let weights = det(spec.rows(), spec.width(), 6.5, 1.0);
    let (fused_loss, hand) = fused_through_tape(spec, &v, &weights);
    let composed_value = composed_loss(spec, &v, &weights);
    assert!(
        (fused_loss - composed_value).abs() <= 1e-12 * (1.0 + composed_value.abs()),
        "forward: fused {fused_loss} vs composed {composed_value}"
    );
    let composed = composed_grads(spec, &v, &weights);
    let numeric = numeric_grads(&v, &|w: &[M]| composed_loss(spec, w, &weights));
    compare(
        "hand BPTT vs composed tape",
        &names,
        &hand,
        &composed,
        1e-12,
        1e-10,
    )
    .unwrap();
    compare_fd("hand BPTT vs finite differences", &names, &hand, &numeric).unwrap();
    compare_fd(
        "composed tape vs finite differences",
        &names,
        &composed,
        &numeric,
    )
    .unwrap();
}

#[test]
fn lstm_three_way_hand_bptt_composed_tape_finite_differences() {
    three_way(&Spec {
        steps: 4,
        lens: vec![4, 2],
        input: 3,
        hidden: 3,
        dirs: 1,
        tasks: vec![],
    });
}

#[test]
fn sc_lstm_shared_three_way_hand_bptt_composed_tape_finite_differences() {
    three_way(&Spec {
        steps: 4,
        lens: vec![3, 4],
        input: 3,
        hidden: 3,
        dirs: 1,
        tasks: vec![None, None],
    });
}

#[test]
fn sc_lstm_chained_three_way_hand_bptt_composed_tape_finite_differences() {
    three_way(&Spec {
        steps: 4,
        lens: vec![4, 1],
        input: 2,
        hidden: 3,
        dirs: 1,
        tasks: vec![Some(4), None],
    });
}
