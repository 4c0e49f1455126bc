//! Azure Resource Manager: Resource Groups – Get and Storage Accounts – List
//! Service SAS, with the identity's ARM token, plus the ARM error envelope.
//!
//! Owns: the ARM endpoint per cloud (or `upstream.arm_endpoint`), validation
//! of subscription ids and resource group names, the exact (case-sensitive)
//! paths ARM documents, and mapping ARM errors to [`GatewayError`]. It knows
//! nothing about gRPC.

use std::{collections::BTreeMap, time::Duration};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{
    http::read_capped,
    throttle::{sanitize_message, send_with_retry, BodyUse},
    Cloud, Service,
};
use crate::{error::GatewayError, token::IdentitySelector, Upstream};

/// api-version of Resource Groups – Get (the stable version the VM tutorials use).
pub const RESOURCE_GROUPS_API_VERSION: &str = "2021-04-01";
/// api-version of the Storage resource provider (listServiceSas).
pub const STORAGE_RP_API_VERSION: &str = "2023-05-01";

const UPSTREAM: &str = "Azure Resource Manager";

/// The ARM base URL: `upstream.arm_endpoint` if set, else the cloud's.
pub fn endpoint(up: &Upstream, cloud: Cloud) -> Url {
    if let Some(url) = &up.config.arm_endpoint {
        return url.clone();
    }
    let host = match cloud {
        Cloud::Public => "https://management.azure.com/",
        Cloud::UsGovernment => "https://management.usgovcloudapi.net/",
        Cloud::China => "https://management.chinacloudapi.cn/",
    };
    Url::parse(host).expect("constant URL")
}

/// A subscription id: a GUID.
pub fn subscription_id<'a>(field: &str, value: &'a str) -> Result<&'a str, GatewayError> {
    let v = value.trim();
    let ok = v.len() == 36
        && v.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if ok {
        Ok(v)
    } else {
        Err(GatewayError::invalid(
            field,
            "expected a subscription GUID like 00000000-0000-0000-0000-000000000000",
        ))
    }
}

/// A resource group name: 1-90 letters, digits, `-`, `_`, `.`, `(`, `)`,
/// not ending in `.` (ARM's rule; letters and digits may be Unicode).
pub fn resource_group_name<'a>(field: &str, value: &'a str) -> Result<&'a str, GatewayError> {
    let count = value.chars().count();
    if count == 0 || count > 90 {
        return Err(GatewayError::invalid(field, "must be 1-90 characters"));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_alphanumeric() || "-_.()".contains(*c)))
    {
        return Err(GatewayError::invalid(
            field,
            format!(
                "'{}' is not allowed (letters, digits, '-', '_', '.', '(', ')' only)",
                bad.escape_default()
            ),
        ));
    }
    if value.ends_with('.') {
        return Err(GatewayError::invalid(field, "must not end with '.'"));
    }
    Ok(value)
}

/// A resource group as ARM describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceGroup {
    pub id: String,
    pub name: String,
    pub resource_type: String,
    pub location: String,
    pub provisioning_state: String,
    pub managed_by: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceGroupJson {
    id: String,
    name: String,
    #[serde(rename = "type")]
    resource_type: Option<String>,
    location: String,
    managed_by: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    properties: Option<ResourceGroupProperties>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceGroupProperties {
    provisioning_state: Option<String>,
}

/// Where and as whom an ARM call is made.
#[derive(Debug, Clone, Copy)]
pub struct ArmCall<'a> {
    pub up: &'a Upstream,
    pub budget: Option<Duration>,
    pub selector: &'a IdentitySelector,
    pub cloud: Cloud,
}

