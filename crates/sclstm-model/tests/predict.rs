//! One-call multi-task prediction agrees with the training forward; bad input is typed.

use ndarray::Axis;
use sclstm_layers::{CrfWeights, viterbi_decode};
use sclstm_model::{Family, ModelError, TaskInputMode};

use crate::common::{Batch, loss_value, sentences, small_config, tagger};

/// The tags the training forward's logits (dropout off) give: argmax, or Viterbi for CRF.
fn tags_from_inspect(
    t: &sclstm_model::Tagger<sclstm_cpu::CpuBackend<f64>>,
    batch: &Batch,
    k: usize,
    crf: bool,
) -> Result<Vec<Vec<u32>>, ModelError> {
    let dump = t.inspect(&batch.input(), k, &batch.gold[k])?;
    let name = format!("act.logits.{}", t.config().tasks[k].name);
    let z = &dump
        .iter()
        .find(|(n, _)| *n == name)
        .expect("logits are dumped")
        .1;
    let z = z.mapv(f64::from);
    let bsz = batch.lens.len();
    if crf {
        let head = format!("head.{}.crf.", t.config().tasks[k].name);
        let p = |s: &str| {
            t.params()
                .get(t.params().id(&format!("{head}{s}")).expect("crf param"))
        };
        let w = CrfWeights {
            transitions: p("transitions"),
            start: p("start"),
            end: p("end"),
        };
        let paths = viterbi_decode(&z, &batch.lens, w, None)?;
        return Ok(paths
            .into_iter()
            .map(|p| p.into_iter().map(|y| y as u32).collect())
            .collect());
    }
    Ok((0..bsz)
        .map(|b| {
            (0..batch.lens[b])
                .map(|t| {
                    let row = z.index_axis(Axis(0), t * bsz + b);
                    let mut best = 0;
                    for (j, &v) in row.iter().enumerate() {
                        if v > row[best] {
                            best = j;
                        }
                    }
                    best as u32
                })
                .collect()
        })
        .collect())
}

#[test]
fn predict_tags_all_tasks_in_one_call_like_the_training_forward() -> Result<(), ModelError> {
    let batch = Batch::new(&sentences(5, 3));
    for family in [Family::Stl, Family::LstmS, Family::LstmD, Family::ScLstm] {
        for mode in [TaskInputMode::Shared, TaskInputMode::Chained] {
            if mode == TaskInputMode::Chained && family != Family::ScLstm {
                continue;
            }
            let mut cfg = small_config(family, true, true);
            cfg.task_input = mode;
            cfg.hidden = 4;
            let t = tagger::<f64>(cfg, 8)?;
            let both = t.predict(&batch.input(), &[0, 1])?;
            assert_eq!(both.len(), 2);
            for (k, crf) in [(0, false), (1, true)] {
                let want = tags_from_inspect(&t, &batch, k, crf)?;
                assert_eq!(both[k], want, "{family:?} {mode:?} task {k}");
                assert_eq!(t.predict(&batch.input(), &[k])?[0], want);
                for (b, path) in want.iter().enumerate() {
                    assert_eq!(path.len(), batch.lens[b]);
                }
            }
            // Order of the request is the order of the answer.
            let rev = t.predict(&batch.input(), &[1, 0])?;
            assert_eq!((&rev[0], &rev[1]), (&both[1], &both[0]));
        }
    }
    Ok(())
}

