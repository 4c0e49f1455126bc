//! Who is on the other end of a loopback TCP connection (gRPC `--tcp` and
//! the identity endpoint). The Unix socket has peer credentials; TCP has
//! none, so the gateway looks the connection up in the kernel's TCP table
//! (`/proc/net/tcp`, `/proc/net/tcp6`): the row whose local address is the
//! caller's end and whose remote address is ours belongs to the caller's
//! socket, and its `uid` column names the user that opened it. This is done
//! once per accepted connection, while the caller is certainly connected.
//!
//! The process holding that socket is then looked for (`/proc/<pid>/fd`,
//! which a gateway running as root can read for every process): its
//! effective gid and supplementary groups (`/proc/<pid>/status`) are what
//! the kernel would check against the socket file, and its pid goes to the
//! audit line, as on the Unix socket. When no process can be found (a
//! gateway not running as root, a caller that exited) the user database
//! stands in: the uid's primary group and the groups listing the user.
//!
//! A connection that cannot be found (not Linux, no `/proc`, a caller in
//! another network namespace) stays anonymous: the caller policy refuses
//! anonymous loopback callers unless `policy.allow_anonymous_loopback`.
//!
//! When a socket group is configured, an attributed caller's membership is
//! judged from those groups, so loopback admits exactly the users the socket
//! admits.

#[cfg(unix)]
use std::ffi::CStr;
use std::{
    fmt, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    pin::Pin,
    task::{Context, Poll},
};

use futures::Stream;
use identity_gateway_service::{Attribution, Peer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

/// Where the kernel's process and TCP tables are, normally.
pub const PROC: &str = "/proc";

/// Attributes loopback TCP connections to local users.
#[derive(Debug, Clone)]
pub struct Attributor {
    /// `/proc`: `net/tcp`, `net/tcp6` and the processes.
    proc: PathBuf,
    /// The socket group's gid, when one is configured.
    socket_gid: Option<u32>,
    /// The gateway's own uid (always admitted, like root).
    own_uid: u32,
}

impl Attributor {
    /// Reads `/proc`; checks membership of `socket_gid` when given.
    pub fn new(socket_gid: Option<u32>) -> Self {
        Self {
            proc: PathBuf::from(PROC),
            socket_gid,
            own_uid: own_uid(),
        }
    }

    /// Reads `dir` instead of `/proc` (tests point it at an empty directory
    /// to see an unattributable caller).
    pub fn with_proc(mut self, dir: impl Into<PathBuf>) -> Self {
        self.proc = dir.into();
        self
    }

    /// The caller of a connection from `remote` to our `local` address.
    pub fn tcp_peer(&self, local: SocketAddr, remote: SocketAddr) -> Peer {
        let Some((uid, inode)) = find_owner(&self.proc.join("net"), local, remote) else {
            return Peer {
                addr: Some(remote),
                ..Peer::default()
            };
        };
        let (pid, creds) = match find_process(&self.proc, inode) {
            Some((pid, creds)) => (Some(pid), Some(creds)),
            None => (None, lookup_user(uid)),
        };
        let socket_group_member = self.socket_gid.map(|gid| {
            uid == 0
                || uid == self.own_uid
                || creds
                    .as_ref()
                    .is_some_and(|c| c.gid == gid || c.groups.contains(&gid))
        });
        Peer {
            uid: Some(uid),
            gid: creds.as_ref().map(|c| c.gid),
            pid,
            addr: Some(remote),
            attribution: Attribution::TcpTable,
            socket_group_member,
            account: None,
        }
    }

    /// Attributes an accepted connection (reads files: call off the
    /// async workers).
    pub fn attribute(&self, stream: &TcpStream) -> io::Result<TcpCaller> {
        let local = stream.local_addr()?;
        let remote = stream.peer_addr()?;
        Ok(TcpCaller {
            local,
            remote,
            peer: self.tcp_peer(local, remote),
        })
    }
}

/// A loopback TCP connection's caller, found at accept time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpCaller {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub peer: Peer,
}

impl super::serve::PeerLabel for TcpCaller {
    fn peer_label(&self) -> String {
        format!("{} tcp={}", self.peer, self.remote)
    }
}

/// A TCP stream with its caller, for tonic (as the request's connect info).
#[derive(Debug)]
pub struct AttributedTcp {
    io: TcpStream,
    caller: TcpCaller,
}

impl tonic::transport::server::Connected for AttributedTcp {
    type ConnectInfo = TcpCaller;
    fn connect_info(&self) -> TcpCaller {
        self.caller.clone()
    }
}

