//! QuerySql streaming benchmark (results in BENCHMARKS.md).
//!
//! Starts the emulator's fake IMDS and fake Azure SQL (TLS, token login) in
//! this process and the release gateway binary as a child process, then
//! compares, over the same fake server and the same query:
//!
//! 1. rows/s of QuerySql through the gateway (Unix socket, gRPC, proto
//!    decoding in this process), and
//! 2. rows/s of tiberius used directly (the same `sp_executesql` request,
//!    every value read),
//!
//! interleaved for a number of rounds (medians reported), and reports the
//! gateway's peak RSS while it streams (the kernel's high-water mark, reset
//! before each stream, so nothing polls the gateway meanwhile) for 100k and
//! 1M rows, and with a slow reader.
//!
//! Usage: sql-stream --gateway target/release/identity-gateway [--rows N] [--rounds R]
//! [--only gateway|direct] (one side only, for profiling)

use std::{
    path::PathBuf,
    process::{Command as Process, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use futures::TryStreamExt;
use identity_gateway_bench::support::{
    parse_flags, peak_rss_kib, reset_peak_rss, rss_kib, socket_dir, wait_ready, Spawned,
    DEFAULT_GATEWAY,
};
use identity_gateway_client::{proto::QuerySqlRequest, GatewayClient, SqlEvent, Value};
use identity_gateway_emulator::{
    imds::{ImdsConfig, ImdsFake},
    sample,
    tls::TestCa,
    SqlFake, SqlFakeConfig, TokenAuthority,
};
use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncWriteCompatExt;

const SQL_AUDIENCE: &str = "https://database.windows.net/";

struct Args {
    gateway: PathBuf,
    rows: u64,
    rounds: usize,
    /// Profiling aid: run only one side, `gateway` or `direct`.
    only: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        gateway: PathBuf::from(DEFAULT_GATEWAY),
        rows: 1_000_000,
        rounds: 3,
        only: None,
    };
    parse_flags(|flag, value| match flag {
        "--gateway" => args.gateway = PathBuf::from(value),
        "--rows" => args.rows = value.parse().expect("rows"),
        "--rounds" => args.rounds = value.parse().expect("rounds"),
        "--only" => args.only = Some(value.to_string()),
        other => panic!("unknown flag {other}"),
    });
    args
}

fn query_text(rows: u64) -> String {
    format!("SELECT n, printf('%050d', n) AS pad FROM numbers LIMIT {rows}")
}

/// The gateway binary as a child process, configured for the fakes, once it
/// hands out SQL tokens.
async fn start_gateway(args: &Args, imds: &ImdsFake, ca: &TestCa) -> (Spawned, GatewayClient) {
    let (dir, socket) = socket_dir("gw.sock");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.ca_pem()).expect("write CA");
    let config_file = dir.path().join("gateway.toml");
    std::fs::write(
        &config_file,
        format!(
            "socket = {socket:?}\nlog = \"error\"\n\
             [identity]\nsource = \"imds\"\nimds_endpoint = {imds:?}\n\
             [upstream]\nca_files = [{ca_file:?}]\nallowed_hosts = [\"localhost\"]\n",
            imds = imds.base_url(),
        ),
    )
    .expect("write config");
    let child = Process::new(&args.gateway)
        .arg("--config")
        .arg(&config_file)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the gateway binary (cargo build --release first)");
    let gateway = Spawned::new(child, socket, dir);
    let path = gateway.socket.to_str().expect("UTF-8");
    let client = wait_ready("gateway", Duration::from_millis(5), || async move {
        let client = GatewayClient::connect(path).await.ok()?;
        client.get_token(SQL_AUDIENCE).await.ok().map(|_| client)
    })
    .await;
    (gateway, client)
}

