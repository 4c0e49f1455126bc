//! How a running gateway is told to stop, to reload its caller policy, and
//! how it says it is ready, the same for every host:
//!
//! - a console (Ctrl-C, SIGTERM) and the Windows Service Control Manager
//!   (STOP, SHUTDOWN, PRESHUTDOWN) both resolve [`RunControl::shutdown`], so
//!   a service stop drains exactly like SIGTERM;
//! - SIGHUP on Unix, Ctrl-Break in a Windows console and the Service Control
//!   Manager's PARAMCHANGE (`sc.exe control identity-gateway paramchange`)
//!   all arrive as one stream of reload requests, [`RunControl::reloads`],
//!   which the run loop answers with [`crate::Reloader::reload`].

use std::{fmt, future::Future, pin::Pin};

use tokio::sync::mpsc;

/// Resolves when the gateway should drain and stop, with the reason for the log.
pub type Shutdown = Pin<Box<dyn Future<Output = &'static str> + Send>>;

/// What the host hands the gateway's run loop.
pub struct RunControl {
    /// Resolves when the host asks the gateway to stop.
    pub shutdown: Shutdown,
    /// Called once the listeners are bound and serving.
    pub ready: Option<Box<dyn FnOnce() + Send>>,
    /// Requests to reload the caller policy. The run loop also feeds it the
    /// process's own reload signal (SIGHUP, Ctrl-Break); a host adds its
    /// own sources through [`Reloads::trigger`] (the service's PARAMCHANGE).
    pub reloads: Reloads,
}

impl RunControl {
    /// A control with no readiness hook and no reload source but the
    /// process's signals.
    pub fn new(shutdown: impl Future<Output = &'static str> + Send + 'static) -> Self {
        Self {
            shutdown: Box::pin(shutdown),
            ready: None,
            reloads: Reloads::new(),
        }
    }
}

impl fmt::Debug for RunControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunControl")
            .field("ready", &self.ready.is_some())
            .field("reloads", &self.reloads)
            .finish_non_exhaustive()
    }
}

/// The stream of "reload the caller policy" requests, each with its reason
/// for the log (`"SIGHUP"`, `"SERVICE_CONTROL_PARAMCHANGE"`).
///
/// Requests that arrive while one is pending are merged into it: a reload
/// reads the file as it is when the reload runs, so one pending reload
/// covers every edit made before it. Nothing is lost and nothing queues up
/// without bound, however often a signal is sent.
pub struct Reloads {
    rx: mpsc::Receiver<&'static str>,
    // Kept so that the stream never ends: with no source, `next` waits forever.
    tx: mpsc::Sender<&'static str>,
}

impl Reloads {
    /// A stream with no source yet (see [`Reloads::trigger`]).
    pub fn new() -> Self {
        // One slot: a pending request; more are merged into it.
        let (tx, rx) = mpsc::channel(1);
        Self { rx, tx }
    }

    /// A handle that asks for a reload, from any thread, without blocking
    /// (what a Windows service control handler needs).
    pub fn trigger(&self) -> ReloadTrigger {
        ReloadTrigger {
            tx: self.tx.clone(),
        }
    }

    /// The next request's reason. Never ends: the stream holds a trigger.
    pub async fn next(&mut self) -> &'static str {
        match self.rx.recv().await {
            Some(reason) => reason,
            // Unreachable (`self.tx` keeps the channel open); wait forever
            // rather than spin if it ever were.
            None => std::future::pending().await,
        }
    }
}

impl Default for Reloads {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Reloads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloads")
            .field("pending", &!self.rx.is_empty())
            .finish()
    }
}

/// Asks for a caller policy reload; cheap to clone, callable from any thread
/// (also outside the async runtime) and never blocks.
#[derive(Clone)]
pub struct ReloadTrigger {
    tx: mpsc::Sender<&'static str>,
}

/// What became of a [`ReloadTrigger::request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadRequest {
    /// Queued: the run loop will reload.
    Queued,
    /// A reload was already pending; it will read the file as it is then.
    Merged,
    /// The gateway has stopped; nobody will reload.
    Stopped,
}

impl ReloadTrigger {
    /// Asks for a reload, giving `reason` for the log.
    pub fn request(&self, reason: &'static str) -> ReloadRequest {
        match self.tx.try_send(reason) {
            Ok(()) => ReloadRequest::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => ReloadRequest::Merged,
            Err(mpsc::error::TrySendError::Closed(_)) => ReloadRequest::Stopped,
        }
    }
}

