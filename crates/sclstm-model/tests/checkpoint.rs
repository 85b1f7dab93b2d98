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
    assert_eq!(got.tensors, extra);
    assert_eq!(got.metadata.get("step").map(String::as_str), Some("17"));
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
