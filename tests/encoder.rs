//! `sclstm train --encoder` (SC-LSTM-LM-CNN-CRF) on the tiny BERT fixture of
//! `crates/sclstm-encoder/tests/fixtures/tiny-bert`, copied aside so that its feature cache
//! is written outside the repository.

use std::path::{Path, PathBuf};

use crate::cli::{ok, sclstm};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sclstm-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A copy of the tiny encoder in `dir`.
fn tiny_encoder(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/sclstm-encoder/tests/fixtures/tiny-bert");
    let dst = dir.join("tiny-bert");
    std::fs::create_dir_all(&dst).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
    ] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

fn train_args<'a>(out: &'a str, encoder: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--out",
        out,
        "--encoder",
        encoder,
        "--char-cnn",
        "--crf",
        "--lambda",
        "ner=3",
        "--max-sentences",
        "12",
        "--hidden",
        "4",
        "--layers",
        "2",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--lr",
        "0.01",
        "--quiet",
    ]
}

#[test]
fn contextual_run_trains_caches_its_features_and_evaluates() {
    let dir = temp_dir("encoder");
    let enc = tiny_encoder(&dir);
    let (enc_s, out_a, out_b) = (
        enc.to_str().unwrap().to_string(),
        dir.join("run-a"),
        dir.join("run-b"),
    );
    ok(&train_args(out_a.to_str().unwrap(), &enc_s));
    let log = std::fs::read_to_string(out_a.join("train.log")).unwrap();
    for split in ["ner/train", "ner/dev", "chunk/test", "pos/dev"] {
        assert!(
            log.contains(&format!("encoder features {split}: ")) && log.contains("computed in"),
            "{log}"
        );
    }
    let config = std::fs::read_to_string(out_a.join("config.toml")).unwrap();
    assert!(
        config.contains(&format!("encoder = \"{enc_s}\"")),
        "{config}"
    );
    assert!(config.contains("encoder_pool = \"first\""), "{config}");
    // The checkpoint holds the scalar mix: 3 states of the tiny BERT (embeddings + 2 layers).
    let buf = std::fs::read(out_a.join("best.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&buf).unwrap();
    assert_eq!(st.tensor("embed.mix.weights").unwrap().shape(), [1, 3]);
    assert_eq!(st.tensor("embed.mix.gamma").unwrap().shape(), [1, 1]);
    let cached = std::fs::read_dir(enc.join("features")).unwrap().count();
    assert_eq!(cached, 9, "3 tasks × 3 splits");
    // A second run reads every split from the cache.
    ok(&train_args(out_b.to_str().unwrap(), &enc_s));
    let log = std::fs::read_to_string(out_b.join("train.log")).unwrap();
    assert_eq!(log.matches("read from the cache").count(), 9, "{log}");
    assert!(!log.contains("computed in"), "{log}");
    // eval computes the features of what it scores with the run's encoder.
    let scores = ok(&[
        "eval",
        "--run",
        out_a.to_str().unwrap(),
        "--split",
        "dev",
        "--threads",
        "1",
    ]);
    assert!(scores.contains("== ner"), "{scores}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_encoder_names_the_fetch_script() {
    let dir = temp_dir("no-encoder");
    let out = dir.join("run");
    let missing = dir.join("all-MiniLM-L6-v2");
    let res = sclstm(&train_args(
        out.to_str().unwrap(),
        missing.to_str().unwrap(),
    ));
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("scripts/fetch-encoder.sh"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
