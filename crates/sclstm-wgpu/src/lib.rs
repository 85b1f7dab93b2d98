//! wgpu backend for sclstm: WGSL compute shaders for the gate matmuls, the LSTM /
//! SC-LSTM pointwise step kernels and the row gathers / scatter-adds (embedding lookups
//! and their gradients, per-sentence reversal), behind the same [`sclstm_core::Backend`]
//! trait as the CPU backend, in `f32`.
//!
//! | kernel ([`Kernel`]) | shader | does |
//! |---|---|---|
//! | `gemm`, `gemm_small_m` | `shaders/gemm.wgsl` | `C (+)= op(A)·op(B) (+ bias)`; 64 × 64 tiles, or 16-row tiles for m ≤ [`SMALL_M_MAX`] |
//! | `lstm_cell_fwd`, `lstm_cell_bwd` | `shaders/lstm_cell.wgsl` | one LSTM time step (paper Eq. 1) and its backward |
//! | `task_gate_fwd`, `task_gate_bwd` | `shaders/task_gate.wgsl` | one SC-LSTM task gate step (paper Eq. 2) and its backward |
//! | `gather_rows`, `scatter_add_rows` | `shaders/rows.wgsl` | dense row p = table row `ids[p]`; table row `ids[p]` += dense row p, summed in the CPU's order (bit-identical, no atomics) |
//!
//! * [`WgpuContext`] acquires an adapter (honouring `WGPU_BACKEND`, e.g. `vulkan`),
//!   holds the device and queue, and compiles and caches one pipeline per
//!   (shader, entry point). [`WgpuContext::from_device`] accepts a device opened elsewhere.
//! * [`WgpuBackend`] records every kernel into one pending command encoder and submits
//!   it at `sync` / `download`, so a layer's time loop is one submission with no
//!   readback per step. CRF and Viterbi stay on the host (sequential, O(T·L²)).
//!   Per dispatch it only records: dispatches share a compute pass, bind groups are
//!   cached by (kernel, buffers) with the uniform at a dynamic offset, and
//!   [`WgpuBackend::stats`] counts what was recorded. Products with small m (the
//!   per-step recurrent ones) run on a 16-row kernel ([`SMALL_M_MAX`]).
//! * Row ids reach the device in program order through an *index arena*, a storage
//!   buffer filled right before each submit like the uniform arena: every gather and
//!   scatter-add recorded before a submit reads its own ids at its own offset. The
//!   scatter-add sorts its positions by (id, p) on the host and runs one invocation per
//!   (distinct id, column), which adds that id's dense rows in increasing p.
//! * WGSL sources live in the workspace's `shaders/` folder, one file per kernel family
//!   ([`Shader`]), embedded with `include_str!`; each file's header gives its bindings,
//!   shapes, equation, workgroup size and dispatch formula. [`Kernel`] lists the entry
//!   points with their explicit bind group layouts.
//!
//! Without an adapter, construction fails with [`WgpuError::NoAdapter`], whose message
//! names `--backend cpu` and the Debian driver package `mesa-vulkan-drivers`.
//!
//! ```no_run
//! use sclstm_core::{Backend, Gemm};
//! use sclstm_wgpu::WgpuBackend;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gpu = WgpuBackend::new()?;
//! println!("adapter: {}", gpu.adapter());
//! let a = gpu.upload(&[1.0, 2.0, 3.0, 4.0])?; // 2 × 2
//! let mut c = gpu.zeros(4)?;
//! gpu.gemm(&Gemm::new(2, 2, 2), &a, &a, None, &mut c)?;
//! assert_eq!(gpu.download(&c)?, vec![7.0, 10.0, 15.0, 22.0]);
//! # Ok(())
//! # }
//! ```

mod backend;
mod context;
mod error;
mod uniforms;

pub use backend::{BIND_GROUP_CACHE_MAX, SMALL_M_MAX, WgpuBackend, WgpuBuf, WgpuStats};
pub use context::{
    AdapterSummary, CompiledKernel, Kernel, MAX_STORAGE_BINDINGS, Shader, WgpuContext,
    requested_backends,
};
pub use error::WgpuError;
pub use uniforms::{CellDims, GemmDims, RowDims};
