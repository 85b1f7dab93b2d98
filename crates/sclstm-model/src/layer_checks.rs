//! Finite-difference checks of the fused LSTM / SC-LSTM layers (hand-written BPTT) and
//! the CRF, run as nodes of the tape in f64 on the CPU, with the autodiff crate's pass
//! rule (see [`sclstm_autodiff::gradcheck`]). `sclstm gradcheck` runs them after the
//! tape's primitive ops and before the whole models.

use std::sync::Arc;

use sclstm_autodiff::gradcheck::{self, GradCheck, Report, sin_matrix, weighted_sum};
use sclstm_core::{Matrix, NumError};
use sclstm_cpu::CpuBackend;
use sclstm_layers::{
    CrfReduction, CrfWeights, DirectionWeights, LayerWorkspace, LstmWeights, ScLstmArgs,
    TaskGateWeights, TaskInput, crf_nll, sc_lstm_forward,
};

/// A fused-layer check: directions, and per task `None` (shared reading) or the width of
/// a separate task input (chained reading).
struct LayerSpec {
    dirs: usize,
    tasks: Vec<Option<usize>>,
}

const T: usize = 4;
const LENS: [usize; 2] = [4, 2];
const D: usize = 3;
const H: usize = 3;

/// Inputs in the fused op's gradient order: x, separate task inputs, per direction the
/// cell's W_ih, W_hh, b, then per task per direction U_k, W_k, b_k.
fn layer_inputs(spec: &LayerSpec) -> Vec<Matrix<f64>> {
    let rows = T * LENS.len();
    let mut seed = 0.0;
    let mut next = |r: usize, c: usize| {
        seed += 1.3;
        sin_matrix(r, c, seed) * 0.6
    };
    let mut v = vec![next(rows, D)];
    for dk in spec.tasks.iter().flatten() {
        v.push(next(rows, *dk));
    }
    for _ in 0..spec.dirs {
        v.extend([next(4 * H, D), next(4 * H, H), next(1, 4 * H)]);
    }
    for t in &spec.tasks {
        for _ in 0..spec.dirs {
            v.extend([next(H, t.unwrap_or(D)), next(H, H), next(1, H)]);
        }
    }
    v
}

fn run_layer(spec: &LayerSpec, name: &'static str) -> Result<Report, NumError> {
    let ws = LayerWorkspace::new(Arc::new(CpuBackend::<f64>::new(1)?));
    gradcheck::check(name, &layer_inputs(spec), |tape, vars| {
        let values: Vec<Matrix<f64>> = vars.iter().map(|&x| tape.value(x).clone()).collect();
        let separate = spec.tasks.iter().flatten().count();
        let mut i = 1;
        let task_inputs = spec
            .tasks
            .iter()
            .map(|t| match t {
                Some(_) => {
                    i += 1;
                    TaskInput::Separate(&values[i - 1])
                }
                None => TaskInput::Shared,
            })
            .collect();
        let cell0 = 1 + separate;
        let gates0 = cell0 + 3 * spec.dirs;
        let directions = (0..spec.dirs)
            .map(|d| DirectionWeights {
                cell: LstmWeights {
                    w_ih: &values[cell0 + 3 * d],
                    w_hh: &values[cell0 + 3 * d + 1],
                    b: &values[cell0 + 3 * d + 2],
                },
                tasks: (0..spec.tasks.len())
                    .map(|k| {
                        let j = gates0 + 3 * (k * spec.dirs + d);
                        TaskGateWeights {
                            u: &values[j],
                            w: &values[j + 1],
                            b: &values[j + 2],
                        }
                    })
                    .collect(),
            })
            .collect();
        let args = ScLstmArgs {
            x: &values[0],
            lens: &LENS,
            task_inputs,
            directions,
            weights_id: None,
        };
        let (out, node) = sc_lstm_forward(&ws, &args, tape.is_recording())?;
        let y = match node {
            Some(node) => tape.push_fused(vars, out, node),
            None => tape.leaf(out),
        };
        weighted_sum(tape, y)
    })
}

fn lstm_layer() -> Result<Report, NumError> {
    run_layer(
        &LayerSpec {
            dirs: 1,
            tasks: vec![],
        },
        "lstm_layer (fused BPTT)",
    )
}

fn bilstm_layer() -> Result<Report, NumError> {
    run_layer(
        &LayerSpec {
            dirs: 2,
            tasks: vec![],
        },
        "bilstm_layer (fused BPTT)",
    )
}

fn sc_lstm_shared() -> Result<Report, NumError> {
    run_layer(
        &LayerSpec {
            dirs: 2,
            tasks: vec![None, None],
        },
        "bi_sc_lstm_layer (shared)",
    )
}

fn sc_lstm_chained() -> Result<Report, NumError> {
    run_layer(
        &LayerSpec {
            dirs: 2,
            tasks: vec![Some(4), Some(2)],
        },
        "bi_sc_lstm_layer (chained)",
    )
}

fn crf() -> Result<Report, NumError> {
    let lens = [3, 1];
    let tags = [0, 2, 1, 1, 2, 0];
    let inputs = vec![
        sin_matrix(6, 2, 0.4),
        sin_matrix(2, 3, 1.4),
        sin_matrix(3, 3, 2.4),
        sin_matrix(1, 3, 3.4),
        sin_matrix(1, 3, 4.4),
    ];
    gradcheck::check("crf_nll (forward algorithm)", &inputs, |tape, vars| {
        let emissions = tape.matmul(vars[0], vars[1])?;
        let (e, a, s, z) = (
            tape.value(emissions).clone(),
            tape.value(vars[2]).clone(),
            tape.value(vars[3]).clone(),
            tape.value(vars[4]).clone(),
        );
        let w = CrfWeights {
            transitions: &a,
            start: &s,
            end: &z,
        };
        let (out, node) = crf_nll(&e, &tags, &lens, w, CrfReduction::Mean, tape.is_recording())?;
        Ok(match node {
            Some(node) => tape.push_fused(&[emissions, vars[2], vars[3], vars[4]], out, node),
            None => tape.leaf(out),
        })
    })
}

/// The fused layers' and the CRF's checks, in the order `sclstm gradcheck` prints them.
pub fn checks() -> Vec<GradCheck> {
    vec![
        GradCheck {
            name: "lstm_layer",
            run: lstm_layer,
        },
        GradCheck {
            name: "bilstm_layer",
            run: bilstm_layer,
        },
        GradCheck {
            name: "bi_sc_lstm_layer_shared",
            run: sc_lstm_shared,
        },
        GradCheck {
            name: "bi_sc_lstm_layer_chained",
            run: sc_lstm_chained,
        },
        GradCheck {
            name: "crf_nll",
            run: crf,
        },
    ]
}
