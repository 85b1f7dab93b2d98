//! The BERT forward pass (Devlin et al., 2019; Vaswani et al., 2017), inference only.
//!
//! Sequences are **packed**: the `N = Σ_s n_s` tokens of all sequences of a call are the
//! rows of one (N, H) matrix, and every dense step (projections, LayerNorm, GELU) runs
//! on all rows at once through the CPU gemm. Only attention looks across rows, and it
//! runs per (sequence, head) over that sequence's rows alone. This is exactly BERT with
//! a padding mask (the mask's `−∞` on padded keys gives them weight `exp(−∞) = 0`)
//! without computing the padding at all.
//!
//! For a sequence of token ids `w_0 … w_{n−1}` (every token type 0), with
//! `LN(x) = γ ⊙ (x − μ) / √(σ² + ε) + β` over the H features of a row (`σ²` the biased
//! variance):
//!
//! 1. embeddings: `E_t = LN(W_word[w_t] + W_pos[t] + W_type[0])`, the state `h^0`;
//! 2. for `l = 1 … L`, from `X = h^{l−1}`:
//!    - `[Q | K | V] = X·[W_Q; W_K; W_V]ᵀ + [b_Q; b_K; b_V]`;
//!    - per head `a` (columns `a·d … (a+1)·d`, `d = H/A`):
//!      `C_a = softmax(Q_a K_aᵀ / √d) V_a` (softmax over each row);
//!    - `Y = LN(X + C·W_Oᵀ + b_O)` (post-LN residual);
//!    - `h^l = LN(Y + GELU(Y·W_1ᵀ + b_1)·W_2ᵀ + b_2)` with
//!      `GELU(x) = x · ½ (1 + erf(x / √2))` (the erf form BERT uses).
//!
//! Every `h^l`, `l = 0 … L`, is returned.

use rayon::prelude::*;
use sclstm_core::Gemm;
use sclstm_cpu::CpuBackend;

use crate::weights::{BertWeights, LayerNormWeights};
use crate::{BertConfig, EncoderError};

/// Rows of GELU / LayerNorm handed to one rayon task.
const ROWS_PER_TASK: usize = 64;

/// A frozen BERT encoder on the CPU backend's gemm and thread pool.
#[derive(Debug, Clone)]
pub struct Bert {
    cfg: BertConfig,
    weights: BertWeights,
    cpu: CpuBackend<f32>,
}

/// `out = x·Wᵀ + b` for `x` (rows, k), `W` (n, k) as stored by PyTorch, `out` (rows, n);
/// with `accumulate`, `out += …` (a residual connection already copied into `out`).
fn linear(
    cpu: &CpuBackend<f32>,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    out: &mut [f32],
    rows: usize,
    accumulate: bool,
) -> Result<(), EncoderError> {
    let n = b.len();
    let k = w.len() / n;
    let g = Gemm {
        trans_b: true,
        accumulate,
        ..Gemm::new(rows, n, k)
    };
    cpu.gemm_slices(&g, x, w, Some(b), out)?;
    Ok(())
}

/// `x ← LN(x)` for each row of `x` (rows of width `h = γ.len()`):
/// `γ ⊙ (x − μ) / √(σ² + ε) + β`, `μ` and `σ²` (biased) over the row, summed in f64.
pub fn layer_norm_forward(x: &mut [f32], norm: &LayerNormWeights, eps: f64) {
    let h = norm.gamma.len();
    for row in x.chunks_exact_mut(h) {
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / h as f64;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / h as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for ((v, &g), &b) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
            *v = ((f64::from(*v) - mean) * rstd) as f32 * g + b;
        }
    }
}

