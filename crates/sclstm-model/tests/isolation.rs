//! Task-specific parameters get gradient only from their own task; each family computes
//! only what a batch's task needs.

use sclstm_model::{Family, ModelError, TaskInputMode};

use crate::common::{Batch, loss_value, sentences, small_config, tagger};

fn check_isolation(family: Family, mode: TaskInputMode) -> Result<(), ModelError> {
    let mut cfg = small_config(family, true, true);
    cfg.task_input = mode;
    let mut t = tagger::<f64>(cfg, 5)?;
    let batch = Batch::new(&sentences(3, 9));
    for a in 0..2 {
        let other = 1 - a;
        let mut tape = t.tape();
        let loss = t.loss(&mut tape, &batch.input(), a, &batch.gold[a], 1)?;
        let grads = tape.backward(loss)?;
        let mut own = 0;
        for (id, name, _) in t.params().iter() {
            match (t.param_owner(id), grads.param(id)) {
                (Some(o), Some(_)) if o == other => {
                    panic!("{family:?}: task {a} batch reached task {other}'s {name}")
                }
                (Some(o), Some(g)) if o == a => {
                    assert!(g.sq_norm() > 0.0, "{name} has an all-zero gradient");
                    own += 1;
                }
                _ => {}
            }
        }
        assert!(
            own >= 2,
            "{family:?}: task {a} has no gradient on its own parameters"
        );
        // Changing the other task's parameters leaves this task's loss unchanged.
        let before = loss_value(&t, &batch, a)?;
        let ids: Vec<_> = t
            .params()
            .iter()
            .filter(|(id, _, _)| t.param_owner(*id) == Some(other))
            .map(|(id, _, _)| id)
            .collect();
        assert!(!ids.is_empty());
        for id in ids {
            t.params_mut().get_mut(id).mapv_inplace(|x| x + 0.3);
        }
        assert_eq!(before, loss_value(&t, &batch, a)?, "{family:?} task {a}");
    }
    Ok(())
}

#[test]
fn sc_lstm_task_batch_leaves_other_task_untouched() -> Result<(), ModelError> {
    check_isolation(Family::ScLstm, TaskInputMode::Shared)?;
    check_isolation(Family::ScLstm, TaskInputMode::Chained)
}

#[test]
fn other_families_isolate_heads_and_stl_models() -> Result<(), ModelError> {
    for f in [Family::Stl, Family::LstmS, Family::LstmD] {
        check_isolation(f, TaskInputMode::Shared)?;
    }
    Ok(())
}

/// Shared reading: only the top layer has task gates; LSTM-d's pos batch (layer 1)
/// leaves layer 2 without gradient.
#[test]
fn gates_and_layers_exist_only_where_used() -> Result<(), ModelError> {
    let t = tagger::<f64>(small_config(Family::ScLstm, false, false), 1)?;
    let names: Vec<String> = t.params().iter().map(|(_, n, _)| n.to_string()).collect();
    assert!(names.iter().any(|n| n == "encoder.layer1.bwd.task.chunk.u"));
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("encoder.layer0.") && n.contains(".task."))
    );
    assert_eq!(
        t.params()
            .get(t.params().id("head.pos.weight").unwrap())
            .dim(),
        (8, 3)
    );

    let t = tagger::<f64>(small_config(Family::LstmD, false, false), 1)?;
    let batch = Batch::new(&sentences(2, 1));
    let mut tape = t.tape();
    let loss = t.loss(&mut tape, &batch.input(), 0, &batch.gold[0], 0)?;
    let grads = tape.backward(loss)?;
    let id = |n: &str| t.params().id(n).expect("parameter exists");
    assert!(grads.param(id("encoder.layer0.fwd.w_ih")).is_some());
    assert!(
        grads.param(id("encoder.layer1.fwd.w_ih")).is_none(),
        "pos reads layer 1 only"
    );

    let t = tagger::<f64>(small_config(Family::Stl, false, true), 1)?;
    for n in [
        "stl.pos.embed.word",
        "stl.chunk.char_cnn.weight",
        "stl.chunk.encoder.layer1.bwd.w_hh",
    ] {
        assert!(t.params().id(n).is_some(), "{n}");
    }
    Ok(())
}
