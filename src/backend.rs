//! The one place where `--backend` is turned into a concrete backend type.

use std::sync::Arc;

use sclstm_core::Backend;
use sclstm_cpu::CpuBackend;

use sclstm_train::config::BackendKind;

/// Work that runs on whichever backend the user picked (generic code, static dispatch).
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Runs the job on backend `b`.
    fn run<B: Backend<Elem = f32> + 'static>(self, b: Arc<B>) -> anyhow::Result<Self::Output>;
}

/// Builds the chosen backend and runs `job` on it; `threads` above this machine's cores is an
/// error (0 means all cores).
pub fn with_backend<J: BackendJob>(
    kind: BackendKind,
    threads: usize,
    job: J,
) -> anyhow::Result<J::Output> {
    sclstm_train::pool::check_threads(threads, "--threads")?;
    match kind {
        BackendKind::Cpu => {
            let b = CpuBackend::<f32>::new(threads)?;
            eprintln!("backend: {}", b.name());
            job.run(Arc::new(b))
        }
        BackendKind::Wgpu => wgpu_job(job),
    }
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
