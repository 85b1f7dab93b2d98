//! End-to-end tests of the `sclstm` binary and of the crates working together.

mod cli;
#[cfg(feature = "wgpu")]
mod backends;
