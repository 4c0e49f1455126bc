//! How a running gateway is told to stop and how it says it is ready, the
//! same for every host: a console (Ctrl-C, SIGTERM) and the Windows Service
//! Control Manager (STOP, SHUTDOWN, PRESHUTDOWN) both resolve
//! [`RunControl::shutdown`], so a service stop drains exactly like SIGTERM.

use std::{fmt, future::Future, pin::Pin};

/// Resolves when the gateway should drain and stop, with the reason for the log.
pub type Shutdown = Pin<Box<dyn Future<Output = &'static str> + Send>>;

/// What the host hands the gateway's run loop.
pub struct RunControl {
    /// Resolves when the host asks the gateway to stop.
    pub shutdown: Shutdown,
    /// Called once the listeners are bound and serving.
    pub ready: Option<Box<dyn FnOnce() + Send>>,
}

impl RunControl {
    /// A control with no readiness hook.
    pub fn new(shutdown: impl Future<Output = &'static str> + Send + 'static) -> Self {
        Self {
            shutdown: Box::pin(shutdown),
            ready: None,
        }
    }
}

impl fmt::Debug for RunControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunControl")
            .field("ready", &self.ready.is_some())
            .finish_non_exhaustive()
    }
}

/// Runs the gateway with `config` until `control.shutdown`; the binary
/// provides it (it owns the runtime and the composition).
pub type Runner = fn(crate::config::Config, RunControl) -> Result<(), String>;
