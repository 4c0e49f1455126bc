//! Who is calling, over what, and by when: the [`CallContext`] every
//! operation takes. Adapters build it from what their transport knows (peer
//! credentials, the `grpc-timeout` header, a TCP address); operations never
//! look at a transport themselves.

use std::{fmt, net::SocketAddr, sync::Arc, time::Duration};

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

/// A Windows named-pipe client's account, read from its token once per
/// connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowsAccount {
    /// The token's user SID (`S-1-5-21-...-1001`); `None` when it could not
    /// be read (the caller then matches no `accounts` rule).
    pub user_sid: Option<String>,
    /// The token's enabled group SIDs (deny-only groups left out).
    pub group_sids: Vec<String>,
}

impl WindowsAccount {
    /// Is `sid` this account's user or one of its enabled groups?
    pub fn has_sid(&self, sid: &str) -> bool {
        self.user_sid
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(sid))
            || self.group_sids.iter().any(|g| g.eq_ignore_ascii_case(sid))
    }
}

/// The caller as its transport saw it. Cheap to clone (the Windows account
/// is shared); formatted only when an audit line is actually written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<i32>,
    pub addr: Option<SocketAddr>,
    /// A Windows pipe client's account.
    pub windows: Option<Arc<WindowsAccount>>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(account) = &self.windows {
            f.write_str("sid=")?;
            f.write_str(account.user_sid.as_deref().unwrap_or("unknown"))?;
            if let Some(pid) = self.pid {
                write!(f, " pid={pid}")?;
            }
            return Ok(());
        }
        match (self.uid, self.gid, self.pid, self.addr) {
            (Some(uid), Some(gid), Some(pid), _) => write!(f, "uid={uid} gid={gid} pid={pid}"),
            (Some(uid), Some(gid), None, _) => write!(f, "uid={uid} gid={gid}"),
            (_, _, _, Some(addr)) => write!(f, "tcp={addr}"),
            _ => f.write_str("unknown"),
        }
    }
}

/// One call: the caller, its transport and the time it allows.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub peer: Peer,
    pub transport: Transport,
    /// Time left before the caller's deadline, if it set one.
    pub budget: Option<Duration>,
}

impl CallContext {
    /// The identity the caller policy judges.
    pub fn policy_caller(&self) -> Caller {
        Caller {
            uid: self.peer.uid,
            gid: self.peer.gid,
            windows: self.peer.windows.clone(),
        }
    }
}
