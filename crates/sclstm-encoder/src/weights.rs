//! The encoder's frozen weights, read from a BERT-architecture `model.safetensors`.
//!
//! Tensor names follow Hugging Face's `BertModel` (`embeddings.word_embeddings.weight`,
//! `encoder.layer.<l>.attention.self.query.weight`, …), with or without the `bert.`
//! prefix that task checkpoints (`BertForMaskedLM`, …) put in front; LayerNorm
//! parameters may be called `weight`/`bias` or, in older files, `gamma`/`beta`. Linear
//! weights stay as stored, `(out, in)`: the gemm reads them transposed through its
//! strides (`trans_b`), never through a copy.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::io_err;
use crate::{BertConfig, EncoderError};

/// A LayerNorm's scale `γ` and shift `β` (`H` each).
#[derive(Debug, Clone)]
pub struct LayerNormWeights {
    /// `γ` (H).
    pub gamma: Vec<f32>,
    /// `β` (H).
    pub beta: Vec<f32>,
}

/// One transformer layer.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// `[W_Q; W_K; W_V]` stacked, (3H, H) row-major: one gemm gives Q, K and V.
    pub qkv_weight: Vec<f32>,
    /// `[b_Q; b_K; b_V]` (3H).
    pub qkv_bias: Vec<f32>,
    /// Attention output projection `W_O` (H, H).
    pub attn_out_weight: Vec<f32>,
    /// `b_O` (H).
    pub attn_out_bias: Vec<f32>,
    /// LayerNorm after the attention block.
    pub attn_norm: LayerNormWeights,
    /// Feed-forward `W_1` (F, H).
    pub ffn_in_weight: Vec<f32>,
    /// `b_1` (F).
    pub ffn_in_bias: Vec<f32>,
    /// Feed-forward `W_2` (H, F).
    pub ffn_out_weight: Vec<f32>,
    /// `b_2` (H).
    pub ffn_out_bias: Vec<f32>,
    /// LayerNorm after the feed-forward block.
    pub ffn_norm: LayerNormWeights,
}

/// All weights of the encoder.
#[derive(Debug, Clone)]
pub struct BertWeights {
    /// Word embeddings (V, H).
    pub word: Vec<f32>,
    /// Position embeddings (P, H).
    pub position: Vec<f32>,
    /// Row 0 of the token-type table (H): every token here has type 0.
    pub token_type0: Vec<f32>,
    /// LayerNorm of the embedding sum.
    pub embed_norm: LayerNormWeights,
    /// The `L` layers, bottom first.
    pub layers: Vec<LayerWeights>,
}

/// The safetensors file with the prefix its names carry.
struct Reader<'a> {
    path: &'a Path,
    st: SafeTensors<'a>,
    prefix: &'static str,
}

impl Reader<'_> {
    fn err(&self, message: String) -> EncoderError {
        EncoderError::Weights {
            path: self.path.to_path_buf(),
            message,
        }
    }

    /// The f32 tensor `name` (after the prefix), checked to have `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EncoderError> {
        let full = format!("{}{name}", self.prefix);
        let view = self
            .st
            .tensor(&full)
            .map_err(|_| self.err(format!("no tensor {full:?}")))?;
        if view.dtype() != Dtype::F32 {
            return Err(self.err(format!(
                "tensor {full:?} is {:?}, expected F32",
                view.dtype()
            )));
        }
        if view.shape() != shape {
            return Err(self.err(format!(
                "tensor {full:?} has shape {:?}, expected {shape:?}",
                view.shape()
            )));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(self.err(format!(
                "tensor {full:?} holds the non-finite value {} at index {i}",
                values[i]
            )));
        }
        Ok(values)
    }

    /// A LayerNorm under `name` (`.weight`/`.bias`, or `.gamma`/`.beta`).
    fn norm(&self, name: &str, h: usize) -> Result<LayerNormWeights, EncoderError> {
        let has = |suffix: &str| {
            self.st
                .tensor(&format!("{}{name}.{suffix}", self.prefix))
                .is_ok()
        };
        let (g, b) = if !has("weight") && has("gamma") {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(LayerNormWeights {
            gamma: self.get(&format!("{name}.{g}"), &[h])?,
            beta: self.get(&format!("{name}.{b}"), &[h])?,
        })
    }
}

impl BertWeights {
    /// Reads every tensor the forward pass needs from `path`, checking its shape
    /// against `cfg`.
    ///
    /// # Errors
    /// [`EncoderError::Missing`] if the file does not exist, [`EncoderError::Io`] if it
    /// cannot be read, [`EncoderError::Weights`] naming a tensor that is missing, not
    /// f32, of the wrong shape or non-finite.
    pub fn read(path: &Path, cfg: &BertConfig) -> Result<Self, EncoderError> {
        if !path.exists() {
            return Err(EncoderError::Missing {
                path: path.to_path_buf(),
            });
        }
        let buf = std::fs::read(path).map_err(io_err(path))?;
        let st = SafeTensors::deserialize(&buf).map_err(|e| EncoderError::Weights {
            path: path.to_path_buf(),
            message: format!("not a safetensors file: {e}"),
        })?;
        let prefix = if st.tensor("bert.embeddings.word_embeddings.weight").is_ok() {
            "bert."
        } else {
            ""
        };
        let r = Reader { path, st, prefix };
        let (h, f) = (cfg.hidden_size, cfg.intermediate_size);
        let token_type = r.get(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, h],
        )?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}.");
            let mut qkv_weight = Vec::with_capacity(3 * h * h);
            let mut qkv_bias = Vec::with_capacity(3 * h);
            for part in ["query", "key", "value"] {
                qkv_weight.extend(r.get(&format!("{p}attention.self.{part}.weight"), &[h, h])?);
                qkv_bias.extend(r.get(&format!("{p}attention.self.{part}.bias"), &[h])?);
            }
            layers.push(LayerWeights {
                qkv_weight,
                qkv_bias,
                attn_out_weight: r.get(&format!("{p}attention.output.dense.weight"), &[h, h])?,
                attn_out_bias: r.get(&format!("{p}attention.output.dense.bias"), &[h])?,
                attn_norm: r.norm(&format!("{p}attention.output.LayerNorm"), h)?,
                ffn_in_weight: r.get(&format!("{p}intermediate.dense.weight"), &[f, h])?,
                ffn_in_bias: r.get(&format!("{p}intermediate.dense.bias"), &[f])?,
                ffn_out_weight: r.get(&format!("{p}output.dense.weight"), &[h, f])?,
                ffn_out_bias: r.get(&format!("{p}output.dense.bias"), &[h])?,
                ffn_norm: r.norm(&format!("{p}output.LayerNorm"), h)?,
            });
        }
        Ok(BertWeights {
            word: r.get("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?,
            position: r.get(
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, h],
            )?,
            token_type0: token_type[..h].to_vec(),
            embed_norm: r.norm("embeddings.LayerNorm", h)?,
            layers,
        })
    }
}
