//! LSTM / SC-LSTM layer checks: naive host reference forward, central finite
//! differences on every input and parameter, padding, task isolation, cache reuse.

use std::sync::Arc;

use ndarray::{Array1, Array2, ArrayView1, s};
use sclstm_core::{FusedOp, NumError};
use sclstm_cpu::CpuBackend;
use sclstm_layers::{
    DirectionWeights, LayerWorkspace, LstmWeights, ScLstmArgs, TaskGateWeights, TaskInput,
    sc_lstm_forward,
};

use crate::common::{M, all_some, compare, compare_fd, det, numeric_grads, weighted_sum};

/// Geometry of one layer under test.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Padded steps T.
    pub steps: usize,
    /// Sentence lengths (B entries).
    pub lens: Vec<usize>,
    /// Shared input width D.
    pub input: usize,
    /// Hidden size H.
    pub hidden: usize,
    /// Directions (1 or 2).
    pub dirs: usize,
    /// Per task: `None` = shared input, `Some(D_k)` = separate input of width D_k.
    pub tasks: Vec<Option<usize>>,
}

impl Spec {
    pub fn rows(&self) -> usize {
        self.steps * self.lens.len()
    }

    pub fn width(&self) -> usize {
        self.dirs * (1 + self.tasks.len()) * self.hidden
    }

    /// Every input of the op in gradient order, with deterministic values.
    pub fn inputs(&self, seed: f64) -> Vec<M> {
        let (rows, d, h) = (self.rows(), self.input, self.hidden);
        let mut v = vec![det(rows, d, seed, 1.0)];
        for (j, t) in self.tasks.iter().enumerate() {
            if let Some(dk) = t {
                v.push(det(rows, *dk, seed + 10.0 + j as f64, 1.0));
            }
        }
        for di in 0..self.dirs {
            let sd = seed + 20.0 + 3.0 * di as f64;
            v.push(det(4 * h, d, sd, 0.6));
            v.push(det(4 * h, h, sd + 1.0, 0.6));
            v.push(det(1, 4 * h, sd + 2.0, 0.4));
        }
        for (j, t) in self.tasks.iter().enumerate() {
            let dk = t.unwrap_or(d);
            for di in 0..self.dirs {
                let sd = seed + 40.0 + 7.0 * j as f64 + 3.0 * di as f64;
                v.push(det(h, dk, sd, 0.6));
                v.push(det(h, h, sd + 1.0, 0.6));
                v.push(det(1, h, sd + 2.0, 0.4));
            }
        }
        v
    }

