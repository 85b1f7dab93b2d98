//! Model tests: whole-model gradient checks, task isolation, prediction, checkpoints and
//! tiny overfit runs of every family.

mod checkpoint;
mod common;
mod gradcheck;
mod isolation;
mod limits;
mod overfit;
mod predict;
mod threads;
