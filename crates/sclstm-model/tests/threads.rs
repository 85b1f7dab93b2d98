//! A two-thread CPU backend runs the two directions of every layer concurrently; the
//! results must be exactly those of one thread, step after step.

use std::sync::Arc;

use sclstm_autodiff::optim::{Adam, AdamConfig};
use sclstm_cpu::CpuBackend;
use sclstm_model::{Family, ModelError, Tagger};

use crate::common::{Batch, sentences, small_config};

/// Trains `steps` Algorithm-1 style steps (tasks alternate) and returns every parameter.
fn train(threads: usize, family: Family, steps: usize) -> Result<Vec<Vec<f64>>, ModelError> {
    let mut cfg = small_config(family, false, false);
    cfg.dropout = 0.5;
    let backend = Arc::new(CpuBackend::<f64>::new(threads)?);
    let mut tagger = Tagger::new(cfg, backend, 7, None)?;
    assert_eq!(
        format!("{tagger:?}").contains("concurrent_directions: true"),
        threads > 1,
        "{tagger:?}"
    );
    let mut adam = Adam::new(AdamConfig::default());
    for step in 0..steps {
        // Lengths 2..=6 in batches of 5: sentences finish at different steps.
        let batch = Batch::new(&sentences(5, 100 + step as u64));
        let task = step % 2;
        let grads = {
            let mut tape = tagger.tape();
            let loss = tagger.loss(
                &mut tape,
                &batch.input(),
                task,
                &batch.gold[task],
                step as u64,
            )?;
            tape.backward(loss)
                .map_err(ModelError::from)?
                .into_param_grads()
        };
        adam.step_clipped(tagger.params_mut(), &grads, 5.0, None)
            .map_err(ModelError::from)?;
    }
    Ok(tagger
        .params()
        .iter()
        .map(|(_, _, m)| m.iter().copied().collect())
        .collect())
}

#[test]
fn two_threads_train_exactly_like_one() -> Result<(), ModelError> {
    for family in [Family::ScLstm, Family::LstmS] {
        let one = train(1, family, 6)?;
        let two = train(2, family, 6)?;
        assert_eq!(one.len(), two.len());
        for (k, (a, b)) in one.iter().zip(&two).enumerate() {
            assert_eq!(a, b, "{family:?}: parameter {k} differs after training");
        }
        // Same seed and thread count twice: identical too.
        assert_eq!(two, train(2, family, 6)?);
    }
    Ok(())
}
