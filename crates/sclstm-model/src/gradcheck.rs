//! Whole-model gradient checks: the tape's gradient of [`Tagger::loss`] against central
//! finite differences on every entry of every parameter, in f64 on the CPU.
//!
//! The pass rule is the autodiff crate's: `|a − n| ≤ tol · (1 + max(|a|, |n|))` with
//! `ε = 1e-6` and `tol = 1e-6`. A parameter the loss does not reach must have a zero
//! numeric derivative (its analytic gradient is absent, i.e. zero). [`run_all`] checks a
//! tiny SC-LSTM-CRF with char-CNN and caps in both task-input readings, for the
//! `sclstm gradcheck` command.

use std::sync::Arc;

use sclstm_autodiff::gradcheck::{Report, TOL, Worst, fd_error, numeric_gradient};
use sclstm_core::{Matrix, Real};
use sclstm_cpu::CpuBackend;

use crate::{
    CharCnnConfig, ContextualConfig, Family, HeadKind, ModelConfig, ModelError, ModelInput, Tagger,
    TaskConfig, TaskInputMode,
};

/// The f64 CPU tagger the checks run on.
pub type CheckTagger = Tagger<CpuBackend<f64>>;

/// One loss evaluation on a fresh tape.
fn loss_value(
    t: &CheckTagger,
    input: &ModelInput<'_>,
    task: usize,
    gold: &[u32],
    seed: u64,
) -> Result<f64, ModelError> {
    let mut tape = t.tape();
    let l = t.loss(&mut tape, input, task, gold, seed)?;
    Ok(tape.value(l)[(0, 0)].to_f64())
}

/// Compares `analytic` (per parameter in store order; `None` = zero) with central
/// differences. [`Worst::input`] is the parameter's index in store order.
fn compare(
    name: &str,
    t: &mut CheckTagger,
    input: &ModelInput<'_>,
    task: usize,
    gold: &[u32],
    seed: u64,
    analytic: &[Option<Matrix<f64>>],
) -> Result<Report, ModelError> {
    let mut report = Report {
        name: name.to_string(),
        max_error: 0.0,
        worst: None,
        checked: 0,
        tol: TOL,
    };
    let ids: Vec<_> = t.params().iter().map(|(id, _, _)| id).collect();
    let values: Vec<Matrix<f64>> = ids.iter().map(|&id| t.params().get(id).clone()).collect();
    let numeric = numeric_gradient(&values, |work| {
        for (&id, m) in ids.iter().zip(work) {
            t.params_mut().get_mut(id).assign(m);
        }
        loss_value(t, input, task, gold, seed)
    });
    for (&id, m) in ids.iter().zip(&values) {
        t.params_mut().get_mut(id).assign(m);
    }
    for (i, numeric_i) in numeric?.iter().enumerate() {
        let shape = numeric_i.dim();
        for index in 0..shape.0 * shape.1 {
            let rc = (index / shape.1, index % shape.1);
            let numeric = numeric_i[rc];
            let a = analytic[i].as_ref().map_or(0.0, |g| g[rc]);
            let err = fd_error(a, numeric);
            report.checked += 1;
            if err > report.max_error {
                report.max_error = err;
                report.worst = Some(Worst {
                    input: i,
                    index,
                    shape,
                    analytic: a,
                    numeric,
                });
            }
        }
    }
    Ok(report)
}

/// The tape's gradient of every parameter (store order; `None` where none reached it).
fn analytic(
    t: &CheckTagger,
    input: &ModelInput<'_>,
    task: usize,
    gold: &[u32],
    seed: u64,
) -> Result<Vec<Option<Matrix<f64>>>, ModelError> {
    let mut tape = t.tape();
    let loss = t.loss(&mut tape, input, task, gold, seed)?;
    let grads = tape.backward(loss)?;
    Ok(t.params()
        .iter()
        .map(|(id, _, _)| grads.param(id).map(|g| g.to_dense()))
        .collect())
}

/// Checks the gradient of one batch's loss (task `task`, dropout masks from
/// `dropout_seed`) w.r.t. every entry of every parameter. `Worst::input` in the report is
/// the parameter's index in store order (`t.params().iter().nth(i)` names it).
///
/// # Errors
/// Whatever the loss or backward returns.
pub fn check_tagger(
    t: &mut CheckTagger,
    input: &ModelInput<'_>,
    task: usize,
    gold: &[u32],
    dropout_seed: u64,
) -> Result<Report, ModelError> {
    let grads = analytic(t, input, task, gold, dropout_seed)?;
    let name = format!(
        "model {} task {}",
        t.config().family,
        t.config().tasks.get(task).map_or("?", |k| k.name.as_str())
    );
    compare(&name, t, input, task, gold, dropout_seed, &grads)
}

/// Contextual features of [`TinyBatch`]: 3 states of width 2 per position.
const TINY_CONTEXTUAL: ContextualConfig = ContextualConfig { states: 3, dim: 2 };

