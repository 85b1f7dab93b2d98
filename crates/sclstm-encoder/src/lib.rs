//! A frozen BERT-architecture encoder (inference only) giving contextual word features
//! to the taggers: the SC-LSTM-LM-CNN variant, with a pretrained transformer in place of
//! the paper's language model.
//!
//! - [`BertConfig`] / [`weights::BertWeights`]: any BERT-architecture `config.json` +
//!   `model.safetensors` (names with or without the `bert.` prefix).
//! - [`Bert`]: the forward pass ([`forward`] gives the equations) on the CPU backend's
//!   gemm, packed sequences, attention heads in parallel on its rayon pool.
//! - [`tokenize::WordPiece`]: WordPiece of already-tokenized words through the
//!   `tokenizers` crate reading `tokenizer.json`; [`tokenize::windows`] splits a
//!   sentence longer than the encoder's positions into overlapping windows of whole words.
//! - [`FeatureExtractor`]: sentences of words in, every hidden state `h^0 … h^L` at each
//!   word out (its first sub-word, or the mean of its sub-words: [`Pool`]).
//! - [`cache`]: a split's features computed once and kept on disk in f16.
//!
//! The weights of all-MiniLM-L6-v2 are fetched by `scripts/fetch-encoder.sh` into
//! `datasets/encoders/all-MiniLM-L6-v2/`.
//!
//! ```no_run
//! use std::path::Path;
//! use sclstm_cpu::CpuBackend;
//! use sclstm_encoder::{FeatureExtractor, Pool};
//!
//! let cpu = CpuBackend::<f32>::new(2).unwrap();
//! let dir = Path::new("datasets/encoders/all-MiniLM-L6-v2");
//! let enc = FeatureExtractor::open(dir, Pool::First, cpu).unwrap();
//! let feats = enc.extract(&[vec!["EU", "rejects", "German", "call"]]).unwrap();
//! assert_eq!(feats[0].len(), 4 * enc.width()); // 4 words × 7 states × 384
//! ```

#![warn(missing_docs)]

pub mod cache;
mod config;
mod error;
mod features;
pub mod forward;
pub mod tokenize;
pub mod weights;

pub use cache::{Features, features_for};
pub use config::BertConfig;
pub use error::EncoderError;
pub use features::{FeatureExtractor, Pool};
pub use forward::Bert;
