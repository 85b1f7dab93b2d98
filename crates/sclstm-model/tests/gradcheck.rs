//! Whole-model finite-difference gradient checks (f64, dropout off).

use sclstm_autodiff::gradcheck::EPS;
use sclstm_core::Matrix;
use sclstm_cpu::CpuBackend;
use sclstm_model::{Family, ModelError, Tagger, TaskInputMode};

use crate::common::{Batch, loss_value, sentences, small_config, tagger};

/// Pass rule: `|a − n| ≤ TOL · (1 + max(|a|, |n|))`.
const TOL: f64 = 1e-6;

/// The worst element of a model gradient check.
#[derive(Debug)]
struct Worst {
    name: String,
    index: (usize, usize),
    analytic: f64,
    numeric: f64,
    error: f64,
}

/// Compares `analytic` (per parameter, by store order; `None` = no gradient, i.e. zero)
/// with central differences of the loss over every entry of every parameter. Returns
/// the worst element and the number of entries checked.
fn compare(
    t: &mut Tagger<CpuBackend<f64>>,
    batch: &Batch,
    task: usize,
    analytic: &[Option<Matrix<f64>>],
) -> Result<(Worst, usize), ModelError> {
    let mut worst = Worst {
        name: String::new(),
        index: (0, 0),
        analytic: 0.0,
        numeric: 0.0,
        error: 0.0,
    };
    let mut checked = 0;
    let ids: Vec<_> = t
        .params()
        .iter()
        .map(|(id, n, _)| (id, n.to_string()))
        .collect();
    for (i, (id, name)) in ids.iter().enumerate() {
        let (rows, cols) = t.params().get(*id).dim();
        for r in 0..rows {
            for c in 0..cols {
                let x = t.params().get(*id)[(r, c)];
                t.params_mut().get_mut(*id)[(r, c)] = x + EPS;
                let up = loss_value(t, batch, task)?;
                t.params_mut().get_mut(*id)[(r, c)] = x - EPS;
                let down = loss_value(t, batch, task)?;
                t.params_mut().get_mut(*id)[(r, c)] = x;
                let numeric = (up - down) / (2.0 * EPS);
                let a = analytic[i].as_ref().map_or(0.0, |g| g[(r, c)]);
                let error = (a - numeric).abs() / (1.0 + a.abs().max(numeric.abs()));
                checked += 1;
                if error > worst.error || error.is_nan() {
                    worst = Worst {
                        name: name.clone(),
                        index: (r, c),
                        analytic: a,
                        numeric,
                        error: if error.is_nan() { f64::INFINITY } else { error },
                    };
                }
            }
        }
    }
    Ok((worst, checked))
}

/// The tape's gradient of every parameter for one batch of `task`.
fn analytic(
    t: &Tagger<CpuBackend<f64>>,
    batch: &Batch,
    task: usize,
) -> Result<Vec<Option<Matrix<f64>>>, ModelError> {
    let mut tape = t.tape();
    let loss = t.loss(&mut tape, &batch.input(), task, &batch.gold[task], 0)?;
    let grads = tape.backward(loss)?;
    Ok(t.params()
        .iter()
        .map(|(id, _, _)| grads.param(id).map(|g| g.to_dense()))
        .collect())
}

fn whole_model_check(mode: TaskInputMode, dropout: f64) -> Result<(), ModelError> {
    let mut cfg = small_config(Family::ScLstm, true, true);
    cfg.task_input = mode;
    // With dropout the loss is still a fixed function: every evaluation uses seed 0.
    cfg.dropout = dropout;
    let mut t = tagger::<f64>(cfg, 11)?;
    // Non-zero CRF transitions so their gradient paths are exercised away from 0.
    for (id, name, _) in t
        .params()
        .iter()
        .map(|(i, n, v)| (i, n.to_string(), v.dim()))
        .collect::<Vec<_>>()
    {
        if name.contains(".crf.") {
            let m = t.params_mut().get_mut(id);
            let (r, c) = m.dim();
            *m = Matrix::from_shape_fn((r, c), |(i, j)| {
                ((i * c + j) as f64 * 0.7 + 0.3).sin() * 0.5
            });
        }
    }
    // Three sentences of lengths 3, 1, 2: variable lengths and padding in one batch.
    let batch = Batch::new(&[vec![5, 2, 7], vec![4], vec![9, 3]]);
    for task in 0..2 {
        let grads = analytic(&t, &batch, task)?;
        let (worst, checked) = compare(&mut t, &batch, task, &grads)?;
        assert!(checked > 300, "checked only {checked} entries");
        assert!(
            worst.error <= TOL,
            "{mode:?} task {task}: {} {:?}: analytic {:.9e} numeric {:.9e} (err {:.2e})",
            worst.name,
            worst.index,
            worst.analytic,
            worst.numeric,
            worst.error
        );
    }
    Ok(())
}

/// SC-LSTM-CRF (shared reading) with char-CNN and caps: every parameter entry, both tasks
/// (CRF and softmax heads).
#[test]
fn whole_sc_lstm_crf_model_matches_finite_differences() -> Result<(), ModelError> {
    whole_model_check(TaskInputMode::Shared, 0.0)
}

/// The same model with the chained reading (task gates in every layer), and with
/// dropout masks (seeded, so the loss is the same function at every evaluation).
#[test]
fn whole_chained_sc_lstm_crf_model_matches_finite_differences() -> Result<(), ModelError> {
    whole_model_check(TaskInputMode::Chained, 0.0)?;
    whole_model_check(TaskInputMode::Chained, 0.3)
}

/// The checker rejects a wrong gradient: one analytic entry scaled by 1.01.
#[test]
fn model_gradcheck_rejects_a_wrong_gradient() -> Result<(), ModelError> {
    let mut t = tagger::<f64>(small_config(Family::LstmS, false, false), 3)?;
    let batch = Batch::new(&sentences(2, 5));
    let mut grads = analytic(&t, &batch, 0)?;
    let i = t
        .params()
        .iter()
        .position(|(_, n, _)| n == "encoder.layer0.fwd.w_hh")
        .expect("parameter exists");
    let g = grads[i].as_mut().expect("layer 0 has a gradient");
    g[(1, 1)] *= 1.01;
    g[(1, 1)] += 1e-3;
    let (worst, _) = compare(&mut t, &batch, 0, &grads)?;
    assert!(worst.error > TOL, "corrupted gradient passed: {worst:?}");
    assert_eq!(worst.name, "encoder.layer0.fwd.w_hh");
    Ok(())
}
