//! Integration tests: a real gateway on a Unix socket in a temp dir, the
//! emulator's fakes on loopback, and `identity-gateway-client`.

mod common;

// The binary's signal handling is Unix's; on Windows the binary (pipe,
// service stop, second instance) is exercised by scripts/windows-tests.sh.
#[cfg(unix)]
mod binary;
mod config_reference;
mod datalake;
mod emulator;
mod emulator_blob;
mod identity_endpoint;
mod keyvault;
// Raw HTTP/2 over the Unix socket, and callers as other Unix users (setpriv).
#[cfg(unix)]
mod local_authority;
// Metrics over TCP and their own Unix socket, IMDS reachability, diagnose.
#[cfg(unix)]
mod observability;
// The binary's operations (signals, healthcheck on the socket).
#[cfg(unix)]
mod operations;
#[cfg(unix)]
mod policy;
// Unix sockets and process groups (CommandExt).
#[cfg(unix)]
mod resilience;
mod sources;
mod sql;
mod storage;
mod token;
