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
//! - `grads.jsonl` (with `--log-grads N`): per-task gradient statistics;
//! - `train.log` and `steps.csv`: everything printed, and the loss of every step.
//!
//! Every file is written atomically (temporary file, fsync, rename, fsync of the
//! directory); temporary files a killed process left behind are removed when the next
//! `train` opens the directory. While a `train` runs, `train.lock` holds its pid and a
//! second `train` on the same directory is refused. No checkpoint holding NaN or an
//! infinity is ever written or read: a run whose parameters diverge stops with
//! [`TrainError::Diverged`], naming the parameter, and the last good checkpoint stays.
//!
//! The files of one run are tied together by hashes ([`rundir::RunFiles`]): `vocab.json`
//! records the SHA-256 of `config.toml` (`config_sha256`), and both checkpoints record the
//! SHA-256 of `config.toml` and of `vocab.json` (metadata `sclstm.config_sha256`,
//! `sclstm.vocab_sha256`). `eval`, `predict`, `inspect` and `--resume` refuse a directory
//! whose files disagree, naming them; directories written before the hashes existed carry
//! none and load unchecked. `config.toml` and `vocab.json` are therefore not to be edited.
//!
//! A new run refuses a directory that already holds files: it continues with `--resume`,
//! or is replaced with `--force`, which builds the new run in `<dir>.new-<pid>` and, at its
//! first checkpoint, moves the old run to `<dir>.old-<UTC time>` and the new one to `<dir>`
//! ([`rundir::Replacement`]).

pub mod claims;
pub mod config;
pub mod contextual;
pub mod data;
pub mod figure;
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
    tag_sentences_scored, tagging_batches, train,
};
