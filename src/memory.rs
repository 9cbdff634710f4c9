//! How the daemon asks the C allocator to behave (glibc only; elsewhere nothing changes).
//!
//! glibc raises its mmap threshold each time a large block allocated with mmap is freed (up to 32 MiB):
//! after the first pull, a zstd window (2-8 MiB) or a burst of hyper read buffers is served from the
//! per-thread arenas instead, and freed arena memory mostly stays in the process. Measured with
//! `hack/bench-pull` (warm-up pulls of every benchmark image, then `large`): peak RSS of the `large` pull
//! 47 MB with the dynamic threshold, 38 MB with this one (30 MB at 128 KiB, which maps every hyper buffer
//! on its own), and 33 MB instead of 58 MB after the run.
//! Fixing the threshold (any explicit value disables the adjustment) makes large blocks go back to the
//! kernel when freed, while the small, frequent allocations stay in the arenas.

/// Blocks of at least this many bytes are mapped and unmapped on their own. Above hyper's read buffers
/// (up to ~400 KiB) and the 128 KiB decode blocks, which are reused; below zstd windows and big answers.
pub const MMAP_THRESHOLD: usize = 1 << 20;

/// Sets the allocator's fixed mmap threshold. Call first thing in `main`, before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune_allocator() {
    // SAFETY: mallopt only sets a tuning parameter of glibc's allocator; it has no memory-safety
    // preconditions, and it runs before any other thread exists.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) };
    if ok != 1 {
        tracing::debug!("mallopt(M_MMAP_THRESHOLD) refused; keeping glibc's dynamic threshold");
    }
}

/// Sets the allocator's fixed mmap threshold (only glibc needs it).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}
