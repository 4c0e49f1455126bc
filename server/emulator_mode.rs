//! `--emulator`: starts the emulator's fakes in-process on loopback and points
//! the gateway's configuration at them, so a newcomer can call every RPC with
//! no Azure account.
//!
//! This module owns the wiring only: which fakes run, the trust anchor (the
//! emulator's test CA, written next to the socket at a path that does not
//! change between runs, so exported `SSL_CERT_FILE` lines keep working) and
//! the configuration
//! that points at them ([`RunningEmulator::configure`], applied by the
//! composition root before it validates the configuration again). It is
//! compiled only with the `emulator` cargo feature.
//! The fakes themselves live in the `identity-gateway-emulator` crate.
//!
//! Adding a fake takes one field in [`RunningEmulator`], one line in
//! [`start`] and one line in [`RunningEmulator::endpoints`] (plus the config
//! line pointing the gateway at it, where the gateway has one: ARM does;
//! Storage URLs come in each request, so the banner prints them).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use identity_gateway_emulator::{
    arm::ArmFake,
    blob::{self, BlobFake},
    datalake_gen1::DataLakeGen1Fake,
    datalake_gen2::DataLakeGen2Fake,
    keyvault::KeyVaultFake,
    sample,
    tls::TestCa,
    ImdsConfig, ImdsFake, SqlFake, TokenAuthority,
};
use url::Url;

use identity_gateway_identity::SourceKind;

