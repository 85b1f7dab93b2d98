//! Models too large for this machine are typed errors before anything is allocated, from a
//! configuration and from a checkpoint; the size estimate counts exactly the parameters built.

use std::collections::BTreeMap;
use std::sync::Arc;

use sclstm_cpu::CpuBackend;
use sclstm_model::checkpoint::CONFIG_KEY;
use sclstm_model::{
    ContextualConfig, Family, ModelConfig, ModelError, Tagger, TaskInputMode,
    available_memory_bytes, write_tensors,
};

use crate::common::small_config;

#[test]
fn parameter_count_matches_every_built_family() -> Result<(), ModelError> {
    for family in Family::ALL {
        for (crf, chars) in [(false, false), (true, true)] {
            for input in [TaskInputMode::Shared, TaskInputMode::Chained] {
                let mut c = small_config(family, crf, chars);
                c.task_input = input;
                c.caps_dim = chars.then_some(2);
                c.contextual = chars.then_some(ContextualConfig { states: 3, dim: 5 });
                let t = Tagger::new(c.clone(), Arc::new(CpuBackend::<f32>::new(1)?), 0, None)?;
                assert_eq!(
                    c.parameter_count(),
                    Some(t.params().num_scalars() as u64),
                    "{family} crf={crf} chars={chars} {input:?}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn overflowing_hidden_size_is_a_typed_error() -> Result<(), ModelError> {
    let mut c = small_config(Family::ScLstm, false, false);
    c.hidden = 4_611_686_018_427_387_904;
    let err = Tagger::new(c, Arc::new(CpuBackend::<f32>::new(1)?), 0, None).unwrap_err();
    assert!(matches!(err, ModelError::SizeOverflow { .. }), "{err}");
    assert!(err.to_string().contains("4611686018427387904"), "{err}");
    Ok(())
}

#[test]
fn checkpoint_asking_for_a_huge_table_is_refused() -> Result<(), ModelError> {
    if available_memory_bytes().is_none() {
        return Ok(()); // Without a known limit the model would really be allocated.
    }
    let mut c: ModelConfig = small_config(Family::ScLstm, false, false);
    c.word_vocab = 20_000;
    c.word_dim = 1 << 32;
    let dir = std::env::temp_dir().join(format!("sclstm-model-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("huge.safetensors");
    let meta = BTreeMap::from([(
        CONFIG_KEY.to_string(),
        serde_json::to_string(&c).expect("config serializes"),
    )]);
    write_tensors::<f32>(&path, &[], &meta)?;
    let err = Tagger::from_checkpoint(&path, Arc::new(CpuBackend::<f32>::new(1)?)).unwrap_err();
    match &err {
        ModelError::TooLarge { needed, available } => {
            assert!(*needed > 20_000u64 << 32 && needed > available);
            let msg = err.to_string();
            assert!(msg.contains(&needed.to_string()), "{msg}");
            assert!(msg.contains(&available.to_string()), "{msg}");
        }
        other => panic!("expected TooLarge, got {other}"),
    }
    Ok(())
}
