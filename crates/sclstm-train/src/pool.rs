//! The host thread pool shared by the tape's products and Adam.

use std::sync::Arc;

use anyhow::Context;

/// Cores of this machine (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Rejects a thread count above this machine's cores; `what` names the flag or key in the
/// error. 0 (all cores) is always accepted.
pub fn check_threads(threads: usize, what: &str) -> anyhow::Result<()> {
    let cores = cores();
    if threads > cores {
        anyhow::bail!(
            "{what} = {threads} is more than the {cores} cores of this machine (0 uses all cores)"
        );
    }
    Ok(())
}

/// The rayon pool for the tape's host products and Adam (`None` for one thread; 0 = one
/// per core): the same threads as the CPU backend of that many threads
/// ([`sclstm_cpu::shared_pool`]).
pub fn host_pool(threads: usize) -> anyhow::Result<Option<Arc<rayon::ThreadPool>>> {
    sclstm_cpu::shared_pool(threads).context("building the host thread pool")
}
