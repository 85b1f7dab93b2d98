//! The tiny BERT of `fixtures/tiny-bert/` against `transformers.BertModel`: expected
//! values made by `benches/reference/oracle_encoder.py` (float64 from the float32
//! weights).

use std::path::{Path, PathBuf};

use sclstm_cpu::CpuBackend;
use sclstm_encoder::tokenize::WordPiece;
use sclstm_encoder::{
    Bert, BertConfig, EncoderError, FeatureExtractor, Pool, weights::BertWeights,
};
use serde_json::Value;

/// Relative tolerance of every compared value: `|ours − ref| ≤ TOL · max(1, |ref|)`.
const TOL: f64 = 1e-5;

pub(crate) fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json")).expect("fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// The largest `|a − r| / max(1, |r|)`; fails the test naming the worst index.
fn assert_close(what: &str, ours: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len(), "{what}: lengths");
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (&a, &r)) in ours.iter().zip(reference).enumerate() {
        let err = (f64::from(a) - r).abs() / r.abs().max(1.0);
        if err > worst || err.is_nan() {
            (worst, at) = (err, i);
        }
    }
    assert!(
        worst <= TOL,
        "{what}: error {worst:.3e} at index {at}: ours {} reference {}",
        ours[at],
        reference[at]
    );
    worst
}

fn bert(threads: usize) -> Result<Bert, EncoderError> {
    let dir = fixture_dir();
    let cfg = BertConfig::read(&dir.join("config.json"))?;
    let weights = BertWeights::read(&dir.join("model.safetensors"), &cfg)?;
    Ok(Bert::new(cfg, weights, CpuBackend::new(threads)?))
}

#[test]
fn every_hidden_state_matches_transformers() -> Result<(), EncoderError> {
    let fx = expected();
    let sentences = fx["sentences"].as_array().expect("sentences");
    let ids: Vec<Vec<u32>> = sentences
        .iter()
        .map(|s| floats(&s["ids"]).iter().map(|&x| x as u32).collect())
        .collect();
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    for threads in [1, 2] {
        // All sentences packed in one call, and each alone: the same states.
        let packed = bert(threads)?.forward(&refs)?;
        assert_eq!(packed.len(), 3, "embeddings + 2 layers");
        let h = 8;
        let mut row = 0;
        for (s, sent) in sentences.iter().enumerate() {
            let n = ids[s].len();
            let alone = bert(threads)?.forward(&[&ids[s]])?;
            for (l, state) in sent["states"]
                .as_array()
                .expect("states")
                .iter()
                .enumerate()
            {
                let reference = floats(state);
                assert_close(
                    &format!("sentence {s} state {l} packed"),
                    &packed[l][row * h..(row + n) * h],
                    &reference,
                );
                assert_close(
                    &format!("sentence {s} state {l} alone"),
                    &alone[l],
                    &reference,
                );
            }
            row += n;
        }
    }
    Ok(())
}

#[test]
fn wordpiece_of_split_words_matches_transformers() -> Result<(), EncoderError> {
    let wp = WordPiece::read(&fixture_dir().join("tokenizer.json"))?;
    for sent in expected()["sentences"].as_array().expect("sentences") {
        let words: Vec<&str> = sent["words"]
            .as_array()
            .expect("words")
            .iter()
            .map(|w| w.as_str().expect("word"))
            .collect();
        let pieces = wp.word_pieces(&words)?;
        let ids: Vec<u32> = std::iter::once(wp.cls)
            .chain(pieces.iter().flatten().copied())
            .chain(std::iter::once(wp.sep))
            .collect();
        let expected_ids: Vec<u32> = floats(&sent["ids"]).iter().map(|&x| x as u32).collect();
        assert_eq!(ids, expected_ids, "{words:?}");
        let owners: Vec<i64> = std::iter::once(-1)
            .chain(
                pieces
                    .iter()
                    .enumerate()
                    .flat_map(|(w, p)| std::iter::repeat_n(w as i64, p.len())),
            )
            .chain(std::iter::once(-1))
            .collect();
        let expected_owners: Vec<i64> = floats(&sent["word_ids"])
            .iter()
            .map(|&x| x as i64)
            .collect();
        assert_eq!(owners, expected_owners, "{words:?}");
    }
    Ok(())
}

#[test]
fn word_features_match_transformers_for_both_pools() -> Result<(), EncoderError> {
    let fx = expected();
    let sentences: Vec<Vec<&str>> = fx["sentences"]
        .as_array()
        .expect("sentences")
        .iter()
        .map(|s| {
            s["words"]
                .as_array()
                .expect("words")
                .iter()
                .map(|w| w.as_str().expect("word"))
                .collect()
        })
        .collect();
    for (pool, key) in [(Pool::First, "first"), (Pool::Mean, "mean")] {
        let enc = FeatureExtractor::open(&fixture_dir(), pool, CpuBackend::new(2)?)?;
        assert_eq!(enc.width(), 3 * 8);
        let feats = enc.extract(&sentences)?;
        for (s, sent) in fx["sentences"]
            .as_array()
            .expect("sentences")
            .iter()
            .enumerate()
        {
            let reference: Vec<f64> = sent[key]
                .as_array()
                .expect("rows")
                .iter()
                .flat_map(floats)
                .collect();
            assert_close(&format!("sentence {s} {key}"), &feats[s], &reference);
        }
    }
    Ok(())
}