use crate::config::Config;

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
#[error("emulator: {what}")]
pub struct EmulatorError {
    what: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl EmulatorError {
    fn new(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// The loopback ports `--emulator` asks for, so documented commands work as
/// written. A taken port falls back to a free one (the banner shows the real
/// address). They sit below every ephemeral port range (Linux 32768-60999,
/// Windows 49152-65535), so an outgoing connection never holds one.
pub mod ports {
    pub const IMDS: u16 = 27180;
    pub const ARM: u16 = 27181;
    pub const BLOB: u16 = 27182;
    pub const KEY_VAULT: u16 = 27183;
    pub const DATA_LAKE_GEN1: u16 = 27184;
    pub const DATA_LAKE_GEN2: u16 = 27185;
    pub const SQL: u16 = 27186;
}

/// Hosts the fakes serve on; tokens may be sent there (any port) in emulator mode.
const LOOPBACK_HOSTS: &[&str] = &["127.0.0.1", "localhost"];

/// Handles of the running fakes; dropping it stops them and removes the CA file.
#[derive(Debug)]
pub struct RunningEmulator {
    imds_url: Url,
    arm_url: Url,
    authority: Arc<TokenAuthority>,
    ca: Arc<TestCa>,
    /// The CA certificate's file; removed on drop.
    ca_file: CaFile,
    /// The CA followed by this system's roots, for `SSL_CERT_FILE`; removed on drop.
    ca_bundle: CaFile,
    /// The fake IMDS the gateway takes its tokens from.
    pub imds: ImdsFake,
    /// The fake ARM (`upstream.arm_endpoint`): the sample resource groups and
    /// storage account.
    pub arm: ArmFake,
    /// The fake Blob Storage, path-style: the sample account's blobs.
    pub blob: BlobFake,
    /// The fake Key Vault: vault `emulator` with the sample secrets.
    pub keyvault: KeyVaultFake,
    /// The fake ADLS Gen1 (WebHDFS) account.
    pub datalake_gen1: DataLakeGen1Fake,
    /// The fake ADLS Gen2 (dfs) account, filesystem `data`.
    pub datalake_gen2: DataLakeGen2Fake,
    /// The fake Azure SQL (TDS over TLS): database `appdb`.
    pub sql: SqlFake,
}

impl RunningEmulator {
    /// Points `config` at the fakes: IMDS as the token source, the fake ARM
    /// as `upstream.arm_endpoint`, the test CA trusted, plain HTTP and
    /// loopback hosts allowed (the Blob fake is reached through the URLs
    /// callers pass, on a loopback host).
    pub fn configure(&self, config: &mut Config) {
        config.identity.source = SourceKind::Imds;
        config.identity.imds_endpoint = self.imds_url.clone();
        config.upstream.arm_endpoint = Some(self.arm_url.clone());
        config.upstream.ca_files.push(self.ca_file.0.clone());
        config.upstream.allow_http = true;
        // %ProgramData%\identity-gateway is for the installed service; a
        // developer's emulator keeps its header file in the current directory.
        if cfg!(windows) && config.identity_endpoint.header_file.is_none() {
            config.identity_endpoint.header_file = Some(PathBuf::from("identity-header"));
        }
        for host in LOOPBACK_HOSTS {
            if !config.upstream.allowed_hosts.iter().any(|h| h == host) {
                config.upstream.allowed_hosts.push((*host).to_string());
            }
        }
    }

    /// The authority that mints (IMDS) and verifies (every other fake) tokens.
    pub fn authority(&self) -> Arc<TokenAuthority> {
        self.authority.clone()
    }

    /// The test CA the HTTPS and TDS fakes present certificates from.
    pub fn ca(&self) -> Arc<TestCa> {
        self.ca.clone()
    }

    /// The test CA's certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.ca_pem()
    }

    /// Where the CA certificate was written (also in `upstream.ca_files`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file.0
    }

    /// The test CA followed by this system's trusted roots: what the
    /// banner's `SSL_CERT_FILE` / `REQUESTS_CA_BUNDLE` lines point at, so a
    /// shell that exports them still trusts the public internet.
    pub fn ca_bundle(&self) -> &Path {
        &self.ca_bundle.0
    }

    /// (name, base URL) of every running fake, for the banner.
    pub fn endpoints(&self) -> Vec<(&'static str, String)> {
        vec![
            ("IMDS", self.imds.base_url()),
            ("ARM", self.arm.base_url()),
            ("Blob", self.blob.base_url()),
            ("Key Vault", self.keyvault.vault_url()),
            ("ADLS Gen1", self.datalake_gen1.account_url()),
            ("ADLS Gen2", self.datalake_gen2.account_url()),
            ("Azure SQL", self.sql.server()),
        ]
    }
}

/// Starts the fakes on their well-known loopback ports (free ones when
/// taken), and writes the test CA next to `socket` ([`ca_path`],
/// [`ca_bundle_path`]). The socket's directory must exist: the gateway binds
/// first, and creating the directory here would skip the socket group and
/// mode that binding gives it.
pub async fn start(socket: &Path) -> Result<RunningEmulator, EmulatorError> {
    let authority = Arc::new(TokenAuthority::generate(sample::TENANT_ID));
    let ca = Arc::new(TestCa::generate(&["localhost", "127.0.0.1"]));
    let ca_file = write_ca(&ca_path(socket), ca.ca_pem())?;
    let ca_bundle = write_ca(
        &ca_bundle_path(socket),
        &format!("{}{}", ca.ca_pem(), system_roots()),
    )?;
    let imds = ImdsFake::start_on(authority.clone(), ImdsConfig::default(), ports::IMDS)
        .await
        .map_err(|e| EmulatorError::new("cannot start the fake IMDS", e))?;
    let arm = ArmFake::sample_on(authority.clone(), &ca, ports::ARM)
        .await
        .map_err(|e| EmulatorError::new("cannot start the fake ARM", e))?;
    let blob = BlobFake::sample_on(authority.clone(), &ca, ports::BLOB)
        .await
        .map_err(|e| EmulatorError::new("cannot start the fake Blob Storage", e))?;
    let keyvault = KeyVaultFake::sample_on(authority.clone(), &ca, ports::KEY_VAULT)
        .await
        .map_err(|e| EmulatorError::new("cannot start the fake Key Vault", e))?;
    let datalake_gen1 = DataLakeGen1Fake::sample_on(authority.clone(), &ca, ports::DATA_LAKE_GEN1)
        .await
        .map_err(|e| EmulatorError::new("cannot start the fake ADLS Gen1", e))?;
    let datalake_gen2 = DataLakeGen2Fake::sample_on(authority.clone(), &ca, ports::DATA_LAKE_GEN2)
        .await
        .map_err(|e| EmulatorError::new("cannot start the fake ADLS Gen2", e))?;
    let sql = SqlFake::sample_on(authority.clone(), &ca, ports::SQL)
        .await
        .map_err(|e| EmulatorError::new("cannot start the fake Azure SQL", e))?;

    let imds_url =
        Url::parse(&imds.base_url()).map_err(|e| EmulatorError::new("fake IMDS URL", e))?;
    let arm_url = Url::parse(&arm.base_url()).map_err(|e| EmulatorError::new("fake ARM URL", e))?;
    Ok(RunningEmulator {
        imds_url,
        arm_url,
        authority,
        ca,
        ca_file,
        ca_bundle,
        imds,
        arm,
        blob,
        keyvault,
        datalake_gen1,
        datalake_gen2,
        sql,
    })
}

/// Where `--emulator` writes its test CA: next to the socket, named after it
/// (`./identity-gateway.sock` -> `./identity-gateway-ca.pem`), so the path
/// is the same every run and two emulators in one directory do not collide.
pub fn ca_path(socket: &Path) -> PathBuf {
    beside_socket(socket, "-ca.pem")
}

/// `ca_path`'s sibling holding the CA and the system's roots
/// (`./identity-gateway-ca-bundle.pem`).
pub fn ca_bundle_path(socket: &Path) -> PathBuf {
    beside_socket(socket, "-ca-bundle.pem")
}

fn beside_socket(socket: &Path, suffix: &str) -> PathBuf {
    let stem = socket
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "identity-gateway".to_string());
    socket.with_file_name(format!("{stem}{suffix}"))
}

