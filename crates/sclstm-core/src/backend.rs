//! The `Backend` trait: the handful of kernels that decide training speed.
//!
//! Everything else (embeddings, heads, CRF, optimizers) is host code. A backend owns
//! device buffers ([`Backend::Buf`]) and runs gemm plus the LSTM / SC-LSTM pointwise
//! step kernels on them. A layer's whole time loop is a sequence of calls on buffers
//! that stay on the device; [`Backend::download`] is the only way back to the host.
//!
//! # Buffer layouts (shared by every backend)
//! All buffers are flat, row-major, time-major. For one direction of one layer with
//! `T` steps, batch `B`, hidden size `H`, gate order **i, f, g (= ĉ), o** (PyTorch's):
//!
//! | buffer    | shape          | contents                                                        |
//! |-----------|----------------|-----------------------------------------------------------------|
//! | `gates`   | (T, B, 4H)     | pre-activations `U x_t + b + W h_{t-1}`; the cell forward overwrites step `t` with the activations `[i, f, g, o]` |
//! | `c`, `h`  | (T+1, B, H)    | slot 0 is the initial state (zeros); `c_t`, `h_t` live in slot `t+1` |
//! | `tanh_c`  | (T, B, H)      | `tanh(c_t)`, saved for the backward and the task gates           |
//! | `mask`    | (T, B)         | 1 where step `t` is inside sentence `b`, else 0                 |
//! | `d_gates` | (T, B, 4H)     | gradient w.r.t. the gate pre-activations                        |
//! | `d_h`, `d_c` | (T+1, B, H) | gradient w.r.t. the slot of the same index in `h` / `c`          |
//! | `o_k`     | (T, B, H)      | task gate pre-activations `U_k x_t + b_k + W_k q_{t-1}`, overwritten by `σ(·)` |
//! | `q_k`     | (T+1, B, H)    | task outputs, slot 0 = 0, `q^k_t` in slot `t+1`                  |
//! | `d_o_k`   | (T, B, H)      | gradient w.r.t. the task gate pre-activations                   |
//! | `d_q_k`   | (T+1, B, H)    | gradient w.r.t. the slot of the same index in `q_k`              |
//!
//! Masked steps (mask 0) produce zero gates, states and outputs, and zero gradients,
//! so padding never leaks into states or gradients. Sentences are packed at the start
//! of the time axis; the reverse direction is run on per-sentence reversed input.

use crate::{NumError, Real};

/// One matrix product `C[c_off..] (+)= op(A[a_off..]) · op(B[b_off..]) (+ bias)`.
///
/// All operands are dense row-major: `op(A)` is `m × k` (stored `k × m` when
/// `trans_a`), `op(B)` is `k × n` (stored `n × k` when `trans_b`), `C` is `m × n`.
/// With `accumulate` the product is added to `C`, otherwise `C` is overwritten.
/// The optional bias (length `n`) is added to every row of the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gemm {
    /// Rows of `op(A)` and `C`.
    pub m: usize,
    /// Columns of `op(B)` and `C`.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// `A` is stored transposed (`k × m`).
    pub trans_a: bool,
    /// `B` is stored transposed (`n × k`).
    pub trans_b: bool,
    /// Element offset of `A` in its buffer.
    pub a_off: usize,
    /// Element offset of `B` in its buffer.
    pub b_off: usize,
    /// Element offset of `C` in its buffer.
    pub c_off: usize,
    /// Add to `C` instead of overwriting it.
    pub accumulate: bool,
}

impl Gemm {
    /// A plain `C = A · B` of the given sizes with every offset 0.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Gemm {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            a_off: 0,
            b_off: 0,
            c_off: 0,
            accumulate: false,
        }
    }

    /// Floating-point operations of this product (`2·m·n·k`).
    pub fn flops(&self) -> u64 {
        2 * self.m as u64 * self.n as u64 * self.k as u64
    }
}

/// Which step of a layer's time loop a pointwise kernel works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellStep {
    /// Time step `t` in `0..T`.
    pub t: usize,
    /// Batch size `B`.
    pub batch: usize,
    /// Hidden size `H`.
    pub hidden: usize,
}