impl ArmCall<'_> {
    /// `{endpoint}/{segments...}?api-version=..`, checked by the exfiltration
    /// guard (before any token is fetched).
    fn url(&self, segments: &[&str], api_version: &str) -> Result<Url, GatewayError> {
        let mut url = endpoint(self.up, self.cloud);
        self.up
            .hosts
            .check(Service::ResourceManager, "upstream.arm_endpoint", &url)?;
        url.path_segments_mut()
            .map_err(|_| GatewayError::invalid("upstream.arm_endpoint", "cannot be a base URL"))?
            .pop_if_empty()
            .extend(segments);
        url.set_query(None);
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
        Ok(url)
    }

    async fn token(&self) -> Result<std::sync::Arc<crate::token::AccessToken>, GatewayError> {
        self.up
            .tokens
            .token(
                self.selector,
                Service::ResourceManager.audience(self.cloud),
                self.budget,
            )
            .await
    }

    /// Sends with retries and returns the body of a 200, or the mapped error.
    async fn send(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, GatewayError> {
        let response =
            send_with_retry(self.up, self.budget, UPSTREAM, BodyUse::Buffered, build).await?;
        let status = response.status().as_u16();
        let body = read_capped(response, self.up.config.max_body_bytes, UPSTREAM).await?;
        if status == 200 {
            Ok(body)
        } else {
            Err(error_from_response(status, &body, what))
        }
    }
}

/// Resource Groups – Get.
pub async fn get_resource_group(
    call: ArmCall<'_>,
    subscription: &str,
    name: &str,
) -> Result<ResourceGroup, GatewayError> {
    let subscription = subscription_id("subscription_id", subscription)?;
    let name = resource_group_name("name", name)?;
    // ARM documents the lower-case `resourcegroups` segment for this read.
    let url = call.url(
        &["subscriptions", subscription, "resourcegroups", name],
        RESOURCE_GROUPS_API_VERSION,
    )?;
    let token = call.token().await?;
    let body = call
        .send(&format!("resource group '{name}'"), || {
            call.up
                .http
                .get(url.clone())
                .bearer_auth(token.secret())
                .header(reqwest::header::ACCEPT, "application/json")
        })
        .await?;
    let parsed: ResourceGroupJson = serde_json::from_slice(&body).map_err(|e| {
        GatewayError::Upstream(format!(
            "{UPSTREAM} answered a resource group that is not valid JSON: {e}"
        ))
    })?;
    Ok(ResourceGroup {
        id: parsed.id,
        name: parsed.name,
        resource_type: parsed
            .resource_type
            .unwrap_or_else(|| "Microsoft.Resources/resourceGroups".into()),
        location: parsed.location,
        provisioning_state: parsed
            .properties
            .and_then(|p| p.provisioning_state)
            .unwrap_or_default(),
        managed_by: parsed.managed_by,
        tags: parsed.tags.unwrap_or_default(),
    })
}

/// The body of Storage Accounts – List Service SAS (`ServiceSasParameters`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSasParameters {
    pub canonicalized_resource: String,
    pub signed_resource: String,
    pub signed_permission: String,
    pub signed_protocol: String,
    pub signed_expiry: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_ip: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceSasJson {
    service_sas_token: String,
}

/// Storage Accounts – List Service SAS: Azure signs with the account key.
/// Returns the SAS query string (no leading `?`).
pub async fn list_service_sas(
    call: ArmCall<'_>,
    subscription: &str,
    resource_group: &str,
    account: &str,
    parameters: &ServiceSasParameters,
) -> Result<SecretString, GatewayError> {
    let subscription = subscription_id("subscription_id", subscription)?;
    let resource_group = resource_group_name("resource_group", resource_group)?;
    let account = super::sas::account_name(account)?;
    let url = call.url(
        &[
            "subscriptions",
            subscription,
            "resourceGroups",
            resource_group,
            "providers",
            "Microsoft.Storage",
            "storageAccounts",
            account,
            "listServiceSas",
        ],
        STORAGE_RP_API_VERSION,
    )?;
    let token = call.token().await?;
    let body = call
        .send(&format!("storage account '{account}'"), || {
            call.up
                .http
                .post(url.clone())
                .bearer_auth(token.secret())
                .json(parameters)
        })
        .await?;
    let parsed: ServiceSasJson = serde_json::from_slice(&body).map_err(|_| {
        GatewayError::Upstream(format!(
            "{UPSTREAM} answered listServiceSas without a serviceSasToken"
        ))
    })?;
    let sas = parsed.service_sas_token.trim_start_matches('?');
    let well_formed = !sas.is_empty()
        && sas.chars().all(|c| c.is_ascii_graphic())
        && sas.split('&').any(|pair| pair.starts_with("sig="));
    if !well_formed {
        return Err(GatewayError::Upstream(format!(
            "{UPSTREAM} answered a serviceSasToken that is not a signed query string"
        )));
    }
    Ok(SecretString::from(sas.to_string()))
}

