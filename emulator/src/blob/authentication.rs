//! Blob Storage's bearer-token gate on top of the shared
//! [`front_door::bearer`](crate::front_door::bearer) check: Storage's
//! `x-ms-version` minimum for bearer tokens, its Shared Key refusal, its 401
//! details and challenge, and the data-role (RBAC) check by token `oid`.

#[allow(unused_imports)]
use super::*;

pub(super) fn authenticate_bearer(
    shared: &Shared,
    headers: &HeaderMap,
    version: Option<&str>,
    trace: &mut Trace,
) -> Result<Claims, StorageError> {
    let token = match bearer::presented(headers) {
        Ok(token) => token,
        // Storage verifies an empty token, and refuses its signature.
        Err(BearerRefusal::EmptyToken) => "",
        Err(BearerRefusal::Missing) => {
            return Err(StorageError::new(
                StatusCode::UNAUTHORIZED,
                "NoAuthenticationInformation",
                "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
            )
            .challenge(shared.authority.tenant_id()))
        }
        Err(BearerRefusal::OtherScheme { scheme }) if scheme.eq_ignore_ascii_case("sharedkey") => {
            trace.authorization = Authorization::Other;
            return Err(auth_failed(
                "The emulator's Blob Storage accepts bearer tokens and SAS only, not Shared Key.",
            ));
        }
        Err(_) => {
            trace.authorization = Authorization::Other;
            return Err(StorageError::new(
                StatusCode::BAD_REQUEST,
                "InvalidAuthenticationInfo",
                "Authentication information is not given in the correct format. Check the value of Authorization header.",
            ));
        }
    };
    trace.authorization = Authorization::Bearer;
    if version.is_none_or(|v| v < BEARER_MIN_VERSION) {
        return Err(auth_failed(
            "Authentication scheme Bearer is not supported in this version.",
        ));
    }
    let claims = bearer::verify(
        &shared.authority,
        token,
        &STORAGE_AUDIENCES,
        &mut TokenSeen::default(),
    )
    .map_err(|e| {
            let detail = match e {
                VerifyError::Expired => "Lifetime validation failed. The token is expired.",
                VerifyError::NotYetValid => "Lifetime validation failed. The token is not yet valid.",
                VerifyError::WrongAudience { .. } => {
                    "Audience validation failed. Audience did not match."
                }
                VerifyError::BadToken(_) => {
                    "Signature validation failed. The token is not signed by the emulator's authority."
                }
            };
            StorageError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationInfo",
                "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
            )
            .detail(detail)
            .challenge(shared.authority.tenant_id())
        })?;
    trace.principal_oid = Some(claims.oid.clone());
    Ok(claims)
}

pub(super) fn require_role(
    shared: &Shared,
    account: &str,
    object_id: &str,
    needed: BlobRole,
) -> Result<(), StorageError> {
    let data = shared.data();
    let role = data
        .accounts
        .get(account)
        .and_then(|a| a.roles.get(&object_id.to_ascii_lowercase()))
        .copied();
    if role.is_some_and(|r| r >= needed) {
        Ok(())
    } else {
        Err(permission_mismatch())
    }
}
