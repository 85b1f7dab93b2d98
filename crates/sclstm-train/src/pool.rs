//! The host thread pool shared by the tape's products and Adam.

use std::sync::Arc;

use anyhow::Context;

/// A rayon pool for the tape's host products and Adam (`None` for one thread; 0 = one per core).
pub fn host_pool(threads: usize) -> anyhow::Result<Option<Arc<rayon::ThreadPool>>> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        threads
    };
    if threads <= 1 {
        return Ok(None);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("building the host thread pool")?;
    Ok(Some(Arc::new(pool)))
}
