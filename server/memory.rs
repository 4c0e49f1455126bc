//! Giving freed heap back to the operating system. After a burst of calls
//! (hundreds of concurrent streams, each with its buffers and tasks) glibc's
//! allocator keeps the freed pages in its per-thread arenas, so the RSS of an
//! idle gateway stayed ~6 MB above where it started (BENCHMARKS.md, "RSS
//! after load"). A background task asks glibc to release free pages
//! (`malloc_trim`) every [`TRIM_INTERVAL`]; it costs microseconds on a heap
//! this size. Other platforms and allocators: nothing to do.

use std::time::Duration;

/// How often free heap pages are released.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(2);

/// Spawns the trimming task on the current runtime (a no-op where the
/// allocator is not glibc's).
pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // SAFETY: malloc_trim only walks and madvises the allocator's own
            // free lists, under its locks; it has no preconditions.
            unsafe { libc::malloc_trim(0) };
        }
    });
}
