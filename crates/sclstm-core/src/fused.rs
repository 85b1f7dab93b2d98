//! The contract between the autodiff tape and fused operations.
//!
//! A fused operation (an LSTM / SC-LSTM layer with its hand-written BPTT, a CRF loss)
//! runs its own forward pass, saves what its backward needs, and is recorded on the
//! tape as one node with one output matrix. Layers implement this trait outside the
//! autodiff crate, so neither depends on the other.

use crate::{Matrix, NumError, Real};

/// A recorded fused operation with a hand-written backward pass.
pub trait FusedOp<R: Real>: std::fmt::Debug + Send {
    /// Short name shown when the tape is printed, e.g. `"sc_lstm_layer"`.
    fn name(&self) -> &'static str;

    /// Given the gradient of the loss w.r.t. the node's output, returns the gradient
    /// w.r.t. each input, in the order the inputs were recorded (`None`: no gradient
    /// flows to that input). Each returned matrix has its input's shape.
    fn backward(&self, d_out: &Matrix<R>) -> Result<Vec<Option<Matrix<R>>>, NumError>;
}
