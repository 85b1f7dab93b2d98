//! Checkpoint round trips and mismatch errors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use sclstm_core::Matrix;
use sclstm_cpu::CpuBackend;
use sclstm_model::{Family, ModelError, Tagger, TaskConfig};

use crate::common::{Batch, sentences, small_config, tagger};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sclstm-model-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn save_load_round_trip_gives_identical_predictions() -> Result<(), ModelError> {
    let dir = temp_dir("roundtrip");
    let path = dir.join("model.safetensors");
    let cfg = small_config(Family::ScLstm, true, true);
    let a = tagger::<f32>(cfg.clone(), 1)?;
    let extra = vec![(
        "adam.m.head.pos.weight".to_string(),
        Matrix::from_elem((2, 3), 0.25f32),
    )];
    let meta = BTreeMap::from([("step".to_string(), "17".to_string())]);
    a.save_with(&path, &extra, &meta)?;
    assert!(
        std::fs::read_dir(&dir).expect("dir").count() == 1,
        "no temporary file is left behind"
    );
    let batch = Batch::new(&sentences(4, 2));
    let mut b = tagger::<f32>(cfg, 2)?;
    assert_ne!(
        a.predict(&batch.input(), &[0, 1])?,
        b.predict(&batch.input(), &[0, 1])?
    );
    let got = b.load(&path)?;
    assert_eq!(
        a.predict(&batch.input(), &[0, 1])?,
        b.predict(&batch.input(), &[0, 1])?
    );
    for (id, name, v) in a.params().iter() {
        assert_eq!(v, b.params().get(id), "{name}");
    }
    let widened: Vec<_> = extra
        .iter()
        .map(|(n, m)| (n.clone(), m.mapv(f64::from)))
        .collect();
    assert_eq!(got.tensors, widened);
    assert_eq!(got.metadata.get("step").map(String::as_str), Some("17"));
    assert_eq!(
        sclstm_model::read_metadata(&path)?,
        got.metadata,
        "the header alone gives the same metadata"
    );
    let (c, _) = Tagger::from_checkpoint(&path, Arc::new(CpuBackend::<f32>::new(1)?))?;
    assert_eq!(c.config(), a.config());
    assert_eq!(
        a.predict(&batch.input(), &[1])?,
        c.predict(&batch.input(), &[1])?
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn f64_models_round_trip_exactly_and_load_f32_checkpoints() -> Result<(), ModelError> {
    let dir = temp_dir("f64");
    let cfg = small_config(Family::ScLstm, true, true);
    // f64 → file → f64 keeps every bit (an f32 file would round them).
    let a = tagger::<f64>(cfg.clone(), 1)?;
    let p64 = dir.join("f64.safetensors");
    a.save(&p64)?;
    let mut b = tagger::<f64>(cfg.clone(), 2)?;
    b.load(&p64)?;
    for (id, name, v) in a.params().iter() {
        assert_eq!(v, b.params().get(id), "{name}");
    }
    let beyond_f32 = a
        .params()
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .filter(|x| f64::from(*x as f32) != *x)
        .count();
    assert!(beyond_f32 > 0, "the f64 model holds values f32 cannot");
    // An f32 checkpoint loads into an f64 model exactly (widening), and an f64 one into
    // an f32 model rounded to nearest.
    let c = tagger::<f32>(cfg.clone(), 3)?;
    let p32 = dir.join("f32.safetensors");
    c.save(&p32)?;
    b.load(&p32)?;
    let mut d = tagger::<f32>(cfg, 4)?;
    d.load(&p64)?;
    for ((id, name, v), (_, _, w)) in c.params().iter().zip(a.params().iter()) {
        assert_eq!(&v.mapv(f64::from), b.params().get(id), "{name}");
        assert_eq!(&w.mapv(|x| x as f32), d.params().get(id), "{name}");
    }
    Ok(())
}

#[test]
fn mismatched_checkpoints_are_typed_errors() -> Result<(), ModelError> {
    let dir = temp_dir("mismatch");
    let path = dir.join("model.safetensors");
    let cfg = small_config(Family::LstmS, false, false);
    tagger::<f32>(cfg.clone(), 1)?.save(&path)?;

    let mut wider = cfg.clone();
    wider.hidden = 3;
    match tagger::<f32>(wider, 1)?.load(&path) {
        Err(ModelError::CheckpointShape {
            name,
            expected,
            found,
            ..
        }) => {
            // Names are checked in sorted order; `embed.word` keeps its shape.
            assert_eq!(name, "encoder.layer0.bwd.bias");
            assert_eq!((expected, found), (vec![1, 12], vec![1, 8]));
        }
        other => panic!("expected a shape error, got {other:?}"),
    }

    let mut more = cfg.clone();
    more.tasks.push(TaskConfig::new("ner", &["O", "B-PER"]));
    match tagger::<f32>(more, 1)?.load(&path) {
        Err(ModelError::CheckpointMissing { names, .. }) => {
            assert_eq!(names, vec!["head.ner.weight", "head.ner.bias"]);
        }
        other => panic!("expected missing parameters, got {other:?}"),
    }

    let mut fewer = cfg.clone();
    fewer.tasks.truncate(1);
    match tagger::<f32>(fewer, 1)?.load(&path) {
        Err(ModelError::CheckpointUnexpected { names, .. }) => {
            assert_eq!(names, vec!["head.chunk.bias", "head.chunk.weight"]);
        }
        other => panic!("expected unexpected parameters, got {other:?}"),
    }

    std::fs::write(dir.join("junk.safetensors"), b"not a checkpoint").expect("write");
    assert!(matches!(
        tagger::<f32>(cfg, 1)?.load(&dir.join("junk.safetensors")),
        Err(ModelError::CheckpointFormat { .. })
    ));
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// Optimizer moments survive a save / load through the extras, and training resumes
/// exactly: one more step after loading equals one more step without the round trip.
#[test]
fn adam_state_round_trips_through_extras() -> Result<(), ModelError> {
    use sclstm_autodiff::optim::{Adam, AdamConfig};
    use sclstm_model::{adam_from_extras, adam_to_extras};

    let dir = temp_dir("adam");
    let path = dir.join("last.safetensors");
    let cfg = small_config(Family::ScLstm, true, false);
    let batch = Batch::new(&sentences(3, 8));
    let step = |t: &mut Tagger<CpuBackend<f32>>, adam: &mut Adam<f32>, task: usize| {
        let grads = {
            let mut tape = t.tape();
            let loss = t.loss(&mut tape, &batch.input(), task, &batch.gold[task], 5)?;
            tape.backward(loss)?.into_param_grads()
        };
        adam.step(t.params_mut(), &grads)?;
        Ok::<_, ModelError>(())
    };
    let mut a = tagger::<f32>(cfg.clone(), 1)?;
    let mut adam = Adam::new(AdamConfig::default());
    step(&mut a, &mut adam, 0)?;
    step(&mut a, &mut adam, 1)?;
    let (tensors, meta) = adam_to_extras(&adam.export(a.params()));
    a.save_with(&path, &tensors, &meta)?;

    let (mut b, extras) = Tagger::from_checkpoint(&path, Arc::new(CpuBackend::<f32>::new(1)?))?;
    let mut adam_b = Adam::new(AdamConfig::default());
    adam_b.import(b.params(), adam_from_extras(&extras)?)?;
    step(&mut a, &mut adam, 0)?;
    step(&mut b, &mut adam_b, 0)?;
    for ((_, name, x), (_, _, y)) in a.params().iter().zip(b.params().iter()) {
        assert_eq!(x, y, "{name}");
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn non_finite_tensors_are_neither_written_nor_read() {
    use sclstm_model::checkpoint::{read_tensors, write_tensors};
    let dir = temp_dir("nonfinite");
    let path = dir.join("x.safetensors");
    let good = Matrix::from_shape_vec((1, 3), vec![1.0, 2.0, 3.0]).unwrap();
    write_tensors(&path, &[("good".into(), good.clone())], &BTreeMap::new()).unwrap();
    let before = std::fs::read(&path).unwrap();
    // Writing a NaN over a good file is refused and leaves the good file as it was.
    let bad = Matrix::from_shape_vec((1, 3), vec![1.0, f32::NAN, 3.0]).unwrap();
    let err = write_tensors(
        &path,
        &[("good".into(), good), ("enc.w".into(), bad)],
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ModelError::NonFiniteTensor { name, index: 1, .. } if name == "enc.w"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // A file holding an infinity (written by another tool) is refused on reading.
    let inf = dir.join("inf.safetensors");
    let data: Vec<u8> = [0.5f32, f32::INFINITY]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data).unwrap();
    std::fs::write(&inf, safetensors::serialize([("emb", view)], None).unwrap()).unwrap();
    let err = read_tensors(&inf).unwrap_err();
    assert!(
        err.to_string().contains("tensor `emb`") && err.to_string().contains("inf"),
        "{err}"
    );
}