    /// The layer arguments reading `v` (in gradient order), in any element type.
    pub fn args<'a, R>(&'a self, v: &'a [Array2<R>]) -> ScLstmArgs<'a, R> {
        let mut k = 1;
        let mut task_inputs = Vec::new();
        for t in &self.tasks {
            task_inputs.push(match t {
                None => TaskInput::Shared,
                Some(_) => {
                    k += 1;
                    TaskInput::Separate(&v[k - 1])
                }
            });
        }
        let mut directions = Vec::new();
        for _ in 0..self.dirs {
            let cell = LstmWeights {
                w_ih: &v[k],
                w_hh: &v[k + 1],
                b: &v[k + 2],
            };
            k += 3;
            directions.push(DirectionWeights {
                cell,
                tasks: Vec::new(),
            });
        }
        for _ in &self.tasks {
            for dir in directions.iter_mut() {
                dir.tasks.push(TaskGateWeights {
                    u: &v[k],
                    w: &v[k + 1],
                    b: &v[k + 2],
                });
                k += 3;
            }
        }
        assert_eq!(k, v.len(), "internal: every input consumed");
        ScLstmArgs {
            x: &v[0],
            lens: &self.lens,
            task_inputs,
            directions,
            weights_id: None,
        }
    }
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

fn affine(w: &M, x: ArrayView1<f64>, u: &M, hprev: &Array1<f64>, b: &M) -> Array1<f64> {
    w.dot(&x) + u.dot(hprev) + b.row(0)
}

/// Naive host forward of Eq. 1–2, sentence by sentence, the reverse direction walking
/// each sentence from its real end; output in the documented column layout.
pub fn reference_forward(spec: &Spec, v: &[M]) -> M {
    let a = spec.args(v);
    let (bsz, h, nd) = (spec.lens.len(), spec.hidden, spec.dirs);
    let mut out = M::zeros((spec.rows(), spec.width()));
    for (di, dir) in a.directions.iter().enumerate() {
        for (b, &n) in spec.lens.iter().enumerate() {
            let mut hs = Array1::<f64>::zeros(h);
            let mut cs = Array1::<f64>::zeros(h);
            let mut qs = vec![Array1::<f64>::zeros(h); spec.tasks.len()];
            for step in 0..n {
                let t = if di == 0 { step } else { n - 1 - step };
                let r = t * bsz + b;
                let pre = affine(dir.cell.w_ih, a.x.row(r), dir.cell.w_hh, &hs, dir.cell.b);
                let i = pre.slice(s![0..h]).mapv(sigmoid);
                let f = pre.slice(s![h..2 * h]).mapv(sigmoid);
                let g = pre.slice(s![2 * h..3 * h]).mapv(f64::tanh);
                let o = pre.slice(s![3 * h..4 * h]).mapv(sigmoid);
                cs = &i * &g + &f * &cs;
                let tc = cs.mapv(f64::tanh);
                hs = &o * &tc;
                out.slice_mut(s![r, di * h..(di + 1) * h]).assign(&hs);
                for (k, tw) in dir.tasks.iter().enumerate() {
                    let xk = match a.task_inputs[k] {
                        TaskInput::Shared => a.x.row(r),
                        TaskInput::Separate(m) => m.row(r),
                    };
                    let ok = affine(tw.u, xk, tw.w, &qs[k], tw.b).mapv(sigmoid);
                    qs[k] = &ok * &tc;
                    let col = (nd * (1 + k) + di) * h;
                    out.slice_mut(s![r, col..col + h]).assign(&qs[k]);
                }
            }
        }
    }
    out
}

/// A fresh single-threaded f64 CPU workspace.
pub fn workspace() -> LayerWorkspace<CpuBackend<f64>> {
    LayerWorkspace::new(Arc::new(CpuBackend::<f64>::new(1).expect("cpu backend")))
}

/// The layer's output for inputs `v`.
fn run(ws: &LayerWorkspace<CpuBackend<f64>>, spec: &Spec, v: &[M]) -> M {
    sc_lstm_forward(ws, &spec.args(v), false)
        .expect("forward")
        .0
}

/// Forward matches the naive reference; hand BPTT matches central differences on every
/// input and parameter; padding rows are zero and get exactly zero gradient.
fn full_check(spec: &Spec) {
    let ws = workspace();
    let v = spec.inputs(0.37);
    let names = spec.args(&v).input_names();
    let (out, node) = sc_lstm_forward(&ws, &spec.args(&v), true).expect("forward");
    let want = reference_forward(spec, &v);
    compare(
        "forward",
        &["out".to_string()],
        std::slice::from_ref(&out),
        &[want],
        1e-12,
        1e-12,
    )
    .unwrap();

    let weights = det(spec.rows(), spec.width(), 9.1, 1.0);
    let grads = all_some(
        node.expect("recorded")
            .backward(&weights)
            .expect("backward"),
    );
    let loss = |w: &[M]| weighted_sum(&run(&ws, spec, w), &weights);
    let numeric = numeric_grads(&v, &loss);
    compare_fd(&format!("{spec:?}"), &names, &grads, &numeric).unwrap();

    let bsz = spec.lens.len();
    for r in 0..spec.rows() {
        if r / bsz < spec.lens[r % bsz] {
            continue;
        }
        assert!(
            out.row(r).iter().all(|&x| x == 0.0),
            "padding row {r} of the output is not zero"
        );
        assert!(
            grads[0].row(r).iter().all(|&x| x == 0.0),
            "padding row {r} of d_x is not zero"
        );
        for (k, t) in (1..).zip(spec.tasks.iter().flatten()) {
            assert!(
                grads[k].row(r).iter().all(|&x| x == 0.0),
                "padding row {r} of d_x^k (D_k={t})"
            );
        }
    }
}

#[test]
fn lstm_forward_direction_matches_reference_and_finite_differences() {
    full_check(&Spec {
        steps: 4,
        lens: vec![4, 2],
        input: 3,
        hidden: 3,
        dirs: 1,
        tasks: vec![],
    });
}

#[test]
fn bilstm_matches_reference_and_finite_differences() {
    full_check(&Spec {
        steps: 4,
        lens: vec![2, 4],
        input: 3,
        hidden: 3,
        dirs: 2,
        tasks: vec![],
    });
}

#[test]
fn bilstm_with_extra_padding_matches_reference_and_finite_differences() {
    // T exceeds every length: the reverse direction must still start at each real end.
    full_check(&Spec {
        steps: 4,
        lens: vec![3, 1],
        input: 2,
        hidden: 2,
        dirs: 2,
        tasks: vec![],
    });
}

#[test]
fn sc_lstm_one_direction_gradcheck() {
    full_check(&Spec {
        steps: 4,
        lens: vec![4, 3],
        input: 3,
        hidden: 3,
        dirs: 1,
        tasks: vec![None, None],
    });
}

#[test]
fn sc_lstm_shared_bidirectional_gradcheck() {
    full_check(&Spec {
        steps: 4,
        lens: vec![4, 2],
        input: 3,
        hidden: 3,
        dirs: 2,
        tasks: vec![None, None],
    });
}

#[test]
fn an_empty_sentence_has_no_rows_and_zero_outputs_and_gradients() {
    // Length 0 in the middle of the batch, and T past the longest: in the packed layout
    // the empty sentence has no token row at all, the trailing step no rows.
    full_check(&Spec {
        steps: 4,
        lens: vec![3, 0, 2],
        input: 2,
        hidden: 3,
        dirs: 2,
        tasks: vec![None, Some(2)],
    });
    // No token at all: every output and gradient is zero, weight gradients included.
    full_check(&Spec {
        steps: 2,
        lens: vec![0, 0],
        input: 2,
        hidden: 2,
        dirs: 2,
        tasks: vec![None],
    });
}

/// More than 12 sentences: the forward's per-step products read the recurrent weights
/// as stored (transposed by strides) instead of a transposed copy.
#[test]
fn large_batch_gradcheck() {
    full_check(&Spec {
        steps: 3,
        lens: vec![3, 3, 2, 3, 3, 3, 3, 3, 2, 3, 3, 3, 3],
        input: 2,
        hidden: 2,
        dirs: 2,
        tasks: vec![None],
    });
}

/// The layer runs the batch longest first and skips finished sentences in the per-step
/// products: an unsorted batch with ties and a one-step sentence must still match the
/// reference and finite differences.
#[test]
fn sc_lstm_unsorted_batch_with_ties_gradcheck() {
    full_check(&Spec {
        steps: 4,
        lens: vec![2, 4, 1, 4],
        input: 2,
        hidden: 2,
        dirs: 2,
        tasks: vec![None, Some(3)],
    });
}

#[test]
fn sc_lstm_chained_bidirectional_gradcheck() {
    full_check(&Spec {
        steps: 4,
        lens: vec![3, 4],
        input: 3,
        hidden: 2,
        dirs: 2,
        tasks: vec![Some(4), Some(4)],
    });
}

#[test]
fn sc_lstm_mixed_task_inputs_gradcheck() {
    full_check(&Spec {
        steps: 3,
        lens: vec![3, 2],
        input: 2,
        hidden: 3,
        dirs: 2,
        tasks: vec![Some(2), None],
    });
}

/// Runs `spec` with loss weights on the h and first-task columns only; returns output and grads.
fn task_a_loss(ws: &LayerWorkspace<CpuBackend<f64>>, spec: &Spec, v: &[M]) -> (M, Vec<M>) {
    let (out, node) = sc_lstm_forward(ws, &spec.args(v), true).expect("forward");
    let (nd, h) = (spec.dirs, spec.hidden);
    // Loss weights on [h_f, h_b, qA_f, qA_b]; task B's q columns (if computed) get none.
    let mut w = M::zeros((spec.rows(), spec.width()));
    w.slice_mut(s![.., 0..nd * 2 * h])
        .assign(&det(spec.rows(), nd * 2 * h, 4.2, 1.0));
    let grads = all_some(node.expect("recorded").backward(&w).expect("backward"));
    (out, grads)
}

#[test]
fn task_a_batch_leaves_task_b_untouched() {
    let ws = workspace();
    let both = Spec {
        steps: 4,
        lens: vec![4, 2],
        input: 3,
        hidden: 3,
        dirs: 2,
        tasks: vec![None, None],
    };
    let v = both.inputs(1.3);
    let (out_both, g_both) = task_a_loss(&ws, &both, &v);
    // Gradient order: x, 2 × (W_ih, W_hh, b), task A 2 × (U, W, b), task B 2 × (U, W, b).
    assert_eq!(g_both.len(), 1 + 6 + 6 + 6);
    for (k, g) in g_both[13..].iter().enumerate() {
        assert!(
            g.iter().all(|&x| x == 0.0),
            "task B parameter {k} got gradient from task A's loss"
        );
    }
    assert!(
        g_both[7..13].iter().all(|g| g.iter().any(|&x| x != 0.0)),
        "task A gets gradient"
    );

    // A training batch of task A computes only A's gate: B's weights are not even passed.
    let only_a = Spec {
        tasks: vec![None],
        ..both.clone()
    };
    let v_a: Vec<M> = v[..13].to_vec();
    let (out_a, g_a) = task_a_loss(&ws, &only_a, &v_a);
    assert_eq!(g_a.len(), 13);
    let h = both.hidden;
    // Columns [h_f, h_b, qA_f, qA_b] are identical; the shared cell does not read task gates.
    assert_eq!(out_a, out_both.slice(s![.., 0..4 * h]).to_owned());
    let names = only_a.args(&v_a).input_names();
    compare(
        "task A only vs both",
        &names,
        &g_a,
        &g_both[..13],
        1e-14,
        1e-12,
    )
    .unwrap();
}

#[test]
fn caches_are_reused_across_batches() {
    let ws = workspace();
    let big = Spec {
        steps: 4,
        lens: vec![4, 3],
        input: 2,
        hidden: 2,
        dirs: 2,
        tasks: vec![None],
    };
    let small = Spec {
        steps: 3,
        lens: vec![3],
        ..big.clone()
    };
    let vb = big.inputs(0.5);
    let vs = small.inputs(0.8);
    let w = det(small.rows(), small.width(), 2.0, 1.0);
    {
        let (_, node) = sc_lstm_forward(&ws, &big.args(&vb), true).unwrap();
        assert_eq!(ws.pooled(), 0, "recorded op holds its caches");
        node.unwrap()
            .backward(&det(big.rows(), big.width(), 1.0, 1.0))
            .unwrap();
        // Dropping the node returns both direction caches.
    }
    assert_eq!(ws.pooled(), 2);
    // The smaller batch reuses them (no new allocation) and gives the same result as a
    // fresh workspace, so nothing stale leaks from the previous batch.
    let (out, node) = sc_lstm_forward(&ws, &small.args(&vs), true).unwrap();
    assert_eq!(ws.pooled(), 0, "both caches taken from the pool");
    let g = all_some(node.unwrap().backward(&w).unwrap());
    let fresh = workspace();
    let (out2, node2) = sc_lstm_forward(&fresh, &small.args(&vs), true).unwrap();
    let g2 = all_some(node2.unwrap().backward(&w).unwrap());
    assert_eq!(out, out2);
    assert_eq!(g, g2);
    // Inference records nothing and gives its caches back at once.
    let (_, none) = sc_lstm_forward(&ws, &big.args(&vb), false).unwrap();
    assert!(none.is_none());
    assert_eq!(ws.pooled(), 2);
}

/// Exchanges the input and forget gate blocks (rows `0..H` and `H..2H` of a `(4H, ·)`
/// matrix, columns of a `(1, 4H)` bias).
fn swap_i_f(m: &M, h: usize) -> M {
    let mut out = m.clone();
    let along_rows = m.nrows() == 4 * h;
    for k in 0..h {
        if along_rows {
            out.row_mut(k).assign(&m.row(h + k));
            out.row_mut(h + k).assign(&m.row(k));
        } else {
            out.column_mut(k).assign(&m.column(h + k));
            out.column_mut(h + k).assign(&m.column(k));
        }
    }
    out
}

/// A wrong backward with the right shapes: the exact BPTT of the layer with its input
/// and forget gates exchanged (a gate-order convention error), its weight gradients
/// mapped back to the true layout. Inputs `[x, W_ih, W_hh, b]`.
#[derive(Debug)]
struct GateSwappedOp {
    /// The layer recorded on the gate-swapped weights.
    inner: Box<dyn FusedOp<f64>>,
    /// Hidden size H.
    hidden: usize,
}

impl FusedOp<f64> for GateSwappedOp {
    fn name(&self) -> &'static str {
        "lstm_layer_gates_swapped"
    }

