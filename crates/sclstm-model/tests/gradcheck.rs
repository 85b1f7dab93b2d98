//! Whole-model finite-difference gradient checks of every family (f64). The SC-LSTM-CRF
//! with char-CNN and caps is checked by the library's own `gradcheck` unit tests.

use sclstm_model::gradcheck::check_tagger;
use sclstm_model::{Family, ModelError, TaskInputMode};

use crate::common::{Batch, small_config, tagger};

/// Every family with char-CNN, a learned capitalization embedding, dropout 0.3 (seeded,
/// so each evaluation is the same function) and both heads: every parameter entry.
#[test]
fn every_family_matches_finite_differences() -> Result<(), ModelError> {
    // Variable lengths and padding in one batch.
    let batch = Batch::new(&[vec![5, 2, 7], vec![4], vec![9, 3]]);
    for family in Family::ALL {
        let mut cfg = small_config(family, true, true);
        cfg.caps_dim = Some(2);
        cfg.dropout = 0.3;
        cfg.task_input = TaskInputMode::Shared;
        let mut t = tagger::<f64>(cfg, 5)?;
        for task in 0..2 {
            let r = check_tagger(&mut t, &batch.input(), task, &batch.gold[task], 9)?;
            let worst = r.worst.as_ref().and_then(|w| {
                t.params()
                    .iter()
                    .nth(w.input)
                    .map(|(_, n, _)| n.to_string())
            });
            assert!(r.passed(), "{r} (worst parameter {worst:?})");
            assert!(r.checked > 200, "{r}");
        }
    }
    Ok(())
}

/// The fused layers (one and two directions, both task-input readings) and the CRF as tape
/// nodes: every check `sclstm gradcheck` runs on them passes, on enough entries.
#[test]
fn every_fused_layer_and_crf_check_passes() {
    let checks = sclstm_model::layer_checks::checks();
    assert_eq!(checks.len(), 5);
    for c in checks {
        let r = (c.run)().unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert!(r.passed(), "{r}");
        assert!(r.checked > 20, "{r}");
    }
}
