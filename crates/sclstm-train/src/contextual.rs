//! Contextual features of the SC-LSTM-LM-CNN variant (`encoder` in the configuration): a
//! frozen encoder's hidden states at every word, computed once per split and kept in the
//! encoder's feature cache (`<encoder>/features/`, see [`sclstm_encoder::cache`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use sclstm_cpu::CpuBackend;
use sclstm_data::batch::Batch;
use sclstm_encoder::{FeatureExtractor, Features, features_for};
use sclstm_model::ContextualConfig;

use crate::config::TrainConfig;
use crate::data::Prepared;

/// Folder under the encoder's own where its features of each split are cached.
pub const CACHE_DIR: &str = "features";

/// Seconds between progress lines while features are computed.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Opens the configured encoder (none without `encoder`), running on the run's threads.
///
/// # Errors
/// The encoder's errors (a missing folder names `scripts/fetch-encoder.sh`).
pub fn open_encoder(config: &TrainConfig) -> anyhow::Result<Option<FeatureExtractor>> {
    let Some(dir) = &config.encoder else {
        return Ok(None);
    };
    let cpu = CpuBackend::new(config.threads)?;
    let ex = FeatureExtractor::open(dir, config.encoder_pool, cpu)
        .with_context(|| format!("opening the encoder {}", dir.display()))?;
    Ok(Some(ex))
}

/// The model's view of the encoder's features: its states and their width.
pub fn contextual_config(ex: &FeatureExtractor) -> ContextualConfig {
    ContextualConfig {
        states: ex.config().states(),
        dim: ex.config().hidden_size,
    }
}

/// The features of `sentences` (called `name` in messages), from the cache under
/// `encoder_dir` or computed, saying how fast (words per second) every
/// 10 seconds (`PROGRESS_EVERY`) and at the end.
///
/// # Errors
/// The encoder's and the cache's errors.
pub fn split_features(
    ex: &FeatureExtractor,
    encoder_dir: &Path,
    name: &str,
    sentences: &[Vec<&str>],
    message: &mut dyn FnMut(&str),
) -> anyhow::Result<Features> {
    let start = Instant::now();
    let mut last = Instant::now();
    let cache = encoder_dir.join(CACHE_DIR);
    let (features, cached) = features_for(ex, sentences, &cache, |p| {
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            message(&format!(
                "encoder features {name}: {} of {} words, {:.0} words/s",
                p.done, p.total, p.per_second
            ));
        }
    })
    .with_context(|| format!("encoder features of {name}"))?;
    let words: usize = sentences.iter().map(Vec::len).sum();
    let secs = start.elapsed().as_secs_f64();
    let line = if cached {
        format!(
            "encoder features {name}: {words} words read from the cache in {} ({secs:.1} s)",
            cache.display()
        )
    } else {
        format!(
            "encoder features {name}: {words} words computed in {secs:.1} s ({:.0} words/s), {:.1} MB (f16) cached in {}",
            words as f64 / secs.max(1e-9),
            features.bytes() as f64 / 1e6,
            cache.display()
        )
    };
    message(&line);
    Ok(features)
}

/// Computes (or reads) the features of every split of every task of `prepared` when the
/// configuration names an encoder, and records their shape for the model.
///
/// # Errors
/// The encoder's and the cache's errors.
pub fn attach(
    config: &TrainConfig,
    prepared: &mut Prepared,
    message: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    let (Some(ex), Some(dir)) = (open_encoder(config)?, &config.encoder) else {
        return Ok(());
    };
    prepared.contextual = Some(contextual_config(&ex));
    for task in &mut prepared.tasks {
        for (split_name, split) in [
            ("train", &mut task.train),
            ("dev", &mut task.dev),
            ("test", &mut task.test),
        ] {
            let words: Vec<Vec<&str>> = split
                .sentences
                .iter()
                .map(|s| s.words.iter().map(String::as_str).collect())
                .collect();
            let name = format!("{}/{split_name}", task.name);
            split.contextual = Some(split_features(&ex, dir, &name, &words, message)?);
        }
    }
    Ok(())
}

/// The features of sentences outside a run's splits (`eval`, `predict`, `inspect`) when the
/// run's configuration names an encoder; none otherwise. Cached like a split's.
///
/// # Errors
/// The encoder's and the cache's errors.
pub fn for_sentences(
    config: &TrainConfig,
    name: &str,
    sentences: &[Vec<&str>],
    message: &mut dyn FnMut(&str),
) -> anyhow::Result<Option<Features>> {
    let (Some(ex), Some(dir)) = (open_encoder(config)?, &config.encoder) else {
        return Ok(None);
    };
    Ok(Some(split_features(&ex, dir, name, sentences, message)?))
}

/// The contextual features of a batch in the model's layout: (T·B, width) time-major,
/// row `t·B + b` from word `t` of the batch's sentence `b`, zeros on padding; empty
/// without features.
///
/// # Panics
/// If the batch holds a sentence the features do not (they belong to another split: a
/// caller bug).
pub fn batch_rows(batch: &Batch, features: Option<&Features>) -> Vec<f32> {
    let Some(f) = features else {
        return Vec::new();
    };
    let (b_n, width) = (batch.batch_size, f.width());
    let mut rows = vec![0.0f32; batch.seq_len * b_n * width];
    for (b, &s) in batch.sentence_ids.iter().enumerate() {
        let sentence = f.sentence(s);
        assert_eq!(
            f.words(s),
            batch.lens[b],
            "internal: features of another split"
        );
        for (t, word) in sentence.chunks_exact(width).enumerate() {
            let dst = &mut rows[(t * b_n + b) * width..][..width];
            for (d, v) in dst.iter_mut().zip(word) {
                *d = v.to_f32();
            }
        }
    }
    rows
}
