//! Who is calling, over what, and by when: the [`CallContext`] every
//! operation takes. Adapters build it from what their transport knows (peer
//! credentials, the `grpc-timeout` header, a TCP address); operations never
//! look at a transport themselves.

use std::{
    fmt,
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::policy::Caller;

/// The transport a call arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// gRPC on the Unix domain socket.
    UnixSocket,
    /// gRPC on the Windows named pipe.
    NamedPipe,
    /// gRPC on loopback TCP.
    Tcp,
    /// The App Service-compatible HTTP identity endpoint.
    IdentityEndpoint,
}

/// The caller as its transport saw it. Cheap to copy; formatted only when
/// an audit line is actually written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peer {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<i32>,
    pub addr: Option<SocketAddr>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.uid, self.gid, self.pid, self.addr) {
            (Some(uid), Some(gid), Some(pid), _) => write!(f, "uid={uid} gid={gid} pid={pid}"),
            (Some(uid), Some(gid), None, _) => write!(f, "uid={uid} gid={gid}"),
            (_, _, _, Some(addr)) => write!(f, "tcp={addr}"),
            _ => f.write_str("unknown"),
        }
    }
}

/// One call: the caller, its transport and the time it allows.
#[derive(Debug, Clone, Copy)]
pub struct CallContext {
    pub peer: Peer,
    pub transport: Transport,
    /// Time left before the caller's deadline, if it set one.
    pub budget: Option<Duration>,
    /// When the call arrived (for the latency histogram only; deadlines
    /// and token lifetimes use the injected clock).
    pub started: Instant,
}

impl CallContext {
    /// The identity the caller policy judges.
    pub fn policy_caller(&self) -> Caller {
        Caller {
            uid: self.peer.uid,
            gid: self.peer.gid,
        }
    }
}