/// A tiny SC-LSTM with a CRF `ner` head and a softmax `pos` head, char-CNN and caps,
/// 2 layers of hidden size 2, non-zero CRF transitions; with `contextual`, also a scalar
/// mix of `TINY_CONTEXTUAL` features (3 states of width 2) with non-uniform weights and `γ ≠ 1`.
///
/// # Errors
/// Construction errors (none for this fixed config).
pub fn tiny_sc_lstm_crf(
    mode: TaskInputMode,
    dropout: f64,
    contextual: bool,
) -> Result<CheckTagger, ModelError> {
    let mut ner = TaskConfig::new("ner", &["O", "B-X", "I-X"]);
    ner.head = HeadKind::Crf;
    let mut cfg = ModelConfig::new(
        Family::ScLstm,
        vec![ner, TaskConfig::new("pos", &["A", "B"])],
        7,
    );
    (cfg.word_dim, cfg.hidden, cfg.layers, cfg.dropout) = (3, 2, 2, dropout);
    cfg.task_input = mode;
    cfg.char_cnn = Some(CharCnnConfig {
        vocab: 5,
        dim: 2,
        kernel: 3,
        channels: 3,
    });
    cfg.contextual = contextual.then_some(TINY_CONTEXTUAL);
    let mut t = Tagger::new(cfg, Arc::new(CpuBackend::new(1)?), 11, None)?;
    let crf: Vec<_> = t
        .params()
        .iter()
        .filter(|(_, n, _)| n.contains(".crf.") || n.contains(".mix."))
        .map(|(id, _, _)| id)
        .collect();
    for id in crf {
        let m = t.params_mut().get_mut(id);
        let c = m.ncols();
        for ((i, j), v) in m.indexed_iter_mut() {
            *v = ((i * c + j) as f64 * 0.7 + 0.3).sin() * 0.5;
        }
    }
    Ok(t)
}

/// A fixed batch for [`tiny_sc_lstm_crf`]: three sentences of lengths 3, 1, 2 (T = 3,
/// B = 3, W = 3) with gold tags of both tasks (`ner`, `pos`).
struct TinyBatch {
    lens: Vec<usize>,
    words: Vec<u32>,
    caps: Vec<u32>,
    chars: Vec<u32>,
    char_lens: Vec<usize>,
    gold: [Vec<u32>; 2],
    contextual: Vec<f32>,
}

impl TinyBatch {
    fn new() -> Self {
        // Time-major (t·B + b); 0 on padding.
        TinyBatch {
            lens: vec![3, 1, 2],
            words: vec![5, 4, 6, 2, 0, 3, 1, 0, 0],
            caps: vec![1, 0, 7, 3, 0, 2, 5, 0, 0],
            chars: vec![
                1, 2, 0, 3, 0, 0, 4, 1, 2, //
                2, 2, 3, 0, 0, 0, 1, 0, 0, //
                4, 3, 0, 0, 0, 0, 0, 0, 0,
            ],
            char_lens: vec![2, 1, 3, 3, 0, 1, 2, 0, 0],
            gold: [
                vec![1, 0, 1, 2, 0, 2, 0, 0, 0],
                vec![0, 1, 1, 1, 0, 0, 0, 0, 0],
            ],
            // sin(0.9·k + 0.1), zero on the padding positions 4, 7 and 8.
            contextual: (0..9 * TINY_CONTEXTUAL.states * TINY_CONTEXTUAL.dim)
                .map(|k| {
                    let p = k / (TINY_CONTEXTUAL.states * TINY_CONTEXTUAL.dim);
                    if [4, 7, 8].contains(&p) {
                        0.0
                    } else {
                        (k as f32 * 0.9 + 0.1).sin()
                    }
                })
                .collect(),
        }
    }

    fn input(&self) -> ModelInput<'_> {
        ModelInput {
            steps: 3,
            batch: 3,
            lens: &self.lens,
            word_ids: &self.words,
            cap_ids: &self.caps,
            char_ids: &self.chars,
            char_lens: &self.char_lens,
            word_len_max: 3,
            contextual: &self.contextual,
        }
    }
}

/// The whole-model checks of `sclstm gradcheck`: the tiny SC-LSTM-CRF with char-CNN and
/// caps, shared and chained readings (the chained one also with dropout 0.3), and the
/// shared one with contextual features (scalar mix), each task.
pub fn run_all() -> Vec<Result<Report, ModelError>> {
    let batch = TinyBatch::new();
    let mut out = Vec::new();
    for (mode, dropout, contextual) in [
        (TaskInputMode::Shared, 0.0, false),
        (TaskInputMode::Chained, 0.0, false),
        (TaskInputMode::Chained, 0.3, false),
        (TaskInputMode::Shared, 0.0, true),
    ] {
        let mut t = match tiny_sc_lstm_crf(mode, dropout, contextual) {
            Ok(t) => t,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        for task in 0..2 {
            let r =
                check_tagger(&mut t, &batch.input(), task, &batch.gold[task], 3).map(|mut r| {
                    let ctx = if contextual { ", contextual" } else { "" };
                    r.name = format!("{} ({mode:?}, dropout {dropout}{ctx})", r.name);
                    r
                });
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_model_checks_pass() -> Result<(), ModelError> {
        let reports = run_all();
        assert_eq!(reports.len(), 8);
        for r in reports {
            let r = r?;
            assert!(r.checked > 300, "{r}");
            assert!(r.passed(), "{r}");
        }
        Ok(())
    }

    /// The checker rejects a wrong gradient: one analytic entry off by 1 %.
    #[test]
    fn checker_rejects_a_wrong_gradient() -> Result<(), ModelError> {
        let batch = TinyBatch::new();
        let mut t = tiny_sc_lstm_crf(TaskInputMode::Shared, 0.0, false)?;
        let input = batch.input();
        let mut grads = analytic(&t, &input, 0, &batch.gold[0], 0)?;
        let i = t
            .params()
            .iter()
            .position(|(_, n, _)| n == "encoder.layer0.fwd.w_hh")
            .expect("parameter exists");
        let g = grads[i].as_mut().expect("layer 0 has a gradient");
        g[(1, 1)] = g[(1, 1)] * 1.01 + 1e-3;
        let r = compare("corrupted", &mut t, &input, 0, &batch.gold[0], 0, &grads)?;
        assert!(!r.passed(), "{r}");
        assert_eq!(r.worst.map(|w| (w.input, w.index)), Some((i, 2 + 1)));
        Ok(())
    }
}