impl fmt::Debug for ReloadTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadTrigger").finish_non_exhaustive()
    }
}

/// Runs `reload` for each request of `reloads`, one at a time, off the async
/// worker threads (a reload reads a file and, on Windows, looks account
/// names up, which can wait on a domain controller). Never returns; the
/// caller drops it when the gateway stops.
pub async fn answer_reloads<F>(mut reloads: Reloads, reload: F)
where
    F: Fn() + Clone + Send + 'static,
{
    loop {
        let reason = reloads.next().await;
        tracing::info!("{reason}: reloading the caller policy");
        let reload = reload.clone();
        // The outcome is the reloader's to log; a panic in it must not end
        // the loop (the previous policy simply stays in force).
        if let Err(e) = tokio::task::spawn_blocking(reload).await {
            tracing::error!(
                error = %e,
                "caller policy NOT reloaded; the previous policy stays in force"
            );
        }
    }
}

/// Runs the gateway with `config` until `control.shutdown`; the binary
/// provides it (it owns the runtime and the composition).
pub type Runner = fn(crate::config::Config, RunControl) -> Result<(), String>;

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        time::Duration,
    };

    use super::*;

    #[tokio::test]
    async fn a_request_from_another_thread_arrives_with_its_reason() {
        let mut reloads = Reloads::new();
        let trigger = reloads.trigger();
        // As the service control handler does: a plain thread, no runtime.
        let outcome = std::thread::spawn(move || trigger.request("SERVICE_CONTROL_PARAMCHANGE"))
            .join()
            .unwrap();
        assert_eq!(outcome, ReloadRequest::Queued);
        assert_eq!(reloads.next().await, "SERVICE_CONTROL_PARAMCHANGE");
    }

    #[tokio::test]
    async fn requests_while_one_is_pending_are_merged_and_none_is_lost() {
        let mut reloads = Reloads::new();
        let trigger = reloads.trigger();
        assert_eq!(trigger.request("SIGHUP"), ReloadRequest::Queued);
        assert_eq!(trigger.request("SIGHUP"), ReloadRequest::Merged);
        assert_eq!(trigger.clone().request("SIGHUP"), ReloadRequest::Merged);
        assert_eq!(reloads.next().await, "SIGHUP");
        // Taken: the next request queues again.
        assert_eq!(trigger.request("Ctrl-Break"), ReloadRequest::Queued);
        assert_eq!(reloads.next().await, "Ctrl-Break");
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_request_the_stream_waits_and_does_not_end() {
        let mut reloads = RunControl::new(std::future::pending()).reloads;
        let waited = tokio::time::timeout(Duration::from_secs(3600), reloads.next()).await;
        assert!(waited.is_err(), "no request was made: {waited:?}");
    }

    #[test]
    fn a_request_after_the_gateway_stopped_says_so_and_does_not_block() {
        let reloads = Reloads::new();
        let trigger = reloads.trigger();
        drop(reloads);
        assert_eq!(trigger.request("SIGHUP"), ReloadRequest::Stopped);
    }

    #[tokio::test]
    async fn answer_reloads_reloads_once_per_request_in_order() {
        let reloads = Reloads::new();
        let trigger = reloads.trigger();
        let count = Arc::new(AtomicUsize::new(0));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let reload = {
            let count = Arc::clone(&count);
            move || {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = done_tx.send(());
            }
        };
        let task = tokio::spawn(answer_reloads(reloads, reload));
        for _ in 0..3 {
            assert_eq!(trigger.request("SIGHUP"), ReloadRequest::Queued);
            done_rx.recv().await.unwrap();
        }
        assert_eq!(count.load(Ordering::SeqCst), 3);
        task.abort();
    }

    #[tokio::test]
    async fn a_reload_that_panics_does_not_end_the_loop() {
        let reloads = Reloads::new();
        let trigger = reloads.trigger();
        let calls = Arc::new(AtomicUsize::new(0));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let reload = {
            let calls = Arc::clone(&calls);
            move || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let _ = done_tx.send(());
                assert!(n != 0, "the first reload fails");
            }
        };
        let task = tokio::spawn(answer_reloads(reloads, reload));
        assert_eq!(trigger.request("SIGHUP"), ReloadRequest::Queued);
        done_rx.recv().await.unwrap();
        // The first request was taken: this one queues, and is answered
        // once the loop has survived the panic.
        assert_eq!(trigger.request("SIGHUP"), ReloadRequest::Queued);
        done_rx.recv().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        task.abort();
    }
}
