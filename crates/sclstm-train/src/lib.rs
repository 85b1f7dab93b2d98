//! Training (the paper's Algorithm 1), evaluation, run directories, gradient logging and
//! figures: everything `sclstm train`, `eval`, `predict`, `inspect` and `plot` do besides
//! parsing their flags.
//!
//! A run directory (`--out DIR`) holds:
//! - `config.toml`: the resolved training configuration;
//! - `vocab.json`: word, character and tag vocabularies;
//! - `best.safetensors`: parameters of the epoch with the best dev average;
//! - `last.safetensors`: the latest parameters plus Adam's moments (`extra.adam.m.*`,
//!   `extra.adam.v.*`) and the trainer state (metadata `sclstm.train_state`), written at
//!   each epoch end and every `checkpoint_steps` steps, from which `--resume` continues;
//! - `metrics.jsonl`: one line per epoch per task and split, plus the dev average;
//! - `coverage.txt`: the embedding-coverage report; `datasets.json`: SHA-256 of every data file;
//! - `grads.jsonl` (with `--log-grads N`): per-task gradient statistics.
//!
//! Every file is written atomically (temporary file + rename).

pub mod config;
pub mod data;
pub mod grads;
pub mod plan;
pub mod plot;
pub mod pool;
pub mod report;
pub mod rundir;
pub mod runmodel;
pub mod schedule;
pub mod score;
pub mod sweep;
mod trainer;

pub use trainer::{
    EVAL_BATCH, EVAL_TOKENS, Epoch, EpochReport, RunOptions, Silent, Split, StepReport, TrainError,
    TrainObserver, TrainSummary, Trainer, evaluate_split, model_config, model_input, tag_sentences,
    tagging_batches, train,
};
