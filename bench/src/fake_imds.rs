//! A standalone fake IMDS for the process fan-out benchmark
//! (`bench/fanout.py`; results in BENCHMARKS.md): the emulator crate's
//! [`ImdsFake`] on a free loopback port, with IMDS's documented limits (20
//! requests/s, 5 in flight, 429 past them) and a fixed latency.
//!
//! Prints `url http://127.0.0.1:PORT` once serving. Each `stats` line on stdin
//! answers one JSON line with the fake's counters; end of stdin stops it.
//!
//! Usage: fake-imds [--latency-ms 15] [--no-limits]

use std::{
    io::{BufRead, Write},
    sync::Arc,
    time::Duration,
};

use identity_gateway_emulator::{
    imds::{ImdsConfig, ImdsFake, RateLimits},
    sample, TokenAuthority,
};

fn main() {
    let mut latency_ms = 15u64;
    let mut limits = Some(RateLimits::IMDS);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--latency-ms" => {
                latency_ms = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--latency-ms takes milliseconds")
            }
            "--no-limits" => limits = None,
            other => panic!("unknown flag {other}"),
        }
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let fake = runtime.block_on(async {
        let authority = Arc::new(TokenAuthority::generate(sample::TENANT_ID));
        ImdsFake::start(authority, ImdsConfig::default())
            .await
            .expect("fake IMDS")
    });
    fake.set_latency(Duration::from_millis(latency_ms));
    fake.set_rate_limits(limits);
    let mut out = std::io::stdout().lock();
    writeln!(out, "url {}", fake.base_url()).expect("stdout");
    out.flush().expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "stats" {
            writeln!(
                out,
                "{{\"token_requests\": {}, \"throttled\": {}, \"max_concurrent\": {}}}",
                fake.token_requests(),
                fake.throttled(),
                fake.max_concurrent_seen()
            )
            .expect("stdout");
            out.flush().expect("stdout");
        }
    }
    drop(fake);
    drop(runtime);
}
