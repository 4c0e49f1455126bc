//! What every benchmark binary needs around the process it measures, and
//! nothing it measures: command-line flags, a child process (the gateway, or
//! token-bench's canned-reply server) in its own temp dir that is stopped on
//! drop, its memory from `/proc/PID/status`, waiting until it answers, and
//! (Unix) a gRPC channel over its Unix socket.

use std::{
    future::Future,
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

/// Where `--gateway` points unless given.
pub const DEFAULT_GATEWAY: &str = "target/release/identity-gateway";

/// How long a child may take to answer before the benchmark gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Hands every `--flag VALUE` pair on the command line to `set` (which
/// panics on a flag it does not know); panics on a flag without a value.
pub fn parse_flags(mut set: impl FnMut(&str, String)) {
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        set(&flag, value);
    }
}

/// A fresh temp dir and the path of a socket named `name` in it.
pub fn socket_dir(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join(name);
    (dir, socket)
}

/// A child process serving on `socket` inside its own temp dir; on drop it
/// is sent SIGTERM (killed where there are no signals) and waited for, then
/// the dir removed.
pub struct Spawned {
    /// The process.
    pub child: Child,
    /// The socket it serves on.
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Spawned {
    /// Owns `child`, which serves on `socket` in `dir`.
    pub fn new(child: Child, socket: PathBuf, dir: tempfile::TempDir) -> Self {
        Spawned {
            child,
            socket,
            _dir: dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        #[cfg(unix)]
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        #[cfg(not(unix))]
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` field of `/proc/PID/status` (e.g. `"VmHWM:"`), 0 if unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident memory of `pid` now, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Peak resident memory of `pid`, KiB: since it started, or since the last
/// [`reset_peak_rss`].
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// Starts `pid`'s peak resident memory (`VmHWM`) afresh from its current
/// RSS (Linux 4.0+: `5` to `/proc/PID/clear_refs`), so a peak can be read
/// afterwards without sampling the process while it works.
pub fn reset_peak_rss(pid: u32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// Calls `probe` every `every` until it returns something, and returns that;
/// panics with "`what` did not start" after 30 s.
pub async fn wait_ready<T, F, Fut>(what: &str, every: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(ready) = probe().await {
            return ready;
        }
        assert!(started.elapsed() < START_TIMEOUT, "{what} did not start");
        tokio::time::sleep(every).await;
    }
}

/// Connects `endpoint` (its URI is only a name) over the Unix socket
/// `socket`.
#[cfg(unix)]
pub async fn connect_unix(
    endpoint: tonic::transport::Endpoint,
    socket: &std::path::Path,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = socket.to_owned();
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
}
