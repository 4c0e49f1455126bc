//! Azurite (Microsoft's Storage emulator) as the real Storage peer of the
//! tests: started per test over HTTPS with `--oauth basic`, a certificate from
//! the test CA, in-memory storage and path-style URLs, on a free loopback
//! port; killed when dropped.
//!
//! Azurite is installed by `scripts/tools/azurite.sh` into `.tools/azurite/`.
//! When it is missing the tests fail (never skip) and say how to install it.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use identity_gateway_emulator::{arm::AZURITE_ACCOUNT, tls::TestCa};
use tempfile::TempDir;

/// How long Azurite may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Azurite blob service.
pub struct Azurite {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Azurite {
    /// The installed `azurite-blob` launcher.
    pub fn binary() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(".tools/azurite/node_modules/.bin/azurite-blob")
    }

    /// Starts Azurite with a server certificate from `ca` (SANs localhost and
    /// 127.0.0.1) and waits until it accepts connections.
    pub fn start(ca: &TestCa) -> Self {
        let binary = Self::binary();
        assert!(
            binary.exists(),
            "Azurite is not installed ({} is missing). Run scripts/tools/azurite.sh \
             (it needs Node.js 18+ and npm) and run the tests again.",
            binary.display()
        );
        let dir = tempfile::tempdir().expect("temp dir for Azurite");
        let cert = dir.path().join("azurite-cert.pem");
        let key = dir.path().join("azurite-key.pem");
        std::fs::write(&cert, ca.server_cert_pem()).expect("write Azurite cert");
        std::fs::write(&key, ca.server_key_pem()).expect("write Azurite key");
        let log = std::fs::File::create(dir.path().join("azurite.log")).expect("Azurite log file");
        let port = free_port();
        let child = Command::new(&binary)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args(["--oauth", "basic"])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args([
                "--skipApiVersionCheck",
                "--inMemoryPersistence",
                "--disableProductStyleUrl",
                "--disableTelemetry",
                "--silent",
            ])
            // With in-memory persistence --location is refused; the working
            // directory keeps anything else Azurite writes out of the repo.
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut azurite = Self { child, port, dir };
        azurite.wait_until_listening();
        azurite
    }

    /// Polls the port (bounded) until Azurite accepts, failing early if it exits.
    fn wait_until_listening(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Azurite exited at start ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "Azurite did not listen on {addr} within {START_TIMEOUT:?}: {}",
                self.log()
            );
            // Bounded polling between connection attempts.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("azurite.log")).unwrap_or_default()
    }

    /// The path-style blob endpoint of the well-known account:
    /// `https://127.0.0.1:<port>/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}
