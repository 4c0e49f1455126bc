//! Giving freed heap back to the operating system. After a burst of calls
//! (hundreds of concurrent streams, each with its buffers and tasks) glibc's
//! allocator keeps the freed pages in its arenas, so an idle gateway's RSS
//! stayed several MB above where it started (BENCHMARKS.md, "RSS after
//! load"). A background task looks every [`TRIM_INTERVAL`] at how much free
//! memory the allocator holds (`mallinfo2`) and, past [`TRIM_ABOVE`], asks it
//! to release the free pages (`malloc_trim`). In steady traffic the free pool
//! stays small and nothing is trimmed, so calls do not pay to grow the heap
//! again. Other platforms and allocators: nothing to do.

use std::time::Duration;

/// How often the allocator's free memory is checked.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(2);
/// Free heap the allocator may keep before it is asked to release it.
pub const TRIM_ABOVE: usize = 1024 * 1024;

/// Spawns the trimming task on the current runtime (a no-op where the
/// allocator is not glibc's).
pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // SAFETY: mallinfo2 and malloc_trim only read and madvise the
            // allocator's own free lists, under its locks; neither has
            // preconditions.
            let free = unsafe { libc::mallinfo2() }.fordblks;
            if free > TRIM_ABOVE {
                unsafe { libc::malloc_trim(0) };
            }
        }
    });
}
