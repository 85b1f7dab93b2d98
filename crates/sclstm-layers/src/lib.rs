//! Fused LSTM and SC-LSTM layers (hand-written BPTT over any [`Backend`]) and the
//! linear-chain CRF.
//!
//! * [`sc_lstm_forward`] runs one (bi)directional SC-LSTM layer (paper Eq. 1–3; a plain
//!   (Bi)LSTM layer when no task gates are requested) through backend calls and returns
//!   its output plus, when recording, a [`FusedOp`] tape node with the hand-written
//!   backward. [`bilstm_forward`] and [`lstm_forward`] are the task-free shorthands.
//! * [`crf_nll`] is the CRF loss node; [`viterbi_decode`] decodes, optionally under a
//!   [`BioConstraint`].
//!
//! Parameter layouts, output column layout and the gradient order of each op are in the
//! [`lstm`] and [`crf`] module docs; the derivations in `BACKWARD.md`.
//!
//! ```
//! use std::sync::Arc;
//! use ndarray::Array2;
//! use sclstm_cpu::CpuBackend;
//! use sclstm_layers::{LayerWorkspace, LstmWeights, lstm_forward};
//!
//! let ws = LayerWorkspace::new(Arc::new(CpuBackend::<f64>::new(1).unwrap()));
//! let (d, h) = (3, 2);
//! let w_ih = Array2::from_elem((4 * h, d), 0.1);
//! let w_hh = Array2::from_elem((4 * h, h), -0.1);
//! let b = Array2::zeros((1, 4 * h));
//! // Two sentences of lengths 2 and 1, time-major: rows t·B + b.
//! let x = Array2::from_elem((2 * 2, d), 1.0);
//! let w = LstmWeights { w_ih: &w_ih, w_hh: &w_hh, b: &b };
//! let (out, node) = lstm_forward(&ws, &x, &[2, 1], w, true).unwrap();
//! assert_eq!(out.dim(), (4, h));
//! assert!(out.row(3).iter().all(|&v| v == 0.0)); // padding row
//! let grads = node.unwrap().backward(&Array2::ones((4, h))).unwrap();
//! assert_eq!(grads.len(), 4); // x, W_ih, W_hh, b
//! ```
//!
//! [`Backend`]: sclstm_core::Backend
//! [`FusedOp`]: sclstm_core::FusedOp

pub mod crf;
pub mod lstm;
mod seq;

pub use crf::{
    BioConstraint, CrfReduction, CrfWeights, crf_log_partition, crf_marginals, crf_nll,
    crf_path_scores, viterbi_decode,
};
pub use lstm::{
    DirectionWeights, Join, LayerWorkspace, LstmWeights, ScLstmArgs, ScLstmOp, TaskGateWeights,
    TaskInput, WeightsId, bilstm_forward, lstm_forward, sc_lstm_forward,
};
pub use seq::SeqShape;

/// What every op constructor returns: the output matrix and, when recording, the tape
/// node whose `backward` is the hand-written gradient.
pub type Recorded<R> = (
    sclstm_core::Matrix<R>,
    Option<Box<dyn sclstm_core::FusedOp<R>>>,
);
