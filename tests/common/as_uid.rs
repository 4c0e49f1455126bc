//! Calls made by real other Unix users. The test binary runs itself again
//! under `setpriv --reuid/--regid/--groups` (CI runs as root), with only
//! [`child`] selected and the calls to make in an environment variable; the
//! child connects to the gateway as that user (the Unix socket's peer
//! credentials, or the owner of its loopback TCP socket) and prints one
//! outcome line per call.
//!
//! Other users must be able to run the binary: it is linked (or copied)
//! into a 0755 directory inside the test's temp dir first.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use futures::StreamExt;
use identity_gateway_client::{proto, GatewayClient, Identity};
use serde::{Deserialize, Serialize};

const CHILD_ENV: &str = "IG_TEST_AS_UID";
const MARK: &str = "IG-OUTCOME ";

/// One call the child makes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "rpc")]
pub enum Call {
    GetToken {
        resource: String,
        client_id: Option<String>,
    },
    /// The first message of the stream.
    WatchToken {
        resource: String,
    },
    GetSecret {
        vault_url: String,
        name: String,
    },
    ReadBlob {
        url: String,
    },
    GetServiceSas {
        /// proto::SasMethod as i32.
        method: i32,
        account: String,
        container: String,
        blob: String,
        permissions: String,
        expires_in_secs: i64,
        blob_endpoint: String,
        subscription_id: String,
        resource_group: String,
    },
    ListDataLake {
        account_url: String,
        generation: i32,
        filesystem: String,
        path: String,
    },
    /// The first row's values, Debug-formatted, as the value.
    QuerySql {
        server: String,
        database: String,
        query: String,
    },
    GetResourceGroup {
        subscription_id: String,
        name: String,
    },
    /// The App Service protocol: the header read from `header_file` as this
    /// user; the code is the HTTP status.
    IdentityEndpoint {
        url: String,
        resource: String,
        header_file: PathBuf,
    },
}

/// What a call came back with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// `Ok`, a gRPC code name (`PermissionDenied`, ...), `Connect` when the
    /// gateway could not be reached, or an HTTP status.
    pub code: String,
    pub message: String,
    pub value: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == "Ok" || self.code == "200"
    }
}

/// A user to call as.
#[derive(Debug, Clone)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (e.g. the socket group).
    pub groups: Vec<u32>,
}

impl User {
    pub fn new(uid: u32, gid: u32, groups: &[u32]) -> Self {
        Self {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }
}

/// Whether this run can switch users (root, with `setpriv`).
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !root || !setpriv {
        eprintln!("skipping: calls as other users need root and setpriv (CI has both)");
    }
    root && setpriv
}

/// Makes `dir` (the test's temp dir) enterable by everyone, so other users
/// reach the socket directory and the binary inside it.
pub fn open_dir(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
}

/// The test binary, where other users may run it: linked into `dir`.
fn runnable_copy(dir: &Path) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let bin = dir.join("bin");
    if !bin.exists() {
        std::fs::create_dir(&bin).expect("bin dir");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let copy = bin.join("integration");
    if !copy.exists() && std::fs::hard_link(&exe, &copy).is_err() {
        std::fs::copy(&exe, &copy).expect("copy the test binary");
    }
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

#[derive(Serialize, Deserialize)]
struct Spec {
    target: String,
    calls: Vec<Call>,
}

/// Runs `calls` as `user` against `target` (a socket path, or
/// `http://127.0.0.1:PORT` for loopback TCP); one outcome per call.
pub async fn run(dir: &Path, user: &User, target: &str, calls: Vec<Call>) -> Vec<Outcome> {
    let exe = runnable_copy(dir);
    let n = calls.len();
    let spec = serde_json::to_string(&Spec {
        target: target.to_string(),
        calls,
    })
    .unwrap();
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid));
    if user.groups.is_empty() {
        command.arg("--clear-groups");
    } else {
        let groups: Vec<String> = user.groups.iter().map(u32::to_string).collect();
        command.arg(format!("--groups={}", groups.join(",")));
    }
    command
        .arg("--")
        .arg(&exe)
        .args([
            "--exact",
            "common::as_uid::child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, spec)
        .current_dir(dir);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run setpriv");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let outcomes: Vec<Outcome> = stdout
        .lines()
        .filter_map(|line| line.find(MARK).map(|at| &line[at + MARK.len()..]))
        .map(|json| serde_json::from_str(json).expect("outcome JSON"))
        .collect();
    assert_eq!(
        outcomes.len(),
        n,
        "uid {}: {} outcomes for {n} calls\nstdout: {stdout}\nstderr: {}",
        user.uid,
        outcomes.len(),
        String::from_utf8_lossy(&output.stderr)
    );
    outcomes
}

/// The child side: only does anything when run by [`run`].
#[test]
fn child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec: Spec = serde_json::from_str(&spec).expect("spec");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let mut client: Option<Result<GatewayClient, String>> = None;
        for call in spec.calls {
            let outcome = match call {
                Call::IdentityEndpoint {
                    url,
                    resource,
                    header_file,
                } => identity_endpoint(&url, &resource, &header_file).await,
                call => {
                    if client.is_none() {
                        client = Some(
                            GatewayClient::connect(&spec.target)
                                .await
                                .map_err(|e| e.to_string()),
                        );
                    }
                    match client.as_ref().expect("set above") {
                        Err(e) => Outcome {
                            code: "Connect".into(),
                            message: e.clone(),
                            value: String::new(),
                        },
                        Ok(client) => perform(client, call).await,
                    }
                }
            };
            println!("{MARK}{}", serde_json::to_string(&outcome).unwrap());
        }
    });
}

