//! Who is calling, over what, and by when: the [`CallContext`] every
//! operation takes. Adapters build it from what their transport knows (peer
//! credentials, a pipe client's account, the `grpc-timeout` header, a TCP
//! address); operations never look at a transport themselves.

use std::{
    fmt,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use identity_gateway_azure::sql::SessionOwner;

use crate::{account::WindowsAccount, policy::Caller};

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

/// How the transport learned who the caller is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribution {
    /// It did not: an anonymous caller.
    #[default]
    None,
    /// The kernel's peer credentials of the Unix socket (`SO_PEERCRED`).
    PeerCredentials,
    /// The owner of the connecting loopback socket in the kernel's TCP table
    /// (`/proc/net/tcp`, `/proc/net/tcp6`); the gid is the user's primary group.
    TcpTable,
    /// The named-pipe client's token (user and enabled group SIDs), read
    /// once per connection.
    PipeClientToken,
}

/// The caller as its transport saw it. Cheap to clone (the Windows account
/// is shared by every call of a connection); formatted only when an audit
/// line is actually written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<i32>,
    /// A named-pipe caller's account; `None` for every other transport, and
    /// for pipe callers whose token could not be read (anonymous).
    pub account: Option<Arc<WindowsAccount>>,
    pub addr: Option<SocketAddr>,
    pub attribution: Attribution,
    /// Loopback callers only, when a socket group is configured: whether the
    /// attributed user is a member (loopback admits whom the socket admits).
    pub socket_group_member: Option<bool>,
}

/// Which of a peer's attributes tells callers apart for per-caller state
/// (admission budgets, SQL sessions): the uid when the kernel gave one, else
/// a pipe caller's user SID, else the TCP address. One precedence for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerId<'a> {
    Uid(u32),
    /// A named-pipe caller's user SID, as its token spelled it.
    Sid(&'a str),
    Ip(std::net::IpAddr),
    Unknown,
}

impl Peer {
    /// What tells this caller apart from others (see [`PeerId`]).
    pub fn peer_id(&self) -> PeerId<'_> {
        match (self.uid, &self.account, self.addr) {
            (Some(uid), _, _) => PeerId::Uid(uid),
            (None, Some(account), _) => PeerId::Sid(&account.user_sid),
            (None, None, Some(addr)) => PeerId::Ip(addr.ip()),
            (None, None, None) => PeerId::Unknown,
        }
    }

    /// Whose pooled SQL sessions this caller may reuse: its uid or its user
    /// SID; `None` (never pooled) for anyone else: an address is no owner.
    pub fn session_owner(&self) -> Option<SessionOwner> {
        match self.peer_id() {
            PeerId::Uid(uid) => Some(SessionOwner::uid(uid)),
            PeerId::Sid(sid) => Some(SessionOwner::sid(sid)),
            PeerId::Ip(_) | PeerId::Unknown => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(account) = &self.account {
            write!(f, "sid={}", account.user_sid)?;
            if let Some(pid) = self.pid {
                write!(f, " pid={pid}")?;
            }
            return Ok(());
        }
        match (self.uid, self.gid, self.pid) {
            (Some(uid), Some(gid), Some(pid)) => write!(f, "uid={uid} gid={gid} pid={pid}")?,
            (Some(uid), Some(gid), None) => write!(f, "uid={uid} gid={gid}")?,
            (Some(uid), None, _) => write!(f, "uid={uid}")?,
            (None, _, Some(pid)) => write!(f, "unattributed pid={pid}")?,
            (None, _, None) => f.write_str("unattributed")?,
        }
        if let Some(addr) = self.addr {
            write!(f, " tcp={addr}")?;
        }
        if self.socket_group_member == Some(false) {
            f.write_str(" (not in the socket group)")?;
        }
        Ok(())
    }
}

/// One call: the caller, its transport and the time it allows.
#[derive(Debug, Clone)]
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
    pub fn policy_caller(&self) -> Caller<'_> {
        Caller {
            uid: self.peer.uid,
            gid: self.peer.gid,
            account: self.peer.account.as_deref(),
            transport: self.transport,
            addr: self.peer.addr,
            outside_socket_group: self.peer.socket_group_member == Some(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_say_how_they_were_attributed() {
        let unix = Peer {
            uid: Some(1000),
            gid: Some(1000),
            pid: Some(42),
            attribution: Attribution::PeerCredentials,
            ..Peer::default()
        };
        assert_eq!(unix.to_string(), "uid=1000 gid=1000 pid=42");
        let addr = Some(SocketAddr::from(([127, 0, 0, 1], 5000)));
        let tcp = Peer {
            uid: Some(1001),
            gid: Some(100),
            addr,
            attribution: Attribution::TcpTable,
            socket_group_member: Some(false),
            ..Peer::default()
        };
        assert_eq!(
            tcp.to_string(),
            "uid=1001 gid=100 tcp=127.0.0.1:5000 (not in the socket group)"
        );
        let anonymous = Peer {
            addr,
            ..Peer::default()
        };
        assert_eq!(anonymous.to_string(), "unattributed tcp=127.0.0.1:5000");
        let pipe = Peer {
            pid: Some(7),
            account: Some(Arc::new(WindowsAccount {
                user_sid: "S-1-5-21-1-2-3-1001".into(),
                group_sids: vec!["S-1-5-11".into()],
            })),
            attribution: Attribution::PipeClientToken,
            ..Peer::default()
        };
        assert_eq!(pipe.to_string(), "sid=S-1-5-21-1-2-3-1001 pid=7");
        let ctx = CallContext {
            peer: pipe,
            transport: Transport::NamedPipe,
            budget: None,
            started: Instant::now(),
        };
        let caller = ctx.policy_caller();
        assert_eq!(
            caller.account.map(|a| a.user_sid.as_str()),
            Some("S-1-5-21-1-2-3-1001")
        );
        assert_eq!(caller.uid, None);
        assert_eq!(
            ctx.peer.session_owner(),
            Some(SessionOwner::sid("S-1-5-21-1-2-3-1001"))
        );
    }

    #[test]
    fn session_owners_are_uids_or_sids_never_addresses() {
        let account = Some(Arc::new(WindowsAccount {
            user_sid: "S-1-5-21-1-2-3-1001".into(),
            group_sids: Vec::new(),
        }));
        let unix = Peer {
            uid: Some(1000),
            ..Peer::default()
        };
        assert_eq!(unix.session_owner(), Some(SessionOwner::uid(1000)));
        let pipe = Peer {
            account: account.clone(),
            ..Peer::default()
        };
        assert_eq!(
            pipe.session_owner(),
            Some(SessionOwner::sid("s-1-5-21-1-2-3-1001"))
        );
        let tcp = Peer {
            addr: Some(SocketAddr::from(([127, 0, 0, 1], 5000))),
            ..Peer::default()
        };
        assert_eq!(tcp.session_owner(), None);
        assert_eq!(Peer::default().session_owner(), None);
    }
}