#[derive(Deserialize)]
struct Envelope {
    error: Option<ErrorBody>,
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

/// Maps an ARM error answer (the `{"error":{"code","message"}}` envelope, or
/// the bare `{"code","message"}` some RPs send) to a [`GatewayError`] that
/// carries Azure's code and message. `what` names the target.
pub fn error_from_response(status: u16, body: &[u8], what: &str) -> GatewayError {
    let (code, message) = match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error: Some(e), .. }) => (e.code, e.message),
        Ok(e) => (e.code, e.message),
        Err(_) => (None, None),
    };
    let code = code.unwrap_or_else(|| format!("HTTP {status}"));
    let message = message
        .map(|m| sanitize_message(&m))
        .unwrap_or_else(|| "no error details".into());
    let detail = format!("{code}: {message}");
    match status {
        401 => GatewayError::PermissionDenied(format!(
            "{UPSTREAM} rejected the managed identity's token for {what} ({detail})"
        )),
        403 => GatewayError::PermissionDenied(format!(
            "Azure RBAC denied the managed identity access to {what} ({detail})"
        )),
        404 => GatewayError::NotFound(format!("{UPSTREAM}: {what} was not found ({detail})")),
        429 => GatewayError::Throttled(format!(
            "{UPSTREAM} kept throttling requests for {what} ({detail})"
        )),
        500..=599 => GatewayError::Unavailable(format!(
            "{UPSTREAM} failed for {what} with HTTP {status} ({detail})"
        )),
        _ => GatewayError::Upstream(format!(
            "{UPSTREAM} refused the request for {what} with HTTP {status} ({detail})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_ids_are_guids() {
        assert!(subscription_id("s", "6f1d2b8e-3c4a-4e5f-9a0b-1c2d3e4f5a6b").is_ok());
        for bad in [
            "",
            "nope",
            "6f1d2b8e-3c4a-4e5f-9a0b-1c2d3e4f5a6",
            "../../x",
            "6f1d2b8e_3c4a-4e5f-9a0b-1c2d3e4f5a6b",
        ] {
            let err = subscription_id("subscription_id", bad).unwrap_err();
            assert!(
                matches!(&err, GatewayError::InvalidArgument { field, .. } if field == "subscription_id"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn resource_group_names_follow_arm_rules() {
        for good in ["rg", "my-rg_1.(prod)", "Grüße", &"a".repeat(90)] {
            assert!(resource_group_name("name", good).is_ok(), "{good}");
        }
        for bad in ["", "ends.", "a/b", "a b", "a?b", "a%2Fb", &"a".repeat(91)] {
            assert!(resource_group_name("name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arm_errors_keep_code_and_message() {
        let body = br#"{"error":{"code":"AuthorizationFailed","message":"The client 'x' with object id 'y' does not have authorization","target":null,"details":[],"additionalInfo":[]}}"#;
        let err = error_from_response(403, body, "resource group 'rg'");
        let GatewayError::PermissionDenied(msg) = err else {
            panic!("{err:?}")
        };
        assert!(msg.contains("AuthorizationFailed: The client 'x'"), "{msg}");
        assert!(msg.contains("Azure RBAC"), "{msg}");

        let err = error_from_response(
            404,
            br#"{"error":{"code":"ResourceGroupNotFound","message":"Resource group 'rg' could not be found."}}"#,
            "resource group 'rg'",
        );
        assert!(
            matches!(err, GatewayError::NotFound(ref m) if m.contains("ResourceGroupNotFound"))
        );

        let bare = error_from_response(400, br#"{"code":"InvalidTemplate","message":"bad"}"#, "x");
        assert!(
            matches!(bare, GatewayError::Upstream(ref m) if m.contains("InvalidTemplate: bad"))
        );

        let garbage = error_from_response(502, b"<html>bad gateway</html>", "x");
        assert!(matches!(garbage, GatewayError::Unavailable(ref m) if m.contains("HTTP 502")));
        assert!(matches!(
            error_from_response(429, b"", "x"),
            GatewayError::Throttled(_)
        ));
        assert!(matches!(
            error_from_response(401, br#"{"error":{"code":"InvalidAuthenticationTokenAudience","message":"wrong"}}"#, "x"),
            GatewayError::PermissionDenied(ref m) if m.contains("InvalidAuthenticationTokenAudience")
        ));
    }
}
