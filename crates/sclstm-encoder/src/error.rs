//! Errors of the encoder crate: every one names the file it concerns.

use std::path::PathBuf;

use sclstm_core::NumError;
use thiserror::Error;

/// An error loading or running the encoder, or reading or writing its feature cache.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EncoderError {
    /// The encoder directory (or a file in it) does not exist.
    #[error(
        "{path}: encoder not found (run scripts/fetch-encoder.sh to download all-MiniLM-L6-v2 into datasets/encoders/)"
    )]
    Missing {
        /// The path looked for.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `config.json` is not valid JSON or lacks a field, or describes an unsupported model.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line where serde gives one.
        message: String,
    },
    /// `model.safetensors` is malformed, lacks a tensor, or has one of the wrong shape or type.
    #[error("{path}: {message}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong (names the tensor).
        message: String,
    },
    /// `tokenizer.json` could not be loaded, or a sentence could not be tokenized.
    #[error("{path}: {message}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// The tokenizer's message.
        message: String,
    },
    /// A token sequence the encoder cannot take (empty, longer than its positions, or
    /// with an id outside its vocabulary).
    #[error("sequence {sentence}: {message}")]
    Input {
        /// Index of the sequence in its call.
        sentence: usize,
        /// What is wrong.
        message: String,
    },
    /// A feature cache file that is malformed or was made for other data.
    #[error("{path}: feature cache: {message}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A numeric kernel failed (a bug in the sizes given to it).
    #[error(transparent)]
    Num(#[from] NumError),
}

/// A closure turning an I/O error into [`EncoderError::Io`] for `path`.
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> EncoderError + '_ {
    move |source| EncoderError::Io {
        path: path.to_path_buf(),
        source,
    }
}
