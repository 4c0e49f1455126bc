//! Authorization after the token verified: the vault's RBAC assignments or
//! access policy, by token `oid`, with Key Vault's 403 bodies.

#[allow(unused_imports)]
use super::*;

/// The caller's RBAC assignment or access policy check.
pub(super) fn authorize(
    settings: &VaultSettings,
    claims: &Claims,
    operation: &str,
    secret: Option<&str>,
) -> Result<(), Box<Response>> {
    if settings.grant.allows(&claims.oid) {
        return Ok(());
    }
    let caller = format!(
        "appid={};oid={};iss={}",
        claims.appid, claims.oid, claims.iss
    );
    let vault = format!("{};location={}", settings.name, settings.location);
    let response = match settings.access_model {
        AccessModel::Rbac => {
            let action = match operation {
                "get" => "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                _ => "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
            };
            let mut resource = format!(
                "/subscriptions/{}/resourcegroups/{}/providers/microsoft.keyvault/vaults/{}",
                settings.subscription_id,
                settings.resource_group.to_lowercase(),
                settings.name.to_lowercase()
            );
            if let Some(secret) = secret {
                resource.push_str(&format!("/secrets/{}", secret.to_lowercase()));
            }
            kv_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                Some("ForbiddenByRbac"),
                &format!(
                    "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: {caller}\r\nAction: '{action}'\r\nResource: '{resource}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\nVault: {vault}\r\n"
                ),
            )
        }
        AccessModel::AccessPolicy => kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            Some("AccessDenied"),
            &format!(
                "The user, group or application '{caller}' does not have secrets {operation} permission on key vault '{vault}'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"
            ),
        ),
    };
    Err(Box::new(response))
}
