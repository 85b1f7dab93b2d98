//! Errors of the wgpu backend.

use sclstm_core::{BackendErrorKind, NumError};
use thiserror::Error;

/// What can go wrong while acquiring or using a GPU.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WgpuError {
    /// No adapter on the requested wgpu backends (`WGPU_BACKEND`, default: Vulkan, Metal, DX12).
    #[error(
        "no GPU adapter was found (wgpu backends: {backends}; {reason}). Run with `--backend cpu`, \
         or install a Vulkan driver: on Debian/Ubuntu `apt-get install mesa-vulkan-drivers libvulkan1` \
         gives the software rasterizer lavapipe"
    )]
    NoAdapter {
        /// The backends that were searched.
        backends: String,
        /// wgpu's explanation.
        reason: String,
    },
    /// The adapter exists but refused to create a device.
    #[error("the GPU adapter {adapter} refused to create a device: {message}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// wgpu's explanation.
        message: String,
    },
    /// A buffer larger than the device allows in one binding.
    #[error("buffer of {len} f32 elements exceeds the device's {max_bytes}-byte binding limit")]
    BufferTooLarge {
        /// Requested elements.
        len: usize,
        /// The device's `max_storage_buffer_binding_size`.
        max_bytes: u64,
    },
    /// The row lists of one gather or scatter-add (ids; sorted positions and segments)
    /// exceed what one binding of the index arena can hold.
    #[error("{op}: {words} words of row ids exceed the device's {max_bytes}-byte binding limit")]
    RowListTooLarge {
        /// Kernel name.
        op: &'static str,
        /// Words (u32) the lists need.
        words: usize,
        /// The device's `max_storage_buffer_binding_size`.
        max_bytes: u64,
    },
    /// A dispatch needs more workgroups than one grid dimension allows (65535).
    #[error("{op}: {groups} workgroups exceed the device's per-dimension limit of {max}")]
    TooManyWorkgroups {
        /// Kernel name.
        op: &'static str,
        /// Workgroups needed along the largest dimension.
        groups: u64,
        /// The device's `max_compute_workgroups_per_dimension`.
        max: u32,
    },
    /// A validation, out-of-memory or driver error reported by wgpu.
    #[error("{what}: {message}")]
    Device {
        /// What was being done.
        what: &'static str,
        /// Out of memory, validation, device lost or a limit.
        kind: BackendErrorKind,
        /// wgpu's message.
        message: String,
    },
}

impl WgpuError {
    /// The kind of failure, as [`NumError::Backend`] carries it.
    pub fn kind(&self) -> BackendErrorKind {
        match self {
            WgpuError::NoAdapter { .. } | WgpuError::RequestDevice { .. } => {
                BackendErrorKind::Unavailable
            }
            WgpuError::BufferTooLarge { .. }
            | WgpuError::RowListTooLarge { .. }
            | WgpuError::TooManyWorkgroups { .. } => BackendErrorKind::Limit,
            WgpuError::Device { kind, .. } => *kind,
        }
    }
}

impl From<WgpuError> for NumError {
    fn from(e: WgpuError) -> Self {
        NumError::Backend {
            backend: "wgpu".to_string(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}
