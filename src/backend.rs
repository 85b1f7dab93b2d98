//! The one place where `--backend` is turned into a concrete backend type.

use std::sync::Arc;

use sclstm_core::Backend;
use sclstm_cpu::CpuBackend;

use sclstm_train::config::{BackendKind, Dtype, check_dtype};

/// Work that runs on whichever backend the user picked (generic code, static dispatch).
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Runs the job on backend `b`.
    fn run<B: Backend + 'static>(self, b: Arc<B>) -> anyhow::Result<Self::Output>;
}

/// Builds the chosen backend in the chosen precision and runs `job` on it; `threads` above
/// this machine's cores is an error (0 means all cores), and so is f64 on wgpu.
pub fn with_backend<J: BackendJob + Send>(
    kind: BackendKind,
    dtype: Dtype,
    threads: usize,
    job: J,
) -> anyhow::Result<J::Output>
where
    J::Output: Send,
{
    sclstm_train::pool::check_threads(threads, "--threads")?;
    check_dtype(kind, dtype, "--dtype")?;
    match (kind, dtype) {
        (BackendKind::Cpu, Dtype::F32) => cpu_job(CpuBackend::<f32>::new(threads)?, job),
        (BackendKind::Cpu, Dtype::F64) => cpu_job(CpuBackend::<f64>::new(threads)?, job),
        (BackendKind::Wgpu, _) => wgpu_job(job),
    }
}

/// Runs `job` on one of the backend's threads ([`CpuBackend::run`]): every join of a
/// layer and every parallel loop then starts on the pool's threads directly.
fn cpu_job<R: sclstm_core::Real, J: BackendJob + Send>(
    b: CpuBackend<R>,
    job: J,
) -> anyhow::Result<J::Output>
where
    J::Output: Send,
{
    eprintln!("backend: {}", b.name());
    let b = Arc::new(b);
    b.clone().run(move || job.run(b))
}

#[cfg(feature = "wgpu")]
fn wgpu_job<J: BackendJob>(job: J) -> anyhow::Result<J::Output> {
    let b = sclstm_wgpu::WgpuBackend::new()?;
    eprintln!("backend: wgpu on {}", b.adapter());
    if let Some(w) = b.adapter().cpu_warning() {
        eprintln!("{w}");
    }
    job.run(Arc::new(b))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_job<J: BackendJob>(_job: J) -> anyhow::Result<J::Output> {
    anyhow::bail!(
        "this sclstm was built without the `wgpu` feature: use --backend cpu, or rebuild with default features"
    )
}
