//! The Unix domain socket: created 0660 (group configurable) in a 0750
//! directory; a stale socket of a dead instance is replaced, a live one makes
//! startup fail; the socket file is removed when the gateway stops.
//!
//! The directory the gateway creates gets the socket group too (members must
//! be able to reach the socket in it). An existing directory is checked: a
//! symbolic link or a world-writable directory someone else owns is refused
//! (anyone could replace the socket there). Modes and groups are set without
//! following symbolic links (on the opened directory, with `lchown` and
//! `fchmodat(AT_SYMLINK_NOFOLLOW)` on the socket).

use super::BindError;
use std::{
    ffi::CString,
    fs,
    io::{self, ErrorKind},
    os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use tokio::net::UnixListener;

/// Mode of the socket file.
pub const SOCKET_MODE: u32 = 0o660;
/// Mode of a socket directory the gateway creates.
pub const DIR_MODE: u32 = 0o750;

/// A bound socket that removes its file when dropped.
#[derive(Debug)]
pub struct BoundSocket {
    listener: Option<UnixListener>,
    guard: SocketFile,
}

/// Removes the socket file on drop.
#[derive(Debug)]
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl BoundSocket {
    pub fn path(&self) -> &Path {
        &self.guard.0
    }

    /// Takes the listener; the returned guard still removes the file.
    pub fn into_listener(mut self) -> UnixListenerWithGuard {
        UnixListenerWithGuard {
            listener: self.listener.take().expect("listener taken once"),
            _guard: self.guard,
        }
    }
}

/// A listener that removes its socket file when dropped.
#[derive(Debug)]
pub struct UnixListenerWithGuard {
    listener: UnixListener,
    _guard: SocketFile,
}

impl std::ops::Deref for UnixListenerWithGuard {
    type Target = UnixListener;
    fn deref(&self) -> &UnixListener {
        &self.listener
    }
}

/// Binds `path`, replacing a stale socket and refusing a live one. With
/// `group` (a name or a numeric gid), the socket and a directory the
/// gateway creates belong to that group.
pub fn bind(path: &Path, group: Option<&str>) -> Result<BoundSocket, BindError> {
    let gid = group.map(resolve_group).transpose()?;
    bind_with_gid(path, gid)
}

/// [`bind`] with the group already resolved.
pub fn bind_with_gid(path: &Path, gid: Option<u32>) -> Result<BoundSocket, BindError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        prepare_dir(dir, gid)?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(BindError::AlreadyServing(path.to_owned())),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    tracing::info!(socket = %path.display(), "replacing stale socket of a stopped instance");
                    fs::remove_file(path)
                        .map_err(|e| BindError::io("cannot remove stale socket", path, e))?;
                }
                Err(e) => return Err(BindError::io("cannot probe existing socket", path, e)),
            }
        }
        Ok(_) => return Err(BindError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(BindError::io("cannot inspect", path, e)),
    }
    let listener =
        UnixListener::bind(path).map_err(|e| BindError::io("cannot listen on", path, e))?;
    let guard = SocketFile(path.to_owned());
    // Group first, then the mode: the socket never admits a wider group.
    if let Some(gid) = gid {
        std::os::unix::fs::lchown(path, None, Some(gid))
            .map_err(|e| BindError::io("cannot give the socket to its group:", path, e))?;
    }
    chmod_nofollow(path, SOCKET_MODE)
        .map_err(|e| BindError::io("cannot set permissions on", path, e))?;
    Ok(BoundSocket {
        listener: Some(listener),
        guard,
    })
}

/// Creates the socket directory (mode 0750, the socket group), or checks
/// an existing one.
fn prepare_dir(dir: &Path, gid: Option<u32>) -> Result<(), BindError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)
                    .map_err(|e| BindError::io("cannot create socket directory", parent, e))?;
            }
            match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
                Ok(()) => {}
                // Created meanwhile: judge it like any existing directory.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return prepare_dir(dir, gid),
                Err(e) => return Err(BindError::io("cannot create socket directory", dir, e)),
            }
            // Set group and mode on the directory we opened, not on
            // whatever the path names by then.
            let opened = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(dir)
                .map_err(|e| BindError::io("cannot open the socket directory", dir, e))?;
            if let Some(gid) = gid {
                std::os::unix::fs::fchown(&opened, None, Some(gid)).map_err(|e| {
                    BindError::io("cannot give the socket directory to its group:", dir, e)
                })?;
            }
            opened
                .set_permissions(fs::Permissions::from_mode(DIR_MODE))
                .map_err(|e| BindError::io("cannot set permissions on", dir, e))?;
            Ok(())
        }
        Err(e) => Err(BindError::io("cannot inspect the socket directory", dir, e)),
        Ok(meta) if meta.file_type().is_symlink() => Err(BindError::UnsafeDirectory {
            path: dir.to_owned(),
            reason: "is a symbolic link; give the real directory".into(),
        }),
        Ok(meta) if !meta.is_dir() => Err(BindError::UnsafeDirectory {
            path: dir.to_owned(),
            reason: "is not a directory".into(),
        }),
        Ok(meta) => check_existing_dir(dir, &meta, gid),
    }
}

