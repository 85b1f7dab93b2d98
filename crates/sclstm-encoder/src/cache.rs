//! Encoder features of a whole corpus split, computed once and kept on disk.
//!
//! The encoder is frozen, so a split's features never change: they are computed once
//! and stored as `<dir>/<encoder key>-<data key>.safetensors` (the first 16 hex digits
//! of each SHA-256), holding `features` (F16, (words, width)) and `lengths` (U32, one per
//! sentence), with both full keys in the metadata. Any change to the encoder's files,
//! the pooling or the words gives other keys and so another file. f16 halves the disk
//! and memory cost of f32 (`2·(L+1)·H` bytes a word: 5,376 for MiniLM-L6) at a relative
//! rounding error of at most 2⁻¹¹ ≈ 4.9e-4, far below what a tagger resolves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use half::f16;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use sha2::{Digest, Sha256};

use crate::error::io_err;
use crate::{EncoderError, FeatureExtractor};

/// Sentences encoded in one packed batch when filling a cache.
pub const SENTENCES_PER_BATCH: usize = 32;

/// The per-word features of a list of sentences, in f16.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    width: usize,
    lens: Vec<usize>,
    offsets: Vec<usize>,
    data: Vec<f16>,
}

impl Features {
    fn new(width: usize, lens: Vec<usize>, data: Vec<f16>) -> Self {
        let offsets = lens
            .iter()
            .scan(0, |acc, &n| {
                let o = *acc;
                *acc += n * width;
                Some(o)
            })
            .collect();
        Features {
            width,
            lens,
            offsets,
            data,
        }
    }

    /// Features per word.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of sentences.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether there is no sentence.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Words of sentence `i`.
    pub fn words(&self, i: usize) -> usize {
        self.lens[i]
    }

    /// Sentence `i`'s features, (words, width) row-major.
    ///
    /// # Panics
    /// If `i` is not a sentence index (a caller bug).
    pub fn sentence(&self, i: usize) -> &[f16] {
        &self.data[self.offsets[i]..][..self.lens[i] * self.width]
    }

    /// Bytes the features take (in memory and, up to the header, on disk).
    pub fn bytes(&self) -> usize {
        self.data.len() * 2
    }
}

