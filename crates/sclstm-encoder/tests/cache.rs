//! The on-disk feature cache: a second run reads what the first computed, in f16.

use std::path::PathBuf;

use sclstm_cpu::CpuBackend;
use sclstm_encoder::cache::{cache_path, data_key, features_for, read_cache};
use sclstm_encoder::{EncoderError, FeatureExtractor, Pool};

use crate::oracle::fixture_dir;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sclstm-encoder-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_cached_run_reuses_the_features() -> Result<(), EncoderError> {
    let enc = FeatureExtractor::open(&fixture_dir(), Pool::First, CpuBackend::new(1)?)?;
    let sentences = vec![vec!["the", "eu", "rejects"], vec![], vec!["lamb", "."]];
    let dir = temp_dir("cache");
    let mut calls = 0;
    let (first, cached) = features_for(&enc, &sentences, &dir, |p| {
        calls += 1;
        assert_eq!(p.total, 5);
    })?;
    assert!(!cached);
    assert_eq!(calls, 1);
    assert_eq!((first.len(), first.words(0), first.words(1)), (3, 3, 0));
    assert_eq!(first.bytes(), 5 * enc.width() * 2);
    // f16 of the freshly computed features.
    let exact = enc.extract(&sentences)?;
    for (a, b) in first.sentence(2).iter().zip(&exact[2]) {
        assert!(
            (a.to_f32() - b).abs() <= 1e-3 * b.abs().max(1.0),
            "{a} vs {b}"
        );
    }
    let (second, cached) = features_for(&enc, &sentences, &dir, |_| panic!("must not compute"))?;
    assert!(cached);
    assert_eq!(first, second);
    // Other words or another pooling give another file.
    let other = vec![vec!["the", "eu", "rejects"]];
    assert_ne!(data_key(&other), data_key(&sentences));
    let mean = FeatureExtractor::open(&fixture_dir(), Pool::Mean, CpuBackend::new(1)?)?;
    assert_ne!(mean.key(), enc.key());
    // A file read under the wrong key is refused.
    let path = cache_path(&dir, enc.key(), &data_key(&sentences));
    assert!(path.exists());
    let err = read_cache(&path, mean.key(), &data_key(&sentences)).unwrap_err();
    assert!(
        err.to_string().contains("made for another encoder"),
        "{err}"
    );
    std::fs::write(&path, b"not safetensors").map_err(|source| EncoderError::Io {
        path: path.clone(),
        source,
    })?;
    assert!(matches!(
        features_for(&enc, &sentences, &dir, |_| {}),
        Err(EncoderError::Cache { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
