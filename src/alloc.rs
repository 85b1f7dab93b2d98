//! Allocator tuning for the training loop, and the process's peak memory.
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

/// The process's peak resident memory so far, in bytes (`getrusage`; `None` where it
/// is not available).
pub fn peak_rss_bytes() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `getrusage` fills the zeroed struct it is given and reads nothing else.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            (libc::getrusage(libc::RUSAGE_SELF, &mut usage) == 0).then_some(usage)
        };
        // Linux reports `ru_maxrss` in KiB.
        usage.and_then(|u| u64::try_from(u.ru_maxrss).ok().map(|kib| kib * 1024))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// `peak_rss_bytes` for a summary line, e.g. `"; peak memory 1.33 GB"` (empty when unknown).
pub fn peak_rss_note() -> String {
    peak_rss_bytes().map_or_else(String::new, |b| {
        format!("; peak memory {:.2} GB", b as f64 / 1e9)
    })
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::{peak_rss_bytes, peak_rss_note};

    #[test]
    fn peak_memory_is_reported_and_grows() {
        let before = peak_rss_bytes().expect("getrusage works on Linux");
        assert!(
            before > 1 << 20,
            "a running test binary holds more than 1 MiB"
        );
        // Touch 64 MiB more than the peak so far: the peak must follow.
        let block = std::hint::black_box(vec![1u8; (before as usize) + (64 << 20)]);
        let after = peak_rss_bytes().expect("getrusage works on Linux");
        assert!(
            after >= before + (32 << 20),
            "peak {after} after touching {}",
            block.len()
        );
        assert!(peak_rss_note().starts_with("; peak memory "));
    }
}
