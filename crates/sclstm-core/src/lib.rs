//! Shared foundations of the sclstm engine: the [`Real`] element type (f32 for training,
//! f64 for gradient checks), the small [`Backend`] trait that CPU and wgpu implement,
//! the buffer layouts every backend agrees on, the [`FusedOp`] contract between the tape
//! and fused layers, and [`NumError`].
//!
//! No I/O and no compute live here: only contracts.
//!
//! ```
//! use sclstm_core::Real;
//! assert_eq!(<f64 as Real>::from_f64(0.5).to_f64(), 0.5);
//! ```

mod backend;
mod error;
mod fused;
mod real;

pub use backend::{Backend, CellStep, Gemm, Packed, RowCopy, STRIP, strip_len};
pub use error::{BackendErrorKind, NumError};
pub use fused::FusedOp;
pub use real::Real;

/// Host matrix: rows × features, row-major. Sequences are stored time-major as (T·B, F).
pub type Matrix<R> = ndarray::Array2<R>;
