//! A fake of Azure Resource Manager: Resource Groups – Get and Storage
//! Accounts – List Service SAS, over HTTPS, as section 6 of the wire contracts
//! describes them.
//!
//! It owns ARM's front door behaviour (bearer-token checks with ARM's 401
//! codes and challenge, `api-version`, case-insensitive path segments, RBAC by
//! the token's `oid` with ARM's `AuthorizationFailed` message, scripted
//! throttling) and a tiny resource model (subscriptions, resource groups,
//! storage accounts with keys). `listServiceSas` mints a real service SAS,
//! signed with the account key, that a real Storage peer (Azurite) accepts.
//! It records every request so tests can assert what reached it.

use std::{
    collections::{BTreeMap, HashMap},
    fmt, io,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use time::{format_description::well_known::Rfc3339, macros::format_description, OffsetDateTime};

use crate::{
    authority::{TokenAuthority, VerifyError},
    front_door::{
        bearer::{self, BearerRefusal, TokenSeen},
        faults::with_retry_after,
        lock, FaultScript, RequestLog,
    },
    http::{serve_https, RunningServer},
    sample,
    tls::TestCa,
};

/// Audiences ARM accepts (with and without the trailing slash).
pub const ARM_AUDIENCES: [&str; 4] = [
    "https://management.azure.com/",
    "https://management.azure.com",
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
];

/// RBAC action of Resource Groups – Get.
pub const ACTION_READ_RESOURCE_GROUP: &str =
    "Microsoft.Resources/subscriptions/resourceGroups/read";
/// RBAC action of Storage Accounts – List Service SAS.
pub const ACTION_LIST_SERVICE_SAS: &str = "Microsoft.Storage/storageAccounts/listServiceSas/action";

/// Azurite's well-known development account (public, from its docs).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development account key (public, from its docs).
pub const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Subscription of the sample data `--emulator` serves ([`sample::SUBSCRIPTION_ID`]).
pub const SAMPLE_SUBSCRIPTION_ID: &str = sample::SUBSCRIPTION_ID;
/// Resource group of the sample data ([`sample::RESOURCE_GROUP`]).
pub const SAMPLE_RESOURCE_GROUP: &str = sample::RESOURCE_GROUP;
/// A second sample group, managed by another resource (shows `managedBy`).
pub const SAMPLE_MANAGED_RESOURCE_GROUP: &str = "emulator-rg-managed";

/// The `sv` of the SAS tokens the fake mints. Service SAS string-to-sign for
/// 2020-12-06 and later (16 lines).
pub const SAS_VERSION: &str = "2025-05-05";

/// A resource group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceGroup {
    pub name: String,
    pub location: String,
    pub tags: BTreeMap<String, String>,
    pub managed_by: Option<String>,
}

impl ResourceGroup {
    /// A group in `location` with no tags.
    pub fn new(name: &str, location: &str) -> Self {
        Self {
            name: name.to_string(),
            location: location.to_string(),
            tags: BTreeMap::new(),
            managed_by: None,
        }
    }

    /// Adds a tag.
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.insert(key.to_string(), value.to_string());
        self
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The path exactly as sent (casing preserved).
    pub path: String,
    pub query: Option<String>,
    pub body: String,
    /// The `oid` of the bearer token, when it verified.
    pub token_oid: Option<String>,
    /// The status the fake answered.
    pub status: u16,
}

/// A scripted answer given instead of the real one, in order.
#[derive(Debug, Clone)]
pub struct Fault {
    pub status: u16,
    pub retry_after_secs: Option<u64>,
    pub code: String,
    pub message: String,
}

impl Fault {
    /// ARM's throttling answer.
    pub fn throttled(retry_after_secs: u64) -> Self {
        Self {
            status: 429,
            retry_after_secs: Some(retry_after_secs),
            code: "TooManyRequests".into(),
            message: "The request is being throttled as the limit has been reached for operation type - Read_ObservationWindow_00:05:00. For more information, see - https://aka.ms/srpthrottlinglimits".into(),
        }
    }
}

