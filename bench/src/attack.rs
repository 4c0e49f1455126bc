//! Hostile-load benchmark: a well-behaved caller's GetToken p99 and the
//! gateway's peak RSS while another caller attacks it, each attack on a
//! fresh gateway process under an open-file limit of 1024:
//!
//! - baseline (no attack);
//! - 500 concurrent GetToken requests of 4 MiB each (over 8 connections);
//! - 2,000 connections that never send a byte;
//! - a flood of 50,000 cached GetToken calls at 64 concurrency (audit volume).
//!
//! The gateway runs against a fake IMDS started here (the production shape:
//! build the gateway without the emulator). Results in BENCHMARKS.md.
//!
//! ```sh
//! cargo build --release -p identity-gateway --no-default-features
//! cargo build --release -p identity-gateway-bench --bin attack
//! target/release/attack --gateway target/release/identity-gateway
//! ```
//!
//! The attacks drive the Unix socket; on other platforms the binary only
//! says so.

#[cfg(unix)]
#[path = "attack/unix.rs"]
mod unix;

#[cfg(unix)]
fn main() {
    unix::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("attack measures the Unix socket transport; run it on Linux");
    std::process::exit(2);
}
