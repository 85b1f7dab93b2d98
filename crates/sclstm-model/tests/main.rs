//! Model tests: whole-model gradient checks, task isolation, prediction, checkpoints and
//! tiny overfit runs of every family, and a tiny tagger against PyTorch.

mod checkpoint;
mod common;
mod gradcheck;
mod isolation;
mod limits;
mod oracle;
mod overfit;
mod predict;
mod threads;