struct StorageAccount {
    name: String,
    keys: [Vec<u8>; 2],
}

#[derive(Default)]
struct Subscription {
    /// Keyed by lower-cased name (ARM names are case-insensitive).
    groups: BTreeMap<String, ResourceGroup>,
    /// Keyed by (lower-cased group, lower-cased account).
    accounts: HashMap<(String, String), StorageAccount>,
}

struct Grant {
    object_id: String,
    /// An action, or `*` for every action.
    action: String,
    /// A scope prefix such as `/subscriptions/<id>`.
    scope: String,
}

#[derive(Default)]
struct Data {
    subscriptions: HashMap<String, Subscription>,
    grants: Vec<Grant>,
}

struct Shared {
    authority: Arc<TokenAuthority>,
    data: Mutex<Data>,
    faults: FaultScript<Fault>,
    log: RequestLog<RecordedRequest>,
}

impl Shared {
    fn data(&self) -> MutexGuard<'_, Data> {
        lock(&self.data)
    }
}

/// The running ARM fake.
pub struct ArmFake {
    server: RunningServer,
    shared: Arc<Shared>,
}

impl fmt::Debug for ArmFake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArmFake")
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

impl ArmFake {
    /// Starts an empty fake over HTTPS on 127.0.0.1 (a free port), with a
    /// certificate from `ca`.
    pub async fn start(authority: Arc<TokenAuthority>, ca: &TestCa) -> io::Result<Self> {
        Self::start_on(authority, ca, 0).await
    }

    /// Like [`start`](Self::start), on `port` of 127.0.0.1 (0 for a free port).
    pub async fn start_on(
        authority: Arc<TokenAuthority>,
        ca: &TestCa,
        port: u16,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            authority,
            data: Mutex::new(Data::default()),
            faults: FaultScript::default(),
            log: RequestLog::default(),
        });
        let server = serve_https(
            router(Arc::clone(&shared)),
            port,
            ca.server_config(&[b"h2", b"http/1.1"]),
        )
        .await?;
        Ok(Self { server, shared })
    }

    /// Starts the fake with the sample data (see [`seed_sample`]).
    pub async fn sample(authority: Arc<TokenAuthority>, ca: &TestCa) -> io::Result<Self> {
        Self::sample_on(authority, ca, 0).await
    }

    /// Like [`sample`](Self::sample), on `port` of 127.0.0.1 (0 for a free port).
    pub async fn sample_on(
        authority: Arc<TokenAuthority>,
        ca: &TestCa,
        port: u16,
    ) -> io::Result<Self> {
        let fake = Self::start_on(authority, ca, port).await?;
        seed_sample(&fake);
        Ok(fake)
    }

    /// `https://localhost:<port>`: the value for `upstream.arm_endpoint`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// `localhost:<port>`: the value for `upstream.allowed_hosts`.
    pub fn host_port(&self) -> String {
        format!("localhost:{}", self.server.addr().port())
    }

    /// Adds a subscription (no-op if it exists).
    pub fn add_subscription(&self, subscription_id: &str) {
        self.shared
            .data()
            .subscriptions
            .entry(subscription_id.to_ascii_lowercase())
            .or_default();
    }

    /// Adds (or replaces) a resource group, creating the subscription if needed.
    pub fn add_resource_group(&self, subscription_id: &str, group: ResourceGroup) {
        self.shared
            .data()
            .subscriptions
            .entry(subscription_id.to_ascii_lowercase())
            .or_default()
            .groups
            .insert(group.name.to_ascii_lowercase(), group);
    }

    /// Adds a storage account to an existing group, with base64 keys
    /// (`key2` defaults to `key1`). Returns false if the group does not exist
    /// or a key is not base64.
    pub fn add_storage_account(
        &self,
        subscription_id: &str,
        resource_group: &str,
        name: &str,
        key1_base64: &str,
        key2_base64: Option<&str>,
    ) -> bool {
        let (Ok(key1), Ok(key2)) = (
            BASE64.decode(key1_base64),
            BASE64.decode(key2_base64.unwrap_or(key1_base64)),
        ) else {
            return false;
        };
        let mut data = self.shared.data();
        let Some(sub) = data
            .subscriptions
            .get_mut(&subscription_id.to_ascii_lowercase())
        else {
            return false;
        };
        let rg = resource_group.to_ascii_lowercase();
        if !sub.groups.contains_key(&rg) {
            return false;
        }
        sub.accounts.insert(
            (rg, name.to_ascii_lowercase()),
            StorageAccount {
                name: name.to_string(),
                keys: [key1, key2],
            },
        );
        true
    }

    /// Lets `object_id` perform `action` (or `*`) at `scope` and below,
    /// like an RBAC role assignment.
    pub fn grant(&self, object_id: &str, action: &str, scope: &str) {
        self.shared.data().grants.push(Grant {
            object_id: object_id.to_ascii_lowercase(),
            action: action.to_string(),
            scope: scope.trim_end_matches('/').to_ascii_lowercase(),
        });
    }

    /// Queues a scripted answer; each request consumes one, in order.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.faults.push([fault]);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log.snapshot()
    }

    /// Forgets recorded requests.
    pub fn clear_requests(&self) {
        self.shared.log.clear();
    }
}

