//! End-to-end tests of the `sclstm` binary and of the crates working together.

mod atomic;
#[cfg(feature = "wgpu")]
mod backends;
mod cli;
mod encoder;
mod precision;
mod sweep;
