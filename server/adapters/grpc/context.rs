//! What the gRPC transport knows about a call, as a service
//! [`CallContext`]: the caller (peer credentials on the Unix socket, the
//! client's SIDs and pid on the Windows pipe, the address on TCP), the
//! transport, and the time left before the caller's deadline
//! (`grpc-timeout`).

use std::time::Duration;

use identity_gateway_service::{Attribution, CallContext, Peer, Transport};
use tonic::Request;

use crate::transport::peer::TcpCaller;

/// The call context of a gRPC request.
pub fn call_context<T>(request: &Request<T>) -> CallContext {
    let (peer, transport) = peer(request);
    CallContext {
        peer,
        transport,
        budget: budget(request),
        started: std::time::Instant::now(),
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
                attribution: Attribution::PeerCredentials,
                ..Peer::default()
            },
            None => Peer::default(),
        };
        return (peer, Transport::UnixSocket);
    }
    // The pipe client's account, read once per connection (its groups are
    // in the transport's `pipe client connected` audit line); each call
    // shares it (an Arc clone) and the policy matches it.
    #[cfg(windows)]
    if let Some(info) = request
        .extensions()
        .get::<crate::transport::pipe::PipeConnectInfo>()
    {
        let account = info.caller.account.clone();
        let peer = Peer {
            pid: info.caller.pid.and_then(|pid| i32::try_from(pid).ok()),
            attribution: if account.is_some() {
                Attribution::PipeClientToken
            } else {
                Attribution::None
            },
            account,
            ..Peer::default()
        };
        return (peer, Transport::NamedPipe);
    }
    // Loopback TCP connections are attributed once, at accept.
    if let Some(caller) = request.extensions().get::<TcpCaller>() {
        return (caller.peer.clone(), Transport::Tcp);
    }
    match request.remote_addr() {
        // A TCP listener that did not attribute (not served by the App):
        // an anonymous caller.
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
    crate::transport::serve::parse_grpc_timeout(raw)
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