/// SHA-256 (hex) of the words of `sentences` (each word and sentence terminated, so
/// regrouping the same words gives another key).
pub fn data_key(sentences: &[Vec<&str>]) -> String {
    let mut hash = Sha256::new();
    for words in sentences {
        for w in words {
            hash.update(w.as_bytes());
            hash.update([0u8]);
        }
        hash.update([1u8]);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache file of features of `data_key` under `encoder_key`.
pub fn cache_path(dir: &Path, encoder_key: &str, data_key: &str) -> PathBuf {
    dir.join(format!(
        "{}-{}.safetensors",
        &encoder_key[..16.min(encoder_key.len())],
        &data_key[..16.min(data_key.len())]
    ))
}

/// Progress of [`features_for`] while it computes: words done, words in all, tokens per
/// second so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Words whose features are computed.
    pub done: usize,
    /// Words in all.
    pub total: usize,
    /// Words per second since the start.
    pub per_second: f64,
}

/// The features of `sentences`: read from `cache_dir` when a file for this encoder and
/// these words exists, else computed in batches of [`SENTENCES_PER_BATCH`] (calling
/// `progress` after each) and written there atomically. Returns the features and
/// whether they came from the cache.
///
/// # Errors
/// The extractor's errors; [`EncoderError::Io`] if the cache cannot be written;
/// [`EncoderError::Cache`] for a cache file that is malformed or does not match.
pub fn features_for(
    extractor: &FeatureExtractor,
    sentences: &[Vec<&str>],
    cache_dir: &Path,
    mut progress: impl FnMut(Progress),
) -> Result<(Features, bool), EncoderError> {
    let key = data_key(sentences);
    let path = cache_path(cache_dir, extractor.key(), &key);
    let lens: Vec<usize> = sentences.iter().map(Vec::len).collect();
    if path.exists() {
        let f = read_cache(&path, extractor.key(), &key)?;
        if f.width != extractor.width() || f.lens != lens {
            return Err(EncoderError::Cache {
                path,
                message: format!(
                    "holds {} sentences of width {}, expected {} of width {}",
                    f.len(),
                    f.width,
                    lens.len(),
                    extractor.width()
                ),
            });
        }
        return Ok((f, true));
    }
    let total: usize = lens.iter().sum();
    let start = Instant::now();
    let mut data = Vec::with_capacity(total * extractor.width());
    let mut done = 0;
    for chunk in sentences.chunks(SENTENCES_PER_BATCH) {
        for feats in extractor.extract(chunk)? {
            data.extend(feats.iter().map(|&v| f16::from_f32(v)));
        }
        done += chunk.iter().map(Vec::len).sum::<usize>();
        progress(Progress {
            done,
            total,
            per_second: done as f64 / start.elapsed().as_secs_f64().max(1e-9),
        });
    }
    let f = Features::new(extractor.width(), lens, data);
    write_cache(&path, &f, extractor.key(), &key)?;
    Ok((f, false))
}

/// Writes `f` to `path` (temp file + rename) with the two keys as metadata.
///
/// # Errors
/// [`EncoderError::Io`] if the directory or file cannot be written.
pub fn write_cache(
    path: &Path,
    f: &Features,
    encoder_key: &str,
    data_key: &str,
) -> Result<(), EncoderError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let cache_err = |message: String| EncoderError::Cache {
        path: path.to_path_buf(),
        message,
    };
    let bytes: Vec<u8> = f.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let lens: Vec<u8> = f
        .lens
        .iter()
        .map(|&n| u32::try_from(n).map_err(|_| cache_err(format!("a sentence of {n} words"))))
        .collect::<Result<Vec<u32>, _>>()?
        .iter()
        .flat_map(|n| n.to_le_bytes())
        .collect();
    let words = f.lens.iter().sum::<usize>();
    let view = |dtype, shape, data| {
        TensorView::new(dtype, shape, data).map_err(|e| cache_err(e.to_string()))
    };
    let tensors = vec![
        ("features", view(Dtype::F16, vec![words, f.width], &bytes)?),
        ("lengths", view(Dtype::U32, vec![f.lens.len()], &lens)?),
    ];
    let metadata = HashMap::from([
        ("encoder".to_string(), encoder_key.to_string()),
        ("data".to_string(), data_key.to_string()),
    ]);
    let out =
        safetensors::serialize(tensors, Some(metadata)).map_err(|e| cache_err(e.to_string()))?;
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, out).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Reads a cache file written by [`write_cache`], checking that its keys are the ones
/// given.
///
/// # Errors
/// [`EncoderError::Io`] if unreadable, [`EncoderError::Cache`] if malformed or made for
/// another encoder or other data.
pub fn read_cache(
    path: &Path,
    encoder_key: &str,
    data_key: &str,
) -> Result<Features, EncoderError> {
    let buf = std::fs::read(path).map_err(io_err(path))?;
    let err = |message: String| EncoderError::Cache {
        path: path.to_path_buf(),
        message,
    };
    let (_, header) = SafeTensors::read_metadata(&buf).map_err(|e| err(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    for (name, want) in [("encoder", encoder_key), ("data", data_key)] {
        if meta.get(name).map(String::as_str) != Some(want) {
            return Err(err(format!(
                "made for another {name} (key {:?})",
                meta.get(name)
            )));
        }
    }
    let st = SafeTensors::deserialize(&buf).map_err(|e| err(e.to_string()))?;
    let get = |name: &str, dtype: Dtype, axes: usize| {
        let t = st
            .tensor(name)
            .map_err(|_| err(format!("no tensor {name:?}")))?;
        if t.dtype() != dtype || t.shape().len() != axes {
            return Err(err(format!(
                "tensor {name:?} is {:?} {:?}, expected {dtype:?} with {axes} axes",
                t.dtype(),
                t.shape()
            )));
        }
        Ok(t)
    };
    let feats = get("features", Dtype::F16, 2)?;
    let lens: Vec<usize> = get("lengths", Dtype::U32, 1)?
        .data()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let (words, width) = (feats.shape()[0], feats.shape()[1]);
    if lens.iter().sum::<usize>() != words {
        return Err(err(format!(
            "lengths sum to {} but there are {words} rows",
            lens.iter().sum::<usize>()
        )));
    }
    let data = feats
        .data()
        .chunks_exact(2)
        .map(|b| f16::from_le_bytes([b[0], b[1]]))
        .collect();
    Ok(Features::new(width, lens, data))
}