    fn backward(&self, d_out: &M) -> Result<Vec<Option<M>>, NumError> {
        let mut grads = self.inner.backward(d_out)?;
        for g in grads.iter_mut().skip(1).flatten() {
            *g = swap_i_f(g, self.hidden);
        }
        Ok(grads)
    }
}

#[test]
fn gradcheck_rejects_a_wrong_backward() {
    let ws = workspace();
    let spec = Spec {
        steps: 3,
        lens: vec![3, 2],
        input: 2,
        hidden: 2,
        dirs: 1,
        tasks: vec![],
    };
    let v = spec.inputs(0.2);
    let names = spec.args(&v).input_names();
    let weights = det(spec.rows(), spec.width(), 3.3, 1.0);
    let numeric = numeric_grads(&v, &|w: &[M]| weighted_sum(&run(&ws, &spec, w), &weights));
    let (_, node) = sc_lstm_forward(&ws, &spec.args(&v), true).unwrap();
    let grads = all_some(node.unwrap().backward(&weights).unwrap());
    compare_fd("correct", &names, &grads, &numeric).unwrap();
    // The backward of the layer with i and f exchanged must be caught, although the
    // forward is unchanged and every gradient has the right shape.
    let mut swapped = v.clone();
    for m in &mut swapped[1..] {
        *m = swap_i_f(m, spec.hidden);
    }
    let (out, inner) = sc_lstm_forward(&ws, &spec.args(&swapped), true).unwrap();
    let wrong = GateSwappedOp {
        inner: inner.unwrap(),
        hidden: spec.hidden,
    };
    assert_ne!(out, run(&ws, &spec, &v), "the swap changes the function");
    let grads = all_some(wrong.backward(&weights).unwrap());
    let err = compare_fd("wrong", &names, &grads, &numeric).unwrap_err();
    assert!(err.starts_with("wrong: x"), "{err}");
    // Each parameter's gradient is wrong on its own, not only the input's.
    for k in 1..grads.len() {
        let err = compare_fd("wrong", &names[k..=k], &grads[k..=k], &numeric[k..=k]).unwrap_err();
        assert!(err.contains(&names[k]), "{err}");
    }
}

