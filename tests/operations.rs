//! What an operator sees of the binary: the startup line (text without
//! colour codes when stderr is not a terminal, or JSON), the `healthcheck`
//! subcommand container probes run, and `--emulator | head` ending quietly.

use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_identity-gateway");
const STARTUP: Duration = Duration::from_secs(60);

/// A production-shaped gateway: no emulator, IMDS on a dead loopback port
/// (asked on demand only).
fn spawn_gateway(socket: &Path, extra: &[&str]) -> Child {
    Command::new(BIN)
        .arg("--socket")
        .arg(socket)
        .args(["--imds-endpoint", "http://127.0.0.1:9"])
        .args(extra)
        .env("IDENTITY_GATEWAY_LOG", "info")
        .env_remove("IDENTITY_GATEWAY_LOG_FORMAT")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn identity-gateway")
}

/// Streams the child's stderr lines into a channel (and keeps draining it).
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + STARTUP;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no stderr line with {needle:?}; saw:\n{}", seen.join("\n"));
}

fn healthcheck(socket: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--socket")
        .arg(socket)
        .arg("healthcheck")
        .args(extra)
        .output()
        .expect("run healthcheck")
}

/// Waits until `healthcheck` passes: serving has started (and with it the
/// SIGTERM handler; a signal before that ends the process the default way).
fn wait_healthy(socket: &Path) -> std::process::Output {
    let deadline = Instant::now() + STARTUP;
    loop {
        let out = healthcheck(socket, &["--timeout", "2"]);
        if out.status.success() || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm_and_wait(mut child: Child) -> std::process::ExitStatus {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().expect("wait for the gateway")
}

#[test]
fn json_startup_line_names_transports_source_policy_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gw.sock");
    let mut child = spawn_gateway(&socket, &["--log-format", "json", "--tcp", "127.0.0.1:0"]);
    let rx = stderr_lines(&mut child);
    let line = wait_for_line(&rx, "identity-gateway serving");
    let json: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
    assert_eq!(json["level"], "INFO", "{json}");
    assert_eq!(json["message"], "identity-gateway serving", "{json}");
    let transports = json["transports"].as_str().unwrap();
    assert!(
        transports.contains(&format!("unix socket {}", socket.display())),
        "{json}"
    );
    assert!(transports.contains("tcp 127.0.0.1:0"), "{json}");
    assert!(
        json["source"].as_str().unwrap().contains("127.0.0.1:9"),
        "{json}"
    );
    assert!(
        json["policy"].as_str().unwrap().contains("IMDS-equivalent"),
        "{json}"
    );
    let limits = json["limits"].as_str().unwrap();
    assert!(limits.contains("5 concurrent, 20/s"), "{json}");
    assert!(wait_healthy(&socket).status.success());
    assert!(sigterm_and_wait(child).success());
}

#[test]
fn text_logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gw.sock");
    let mut child = spawn_gateway(&socket, &[]);
    let rx = stderr_lines(&mut child);
    let line = wait_for_line(&rx, "identity-gateway serving");
    assert!(!line.contains('\u{1b}'), "ANSI escape in {line:?}");
    assert!(line.contains("INFO"), "{line}");
    assert!(wait_healthy(&socket).status.success());
    assert!(sigterm_and_wait(child).success());
}

#[test]
fn healthcheck_exits_zero_only_when_the_gateway_serves() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gw.sock");

    let none = healthcheck(&socket, &["--timeout", "2"]);
    assert_eq!(none.status.code(), Some(1), "no gateway yet");
    let why = String::from_utf8_lossy(&none.stderr);
    assert!(why.contains("unreachable"), "{why}");

    let mut child = spawn_gateway(&socket, &[]);
    let rx = stderr_lines(&mut child);
    wait_for_line(&rx, "identity-gateway serving");
    // The startup line comes before serving starts.
    let live = wait_healthy(&socket);
    assert!(live.status.success(), "{live:?}");
    assert_eq!(String::from_utf8_lossy(&live.stdout).trim(), "SERVING");

    let ready = healthcheck(
        &socket,
        &["--service", "identity_gateway.v1.IdentityGateway"],
    );
    assert!(ready.status.success(), "{ready:?}");
    let unknown = healthcheck(&socket, &["--service", "no.such.Service"]);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");

    assert!(sigterm_and_wait(child).success());
}

#[test]
fn emulator_banner_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gw.sock");
    let mut child = Command::new(BIN)
        .args(["--emulator", "--socket"])
        .arg(&socket)
        .env("IDENTITY_GATEWAY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `identity-gateway --emulator | head -0`: the reader is gone before the
    // banner is written.
    drop(child.stdout.take());
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // Serving starts after the banner is printed, so an answer means the
    // write into the closed pipe has happened.
    if !wait_healthy(&socket).status.success() {
        let _ = child.kill();
        panic!("the gateway never served: {}", stderr.join().unwrap());
    }
    let status = sigterm_and_wait(child);
    let stderr = stderr.join().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert!(status.success(), "{status}: {stderr}");
}