#[test]
fn bad_input_is_a_typed_error() -> Result<(), ModelError> {
    let cfg = small_config(Family::ScLstm, false, true);
    assert!(matches!(
        cfg.task_index("ner"),
        Err(ModelError::UnknownTask { name, .. }) if name == "ner"
    ));
    assert_eq!(cfg.task_index("chunk")?, 1);
    let t = tagger::<f64>(cfg.clone(), 1)?;
    t.check_tags(1, &["B-NP", "I-NP", "O"])?;
    assert!(matches!(
        t.check_tags(1, &["B-NP", "O", "I-NP"]),
        Err(ModelError::TagSetMismatch { .. })
    ));
    assert!(matches!(
        t.predict(&Batch::new(&[vec![1]]).input(), &[2]),
        Err(ModelError::TaskIndex { .. })
    ));

    let mut batch = Batch::new(&sentences(2, 4));
    batch.gold[0][0] = 3;
    let mut tape = t.tape();
    assert!(matches!(
        t.loss(&mut tape, &batch.input(), 0, &batch.gold[0], 0),
        Err(ModelError::TagOutOfRange {
            tag: 3,
            position: 0,
            ..
        })
    ));
    let mut long = Batch::new(&sentences(2, 4));
    long.lens[0] = long.steps + 1;
    assert!(matches!(
        t.predict(&long.input(), &[0]),
        Err(ModelError::Input(_))
    ));
    let mut bad_word = Batch::new(&sentences(2, 4));
    bad_word.words[0] = 999;
    assert!(matches!(
        t.predict(&bad_word.input(), &[0]),
        Err(ModelError::Num(_))
    ));

    let be = std::sync::Arc::new(sclstm_cpu::CpuBackend::<f32>::new(1)?);
    let wrong = vec![(2usize, vec![0.5f32; 4])];
    assert!(matches!(
        sclstm_model::Tagger::new(cfg.clone(), be.clone(), 1, Some(&wrong)),
        Err(ModelError::EmbeddingDim {
            row: 2,
            expected: 3,
            found: 4,
            ..
        })
    ));
    let right = vec![(2usize, vec![0.5f32; 3])];
    let t = sclstm_model::Tagger::new(cfg.clone(), be.clone(), 1, Some(&right))?;
    let table = t.params().get(t.params().id("embed.word").expect("exists"));
    assert_eq!(table.row(2).to_vec(), vec![0.5f32; 3]);
    assert_eq!(
        table.row(0).to_vec(),
        vec![0.0f32; 3],
        "padding row is zero"
    );

    let mut lstm_d = cfg;
    lstm_d.family = Family::LstmD;
    lstm_d.tasks[1].name = "srl".into();
    assert!(matches!(
        sclstm_model::Tagger::new(lstm_d, be, 1, None),
        Err(ModelError::Config(m)) if m.contains("srl")
    ));
    Ok(())
}

#[test]
fn inspect_names_every_stage() -> Result<(), ModelError> {
    let t = tagger::<f64>(small_config(Family::ScLstm, true, true), 2)?;
    let batch = Batch::new(&sentences(2, 6));
    let dump = t.inspect(&batch.input(), 1, &batch.gold[1])?;
    let names: Vec<&str> = dump.iter().map(|(n, _)| n.as_str()).collect();
    for n in [
        "input.word_ids",
        "input.char_ids",
        "act.embed.word",
        "act.embed.caps",
        "act.embed.char",
        "act.input",
        "act.layer0.h",
        "act.layer1.h",
        "act.layer1.q.chunk",
        "act.logits.chunk",
        "act.loss.chunk",
        "grad.embed.word",
        "grad.head.chunk.crf.transitions",
        "grad.encoder.layer1.fwd.task.chunk.u",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.contains("pos")),
        "no pos entry in a chunk dump"
    );
    let get = |n: &str| &dump.iter().find(|(m, _)| m == n).expect("present").1;
    let rows = batch.words.len();
    assert_eq!(get("act.layer1.q.chunk").dim(), (rows, 4));
    assert_eq!(get("act.input").dim(), (rows, 3 + 8 + 3));
    assert!(get("act.loss.chunk")[(0, 0)] > 0.0);
    Ok(())
}

/// Padding never leaks: each sentence gets the same tags and loss alone as in a padded
/// batch, and the batch loss is `(λ/B) Σ_b loss_b`.
#[test]
fn padding_never_leaks_and_loss_is_lambda_weighted_mean_over_sentences() -> Result<(), ModelError> {
    let data = sentences(3, 12);
    let batch = Batch::new(&data);
    for family in Family::ALL {
        let mut cfg = small_config(family, true, true);
        cfg.tasks[1].lambda = 3.0;
        let t = tagger::<f64>(cfg, 4)?;
        let together = t.predict(&batch.input(), &[0, 1])?;
        for (task, tags) in together.iter().enumerate() {
            let mut sum = 0.0;
            for (b, s) in data.iter().enumerate() {
                let alone = Batch::new(std::slice::from_ref(s));
                assert_eq!(t.predict(&alone.input(), &[task])?[0][0], tags[b]);
                sum += loss_value(&t, &alone, task)?;
            }
            let mean = loss_value(&t, &batch, task)?;
            assert!(
                (mean * 3.0 - sum).abs() <= 1e-10 * sum.abs(),
                "{family:?} task {task}: batch {mean} vs sentences {sum}"
            );
        }
        // λ = 3 for chunk: the same model with λ = 1 gives a third of the loss.
        let mut cfg1 = t.config().clone();
        cfg1.tasks[1].lambda = 1.0;
        let t1 = tagger::<f64>(cfg1, 4)?;
        let (l3, l1) = (loss_value(&t, &batch, 1)?, loss_value(&t1, &batch, 1)?);
        assert!((l3 - 3.0 * l1).abs() <= 1e-12 * l3, "{l3} vs 3 × {l1}");
    }
    Ok(())
}

