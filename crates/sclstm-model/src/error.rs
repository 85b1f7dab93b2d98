//! Errors of model construction, input checking, checkpoints and the numeric engine.

use std::path::PathBuf;

use sclstm_autodiff::AutodiffError;
use sclstm_core::NumError;
use thiserror::Error;

/// Everything that can go wrong in this crate; variants name what differs.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ModelError {
    /// An inconsistent configuration.
    #[error("model config: {0}")]
    Config(String),
    /// A configuration whose size does not fit in 64-bit arithmetic.
    #[error(
        "model config: the model's size overflows 64-bit arithmetic (word_vocab {word_vocab}, word_dim {word_dim}, hidden {hidden}, layers {layers})"
    )]
    SizeOverflow {
        /// Rows of the word embedding table.
        word_vocab: usize,
        /// Word embedding size.
        word_dim: usize,
        /// Hidden size of each direction.
        hidden: usize,
        /// Stacked layers.
        layers: usize,
    },
    /// A model that needs more memory than this machine has available.
    #[error(
        "the model needs about {needed} bytes ({:.2} GB) for parameters, gradients, Adam state and a batch's activations, but only {available} bytes ({:.2} GB) of memory are available",
        *needed as f64 / 1e9,
        *available as f64 / 1e9
    )]
    TooLarge {
        /// Estimated bytes ([`crate::ModelConfig::estimated_bytes`]).
        needed: u64,
        /// Available bytes (`MemAvailable`).
        available: u64,
    },
    /// A task name the model does not have.
    #[error("unknown task {name:?} (the model has {known:?})")]
    UnknownTask {
        /// The name asked for.
        name: String,
        /// The model's tasks.
        known: Vec<String>,
    },
    /// A task index outside the model's tasks.
    #[error("task index {index} out of range: the model has {count} tasks")]
    TaskIndex {
        /// The index asked for.
        index: usize,
        /// Number of tasks.
        count: usize,
    },
    /// A tag set that does not match a task's head.
    #[error("task {task:?}: tag set {found:?} does not match the head's {expected:?}")]
    TagSetMismatch {
        /// Task name.
        task: String,
        /// The head's tags.
        expected: Vec<String>,
        /// The tags given.
        found: Vec<String>,
    },
    /// A gold tag id outside the task's tag set.
    #[error("task {task:?}: gold tag {tag} at position {position} is outside 0..{num_tags}")]
    TagOutOfRange {
        /// Task name.
        task: String,
        /// The offending id.
        tag: u32,
        /// Flat time-major position `t·B + b`.
        position: usize,
        /// Tags of the head.
        num_tags: usize,
    },
    /// A pretrained vector whose dimension or row does not fit the embedding table.
    #[error(
        "pretrained embedding row {row}: expected {expected} values for a table of {rows} rows, found {found}"
    )]
    EmbeddingDim {
        /// Row of the vector.
        row: usize,
        /// The table's dimension.
        expected: usize,
        /// The vector's length (or the row for an out-of-range row).
        found: usize,
        /// Rows of the table.
        rows: usize,
    },
    /// A malformed batch.
    #[error("model input: {0}")]
    Input(String),
    /// A checkpoint lacks parameters the model has.
    #[error("checkpoint {path}: missing parameters {names:?}")]
    CheckpointMissing {
        /// The file.
        path: PathBuf,
        /// Model parameters absent from the file.
        names: Vec<String>,
    },
    /// A checkpoint holds parameters the model does not have.
    #[error("checkpoint {path}: unexpected parameters {names:?}")]
    CheckpointUnexpected {
        /// The file.
        path: PathBuf,
        /// Names in the file that the model does not have.
        names: Vec<String>,
    },
    /// A checkpoint tensor whose shape or type differs from the model's parameter.
    #[error(
        "checkpoint {path}: tensor {name:?} has shape {found:?} ({dtype}), the model expects {expected:?} (F32)"
    )]
    CheckpointShape {
        /// The file.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// The parameter's shape.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
        /// The element type in the file.
        dtype: String,
    },
    /// A file that is not a readable safetensors file.
    #[error("checkpoint {path}: {message}")]
    CheckpointFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor holding NaN or an infinity, refused when writing or reading a checkpoint
    /// (a diverged run must never replace or be resumed from a finite checkpoint).
    #[error(
        "checkpoint {path}: tensor `{name}` holds the non-finite value {value} at index {index}"
    )]
    NonFiniteTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Flat index of the first non-finite element.
        index: usize,
        /// The value.
        value: f64,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A numeric error from the engine (shapes, non-finite values, ids out of range).
    #[error(transparent)]
    Num(#[from] NumError),
    /// A parameter-store or optimizer error (e.g. optimizer state that does not fit).
    #[error(transparent)]
    Autodiff(#[from] AutodiffError),
}