/// Where Linux distributions (Debian/Ubuntu/Alpine, Fedora/RHEL) and macOS
/// keep their PEM bundle of trusted roots.
const SYSTEM_ROOT_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// This system's trusted roots (PEM), or nothing when none is found.
fn system_roots() -> String {
    SYSTEM_ROOT_BUNDLES
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|pem| format!("\n# This system's trusted roots:\n{pem}"))
        .unwrap_or_default()
}

/// The CA certificate's file, removed when the emulator stops.
#[derive(Debug)]
struct CaFile(PathBuf);

impl Drop for CaFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes the (public) CA certificate to `path`, 0644, replacing what is
/// there: written to a temp file in the same directory and renamed over, so
/// a symlink planted at `path` is replaced, never followed.
fn write_ca(path: &Path, pem: &str) -> Result<CaFile, EmulatorError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".identity-gateway-ca-")
        .tempfile_in(dir)
        .map_err(|e| {
            EmulatorError::new(format!("cannot write the test CA in {}", dir.display()), e)
        })?;
    std::io::Write::write_all(&mut file, pem.as_bytes())
        .map_err(|e| EmulatorError::new("cannot write the test CA", e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(|e| EmulatorError::new("cannot set permissions on the test CA", e))?;
    }
    file.persist(path)
        .map_err(|e| EmulatorError::new(format!("cannot write {}", path.display()), e.error))?;
    Ok(CaFile(path.to_path_buf()))
}

/// The `export` lines that point a shell's clients at this emulator: the
/// socket for the gateway's own clients, and the test CA for the Azure SDKs
/// (`REQUESTS_CA_BUNDLE` for sync clients, which use requests and certifi;
/// `SSL_CERT_FILE` for asyncio clients, whose aiohttp uses Python's default
/// SSL context; curl and other OpenSSL-based tools read it too). Both point
/// at the bundle, which keeps the system's roots: these variables replace a
/// client's trust store rather than add to it.
pub fn exports(config: &Config, emulator: &RunningEmulator) -> Vec<String> {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let socket = shell_quote(&absolute(&config.socket).display().to_string());
    let ca = shell_quote(&absolute(emulator.ca_bundle()).display().to_string());
    vec![
        format!("export IDENTITY_GATEWAY_SOCKET={socket}"),
        format!("export SSL_CERT_FILE={ca}"),
        format!("export REQUESTS_CA_BUNDLE={ca}"),
    ]
}