/// Same seed, same model; the dropout seed fixes the masks.
#[test]
fn seeds_make_runs_reproducible() -> Result<(), ModelError> {
    let cfg = {
        let mut c = small_config(Family::ScLstm, false, true);
        c.dropout = 0.5;
        c
    };
    let (a, b, c) = (
        tagger::<f64>(cfg.clone(), 7)?,
        tagger::<f64>(cfg.clone(), 7)?,
        tagger::<f64>(cfg, 8)?,
    );
    for ((_, name, x), (_, _, y)) in a.params().iter().zip(b.params().iter()) {
        assert_eq!(x, y, "{name}");
    }
    assert_ne!(
        a.params()
            .get(a.params().id("head.pos.weight").expect("exists")),
        c.params()
            .get(c.params().id("head.pos.weight").expect("exists"))
    );
    let batch = Batch::new(&sentences(3, 1));
    let loss = |seed: u64| -> Result<f64, ModelError> {
        let mut tape = a.tape();
        let l = a.loss(&mut tape, &batch.input(), 0, &batch.gold[0], seed)?;
        Ok(sclstm_core::Real::to_f64(tape.value(l)[(0, 0)]))
    };
    assert_eq!(loss(1)?, loss(1)?);
    assert_ne!(loss(1)?, loss(2)?);
    // A no-grad tape evaluates without dropout: the same as a dropout-free model.
    let mut eval = a.tape().no_grad();
    let l = a.loss(&mut eval, &batch.input(), 0, &batch.gold[0], 1)?;
    let mut no_drop = a.config().clone();
    no_drop.dropout = 0.0;
    let d = tagger::<f64>(no_drop, 7)?;
    assert_eq!(
        sclstm_core::Real::to_f64(eval.value(l)[(0, 0)]),
        loss_value(&d, &batch, 0)?
    );
    Ok(())
}

#[test]
fn predictions_follow_parameter_updates() -> Result<(), ModelError> {
    let batch = Batch::new(&sentences(6, 5));
    let mut cfg = small_config(Family::ScLstm, false, false);
    cfg.hidden = 4;
    let mut t = tagger::<f64>(cfg, 3)?;
    let before = t.predict(&batch.input(), &[0, 1])?;
    // Tagging again with unchanged weights reuses the layers' transposed weights.
    assert_eq!(t.predict(&batch.input(), &[0, 1])?, before);
    // Change every recurrent-layer weight in place, as an optimizer step does.
    let ids: Vec<_> = t
        .params()
        .iter()
        .filter(|(_, name, _)| name.contains(".w_ih") || name.contains(".w_hh"))
        .map(|(id, _, _)| id)
        .collect();
    assert!(!ids.is_empty(), "the model has recurrent weights");
    for id in ids {
        t.params_mut().get_mut(id).mapv_inplace(|w| -3.0 * w + 0.2);
    }
    let after = t.predict(&batch.input(), &[0, 1])?;
    assert_ne!(after, before, "the change reaches the tags");
    for (k, tags) in after.iter().enumerate() {
        assert_eq!(*tags, tags_from_inspect(&t, &batch, k, false)?, "task {k}");
    }
    Ok(())
}

/// `predict_scored` chooses the same tags as `predict`, each with a probability in (0, 1]:
/// the softmax probability (softmax heads) or the forward–backward marginal (CRF heads).
#[test]
fn scored_predictions_give_the_probability_of_each_chosen_tag() -> Result<(), ModelError> {
    let batch = Batch::new(&[vec![5, 2, 7], vec![4]]);
    for crf in [false, true] {
        let t = tagger::<f64>(small_config(Family::ScLstm, crf, false), 3)?;
        let tags = t.predict(&batch.input(), &[0, 1])?;
        let scored = t.predict_scored(&batch.input(), &[0, 1])?;
        for (k, per_task) in scored.iter().enumerate() {
            for (s, (ids, probs)) in per_task.iter().enumerate() {
                assert_eq!(ids, &tags[k][s], "crf {crf}: same tags as predict");
                assert_eq!(probs.len(), ids.len());
                assert!(
                    probs.iter().all(|&p| p > 0.0 && p <= 1.0),
                    "crf {crf}: {probs:?}"
                );
            }
        }
    }
    Ok(())
}
