//! Shared test helpers: the two backends, inputs, and the abs + rel comparison.

use std::sync::OnceLock;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sclstm_core::CellStep;
use sclstm_cpu::CpuBackend;
use sclstm_wgpu::{WgpuBackend, WgpuContext};

/// Result type of the tests: any error fails the test with its message.
pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Value placed in regions a kernel must not touch.
pub const PAD: f32 = -777.25;

/// The GPU backend, shared by all tests of this binary (one device, opened once).
///
/// Fails the test (never skips) when no adapter exists; the message names the driver.
pub fn gpu() -> &'static WgpuBackend {
    static GPU: OnceLock<WgpuBackend> = OnceLock::new();
    GPU.get_or_init(|| match WgpuBackend::new() {
        Ok(b) => b,
        Err(e) => panic!(
            "{e}\n(tests need a GPU adapter: install mesa-vulkan-drivers and run with WGPU_BACKEND=vulkan)"
        ),
    })
}

/// A backend of its own on the shared device: its counters ([`WgpuBackend::stats`])
/// and bind group cache see only the calling test's work.
pub fn own_gpu() -> WgpuBackend {
    let ctx = gpu().context();
    WgpuBackend::from_context(WgpuContext::from_device(
        ctx.device().clone(),
        ctx.queue().clone(),
        ctx.adapter_info().clone(),
    ))
}

/// A backend on a device of its own whose grid may span at most `max_groups` workgroups
/// per dimension (wgpu allows a device below the adapter's limits and validates every
/// dispatch against them): small inputs then need the folded (2-D) grid that only very
/// large ones need under the default limit of 65535.
pub fn gpu_with_grid_limit(max_groups: u32) -> Result<WgpuBackend, Box<dyn std::error::Error>> {
    // Opens the shared device first, so a missing adapter fails with the usual message.
    let info = gpu().context().adapter_info().clone();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
    desc.backends = sclstm_wgpu::requested_backends();
    let instance = wgpu::Instance::new(desc);
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference:
            wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance),
        ..Default::default()
    }))?;
    assert_eq!(adapter.get_info().name, info.name, "same adapter as gpu()");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("grid-limited"),
        required_limits: wgpu::Limits {
            max_compute_workgroups_per_dimension: max_groups,
            ..wgpu::Limits::default()
        },
        ..Default::default()
    }))?;
    Ok(WgpuBackend::from_context(WgpuContext::from_device(
        device,
        queue,
        adapter.get_info(),
    )))
}

/// The CPU reference backend (single-threaded: deterministic summation order).
pub fn cpu() -> CpuBackend<f32> {
    CpuBackend::<f32>::new(1).expect("single-threaded CPU backend")
}

/// Fixed-seed generator.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `len` uniform values in `[-scale, scale)`.
pub fn uniform(r: &mut ChaCha8Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| r.random_range(-scale..scale)).collect()
}

/// `len` integers in `-4..=4` as f32: products and sums stay exact in f32.
pub fn small_ints(r: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| r.random_range(-4i32..=4) as f32).collect()
}

/// The steps of one direction of a layer over a batch whose step `t` runs the first
/// `running[t]` sentences (`n_t`, non-increasing), in the packed layout of
/// `sclstm_core::backend`: step `t` owns step rows `[p_t, p_t + n_t)` with
/// `p_t = n_0 + … + n_{t-1}`, reads the state at `prev` (the initial state, row 0, at
/// `t = 0`, else `B + p_{t-1}`) and writes it at `next = B + p_t`, with `B = n_0`.
pub fn packed_steps(running: &[usize], hidden: usize) -> Vec<CellStep> {
    let batch = running.first().copied().unwrap_or(0);
    let mut steps: Vec<CellStep> = Vec::with_capacity(running.len());
    let mut p = 0;
    for &rows in running {
        let prev = steps.last().map_or(0, |last| last.next);
        steps.push(CellStep {
            rows,
            hidden,
            step: p,
            prev,
            next: batch + p,
        });
        p += rows;
    }
    steps
}

/// Asserts `|got - want| <= abs + rel·|want|` element-wise (NaN always fails) and
/// reports the first offending index with both values and the context.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= abs + rel * w.abs();
        assert!(
            ok,
            "{what}: index {i}: gpu {g} vs cpu {w} (diff {:e}, tolerance {abs:e} + {rel:e}·|cpu|)",
            (g - w).abs()
        );
    }
}