/// What `--emulator` prints: where it listens, who it is, and commands to
/// copy and paste.
pub fn banner(config: &Config, emulator: &RunningEmulator) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "identity-gateway is running against the built-in emulator (no Azure account needed)."
    );
    let _ = writeln!(out);
    #[cfg(windows)]
    let _ = writeln!(
        out,
        "  gRPC pipe:    {}",
        crate::transport::pipe_name(config)
    );
    #[cfg(not(windows))]
    let _ = writeln!(out, "  gRPC socket:  {}", config.socket.display());
    if let Some(tcp) = config.tcp {
        let _ = writeln!(out, "  gRPC TCP:     {tcp}");
    }
    for (name, url) in emulator.endpoints() {
        let label = format!("fake {name}:");
        let _ = writeln!(out, "  {label:<13} {url}");
    }
    let _ = writeln!(out, "  test CA:      {}", emulator.ca_file().display());
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  In another shell, these make the clients and the Azure SDKs (sync and asyncio)"
    );
    let _ = writeln!(
        out,
        "  use this gateway and trust the emulator's CA besides this system's roots:"
    );
    for line in exports(config, emulator) {
        let _ = writeln!(out, "    {line}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  Sample identities (tenant {}, VM {} in resource group {}):",
        sample::TENANT_ID,
        sample::VM_NAME,
        sample::RESOURCE_GROUP
    );
    let _ = writeln!(
        out,
        "    system-assigned            client_id {}  object_id {}",
        sample::SYSTEM_CLIENT_ID,
        sample::SYSTEM_OBJECT_ID
    );
    let _ = writeln!(
        out,
        "    user-assigned {:<12} client_id {}  object_id {}",
        sample::USER_IDENTITY_NAME,
        sample::USER_CLIENT_ID,
        sample::USER_OBJECT_ID
    );
    let _ = writeln!(out, "      resource_id {}", sample::USER_RESOURCE_ID);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  Sample data: subscription {} with resource groups {} and {};",
        sample::SUBSCRIPTION_ID,
        sample::RESOURCE_GROUP,
        identity_gateway_emulator::arm::SAMPLE_MANAGED_RESOURCE_GROUP
    );
    let _ = writeln!(
        out,
        "    storage account {} with blobs {}/{} and {}/{}",
        blob::SAMPLE_ACCOUNT,
        blob::SAMPLE_CONTAINER,
        blob::SAMPLE_BLOB,
        blob::SAMPLE_CONTAINER,
        blob::SAMPLE_BINARY_BLOB
    );
    let _ = writeln!(
        out,
        "    (the system-assigned identity may read and write them; {} may not)",
        sample::USER_IDENTITY_NAME
    );
    let _ = writeln!(
        out,
        "    vault {} with secrets app-password, db-connection and retired-api-key (disabled);",
        emulator.keyvault.vault_url()
    );
    let _ = writeln!(
        out,
        "    Azure SQL database {} with table dbo.products (dbo.salaries is forbidden);",
        emulator.sql.database()
    );
    let _ = writeln!(
        out,
        "    ADLS Gen2 filesystem data (raw/, curated/, generated/), ADLS Gen1 / (TestFolder, logs, generated)"
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  Try it (with grpcurl, https://github.com/fullstorydev/grpcurl; the server offers reflection."
    );
    #[cfg(not(windows))]
    let _ = writeln!(
        out,
        "  With grpcurl 1.9.1 or older, write -unix <socket> where these say unix://<socket>):"
    );
    #[cfg(windows)]
    let _ = writeln!(
        out,
        "  grpcurl cannot open a named pipe: start the gateway with --tcp 127.0.0.1:7777 for these):"
    );
    for line in examples(config, emulator) {
        let _ = writeln!(out, "    {line}");
    }
    out.truncate(out.trim_end().len());
    out
}