/// An existing socket directory: refused when anyone could replace the
/// socket in it; a warning when socket-group members cannot reach it.
fn check_existing_dir(dir: &Path, meta: &fs::Metadata, gid: Option<u32>) -> Result<(), BindError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let mode = meta.mode() & 0o7777;
    let world_writable = mode & 0o002 != 0;
    if world_writable && meta.uid() != euid {
        return Err(BindError::UnsafeDirectory {
            path: dir.to_owned(),
            reason: format!(
                "is world-writable (mode {mode:04o}) and owned by uid {}, not by the gateway (uid {euid}):                  any local user could replace the socket; use a directory the gateway owns                  (the default /run/identity-gateway is created 0750)",
                meta.uid()
            ),
        });
    }
    if world_writable && mode & 0o1000 == 0 {
        tracing::warn!(
            dir = %dir.display(),
            mode = format_args!("{mode:04o}"),
            "the socket directory is world-writable without the sticky bit: other users can replace the socket"
        );
    }
    if let Some(gid) = gid {
        let group_can_enter = (meta.gid() == gid && mode & 0o010 != 0) || mode & 0o001 != 0;
        if !group_can_enter {
            tracing::warn!(
                dir = %dir.display(),
                mode = format_args!("{mode:04o}"),
                dir_gid = meta.gid(),
                socket_gid = gid,
                "members of the socket group cannot enter the existing socket directory, so they cannot reach the socket                  (give the directory to the group with mode 0750, or let the gateway create it)"
            );
        }
    }
    Ok(())
}

/// `chmod` that fails on a symbolic link instead of following it.
fn chmod_nofollow(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: c_path is NUL-terminated and outlives the call.
    let rc = unsafe {
        libc::fchmodat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            mode as libc::mode_t,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => {
            // glibc < 2.32 cannot do it without following links; the path
            // is checked to be no link just before.
            let meta = fs::symlink_metadata(path)?;
            if meta.file_type().is_symlink() {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    "is a symbolic link, not the socket",
                ));
            }
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
        }
        _ => Err(e),
    }
}

/// A group name or numeric gid as a gid.
pub fn resolve_group(group: &str) -> Result<u32, BindError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = CString::new(group).map_err(|_| BindError::NoSuchGroup(group.to_string()))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: a zeroed group is a valid out-parameter for getgrnam_r.
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; we copy gr_gid at once.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(BindError::NoSuchGroup(group.to_string()));
    }
    Ok(entry.gr_gid)
}

impl futures::Stream for UnixListenerWithGuard {
    type Item = std::io::Result<tokio::net::UnixStream>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.listener
            .poll_accept(cx)
            .map(|r| Some(r.map(|(stream, _)| stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_socket_is_replaced_and_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/gw.sock");
        let first = bind(&path, None).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o750);
        let err = bind(&path, None).unwrap_err();
        assert!(
            matches!(err, BindError::AlreadyServing(_))
                && err.to_string().contains("already serving"),
            "{err}"
        );
        // A dead instance leaves its socket file behind.
        let BoundSocket { listener, guard } = first;
        drop(listener);
        std::mem::forget(guard);
        assert!(path.exists());
        let second = bind(&path, None).unwrap();
        drop(second);
        assert!(!path.exists(), "socket file removed on drop");
    }

    #[tokio::test]
    async fn a_created_directory_gets_the_group_and_an_existing_one_is_checked() {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::tempdir().unwrap();
        // As root any gid works; otherwise our own primary gid.
        // SAFETY: no preconditions.
        let gid = if root {
            4242
        } else {
            unsafe { libc::getegid() }
        };
        let path = dir.path().join("made/gw.sock");
        let bound = bind_with_gid(&path, Some(gid)).unwrap();
        let made = fs::symlink_metadata(path.parent().unwrap()).unwrap();
        assert_eq!((made.mode() & 0o7777, made.gid()), (DIR_MODE, gid));
        let sock = fs::symlink_metadata(&path).unwrap();
        assert_eq!((sock.mode() & 0o777, sock.gid()), (SOCKET_MODE, gid));
        drop(bound);

        // A symbolic link as the socket directory is refused.
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = bind_with_gid(&link.join("gw.sock"), None).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");

        // A world-writable directory of ours is accepted (with a warning).
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        drop(bind_with_gid(&open.join("gw.sock"), None).unwrap());
        if root {
            // Someone else's world-writable directory is refused.
            std::os::unix::fs::chown(&open, Some(1001), None).unwrap();
            let err = bind_with_gid(&open.join("gw.sock"), None).unwrap_err();
            assert!(
                matches!(err, BindError::UnsafeDirectory { .. })
                    && err.to_string().contains("world-writable"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_symlink_at_the_socket_path_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        fs::write(&target, b"x").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("gw.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            bind(&link, None).unwrap_err(),
            BindError::NotASocket(_)
        ));
        let err = chmod_nofollow(&link, 0o666).unwrap_err();
        assert!(!err.to_string().is_empty());
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the link's target was not touched");
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        assert_eq!(resolve_group("4242").unwrap(), 4242);
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert!(matches!(
            resolve_group("no-such-group-here").unwrap_err(),
            BindError::NoSuchGroup(_)
        ));
    }

    #[test]
    fn regular_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-socket");
        fs::write(&path, b"data").unwrap();
        assert!(matches!(
            bind(&path, None).unwrap_err(),
            BindError::NotASocket(_)
        ));
        assert_eq!(fs::read(&path).unwrap(), b"data");
    }
}