/// Seeds the sample data `--emulator` serves: subscription
/// [`SAMPLE_SUBSCRIPTION_ID`] with resource groups [`SAMPLE_RESOURCE_GROUP`]
/// (eastus, tags env=emulator, owner=identity-gateway) and
/// [`SAMPLE_MANAGED_RESOURCE_GROUP`] (westeurope, managedBy set), the storage
/// account [`AZURITE_ACCOUNT`] in `emulator-rg` keyed with Azurite's
/// well-known key (so its SAS tokens work against a local Azurite), and role
/// assignments: the VM's system-assigned identity is Owner-like (`*`) on the
/// subscription; `app-identity` may only read resource groups (so
/// listServiceSas with it shows ARM's 403 AuthorizationFailed).
pub fn seed_sample(fake: &ArmFake) {
    fake.add_resource_group(
        SAMPLE_SUBSCRIPTION_ID,
        ResourceGroup::new(SAMPLE_RESOURCE_GROUP, "eastus")
            .tag("env", "emulator")
            .tag("owner", "identity-gateway"),
    );
    let mut managed = ResourceGroup::new(SAMPLE_MANAGED_RESOURCE_GROUP, "westeurope");
    managed.managed_by = Some(format!(
        "/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourceGroups/{SAMPLE_RESOURCE_GROUP}/providers/Microsoft.Databricks/workspaces/emulator-ws"
    ));
    fake.add_resource_group(SAMPLE_SUBSCRIPTION_ID, managed);
    fake.add_storage_account(
        SAMPLE_SUBSCRIPTION_ID,
        SAMPLE_RESOURCE_GROUP,
        AZURITE_ACCOUNT,
        AZURITE_ACCOUNT_KEY,
        None,
    );
    let subscription = format!("/subscriptions/{SAMPLE_SUBSCRIPTION_ID}");
    fake.grant(sample::SYSTEM_OBJECT_ID, "*", &subscription);
    fake.grant(
        sample::USER_OBJECT_ID,
        ACTION_READ_RESOURCE_GROUP,
        &subscription,
    );
}

mod errors;
mod operations;
mod service_sas;
mod serving;
#[cfg(test)]
mod tests;

#[allow(unused_imports)]
use errors::*;
#[allow(unused_imports)]
use operations::*;
#[allow(unused_imports)]
use service_sas::*;
#[allow(unused_imports)]
use serving::*;