/// A token request the way an Azure SDK makes it, with the header read
/// from the file as this user.
async fn identity_endpoint(url: &str, resource: &str, header_file: &Path) -> Outcome {
    let header = match std::fs::read_to_string(header_file) {
        Ok(header) => header,
        Err(e) => {
            return Outcome {
                code: "ReadHeaderFile".into(),
                message: e.to_string(),
                value: String::new(),
            }
        }
    };
    let mut url = url::Url::parse(url).expect("endpoint URL");
    url.query_pairs_mut()
        .append_pair("resource", resource)
        .append_pair("api-version", "2019-08-01");
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(url)
        .header("X-IDENTITY-HEADER", header.trim())
        .send()
        .await;
    match response {
        Err(e) => Outcome {
            code: "Connect".into(),
            message: e.to_string(),
            value: String::new(),
        },
        Ok(response) => {
            let code = response.status().as_u16().to_string();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            Outcome {
                code,
                message: body["message"].as_str().unwrap_or_default().to_string(),
                value: body["resource"].as_str().unwrap_or_default().to_string(),
            }
        }
    }
}

fn status(status: tonic::Status) -> Outcome {
    Outcome {
        code: format!("{:?}", status.code()),
        message: status.message().to_string(),
        value: String::new(),
    }
}

fn ok(value: String) -> Outcome {
    Outcome {
        code: "Ok".into(),
        message: String::new(),
        value,
    }
}

async fn perform(client: &GatewayClient, call: Call) -> Outcome {
    let mut rpc = client.rpc();
    let result: Result<String, tonic::Status> = async {
        match call {
            Call::GetToken {
                resource,
                client_id,
            } => {
                let identity = client_id.map(Identity::ClientId).unwrap_or_default();
                let token = rpc
                    .get_token(proto::GetTokenRequest {
                        resource,
                        identity: identity.to_proto(),
                    })
                    .await?
                    .into_inner();
                Ok(token.resource)
            }
            Call::WatchToken { resource } => {
                let mut stream = rpc
                    .watch_token(proto::WatchTokenRequest {
                        resource,
                        identity: None,
                    })
                    .await?
                    .into_inner();
                let first = stream
                    .next()
                    .await
                    .ok_or_else(|| tonic::Status::internal("no first message"))??;
                Ok(first.resource)
            }
            Call::GetSecret { vault_url, name } => {
                let secret = rpc
                    .get_secret(proto::GetSecretRequest {
                        vault: Some(proto::get_secret_request::Vault::VaultUrl(vault_url)),
                        name,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok(secret.value)
            }
            Call::ReadBlob { url } => {
                let mut stream = rpc
                    .read_blob(proto::ReadBlobRequest {
                        blob_url: url,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let mut data = Vec::new();
                while let Some(message) = stream.next().await {
                    data.extend_from_slice(&message?.data);
                }
                Ok(String::from_utf8_lossy(&data).into_owned())
            }
            Call::GetServiceSas {
                method,
                account,
                container,
                blob,
                permissions,
                expires_in_secs,
                blob_endpoint,
                subscription_id,
                resource_group,
            } => {
                let sas = rpc
                    .get_service_sas(proto::GetServiceSasRequest {
                        method,
                        account,
                        container,
                        blob,
                        permissions,
                        expires_in: Some(prost_types::Duration {
                            seconds: expires_in_secs,
                            nanos: 0,
                        }),
                        blob_endpoint,
                        subscription_id,
                        resource_group,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok(sas.signed_permissions)
            }
            Call::ListDataLake {
                account_url,
                generation,
                filesystem,
                path,
            } => {
                let mut pages = rpc
                    .list_data_lake(proto::ListDataLakeRequest {
                        account_url,
                        generation,
                        filesystem,
                        path,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let first = pages.message().await?.unwrap_or_default();
                let names: Vec<String> = first.entries.into_iter().map(|e| e.name).collect();
                Ok(names.join(","))
            }
            Call::QuerySql {
                server,
                database,
                query,
            } => {
                let mut events = rpc
                    .query_sql(proto::QuerySqlRequest {
                        server,
                        database,
                        query,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let mut first_row = String::new();
                while let Some(event) = events.message().await? {
                    if let Some(proto::query_sql_response::Event::Rows(batch)) = event.event {
                        if first_row.is_empty() {
                            if let Some(row) = batch.rows.first() {
                                first_row = format!("{:?}", row.values);
                            }
                        }
                    }
                }
                Ok(first_row)
            }
            Call::GetResourceGroup {
                subscription_id,
                name,
            } => {
                let group = rpc
                    .get_resource_group(proto::GetResourceGroupRequest {
                        subscription_id,
                        name,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok(group.name)
            }
            Call::IdentityEndpoint { .. } => unreachable!("handled below"),
        }
    }
    .await;
    match result {
        Ok(value) => ok(value),
        Err(e) => status(e),
    }
}
