//! Allocator tuning for the training loop.
//!
//! Every training step frees and reallocates the same large buffers (tape values,
//! gradients, layer outputs of a few hundred KB to a few MB each). glibc's malloc
//! serves blocks above 128 KiB with `mmap` and returns them with `munmap` on free, so
//! each step would fault in and zero tens of MB of fresh pages again. Raising the
//! mmap and trim thresholds keeps such blocks in the heap for reuse; the peak
//! resident memory is unchanged (it is reached in every step anyway).

/// Keeps freed large blocks in the process heap (glibc on Linux; a no-op elsewhere).
pub fn keep_freed_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // Largest values glibc accepts on 64-bit targets: 32 MiB for the mmap threshold
        // (DEFAULT_MMAP_THRESHOLD_MAX); the trim threshold has no cap.
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = 256 << 20;
        // SAFETY: mallopt only changes allocator parameters; it is called once at
        // start-up, before any other thread exists. A rejected value (return 0) keeps
        // glibc's default, which is only slower.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}
