//! The model description read from a Hugging Face `config.json`.

use std::path::Path;

use serde::Deserialize;

use crate::EncoderError;
use crate::error::io_err;

/// The fields of a BERT `config.json` the forward pass needs (others are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    /// Rows of the word-embedding table `V`.
    pub vocab_size: usize,
    /// Hidden width `H`.
    pub hidden_size: usize,
    /// Transformer layers `L`.
    pub num_hidden_layers: usize,
    /// Attention heads `A` (`H / A` per head).
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer `F`.
    pub intermediate_size: usize,
    /// Rows of the position-embedding table (the longest window).
    pub max_position_embeddings: usize,
    /// Rows of the token-type table (every token here has type 0).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// `ε` of every LayerNorm.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Activation of the feed-forward layer; only `gelu` (the erf form) is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Only `absolute` position embeddings are supported.
    #[serde(default = "default_position")]
    pub position_embedding_type: String,
}

fn default_type_vocab() -> usize {
    2
}

fn default_eps() -> f64 {
    1e-12
}

fn default_act() -> String {
    "gelu".into()
}

fn default_position() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Reads and checks `config.json`.
    ///
    /// # Errors
    /// [`EncoderError::Missing`] if the file does not exist, [`EncoderError::Io`] if it
    /// cannot be read, [`EncoderError::Config`] for bad JSON (with its line) or an
    /// unsupported model (see [`BertConfig::validate`]).
    pub fn read(path: &Path) -> Result<Self, EncoderError> {
        if !path.exists() {
            return Err(EncoderError::Missing {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        let cfg: BertConfig = serde_json::from_str(&text).map_err(|e| EncoderError::Config {
            path: path.to_path_buf(),
            message: format!("line {}: {e}", e.line()),
        })?;
        cfg.validate().map_err(|message| EncoderError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    /// Checks that the sizes are usable and the model is one this forward implements.
    ///
    /// # Errors
    /// A message naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.max_position_embeddings < 3 {
            return Err(format!(
                "max_position_embeddings {} leaves no room between [CLS] and [SEP]",
                self.max_position_embeddings
            ));
        }
        if self.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act {:?} is not supported (only \"gelu\", the erf form)",
                self.hidden_act
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                self.position_embedding_type
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!(
                "layer_norm_eps must be positive, got {}",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }

    /// Width of one attention head `H / A`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Hidden states returned per token: the embedding output plus one per layer (`L + 1`).
    pub fn states(&self) -> usize {
        self.num_hidden_layers + 1
    }
}