/// Streams `rows` rows through the gateway; returns (rows/s, peak RSS KiB).
async fn through_gateway(
    client: &GatewayClient,
    sql: &SqlFake,
    pid: u32,
    rows: u64,
    pause_per_batch: Option<Duration>,
) -> (f64, u64) {
    // The kernel keeps the peak: nothing polls the gateway while it works.
    reset_peak_rss(pid).expect("reset the gateway's peak RSS (/proc/PID/clear_refs)");
    let request = QuerySqlRequest {
        server: format!("localhost:{}", sql.port()),
        database: sql.database().into(),
        query: query_text(rows),
        ..Default::default()
    };
    let start = Instant::now();
    let mut stream = client.query_sql(request).await.expect("QuerySql");
    let mut received = 0u64;
    let mut chars = 0usize;
    while let Some(event) = stream.next_event().await.expect("stream") {
        if let SqlEvent::Rows(batch) = event {
            // Every value read, as on the direct side.
            for row in batch.rows() {
                let mut values = row.values();
                let (n, pad) = (values.next(), values.next());
                chars += match pad {
                    Some(Value::String(s)) => s.len(),
                    _ => 0,
                } + usize::from(matches!(n, Some(Value::Int(_))));
                received += 1;
            }
            if let Some(pause) = pause_per_batch {
                tokio::time::sleep(pause).await;
            }
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(received, rows);
    assert!(chars > 0);
    (rows as f64 / elapsed.as_secs_f64(), peak_rss_kib(pid))
}

/// Streams `rows` rows with tiberius directly; returns rows/s.
async fn direct(authority: &TokenAuthority, ca: &TestCa, sql: &SqlFake, rows: u64) -> f64 {
    let (token, _) = authority.mint(
        &sample::system_principal(),
        SQL_AUDIENCE,
        SystemTime::now(),
        Duration::from_secs(3600),
    );
    let mut config = Config::new();
    config.host("localhost");
    config.port(sql.port());
    config.database(sql.database());
    config.authentication(AuthMethod::aad_token(token));
    config.encryption(EncryptionLevel::Required);
    config.trust_cert_ca_bundle(ca.ca_pem().as_bytes().to_vec());
    let tcp = TcpStream::connect(sql.addr()).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut client = Client::connect(config, tcp.compat_write())
        .await
        .expect("login");
    let start = Instant::now();
    // The same request the gateway sends: sp_executesql with an empty @params.
    let mut command = tiberius::Command::new("sp_executesql");
    command.bind_param("@stmt", query_text(rows));
    command.bind_param("@params", String::new());
    let mut stream = command.exec(&mut client).await.expect("query");
    let mut received = 0u64;
    let mut chars = 0usize;
    while let Some(item) = stream.try_next().await.expect("stream") {
        if let tiberius::CommandItem::Row(row) = item {
            let n: Option<i64> = row.get(0);
            let pad: Option<&str> = row.get(1);
            chars += pad.map_or(0, str::len) + n.map_or(0, |_| 1);
            received += 1;
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(received, rows);
    assert!(chars > 0);
    rows as f64 / elapsed.as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let authority = Arc::new(TokenAuthority::generate(sample::TENANT_ID));
    let ca = TestCa::generate(&["localhost", "127.0.0.1"]);
    let imds = ImdsFake::start(Arc::clone(&authority), ImdsConfig::default())
        .await
        .expect("fake IMDS");
    let sql = SqlFake::start(Arc::clone(&authority), &ca, SqlFakeConfig::default())
        .await
        .expect("fake SQL");
    let (gateway, client) = start_gateway(&args, &imds, &ca).await;
    let pid = gateway.pid();

    println!("# QuerySql streaming benchmark");
    println!(
        "query: `{}` (bigint + 50-char nvarchar), fake Azure SQL over TLS on loopback, gateway on a Unix socket",
        query_text(args.rows)
    );
    // Warm up: log in, fill the pool, touch the code paths.
    through_gateway(&client, &sql, pid, 10_000, None).await;
    direct(&authority, &ca, &sql, 10_000).await;
    let idle = rss_kib(pid);

    let mut via_gateway = Vec::new();
    let mut via_tiberius = Vec::new();
    let mut peaks = Vec::new();
    for round in 0..args.rounds {
        if let Some(only) = &args.only {
            let start = Instant::now();
            let rate = match only.as_str() {
                "gateway" => through_gateway(&client, &sql, pid, args.rows, None).await.0,
                "direct" => direct(&authority, &ca, &sql, args.rows).await,
                other => panic!("--only takes gateway or direct, not {other}"),
            };
            println!(
                "round {}: {only} {rate:.0} rows/s in {:?}",
                round + 1,
                start.elapsed()
            );
            continue;
        }
        let (rate, peak) = through_gateway(&client, &sql, pid, args.rows, None).await;
        let direct_rate = direct(&authority, &ca, &sql, args.rows).await;
        println!(
            "round {}: gateway {rate:.0} rows/s (peak RSS {:.1} MB), tiberius directly {direct_rate:.0} rows/s",
            round + 1,
            peak as f64 / 1024.0
        );
        via_gateway.push(rate);
        via_tiberius.push(direct_rate);
        peaks.push(peak as f64);
    }
    if args.only.is_some() {
        return;
    }
    let (g, t) = (median(&mut via_gateway), median(&mut via_tiberius));
    println!("\n| rows | gateway rows/s (median) | tiberius direct rows/s (median) | ratio |");
    println!("|---:|---:|---:|---:|");
    println!("| {} | {g:.0} | {t:.0} | {:.2} |", args.rows, g / t);

    println!("\n| gateway RSS | MB |");
    println!("|---|---:|");
    println!("| idle after warm-up | {:.1} |", idle as f64 / 1024.0);
    let (_, peak_small) = through_gateway(&client, &sql, pid, args.rows / 10, None).await;
    println!(
        "| peak while streaming {} rows | {:.1} |",
        args.rows / 10,
        peak_small as f64 / 1024.0
    );
    println!(
        "| peak while streaming {} rows (median of rounds) | {:.1} |",
        args.rows,
        median(&mut peaks) / 1024.0
    );
    let slow_rows = (args.rows / 10).min(100_000);
    let (slow_rate, peak_slow) = through_gateway(
        &client,
        &sql,
        pid,
        slow_rows,
        Some(Duration::from_millis(1)),
    )
    .await;
    println!(
        "| peak with a slow reader (1 ms pause per batch, {slow_rows} rows, {slow_rate:.0} rows/s) | {:.1} |",
        peak_slow as f64 / 1024.0
    );
    drop(gateway);
}
