//! Token-path benchmarks (see BENCHMARKS.md for results and the command).
//!
//! 1. Throughput and latency of cached GetToken over the Unix socket against
//!    an empty unary RPC on the same server (grpc.health.v1.Health/Check) and
//!    against a canned reply of the token's size from a bench-only server
//!    (`canned.rs`), at 1, 16, 64 and 256 concurrent callers; the three are
//!    interleaved in rounds and medians reported, because these machines are
//!    noisy. The gateway is the production shape against a fake IMDS in this
//!    process; its RSS is read idle, right after the load and 3 s later.
//! 2. Startup: time from spawn until the socket answers a health check; idle
//!    RSS of the gateway process.
//! 3. 1,000 concurrent cold callers of one key -> upstream requests.
//! 4. 100 clients x 20 resources against a fake IMDS enforcing 20 rps / 5
//!    concurrent -> errors and 429s.
//!
//! Usage: token-bench --gateway target/release/identity-gateway [--seconds-per-round S] [--rounds R]
//!
//! The benchmarks drive the Unix socket; on other platforms the binary only
//! says so.

#[cfg(unix)]
mod canned;

#[cfg(unix)]
#[path = "token_bench/unix.rs"]
mod unix;

#[cfg(unix)]
fn main() {
    unix::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("token-bench measures the Unix socket transport; run it on Linux");
    std::process::exit(2);
}
