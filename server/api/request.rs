//! Reading what every RPC shares from a request: the identity selector, the
//! caller's deadline, the cloud, and the caller's peer credentials.

use std::time::Duration;

use tonic::Request;

use crate::{
    azure::Cloud,
    error::GatewayError,
    identity::IdentitySelector,
    policy::Caller,
    proto::{self, identity::Selector},
};

/// The identity a request selects; unset means system-assigned.
pub fn identity(identity: Option<proto::Identity>) -> Result<IdentitySelector, GatewayError> {
    let Some(selector) = identity.and_then(|i| i.selector) else {
        return Ok(IdentitySelector::SystemAssigned);
    };
    match selector {
        Selector::ClientId(id) => Ok(IdentitySelector::ClientId(guid("identity.client_id", id)?)),
        Selector::ObjectId(id) => Ok(IdentitySelector::ObjectId(guid("identity.object_id", id)?)),
        Selector::ResourceId(id) => {
            let trimmed = id.trim();
            let segments: Vec<&str> = trimmed.split('/').collect();
            let well_formed = segments.len() == 9
                && segments[0].is_empty()
                && segments[1].eq_ignore_ascii_case("subscriptions")
                && segments[3].eq_ignore_ascii_case("resourcegroups")
                && segments[5].eq_ignore_ascii_case("providers")
                && segments[6].eq_ignore_ascii_case("Microsoft.ManagedIdentity")
                && segments[7].eq_ignore_ascii_case("userAssignedIdentities")
                && segments
                    .iter()
                    .skip(1)
                    .all(|s| !s.is_empty() && s.len() <= 128)
                && trimmed
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/-_.()".contains(c));
            if !well_formed {
                return Err(GatewayError::invalid(
                    "identity.resource_id",
                    "expected /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>",
                ));
            }
            Ok(IdentitySelector::ResourceId(trimmed.to_string()))
        }
    }
}

fn guid(field: &str, value: String) -> Result<String, GatewayError> {
    let v = value.trim();
    let shape_ok = v.len() == 36
        && v.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if shape_ok {
        Ok(v.to_string())
    } else {
        Err(GatewayError::invalid(
            field,
            "expected a GUID like 00000000-0000-0000-0000-000000000000",
        ))
    }
}

/// The token audience of GetToken/WatchToken: non-empty, printable, a URI or
/// an application id; passed on verbatim.
pub fn resource(resource: &str) -> Result<&str, GatewayError> {
    if resource.is_empty() {
        return Err(GatewayError::invalid(
            "resource",
            "is required (e.g. https://vault.azure.net)",
        ));
    }
    if resource.len() > 2048 {
        return Err(GatewayError::invalid(
            "resource",
            "is longer than 2048 characters",
        ));
    }
    if resource
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(GatewayError::invalid(
            "resource",
            "must not contain spaces or control characters",
        ));
    }
    if resource.ends_with("/.default") {
        return Err(GatewayError::invalid(
            "resource",
            format!(
                "'{resource}' is a v2 scope; managed identities take the resource: drop '/.default' ('{}')",
                resource.trim_end_matches("/.default")
            ),
        ));
    }
    Ok(resource)
}

/// Time left before the caller's deadline (`grpc-timeout`), if it set one,
/// less a small margin so the caller gets the gateway's DEADLINE_EXCEEDED
/// (which says what it was waiting for) rather than its own timer's.
pub fn budget<T>(request: &Request<T>) -> Option<Duration> {
    let timeout = grpc_timeout(request)?;
    let margin = (timeout / 10).min(Duration::from_millis(100));
    Some(timeout - margin)
}