#[test]
fn bad_shapes_and_lengths_are_rejected() {
    let ws = workspace();
    let spec = Spec {
        steps: 2,
        lens: vec![2, 1],
        input: 2,
        hidden: 2,
        dirs: 2,
        tasks: vec![Some(3)],
    };
    let v = spec.inputs(0.1);
    let bad_lens = Spec {
        lens: vec![3, 1],
        ..spec.clone()
    };
    let err = sc_lstm_forward(&ws, &bad_lens.args(&v), false).unwrap_err();
    assert!(matches!(err, NumError::ShapeMismatch { .. }), "{err}");
    let mut wrong = v.clone();
    wrong[1] = det(4, 2, 0.0, 1.0); // x^k with D_k = 2 but U_k expects 3
    let err = sc_lstm_forward(&ws, &spec.args(&wrong), false).unwrap_err();
    assert!(matches!(err, NumError::ShapeMismatch { .. }), "{err}");
    let (_, node) = sc_lstm_forward(&ws, &spec.args(&v), true).unwrap();
    let err = node.unwrap().backward(&M::zeros((4, 3))).unwrap_err();
    assert!(matches!(err, NumError::ShapeMismatch { .. }), "{err}");
}

#[test]
fn op_names_and_input_names_follow_the_documented_order() {
    let ws = workspace();
    let spec = Spec {
        steps: 2,
        lens: vec![2],
        input: 2,
        hidden: 2,
        dirs: 2,
        tasks: vec![None, Some(3)],
    };
    let v = spec.inputs(0.1);
    let args = spec.args(&v);
    let names = args.input_names();
    assert_eq!(
        names,
        [
            "x",
            "x^1",
            "fwd.w_ih",
            "fwd.w_hh",
            "fwd.b",
            "bwd.w_ih",
            "bwd.w_hh",
            "bwd.b",
            "task0.fwd.u",
            "task0.fwd.w",
            "task0.fwd.b",
            "task0.bwd.u",
            "task0.bwd.w",
            "task0.bwd.b",
            "task1.fwd.u",
            "task1.fwd.w",
            "task1.fwd.b",
            "task1.bwd.u",
            "task1.bwd.w",
            "task1.bwd.b"
        ]
    );
    assert_eq!(args.output_width(), spec.width());
    assert_eq!(args.h_columns(), 0..4);
    assert_eq!((args.q_columns(0), args.q_columns(1)), (4..8, 8..12));
    let (out, node) = sc_lstm_forward(&ws, &args, true).unwrap();
    let want = reference_forward(&spec, &v);
    // The q^1 block of the output is the reference's forward and reverse q^1.
    let block = |m: &M| m.slice(s![.., 8..12]).to_owned();
    compare(
        "q^1 block",
        &names[1..2],
        &[block(&out)],
        &[block(&want)],
        1e-12,
        1e-12,
    )
    .unwrap();
    let node: Box<dyn FusedOp<f64>> = node.unwrap();
    assert_eq!(node.name(), "bi_sc_lstm_layer");
    let grads = node.backward(&M::ones((2, spec.width()))).unwrap();
    for ((g, inp), name) in grads.iter().zip(&v).zip(&names) {
        assert_eq!(g.as_ref().map(|g| g.dim()), Some(inp.dim()), "{name}");
    }
}
