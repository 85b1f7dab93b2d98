//! Checks of the fused layers and the CRF on `CpuBackend<f64>`: naive host references,
//! central finite differences, task isolation, padding, cache reuse, and outside oracles
//! (fixtures from PyTorch and pytorch-crf, `benches/reference/oracle_*.py`).

mod common;
mod concurrency;
mod lstm_checks;
mod oracles;
mod packed;
mod three_way;