impl AsyncRead for AttributedTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for AttributedTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The accepted, attributed connections of `listener`, for tonic.
pub fn incoming(
    listener: TcpListener,
    attributor: Attributor,
) -> impl Stream<Item = io::Result<AttributedTcp>> + Send + 'static {
    futures::stream::unfold(
        (listener, attributor),
        |(listener, attributor)| async move {
            let accepted = match listener.accept().await {
                Ok((io, _)) => accept(io, &attributor).await,
                Err(e) => Err(e),
            };
            Some((accepted, (listener, attributor)))
        },
    )
}

async fn accept(io: TcpStream, attributor: &Attributor) -> io::Result<AttributedTcp> {
    let _ = io.set_nodelay(true);
    let local = io.local_addr()?;
    let remote = io.peer_addr()?;
    let a = attributor.clone();
    // Reading the TCP tables is file I/O: off the async workers.
    let peer = tokio::task::spawn_blocking(move || a.tcp_peer(local, remote))
        .await
        .map_err(io::Error::other)?;
    Ok(AttributedTcp {
        io,
        caller: TcpCaller {
            local,
            remote,
            peer,
        },
    })
}

/// A TCP listener whose connections come with their caller, for axum (the
/// identity endpoint): `ConnectInfo<TcpCaller>`.
pub struct AttributedListener {
    listener: TcpListener,
    attributor: Attributor,
}

impl fmt::Debug for AttributedListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttributedListener")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl AttributedListener {
    pub fn new(listener: TcpListener, attributor: Attributor) -> Self {
        Self {
            listener,
            attributor,
        }
    }
}

impl axum::serve::Listener for AttributedListener {
    type Io = TcpStream;
    type Addr = TcpCaller;

    async fn accept(&mut self) -> (TcpStream, TcpCaller) {
        loop {
            match self.listener.accept().await {
                Ok((io, _)) => match accept(io, &self.attributor).await {
                    Ok(AttributedTcp { io, caller }) => return (io, caller),
                    Err(e) => {
                        tracing::debug!(%e, "a loopback connection went away before it was attributed")
                    }
                },
                Err(e) => {
                    tracing::warn!(%e, "identity endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<TcpCaller> {
        let local = self.listener.local_addr()?;
        Ok(TcpCaller {
            local,
            remote: local,
            peer: Peer::default(),
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, AttributedListener>>
    for TcpCaller
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, AttributedListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// The uid owning the socket at `remote` connected to our `local`, and the
/// socket's inode, from the TCP tables under `proc_net`.
fn find_owner(proc_net: &Path, local: SocketAddr, remote: SocketAddr) -> Option<(u32, u64)> {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (local, remote) = (canonical(local), canonical(remote));
    let tables: &[&str] = match remote.ip() {
        IpAddr::V4(_) => &["tcp", "tcp6"],
        IpAddr::V6(_) => &["tcp6", "tcp"],
    };
    tables.iter().find_map(|name| {
        let text = std::fs::read_to_string(proc_net.join(name)).ok()?;
        owner_in_table(&text, local, remote)
    })
}

/// The uid and inode of the row whose local address is the caller's end
/// (`remote`) and whose remote address is ours (`local`). Rows without an
/// inode (TIME_WAIT, orphans) belong to no process and are skipped.
fn owner_in_table(text: &str, local: SocketAddr, remote: SocketAddr) -> Option<(u32, u64)> {
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        if fields.len() < 10 {
            return None;
        }
        let row_local = parse_addr(fields[1])?;
        let row_remote = parse_addr(fields[2])?;
        if row_local != remote || row_remote != local || fields[9] == "0" {
            return None;
        }
        Some((fields[7].parse().ok()?, fields[9].parse().ok()?))
    })
}

/// The process holding socket `inode` (its pid, effective gid and
/// supplementary groups), when this process may look (root may).
fn find_process(proc: &Path, inode: u64) -> Option<(i32, Creds)> {
    let wanted = format!("socket:[{inode}]");
    for entry in std::fs::read_dir(proc).ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str())
        });
        if holds {
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            return parse_status(&status).map(|creds| (pid, creds));
        }
    }
    None
}

/// `Gid:` (real, effective, saved, fs) and `Groups:` of `/proc/<pid>/status`.
fn parse_status(status: &str) -> Option<Creds> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|n| n.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
    };
    let gids = field("Gid:")?;
    Some(Creds {
        gid: *gids.get(1)?,
        groups: field("Groups:").unwrap_or_default(),
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6), as the kernel
/// prints them: each 32-bit word in the host's byte order.
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip.to_canonical(), port))
}

/// A caller's (effective or primary) group and supplementary groups.
#[derive(Debug, PartialEq, Eq)]
struct Creds {
    gid: u32,
    groups: Vec<u32>,
}