#[test]
fn bert_prefixed_names_load_the_same_model() -> Result<(), Box<dyn std::error::Error>> {
    let dir = fixture_dir();
    let buf = std::fs::read(dir.join("model.safetensors"))?;
    let st = safetensors::SafeTensors::deserialize(&buf)?;
    let renamed: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (format!("bert.{name}"), view))
        .collect();
    let tmp = std::env::temp_dir().join(format!("sclstm-encoder-prefix-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let path = tmp.join("model.safetensors");
    std::fs::write(&path, safetensors::serialize(renamed, None)?)?;
    let cfg = BertConfig::read(&dir.join("config.json"))?;
    let prefixed = Bert::new(
        cfg.clone(),
        BertWeights::read(&path, &cfg)?,
        CpuBackend::new(1)?,
    );
    let ids = [2u32, 6, 7, 3];
    assert_eq!(prefixed.forward(&[&ids])?, bert(1)?.forward(&[&ids])?);
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}

#[test]
fn a_word_without_sub_words_gets_unk_and_long_sentences_keep_every_word() -> Result<(), EncoderError>
{
    let enc = FeatureExtractor::open(&fixture_dir(), Pool::First, CpuBackend::new(1)?)?;
    let wp = enc.wordpiece();
    // A zero-width space normalizes to nothing.
    let pieces = wp.word_pieces(&["the", "\u{200b}", "lamb"])?;
    assert_eq!(pieces[1], vec![wp.unk]);
    // 40 words of one sub-word each, against 14 sub-words per window (16 positions).
    let long: Vec<&str> = ["the", "eu", "rejects", "german", "call"]
        .iter()
        .copied()
        .cycle()
        .take(40)
        .collect();
    // A word of 30 sub-words (one per "="), longer than a window, keeps a vector too.
    let rule = "=".repeat(30);
    let feats = enc.extract(&[long.clone(), vec!["lamb"], vec!["the", &rule, "lamb"]])?;
    assert_eq!(feats[0].len(), 40 * enc.width());
    assert_eq!(feats[1].len(), enc.width());
    assert_eq!(feats[2].len(), 3 * enc.width());
    assert!(feats[2].iter().all(|v| v.is_finite()));
    assert!(feats[0].iter().all(|v| v.is_finite()));
    // The first words lie in the first window alone: equal to encoding them by themselves.
    let head = enc.extract(&[long[..14].to_vec()])?;
    let w = enc.width();
    for (a, b) in feats[0][..w].iter().zip(&head[0][..w]) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
    Ok(())
}

#[test]
fn bad_files_are_typed_errors_naming_them() -> Result<(), Box<dyn std::error::Error>> {
    let missing = Path::new("datasets/encoders/no-such-encoder");
    let err = FeatureExtractor::open(missing, Pool::First, CpuBackend::new(1)?).unwrap_err();
    assert!(matches!(err, EncoderError::Missing { .. }));
    assert!(
        err.to_string().contains("scripts/fetch-encoder.sh"),
        "{err}"
    );
    let tmp = std::env::temp_dir().join(format!("sclstm-encoder-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let cfg_path = tmp.join("config.json");
    std::fs::write(&cfg_path, "{\n\"hidden_size\": 8,\n")?;
    let err = BertConfig::read(&cfg_path).unwrap_err();
    assert!(
        matches!(err, EncoderError::Config { .. }) && err.to_string().contains("config.json: line"),
        "{err}"
    );
    let text = std::fs::read_to_string(fixture_dir().join("config.json"))?;
    std::fs::write(
        &cfg_path,
        text.replace("\"hidden_size\": 8", "\"hidden_size\": 6"),
    )?;
    let cfg = BertConfig::read(&cfg_path)?;
    let err = BertWeights::read(&fixture_dir().join("model.safetensors"), &cfg).unwrap_err();
    assert!(
        err.to_string().contains(
            "embeddings.token_type_embeddings.weight\" has shape [2, 8], expected [2, 6]"
        ),
        "{err}"
    );
    let bert = bert(1)?;
    assert!(matches!(
        bert.forward(&[&[2, 999]]),
        Err(EncoderError::Input { sentence: 0, .. })
    ));
    assert!(matches!(
        bert.forward(&[&[2; 17]]),
        Err(EncoderError::Input { .. })
    ));
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}
