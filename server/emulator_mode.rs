//! `--emulator`: starts the emulator's fakes in-process on loopback and points
//! the gateway's configuration at them. Filled in once the emulator crate
//! serves them.

use crate::config::Config;

/// Handles of the running fakes; dropping it stops them.
#[derive(Debug)]
pub struct RunningEmulator {
    _private: (),
}

/// Starts the fakes and rewrites `config` to use them.
pub async fn start(_config: &mut Config) -> Result<RunningEmulator, String> {
    Err("the built-in emulator is not available in this build yet".into())
}

/// What `--emulator` prints: where it listens and how to call it.
pub fn banner(config: &Config, _emulator: &RunningEmulator) -> String {
    format!("identity-gateway (emulator) on {}", config.socket.display())
}
