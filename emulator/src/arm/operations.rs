//! The two operations ARM serves here: Resource Groups - Get and Storage
//! Accounts - List Service SAS (request parsing and answers).

#[allow(unused_imports)]
use super::*;

pub(super) fn get_resource_group(
    shared: &Shared,
    claims: &crate::authority::Claims,
    subscription: &str,
    name: &str,
) -> Response {
    let scope = format!("/subscriptions/{subscription}/resourceGroups/{name}");
    if let Err(denied) = authorize(shared, claims, ACTION_READ_RESOURCE_GROUP, &scope) {
        return denied.into_response();
    }
    let data = shared.data();
    let Some(sub) = data.subscriptions.get(&subscription.to_ascii_lowercase()) else {
        return subscription_not_found(subscription);
    };
    let Some(group) = sub.groups.get(&name.to_ascii_lowercase()) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            &format!("Resource group '{name}' could not be found."),
        );
    };
    let mut body = json!({
        "id": format!("/subscriptions/{subscription}/resourceGroups/{}", group.name),
        "name": group.name,
        "type": "Microsoft.Resources/resourceGroups",
        "location": group.location,
        "properties": {"provisioningState": "Succeeded"},
    });
    if let Some(managed_by) = &group.managed_by {
        body["managedBy"] = json!(managed_by);
    }
    if !group.tags.is_empty() {
        body["tags"] = json!(group.tags);
    }
    arm_json(StatusCode::OK, &body)
}

/// `ServiceSasParameters` of the Storage RP.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServiceSasParameters {
    pub(super) canonicalized_resource: Option<String>,
    pub(super) signed_resource: Option<String>,
    pub(super) signed_permission: Option<String>,
    pub(super) signed_ip: Option<String>,
    pub(super) signed_protocol: Option<String>,
    pub(super) signed_start: Option<String>,
    pub(super) signed_expiry: Option<String>,
    pub(super) signed_identifier: Option<String>,
    pub(super) key_to_sign: Option<String>,
    pub(super) rscc: Option<String>,
    pub(super) rscd: Option<String>,
    pub(super) rsce: Option<String>,
    pub(super) rscl: Option<String>,
    pub(super) rsct: Option<String>,
}

pub(super) fn list_service_sas(
    shared: &Shared,
    claims: &crate::authority::Claims,
    subscription: &str,
    group: &str,
    account: &str,
    body: &[u8],
) -> Response {
    let scope = format!(
        "/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts/{account}"
    );
    if let Err(denied) = authorize(shared, claims, ACTION_LIST_SERVICE_SAS, &scope) {
        return denied.into_response();
    }
    let params: ServiceSasParameters = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                &format!("The request content was invalid and could not be deserialized: '{e}'."),
            )
        }
    };
    let key = {
        let data = shared.data();
        let Some(sub) = data.subscriptions.get(&subscription.to_ascii_lowercase()) else {
            return subscription_not_found(subscription);
        };
        let rg = group.to_ascii_lowercase();
        if !sub.groups.contains_key(&rg) {
            return arm_error(
                StatusCode::NOT_FOUND,
                "ResourceGroupNotFound",
                &format!("Resource group '{group}' could not be found."),
            );
        }
        let Some(acct) = sub.accounts.get(&(rg, account.to_ascii_lowercase())) else {
            return arm_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!("The Resource 'Microsoft.Storage/storageAccounts/{account}' under resource group '{group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"),
            );
        };
        let index = match params.key_to_sign.as_deref() {
            None | Some("key1") => 0,
            Some("key2") => 1,
            Some(_) => return invalid_values("keyToSign"),
        };
        (acct.name.clone(), acct.keys[index].clone())
    };
    match mint_service_sas(&key.0, &key.1, &params) {
        Ok(token) => arm_json(StatusCode::OK, &json!({ "serviceSasToken": token })),
        Err(field) => invalid_values(field),
    }
}