/// `x ← GELU(x) = x · ½ (1 + erf(x / √2))` elementwise (BERT's exact form, not the tanh
/// approximation).
pub fn gelu_forward(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + libm::erff(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `p ← softmax(p)` over each row of width `n`, shifted by the row maximum.
fn softmax_rows(p: &mut [f32], n: usize) {
    for row in p.chunks_exact_mut(n) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

/// One head of one sequence: `softmax(Q_a K_aᵀ / √d) V_a`, (n, d), from the packed
/// `qkv` rows `start .. start + n` (each of width 3H).
fn attention_head(qkv: &[f32], start: usize, n: usize, h: usize, a: usize, d: usize) -> Vec<f32> {
    let take = |block: usize| -> Vec<f32> {
        let col = block * h + a * d;
        (start..start + n)
            .flat_map(|r| qkv[r * 3 * h + col..r * 3 * h + col + d].iter().copied())
            .collect()
    };
    let (q, k, v) = (take(0), take(1), take(2));
    let mut scores = vec![0.0f32; n * n];
    let scale = 1.0 / (d as f32).sqrt();
    // S = Q Kᵀ: K is stored (n, d) = op(B)ᵀ, read through trans_b.
    let g = Gemm {
        trans_b: true,
        ..Gemm::new(n, n, d)
    };
    let mut ctx = vec![0.0f32; n * d];
    // The sizes are built here from the same n and d, so the products cannot fail.
    sclstm_cpu::gemm::gemm_fast(&g, &q, &k, None, &mut scores, None)
        .expect("internal: attention scores fit their buffers");
    scores.iter_mut().for_each(|s| *s *= scale);
    softmax_rows(&mut scores, n);
    sclstm_cpu::gemm::gemm_fast(&Gemm::new(n, d, n), &scores, &v, None, &mut ctx, None)
        .expect("internal: attention context fits its buffer");
    ctx
}

/// Multi-head self-attention of packed sequences: writes `C` (N, H) from `qkv`
/// (N, 3H), each sequence (`lens`, in row order) attending to its own rows only.
/// (sequence, head) pairs run in parallel on the calling pool.
pub fn attention_forward(ctx: &mut [f32], qkv: &[f32], lens: &[usize], h: usize, heads: usize) {
    let d = h / heads;
    let starts: Vec<usize> = lens
        .iter()
        .scan(0, |acc, &n| {
            let s = *acc;
            *acc += n;
            Some(s)
        })
        .collect();
    let jobs: Vec<(usize, usize)> = (0..lens.len())
        .flat_map(|s| (0..heads).map(move |a| (s, a)))
        .collect();
    let results: Vec<Vec<f32>> = jobs
        .par_iter()
        .map(|&(s, a)| attention_head(qkv, starts[s], lens[s], h, a, d))
        .collect();
    for (&(s, a), head) in jobs.iter().zip(&results) {
        for (t, row) in head.chunks_exact(d).enumerate() {
            let r = starts[s] + t;
            ctx[r * h + a * d..r * h + (a + 1) * d].copy_from_slice(row);
        }
    }
}

impl Bert {
    /// An encoder with `weights` described by `cfg`, running on `cpu`'s threads.
    pub fn new(cfg: BertConfig, weights: BertWeights, cpu: CpuBackend<f32>) -> Self {
        Bert { cfg, weights, cpu }
    }

    /// The model description.
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// The hidden states `h^0 … h^L` of the packed sequences `seqs` (token ids,
    /// special tokens included): `L + 1` matrices, each (N, H) row-major with
    /// `N = Σ len(seq)` and the rows of sequence `s` after those of `0 … s−1`.
    ///
    /// # Errors
    /// [`EncoderError::Input`] for an empty sequence, one longer than
    /// `max_position_embeddings`, or a token id outside the vocabulary.
    pub fn forward(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, EncoderError> {
        let cfg = &self.cfg;
        let (h, f) = (cfg.hidden_size, cfg.intermediate_size);
        for (s, seq) in seqs.iter().enumerate() {
            let bad = |message: String| {
                Err(EncoderError::Input {
                    sentence: s,
                    message,
                })
            };
            if seq.is_empty() || seq.len() > cfg.max_position_embeddings {
                return bad(format!(
                    "{} tokens, outside 1..={}",
                    seq.len(),
                    cfg.max_position_embeddings
                ));
            }
            if let Some(&id) = seq.iter().find(|&&id| id as usize >= cfg.vocab_size) {
                return bad(format!("token id {id} outside 0..{}", cfg.vocab_size));
            }
        }
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let n: usize = lens.iter().sum();
        let w = &self.weights;
        let mut x = Vec::with_capacity(n * h);
        for seq in seqs {
            for (t, &id) in seq.iter().enumerate() {
                let word = &w.word[id as usize * h..][..h];
                let pos = &w.position[t * h..][..h];
                x.extend(
                    word.iter()
                        .zip(pos)
                        .zip(&w.token_type0)
                        .map(|((a, b), c)| a + b + c),
                );
            }
        }
        let run = || -> Result<Vec<Vec<f32>>, EncoderError> {
            let eps = cfg.layer_norm_eps;
            let norm_rows = |x: &mut [f32], norm: &LayerNormWeights| {
                x.par_chunks_mut(ROWS_PER_TASK * h)
                    .for_each(|c| layer_norm_forward(c, norm, eps));
            };
            norm_rows(&mut x, &w.embed_norm);
            let mut states = Vec::with_capacity(cfg.states());
            let mut qkv = vec![0.0f32; n * 3 * h];
            let mut ctx = vec![0.0f32; n * h];
            let mut inter = vec![0.0f32; n * f];
            for layer in &w.layers {
                linear(
                    &self.cpu,
                    &x,
                    &layer.qkv_weight,
                    &layer.qkv_bias,
                    &mut qkv,
                    n,
                    false,
                )?;
                attention_forward(&mut ctx, &qkv, &lens, h, cfg.num_attention_heads);
                // Residual: y starts as x and the projection accumulates onto it.
                let mut y = x.clone();
                linear(
                    &self.cpu,
                    &ctx,
                    &layer.attn_out_weight,
                    &layer.attn_out_bias,
                    &mut y,
                    n,
                    true,
                )?;
                norm_rows(&mut y, &layer.attn_norm);
                linear(
                    &self.cpu,
                    &y,
                    &layer.ffn_in_weight,
                    &layer.ffn_in_bias,
                    &mut inter,
                    n,
                    false,
                )?;
                inter
                    .par_chunks_mut(ROWS_PER_TASK * f)
                    .for_each(gelu_forward);
                let mut out = y.clone();
                linear(
                    &self.cpu,
                    &inter,
                    &layer.ffn_out_weight,
                    &layer.ffn_out_bias,
                    &mut out,
                    n,
                    true,
                )?;
                norm_rows(&mut out, &layer.ffn_norm);
                states.push(std::mem::replace(&mut x, out));
            }
            states.push(x);
            Ok(states)
        };
        match self.cpu.pool() {
            Some(pool) => pool.install(run),
            None => run(),
        }
    }
}
