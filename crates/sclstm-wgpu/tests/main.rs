//! Tests of the wgpu backend: WGSL validation with naga (no GPU needed), then kernel
//! parity and a whole time loop against the CPU reference on a real adapter.
//!
//! The GPU tests need an adapter. In CI that is lavapipe (software Vulkan):
//! `apt-get install mesa-vulkan-drivers libvulkan1`, then run with
//! `WGPU_BACKEND=vulkan XDG_RUNTIME_DIR=<a 0700 folder> cargo test -p sclstm-wgpu`.
//! Without an adapter the GPU tests fail (they never skip).

mod common;
mod dispatch;
mod parity;
mod rows;
mod shaders;
