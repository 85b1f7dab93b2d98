//! Numeric errors: every one names the operation and the shapes involved.

use thiserror::Error;

/// An error raised by a numeric operation or a backend.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum NumError {
    /// Two operands whose shapes do not fit the operation.
    #[error("{op}: shape mismatch: {lhs:?} vs {rhs:?}")]
    ShapeMismatch {
        /// Operation name.
        op: &'static str,
        /// Shape of the left (or first) operand.
        lhs: Vec<usize>,
        /// Shape of the right (or second) operand.
        rhs: Vec<usize>,
    },
    /// A buffer too small for the region an operation reads or writes.
    #[error("{op}: buffer of {len} elements is too small: needs {needed}")]
    BufferTooSmall {
        /// Operation name.
        op: &'static str,
        /// Length of the buffer given.
        len: usize,
        /// Elements the operation touches.
        needed: usize,
    },
    /// An operation asked to work on zero rows (an empty batch).
    #[error("{op}: empty input ({what})")]
    Empty {
        /// Operation name.
        op: &'static str,
        /// What was empty.
        what: &'static str,
    },
    /// A NaN or infinity where a finite value is required.
    #[error("{op}: non-finite value {value} at index {index}")]
    NonFinite {
        /// Operation name.
        op: &'static str,
        /// Flat index of the first offending element.
        index: usize,
        /// The value found.
        value: f64,
    },
    /// An index (token id, tag id) outside its table.
    #[error("{op}: index {index} out of range 0..{bound}")]
    IndexOutOfRange {
        /// Operation name.
        op: &'static str,
        /// The offending index.
        index: usize,
        /// Table size.
        bound: usize,
    },
    /// The loss handed to `backward` is not a 1×1 scalar.
    #[error("backward: loss must be a scalar, got shape {shape:?}")]
    NonScalarLoss {
        /// The loss node's shape.
        shape: Vec<usize>,
    },
    /// A backend could not be created or failed on the device.
    #[error("backend {backend}: {message}")]
    Backend {
        /// Backend name.
        backend: String,
        /// What kind of failure it is.
        kind: BackendErrorKind,
        /// What went wrong, in the driver's words where available.
        message: String,
    },
}

/// What kind of failure a [`NumError::Backend`] is, for callers that react differently
/// (retry with a smaller batch on out-of-memory, fall back to the CPU when unavailable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// There is no device to run on (no adapter, a device refused, no thread pool).
    Unavailable,
    /// The device ran out of memory.
    OutOfMemory,
    /// The device rejected a command as invalid.
    Validation,
    /// The device was lost or stopped answering.
    DeviceLost,
    /// The work exceeds a limit of the device (binding size, workgroups, 32-bit indices).
    Limit,
}