#[cfg(unix)]
fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(not(unix))]
fn own_uid() -> u32 {
    u32::MAX
}

#[cfg(not(unix))]
fn lookup_user(_uid: u32) -> Option<Creds> {
    None
}

/// Looks `uid` up in the user database (passwd, group): `None` for a uid
/// without an entry.
#[cfg(unix)]
fn lookup_user(uid: u32) -> Option<Creds> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: a zeroed passwd is a valid out-parameter for getpwuid_r.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives its use
    // below (the strings in pwd point into it).
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    let gid = pwd.pw_gid;
    // SAFETY: pw_name points to a NUL-terminated string inside buf.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) }.to_owned();
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut count = groups.len() as libc::c_int;
        // SAFETY: name is NUL-terminated; groups has room for count entries.
        let rc = unsafe {
            libc::getgrouplist(
                name.as_ptr(),
                gid as _,
                groups.as_mut_ptr().cast(),
                &mut count,
            )
        };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            break;
        }
        if groups.len() >= 65536 {
            groups.clear();
            break;
        }
        let wanted = (count.max(0) as usize).max(groups.len() * 2);
        groups.resize(wanted, 0);
    }
    Some(Creds { gid, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A2B4 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1001        0 2222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:A2B4 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:A2B5 0100007F:1F90 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0000000000000000
";

    #[test]
    fn the_callers_row_is_found_by_its_address_pair() {
        let ours: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let theirs: SocketAddr = "127.0.0.1:41652".parse().unwrap();
        assert_eq!(owner_in_table(TABLE, ours, theirs), Some((1001, 2222)));
        // Our own end of the connection is not the caller.
        assert_eq!(owner_in_table(TABLE, theirs, ours), Some((0, 3333)));
        // TIME_WAIT rows (no inode) belong to nobody.
        let gone: SocketAddr = "127.0.0.1:41653".parse().unwrap();
        assert_eq!(owner_in_table(TABLE, ours, gone), None);
    }

    #[test]
    fn process_status_gives_the_effective_gid_and_groups() {
        let status = "Name:\tx\nUid:\t1001\t1001\t1001\t1001\nGid:\t1001\t1005\t1001\t1001\nGroups:\t4242 27 \n";
        assert_eq!(
            parse_status(status),
            Some(Creds {
                gid: 1005,
                groups: vec![4242, 27]
            })
        );
        assert_eq!(
            parse_status("Gid:\t1\t2\t3\t4\nGroups:\n"),
            Some(Creds {
                gid: 2,
                groups: vec![]
            })
        );
    }

    #[test]
    fn ipv6_addresses_parse_word_by_word() {
        let loopback = parse_addr("00000000000000000000000001000000:1F90").unwrap();
        assert_eq!(loopback, "[::1]:8080".parse().unwrap());
        let mapped = parse_addr("0000000000000000FFFF00000100007F:0050").unwrap();
        assert_eq!(mapped, "127.0.0.1:80".parse().unwrap());
        assert!(parse_addr("zz:0").is_none());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_live_loopback_connection_is_attributed_to_its_owner() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server_side, _) = listener.accept().await.unwrap();
        let me = own_uid();
        let caller = Attributor::new(None).attribute(&server_side).unwrap();
        assert_eq!(caller.remote, client.local_addr().unwrap());
        assert_eq!(caller.peer.uid, Some(me));
        assert_eq!(caller.peer.attribution, Attribution::TcpTable);
        // The process holding the socket is this one (findable when this
        // test runs as root, or it is ours anyway).
        assert_eq!(caller.peer.pid, Some(std::process::id() as i32));
        // SAFETY: no preconditions.
        assert_eq!(caller.peer.gid, Some(unsafe { libc::getegid() }));
        let empty = tempfile::tempdir().unwrap();
        let blind = Attributor::new(None)
            .with_proc(empty.path())
            .attribute(&server_side)
            .unwrap();
        assert_eq!(blind.peer.uid, None);
        assert_eq!(blind.peer.addr, Some(caller.remote));
    }

    #[test]
    fn root_is_in_every_socket_group() {
        let a = Attributor {
            proc: PathBuf::from(PROC),
            socket_gid: Some(4242),
            own_uid: 12345,
        };
        let peer = |uid| {
            let user = lookup_user(uid);
            uid == 0
                || uid == a.own_uid
                || user.is_some_and(|u| u.gid == 4242 || u.groups.contains(&4242))
        };
        assert!(peer(0));
        assert!(peer(12345));
        assert!(
            !peer(4_000_000),
            "a uid without a passwd entry is in no group"
        );
        assert_eq!(lookup_user(0).map(|u| u.gid), Some(0));
    }
}
