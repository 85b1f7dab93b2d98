//! Each family learns 20 short synthetic sentences to ≥ 95% training accuracy.

use sclstm_autodiff::optim::{Adam, AdamConfig};
use sclstm_model::{Family, ModelError, TaskInputMode};

use crate::common::{Batch, sentences, small_config, tagger};

/// Token accuracy of both tasks over `batches`.
fn accuracy(
    t: &sclstm_model::Tagger<sclstm_cpu::CpuBackend<f32>>,
    batches: &[Batch],
) -> Result<f64, ModelError> {
    let (mut right, mut total) = (0usize, 0usize);
    for b in batches {
        let pred = t.predict(&b.input(), &[0, 1])?;
        for (k, per_task) in pred.iter().enumerate() {
            for (p, g) in per_task.iter().zip(b.gold_paths(k)) {
                right += p.iter().zip(&g).filter(|(a, b)| a == b).count();
                total += g.len();
            }
        }
    }
    Ok(right as f64 / total as f64)
}

/// Trains both tasks alternately (Algorithm 1 with a fixed order) with Adam lr 1e-2;
/// returns the step at which training accuracy first reached 95%.
fn overfit(family: Family, mode: TaskInputMode, crf: bool) -> Result<usize, ModelError> {
    let mut cfg = small_config(family, crf, false);
    cfg.task_input = mode;
    cfg.word_dim = 8;
    cfg.hidden = 12;
    cfg.dropout = 0.0;
    let mut t = tagger::<f32>(cfg, 17)?;
    let data = sentences(20, 99);
    let batches: Vec<Batch> = data.chunks(10).map(Batch::new).collect();
    let mut adam = Adam::new(AdamConfig {
        lr: 1e-2,
        ..AdamConfig::default()
    });
    const MAX_STEPS: usize = 400;
    for step in 0..MAX_STEPS {
        if step % 20 == 0 {
            let acc = accuracy(&t, &batches)?;
            if step == 0 {
                assert!(
                    acc < 0.8,
                    "{family:?}: untrained accuracy {acc:.3} is suspiciously high"
                );
            } else if acc >= 0.95 {
                eprintln!("{family:?} {mode:?}: {acc:.3} training accuracy after {step} steps");
                return Ok(step);
            }
        }
        let (task, b) = (step % 2, &batches[(step / 2) % batches.len()]);
        let grads = {
            let mut tape = t.tape();
            let loss = t.loss(&mut tape, &b.input(), task, &b.gold[task], step as u64)?;
            tape.backward(loss)?.into_param_grads()
        };
        adam.step(t.params_mut(), &grads)?;
    }
    let acc = accuracy(&t, &batches)?;
    assert!(
        acc >= 0.95,
        "{family:?} reached only {acc:.3} after {MAX_STEPS} steps"
    );
    Ok(MAX_STEPS)
}

#[test]
fn stl_overfits_twenty_sentences() -> Result<(), ModelError> {
    overfit(Family::Stl, TaskInputMode::Shared, false).map(drop)
}

#[test]
fn lstm_s_overfits_twenty_sentences() -> Result<(), ModelError> {
    overfit(Family::LstmS, TaskInputMode::Shared, false).map(drop)
}

#[test]
fn lstm_d_overfits_twenty_sentences() -> Result<(), ModelError> {
    overfit(Family::LstmD, TaskInputMode::Shared, false).map(drop)
}

#[test]
fn sc_lstm_overfits_twenty_sentences() -> Result<(), ModelError> {
    overfit(Family::ScLstm, TaskInputMode::Shared, false).map(drop)
}

#[test]
fn sc_lstm_chained_crf_overfits_twenty_sentences() -> Result<(), ModelError> {
    overfit(Family::ScLstm, TaskInputMode::Chained, true).map(drop)
}