fn grpc_timeout<T>(request: &Request<T>) -> Option<Duration> {
    let raw = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The cloud enum of a request.
pub fn cloud(value: i32) -> Result<Cloud, GatewayError> {
    match proto::Cloud::try_from(value) {
        Ok(proto::Cloud::Unspecified | proto::Cloud::AzurePublic) => Ok(Cloud::Public),
        Ok(proto::Cloud::AzureUsGovernment) => Ok(Cloud::UsGovernment),
        Ok(proto::Cloud::AzureChina) => Ok(Cloud::China),
        Err(_) => Err(GatewayError::invalid(
            "cloud",
            format!("unknown cloud {value}"),
        )),
    }
}

/// Who called, as the transport saw it: peer credentials on Unix sockets, the
/// address on TCP. Cheap to take; formatted only when the audit line is
/// actually written.
#[derive(Debug, Clone, Default)]
pub struct CallerInfo {
    uid: Option<u32>,
    gid: Option<u32>,
    pid: Option<i32>,
    addr: Option<std::net::SocketAddr>,
    /// A Windows pipe client: user and group SIDs, process id.
    #[cfg(windows)]
    pipe: Option<std::sync::Arc<crate::windows::caller::PipeCaller>>,
}

impl CallerInfo {
    /// The identity the caller policy judges.
    pub fn policy_caller(&self) -> Caller {
        Caller {
            uid: self.uid,
            gid: self.gid,
        }
    }
}

impl std::fmt::Display for CallerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[cfg(windows)]
        if let Some(pipe) = &self.pipe {
            return write!(f, "{pipe}");
        }
        match (self.uid, self.gid, self.pid, self.addr) {
            (Some(uid), Some(gid), Some(pid), _) => write!(f, "uid={uid} gid={gid} pid={pid}"),
            (Some(uid), Some(gid), None, _) => write!(f, "uid={uid} gid={gid}"),
            (_, _, _, Some(addr)) => write!(f, "tcp={addr}"),
            _ => f.write_str("unknown"),
        }
    }
}

/// Who called, for the audit log and the caller policy.
pub fn caller<T>(request: &Request<T>) -> CallerInfo {
    #[cfg(unix)]
    if let Some(info) = request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
    {
        if let Some(cred) = &info.peer_cred {
            return CallerInfo {
                uid: Some(cred.uid()),
                gid: Some(cred.gid()),
                pid: cred.pid(),
                addr: None,
            };
        }
    }
    #[cfg(windows)]
    if let Some(info) = request
        .extensions()
        .get::<crate::transport::pipe::PipeConnectInfo>()
    {
        return CallerInfo {
            pipe: Some(std::sync::Arc::clone(&info.caller)),
            ..CallerInfo::default()
        };
    }
    CallerInfo {
        addr: request.remote_addr(),
        ..CallerInfo::default()
    }
}

/// The caller's peer credentials, for the caller policy.
pub fn peer<T>(request: &Request<T>) -> Caller {
    caller(request).policy_caller()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_validated() {
        let sel = |s| identity(Some(proto::Identity { selector: Some(s) }));
        assert!(sel(Selector::ClientId(
            "b84e06d3-aba1-4bcc-9626-2e0d76cba2ce".into()
        ))
        .is_ok());
        assert!(sel(Selector::ClientId("nope&resource=evil".into())).is_err());
        assert!(sel(Selector::ResourceId(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1".into()
        ))
        .is_ok());
        assert!(sel(Selector::ResourceId("/subscriptions/s".into())).is_err());
        assert_eq!(identity(None).unwrap(), IdentitySelector::SystemAssigned);
    }

    #[test]
    fn resources_are_checked_but_kept_verbatim() {
        assert_eq!(
            resource("https://vault.azure.net/").unwrap(),
            "https://vault.azure.net/"
        );
        assert!(resource("").is_err());
        assert!(resource("https://vault.azure.net/.default").is_err());
        assert!(resource("https://x\n").is_err());
    }

    #[test]
    fn grpc_timeout_header_is_parsed() {
        let mut r = Request::new(());
        r.metadata_mut()
            .insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(budget(&r), Some(Duration::from_millis(225)));
        r.metadata_mut()
            .insert("grpc-timeout", "bogus".parse().unwrap());
        assert_eq!(budget(&r), None);
    }
}
