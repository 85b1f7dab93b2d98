//! wgpu backend for sclstm: WGSL compute shaders for the gate matmuls and the LSTM /
//! SC-LSTM pointwise step kernels, behind the same [`sclstm_core::Backend`] trait as the
//! CPU backend, in `f32`.
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
pub use uniforms::{CellDims, GemmDims};
