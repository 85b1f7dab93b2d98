//! Checks of the fused layers and the CRF on `CpuBackend<f64>`: naive host references,
//! central finite differences, task isolation, padding and cache reuse.

mod common;
mod concurrency;
mod lstm_checks;
mod three_way;