/// Ready-to-paste grpcurl commands against the sample data: tokens,
/// ReadBlob, GetServiceSas (user delegation, signed for the Blob fake's
/// endpoint), GetResourceGroup, health and listing.
///
/// Flags come before the address: grpcurl stops reading flags at the first
/// positional argument. The address is `unix://<absolute socket path>`, which
/// works from any directory (grpcurl's other Unix forms work too).
fn examples(config: &Config, emulator: &RunningEmulator) -> Vec<String> {
    // grpcurl cannot dial a named pipe: on Windows the examples use --tcp.
    #[cfg(windows)]
    let target = config
        .tcp
        .map_or_else(|| "127.0.0.1:7777".to_string(), |tcp| tcp.to_string());
    #[cfg(not(windows))]
    let target = shell_quote(&grpcurl_target(&config.socket));
    let call = |data: Option<String>, method: &str| match data {
        Some(data) => format!("grpcurl -plaintext -d '{data}' {target} {method}"),
        None => format!("grpcurl -plaintext {target} {method}"),
    };
    let rpc = |name: &str| format!("identity_gateway.v1.IdentityGateway/{name}");
    let blob_url = emulator.blob.blob_url(
        blob::SAMPLE_ACCOUNT,
        blob::SAMPLE_CONTAINER,
        blob::SAMPLE_BLOB,
    );
    let ca = shell_quote(&emulator.ca_file().display().to_string());
    vec![
        call(
            Some(r#"{"resource":"https://vault.azure.net"}"#.into()),
            &rpc("GetToken"),
        ),
        call(
            Some(format!(
                r#"{{"resource":"https://storage.azure.com/","identity":{{"client_id":"{}"}}}}"#,
                sample::USER_CLIENT_ID
            )),
            &rpc("GetToken"),
        ),
        call(
            Some(format!(r#"{{"blob_url":"{blob_url}"}}"#)),
            &rpc("ReadBlob"),
        ),
        call(
            Some(format!(
                r#"{{"account":"{}","container":"{}","blob":"{}","permissions":"r","blob_endpoint":"{}"}}"#,
                blob::SAMPLE_ACCOUNT,
                blob::SAMPLE_CONTAINER,
                blob::SAMPLE_BLOB,
                emulator.blob.base_url()
            )),
            &rpc("GetServiceSas"),
        ),
        format!(
            r#"  then, with no token: curl --cacert {ca} "<its url, each \u0026 written as &>""#
        ),
        call(
            Some(format!(
                r#"{{"vault_url":"{}","name":"app-password"}}"#,
                emulator.keyvault.vault_url()
            )),
            &rpc("GetSecret"),
        ),
        call(
            Some(format!(
                r#"{{"account_url":"{}","generation":"DATA_LAKE_GENERATION_GEN2","filesystem":"data","path":"raw","recursive":true}}"#,
                emulator.datalake_gen2.account_url()
            )),
            &rpc("ListDataLake"),
        ),
        call(
            Some(format!(
                r#"{{"account_url":"{}","generation":"DATA_LAKE_GENERATION_GEN1","path":"/"}}"#,
                emulator.datalake_gen1.account_url()
            )),
            &rpc("ListDataLake"),
        ),
        call(
            Some(format!(
                r#"{{"server":"{}","database":"{}","query":"SELECT id, name, price FROM dbo.products WHERE price > @P1","parameters":[{{"decimal":"20"}}]}}"#,
                emulator.sql.server(),
                emulator.sql.database()
            )),
            &rpc("QuerySql"),
        ),
        call(
            Some(format!(
                r#"{{"subscription_id":"{}","name":"{}"}}"#,
                sample::SUBSCRIPTION_ID,
                sample::RESOURCE_GROUP
            )),
            &rpc("GetResourceGroup"),
        ),
        call(None, "grpc.health.v1.Health/Check"),
        call(None, "list"),
    ]
}

/// `unix://` + the socket's absolute path (`unix:///run/...`).
#[cfg_attr(windows, allow(dead_code))]
fn grpcurl_target(socket: &Path) -> String {
    let socket = std::path::absolute(socket).unwrap_or_else(|_| socket.to_path_buf());
    format!("unix://{}", socket.display())
}

/// Quotes `s` for a POSIX shell when it holds anything beyond a plain path.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn start_points_the_config_at_the_fakes() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("identity-gateway.sock");
        let mut config = Config {
            socket: socket.clone(),
            ..Config::default()
        };
        let emulator = start(&socket).await.unwrap();
        emulator.configure(&mut config);
        config.validate().unwrap();
        assert_eq!(config.identity.source, SourceKind::Imds);
        assert_eq!(
            config.identity.imds_endpoint.as_str().trim_end_matches('/'),
            emulator.imds.base_url()
        );
        assert_eq!(
            config
                .upstream
                .arm_endpoint
                .as_ref()
                .map(|u| u.as_str().trim_end_matches('/').to_string()),
            Some(emulator.arm.base_url())
        );
        assert!(config.upstream.allow_http);
        for host in LOOPBACK_HOSTS {
            assert!(config.upstream.allowed_hosts.iter().any(|h| h == host));
        }
        let ca_file = emulator.ca_file().to_path_buf();
        // Next to the socket, at a path that does not change between runs.
        assert_eq!(ca_file, dir.path().join("identity-gateway-ca.pem"));
        assert_eq!(config.upstream.ca_files, vec![ca_file.clone()]);
        assert_eq!(
            std::fs::read_to_string(&ca_file).unwrap(),
            emulator.ca_pem()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&ca_file).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o777,
                0o644,
                "a public certificate, readable by clients"
            );
        }
        // The shared HTTP client accepts the rewritten config.
        identity_gateway_core::http::build_client(&config.upstream).unwrap();
        assert_eq!(emulator.authority().tenant_id(), sample::TENANT_ID);

        let banner = banner(&config, &emulator);
        let target = grpcurl_target(&socket);
        assert!(target.starts_with("unix:///"), "{target}");
        let blob_base = emulator.blob.base_url();
        let read_blob = format!(
            "grpcurl -plaintext -d '{{\"blob_url\":\"{blob_base}/data/hello.txt\"}}' {target} identity_gateway.v1.IdentityGateway/ReadBlob"
        );
        let get_sas = format!(
            "grpcurl -plaintext -d '{{\"account\":\"devstoreaccount1\",\"container\":\"data\",\"blob\":\"hello.txt\",\"permissions\":\"r\",\"blob_endpoint\":\"{blob_base}\"}}' {target} identity_gateway.v1.IdentityGateway/GetServiceSas"
        );
        let get_group = format!(
            "grpcurl -plaintext -d '{{\"subscription_id\":\"{}\",\"name\":\"emulator-rg\"}}' {target} identity_gateway.v1.IdentityGateway/GetResourceGroup",
            sample::SUBSCRIPTION_ID
        );
        let get_token = format!(
            "grpcurl -plaintext -d '{{\"resource\":\"https://vault.azure.net\"}}' {target} identity_gateway.v1.IdentityGateway/GetToken"
        );
        let health = format!("grpcurl -plaintext {target} grpc.health.v1.Health/Check");
        let ca_hint = format!("curl --cacert {}", ca_file.display());
        let bundle = emulator.ca_bundle().to_path_buf();
        assert_eq!(bundle, dir.path().join("identity-gateway-ca-bundle.pem"));
        let bundle_pem = std::fs::read_to_string(&bundle).unwrap();
        assert!(
            bundle_pem.starts_with(emulator.ca_pem()),
            "the test CA first"
        );
        let exports = [
            format!("export IDENTITY_GATEWAY_SOCKET={}", socket.display()),
            format!("export SSL_CERT_FILE={}", bundle.display()),
            format!("export REQUESTS_CA_BUNDLE={}", bundle.display()),
        ];
        for needle in [
            read_blob.as_str(),
            &get_sas,
            &get_group,
            &ca_hint,
            &emulator.arm.base_url(),
            &blob_base,
            &socket.display().to_string(),
            &exports[0],
            &exports[1],
            &exports[2],
            &get_token,
            &health,
            sample::SYSTEM_CLIENT_ID,
            sample::USER_CLIENT_ID,
            sample::USER_RESOURCE_ID,
            &emulator.imds.base_url(),
        ] {
            assert!(banner.contains(needle), "banner lacks {needle}:\n{banner}");
        }

        drop(emulator);
        assert!(
            !ca_file.exists(),
            "the CA file is removed with the emulator"
        );
        assert!(!bundle.exists(), "the bundle too");
    }

    #[test]
    fn the_ca_is_named_after_the_socket() {
        assert_eq!(
            ca_path(Path::new("./identity-gateway.sock")),
            Path::new("./identity-gateway-ca.pem")
        );
        assert_eq!(
            ca_path(Path::new("/run/ig/gw.sock")),
            Path::new("/run/ig/gw-ca.pem")
        );
        assert_eq!(
            ca_bundle_path(Path::new("/run/ig/gw.sock")),
            Path::new("/run/ig/gw-ca-bundle.pem")
        );
    }

    #[test]
    fn socket_paths_are_quoted_for_the_shell() {
        assert_eq!(
            shell_quote("./identity-gateway.sock"),
            "./identity-gateway.sock"
        );
        assert_eq!(shell_quote("/tmp/my dir/x.sock"), "'/tmp/my dir/x.sock'");
        assert_eq!(shell_quote("/tmp/it's.sock"), r"'/tmp/it'\''s.sock'");
    }
}
