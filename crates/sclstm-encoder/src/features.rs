//! Per-word features: every hidden state of the encoder at each word of a sentence.

use std::path::{Path, PathBuf};

use sclstm_cpu::CpuBackend;
use sha2::{Digest, Sha256};

use crate::error::io_err;
use crate::tokenize::{WordPiece, windows};
use crate::{Bert, BertConfig, EncoderError, weights::BertWeights};

/// How a word's vector is made from its sub-words' vectors (`first` or `mean` on the
/// command line and in `config.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pool {
    /// The first sub-word's vector (as BERT's tagging experiments do).
    #[default]
    First,
    /// The mean of the word's sub-word vectors.
    Mean,
}

impl Pool {
    /// The name used on the command line and in `config.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Pool::First => "first",
            Pool::Mean => "mean",
        }
    }

    /// Parses `first` or `mean`.
    pub fn parse(s: &str) -> Option<Pool> {
        match s {
            "first" => Some(Pool::First),
            "mean" => Some(Pool::Mean),
            _ => None,
        }
    }
}

/// A frozen encoder with its tokenizer: sentences of words in, per-word hidden states out.
#[derive(Debug, Clone)]
pub struct FeatureExtractor {
    bert: Bert,
    wordpiece: WordPiece,
    pool: Pool,
    key: String,
}

/// A model directory's file: an error naming `scripts/fetch-encoder.sh` if it is absent.
fn file_in(dir: &Path, name: &str) -> Result<PathBuf, EncoderError> {
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(EncoderError::Missing { path })
    }
}

impl FeatureExtractor {
    /// Opens the encoder in `dir` (`config.json`, `model.safetensors`, `tokenizer.json`).
    ///
    /// # Errors
    /// [`EncoderError::Missing`] (naming `scripts/fetch-encoder.sh`) if `dir` or one of
    /// its files is absent; the errors of [`BertConfig::read`], [`BertWeights::read`] and
    /// [`WordPiece::read`].
    pub fn open(dir: &Path, pool: Pool, cpu: CpuBackend<f32>) -> Result<Self, EncoderError> {
        if !dir.is_dir() {
            return Err(EncoderError::Missing {
                path: dir.to_path_buf(),
            });
        }
        let (config, model, tokenizer) = (
            file_in(dir, "config.json")?,
            file_in(dir, "model.safetensors")?,
            file_in(dir, "tokenizer.json")?,
        );
        let cfg = BertConfig::read(&config)?;
        let weights = BertWeights::read(&model, &cfg)?;
        let wordpiece = WordPiece::read(&tokenizer)?;
        // The cache key: the three files and the pooling, so any change recomputes.
        let mut hash = Sha256::new();
        for path in [&config, &model, &tokenizer] {
            hash.update(std::fs::read(path).map_err(io_err(path))?);
        }
        hash.update(pool.name());
        let key = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(FeatureExtractor {
            bert: Bert::new(cfg, weights, cpu),
            wordpiece,
            pool,
            key,
        })
    }

    /// The encoder's description.
    pub fn config(&self) -> &BertConfig {
        self.bert.config()
    }

    /// The pooling of sub-words.
    pub fn pool(&self) -> Pool {
        self.pool
    }

    /// The tokenizer.
    pub fn wordpiece(&self) -> &WordPiece {
        &self.wordpiece
    }

    /// SHA-256 (hex) of the encoder's files and the pooling: the cache key of its features.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Features per word: `(L + 1)·H`, the states `h^0 … h^L` side by side.
    pub fn width(&self) -> usize {
        self.config().states() * self.config().hidden_size
    }

    /// The features of each sentence: (n_words, [`FeatureExtractor::width`]) row-major,
    /// state `l` of word `i` at `[i·width + l·H ..][..H]`, pooled from the word's
    /// sub-words. A sentence longer than the encoder's positions is encoded in
    /// overlapping windows ([`windows`]); every word gets a vector (a word with more
    /// sub-words than a window holds, from its first ones), and a sentence with no word
    /// gets an empty matrix. Sentences are encoded together in one packed batch, so
    /// callers pass a few dozen at a time.
    ///
    /// # Errors
    /// [`EncoderError::Tokenizer`] if a sentence cannot be tokenized.
    pub fn extract(&self, sentences: &[Vec<&str>]) -> Result<Vec<Vec<f32>>, EncoderError> {
        let cfg = self.config();
        let capacity = cfg.max_position_embeddings - 2;
        // Every sequence fed to the encoder, and for each sentence the (sequence, first
        // token, token count) of each word, in word order.
        let mut seqs: Vec<Vec<u32>> = Vec::new();
        let mut spans: Vec<Vec<(usize, usize, usize)>> = Vec::with_capacity(sentences.len());
        for words in sentences {
            let pieces = self.wordpiece.word_pieces(words)?;
            let counts: Vec<usize> = pieces.iter().map(Vec::len).collect();
            let mut word_spans = Vec::with_capacity(words.len());
            for win in windows(&counts, capacity) {
                let mut seq = vec![self.wordpiece.cls];
                for w in win.words.clone() {
                    // Only a word longer than a window alone is cut, to its first sub-words.
                    let count = counts[w].min(capacity);
                    if win.keep.contains(&w) {
                        word_spans.push((seqs.len(), seq.len(), count));
                    }
                    seq.extend(&pieces[w][..count]);
                }
                seq.push(self.wordpiece.sep);
                seqs.push(seq);
            }
            spans.push(word_spans);
        }
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let states = self.bert.forward(&refs)?;
        let starts: Vec<usize> = seqs
            .iter()
            .scan(0, |acc, s| {
                let start = *acc;
                *acc += s.len();
                Some(start)
            })
            .collect();
        let h = cfg.hidden_size;
        let width = self.width();
        Ok(spans
            .iter()
            .map(|word_spans| {
                let mut out = vec![0.0f32; word_spans.len() * width];
                for (i, &(seq, first, count)) in word_spans.iter().enumerate() {
                    let row = starts[seq] + first;
                    let take = match self.pool {
                        Pool::First => 1,
                        Pool::Mean => count,
                    };
                    for (l, state) in states.iter().enumerate() {
                        let dst = &mut out[i * width + l * h..][..h];
                        for r in row..row + take {
                            for (d, &v) in dst.iter_mut().zip(&state[r * h..][..h]) {
                                *d += v;
                            }
                        }
                        if take > 1 {
                            dst.iter_mut().for_each(|d| *d /= take as f32);
                        }
                    }
                }
                out
            })
            .collect())
    }
}