/// The kernels a compute device offers to the layers. See the module docs for layouts.
///
/// Every method checks that its buffers are large enough for the region it touches and
/// returns [`NumError::BufferTooSmall`] otherwise. Backward kernels **accumulate** into
/// gradient buffers unless stated otherwise; callers zero them first.
pub trait Backend: Send + Sync {
    /// Element type of the device buffers.
    type Elem: Real;
    /// A device buffer of `Elem`.
    type Buf: Send + Sync;

    /// Human-readable backend name, e.g. `"cpu (2 threads)"` or the adapter's name.
    fn name(&self) -> String;

    /// Copies host data into a new device buffer.
    fn upload(&self, data: &[Self::Elem]) -> Result<Self::Buf, NumError>;

    /// Overwrites the start of an existing buffer with host data (no allocation).
    fn write(&self, buf: &mut Self::Buf, data: &[Self::Elem]) -> Result<(), NumError>;

    /// Copies a whole device buffer back to the host, waiting for pending work.
    fn download(&self, buf: &Self::Buf) -> Result<Vec<Self::Elem>, NumError>;

    /// A new zero-filled buffer of `len` elements.
    fn zeros(&self, len: usize) -> Result<Self::Buf, NumError>;

    /// Fills a whole buffer with zeros (no allocation).
    fn fill_zero(&self, buf: &mut Self::Buf) -> Result<(), NumError>;

    /// `C (+)= op(A)·op(B) (+ bias)`, see [`Gemm`].
    fn gemm(
        &self,
        g: &Gemm,
        a: &Self::Buf,
        b: &Self::Buf,
        bias: Option<&Self::Buf>,
        c: &mut Self::Buf,
    ) -> Result<(), NumError>;

    /// LSTM cell forward at step `t` (paper Eq. 1). Reads the pre-activations
    /// `gates[t]` and `c[t]` (= c_{t-1}); writes the activations back into `gates[t]`,
    /// `c[t+1] = i*g + f*c_{t-1}`, `tanh_c[t]`, and `h[t+1] = o*tanh(c_t)`, all times `mask[t]`.
    fn lstm_cell_fwd(
        &self,
        s: CellStep,
        gates: &mut Self::Buf,
        c: &mut Self::Buf,
        h: &mut Self::Buf,
        tanh_c: &mut Self::Buf,
        mask: &Self::Buf,
    ) -> Result<(), NumError>;

    /// LSTM cell backward at step `t`. Reads `d_h[t+1]` and `d_c[t+1]` (complete
    /// gradients w.r.t. h_t and c_t), the saved activations, `c[t]` and `tanh_c[t]`;
    /// writes `d_gates[t]` (pre-activation gradients) and adds `f * dc_t` to `d_c[t]`.
    /// Masked entries write zeros and add nothing.
    #[allow(clippy::too_many_arguments)]
    fn lstm_cell_bwd(
        &self,
        s: CellStep,
        gates: &Self::Buf,
        c: &Self::Buf,
        tanh_c: &Self::Buf,
        mask: &Self::Buf,
        d_h: &Self::Buf,
        d_c: &mut Self::Buf,
        d_gates: &mut Self::Buf,
    ) -> Result<(), NumError>;

    /// SC-LSTM task gate forward at step `t` (paper Eq. 2): `o_k[t] = σ(o_k[t])` in place,
    /// `q_k[t+1] = o_k[t] * tanh_c[t]`, times `mask[t]`.
    fn task_gate_fwd(
        &self,
        s: CellStep,
        o_k: &mut Self::Buf,
        q_k: &mut Self::Buf,
        tanh_c: &Self::Buf,
        mask: &Self::Buf,
    ) -> Result<(), NumError>;

    /// SC-LSTM task gate backward at step `t`. Reads `d_q_k[t+1]`; writes
    /// `d_o_k[t] = d_q · tanh_c · o(1-o)` and adds `d_q · o · (1 - tanh_c²)` to `d_c[t+1]`.
    #[allow(clippy::too_many_arguments)]
    fn task_gate_bwd(
        &self,
        s: CellStep,
        o_k: &Self::Buf,
        tanh_c: &Self::Buf,
        mask: &Self::Buf,
        d_q_k: &Self::Buf,
        d_o_k: &mut Self::Buf,
        d_c: &mut Self::Buf,
    ) -> Result<(), NumError>;

    /// Waits until all submitted work has finished (a no-op on the CPU).
    fn sync(&self) -> Result<(), NumError>;
}
