//! What the gRPC transport knows about a call, as a service
//! [`CallContext`]: the caller (peer credentials on the Unix socket, the
//! client's SIDs and pid on the Windows pipe, the address on TCP), the
//! transport, and the time left before the caller's deadline
//! (`grpc-timeout`).

use std::time::Duration;

use identity_gateway_service::{CallContext, Peer, Transport};
use tonic::Request;

/// The call context of a gRPC request.
pub fn call_context<T>(request: &Request<T>) -> CallContext {
    let (peer, transport) = peer(request);
    CallContext {
        peer,
        transport,
        budget: budget(request),
    }
}

fn peer<T>(request: &Request<T>) -> (Peer, Transport) {
    #[cfg(unix)]
    if let Some(info) = request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
    {
        let peer = match &info.peer_cred {
            Some(cred) => Peer {
                uid: Some(cred.uid()),
                gid: Some(cred.gid()),
                pid: cred.pid(),
                ..Peer::default()
            },
            None => Peer::default(),
        };
        return (peer, Transport::UnixSocket);
    }
    #[cfg(windows)]
    if let Some(info) = request
        .extensions()
        .get::<crate::transport::pipe::PipeConnectInfo>()
    {
        let peer = Peer {
            pid: info.caller.pid.and_then(|pid| i32::try_from(pid).ok()),
            windows: Some(std::sync::Arc::clone(&info.caller.account)),
            ..Peer::default()
        };
        return (peer, Transport::NamedPipe);
    }
    match request.remote_addr() {
        Some(addr) => (
            Peer {
                addr: Some(addr),
                ..Peer::default()
            },
            Transport::Tcp,
        ),
        None => (Peer::default(), Transport::NamedPipe),
    }
}

/// Time left before the caller's deadline (`grpc-timeout`), if it set one,
/// less a small margin so the caller gets the gateway's DEADLINE_EXCEEDED
/// (which says what it was waiting for) rather than its own timer's.
pub(super) fn budget<T>(request: &Request<T>) -> Option<Duration> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
