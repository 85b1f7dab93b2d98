//! Synthetic batches and small configs shared by the tests.

use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sclstm_core::Backend;
use sclstm_cpu::CpuBackend;
use sclstm_model::{
    CharCnnConfig, Family, HeadKind, ModelConfig, ModelError, ModelInput, Tagger, TaskConfig,
};

/// Word vocabulary of the synthetic data (id 0 = padding).
pub const VOCAB: usize = 12;
/// Character vocabulary (id 0 = padding).
pub const CHAR_VOCAB: usize = 6;
/// Character slots per token.
pub const W: usize = 3;

/// POS-like task: 3 tags decided by the word.
pub fn pos_tags(words: &[u32]) -> Vec<u32> {
    words.iter().map(|&w| w % 3).collect()
}

/// Chunk-like BIO task: `O` for multiples of 4, else `B` after `O`/start and `I` after
/// `B`/`I` (needs the left context).
pub fn chunk_tags(words: &[u32]) -> Vec<u32> {
    let mut prev = 2;
    words
        .iter()
        .map(|&w| {
            prev = if w % 4 == 0 {
                2
            } else if prev == 2 {
                0
            } else {
                1
            };
            prev
        })
        .collect()
}

/// The two synthetic tasks; `crf` picks the chunk head.
pub fn tasks(crf: bool) -> Vec<TaskConfig> {
    let mut chunk = TaskConfig::new("chunk", &["B-NP", "I-NP", "O"]);
    if crf {
        chunk.head = HeadKind::Crf;
    }
    vec![TaskConfig::new("pos", &["A", "B", "C"]), chunk]
}

/// A small config of `family` (dropout off).
pub fn small_config(family: Family, crf: bool, chars: bool) -> ModelConfig {
    let mut c = ModelConfig::new(family, tasks(crf), VOCAB);
    c.word_dim = 3;
    c.hidden = 2;
    c.layers = 2;
    c.dropout = 0.0;
    if chars {
        c.char_cnn = Some(CharCnnConfig {
            vocab: CHAR_VOCAB,
            dim: 2,
            kernel: 3,
            channels: 3,
        });
    }
    c
}

/// An owned time-major batch plus gold tags of both tasks.
#[derive(Debug, Clone)]
pub struct Batch {
    pub steps: usize,
    pub lens: Vec<usize>,
    pub words: Vec<u32>,
    pub caps: Vec<u32>,
    pub chars: Vec<u32>,
    pub char_lens: Vec<usize>,
    /// Per task (pos, chunk): gold tags, time-major, 0 on padding.
    pub gold: [Vec<u32>; 2],
}

impl Batch {
    /// Packs sentences time-major.
    pub fn new(sentences: &[Vec<u32>]) -> Self {
        let b = sentences.len();
        let steps = sentences.iter().map(Vec::len).max().unwrap_or(0);
        let n = steps * b;
        let mut batch = Batch {
            steps,
            lens: sentences.iter().map(Vec::len).collect(),
            words: vec![0; n],
            caps: vec![0; n],
            chars: vec![0; n * W],
            char_lens: vec![0; n],
            gold: [vec![0; n], vec![0; n]],
        };
        for (bi, s) in sentences.iter().enumerate() {
            let (pos, chunk) = (pos_tags(s), chunk_tags(s));
            for (t, &w) in s.iter().enumerate() {
                let p = t * b + bi;
                batch.words[p] = w;
                batch.caps[p] = w % 8;
                let len = 1 + (w as usize) % W;
                batch.char_lens[p] = len;
                for c in 0..len {
                    batch.chars[p * W + c] = 1 + (w + c as u32) % (CHAR_VOCAB as u32 - 1);
                }
                batch.gold[0][p] = pos[t];
                batch.gold[1][p] = chunk[t];
            }
        }
        batch
    }

    /// The borrowed view.
    pub fn input(&self) -> ModelInput<'_> {
        ModelInput {
            steps: self.steps,
            batch: self.lens.len(),
            lens: &self.lens,
            word_ids: &self.words,
            cap_ids: &self.caps,
            char_ids: &self.chars,
            char_lens: &self.char_lens,
            word_len_max: W,
            contextual: &[],
        }
    }

    /// Gold tags of task `k` per sentence (real lengths).
    pub fn gold_paths(&self, k: usize) -> Vec<Vec<u32>> {
        let b = self.lens.len();
        (0..b)
            .map(|bi| {
                (0..self.lens[bi])
                    .map(|t| self.gold[k][t * b + bi])
                    .collect()
            })
            .collect()
    }
}

/// `n` random sentences of length 2..=6 over words 1..VOCAB.
pub fn sentences(n: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let len = rng.random_range(2..=6);
            (0..len)
                .map(|_| rng.random_range(1..VOCAB as u32))
                .collect()
        })
        .collect()
}

/// A tagger on a one-thread CPU backend.
pub fn tagger<R: sclstm_core::Real>(
    cfg: ModelConfig,
    seed: u64,
) -> Result<Tagger<CpuBackend<R>>, ModelError> {
    let be = CpuBackend::<R>::new(1)?;
    Tagger::new(cfg, Arc::new(be), seed, None)
}

/// The loss value of one batch (fresh tape, no backward).
pub fn loss_value<B: Backend + 'static>(
    t: &Tagger<B>,
    batch: &Batch,
    task: usize,
) -> Result<f64, ModelError> {
    let mut tape = t.tape();
    let l = t.loss(&mut tape, &batch.input(), task, &batch.gold[task], 0)?;
    Ok(sclstm_core::Real::to_f64(tape.value(l)[(0, 0)]))
}
