//! The Unix domain socket: created 0660 (group configurable) in a 0750
//! directory; a stale socket of a dead instance is replaced, a live one makes
//! startup fail; the socket file is removed when the gateway stops.

use super::BindError;
use std::{
    ffi::CString,
    fs,
    io::ErrorKind,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
};

use tokio::net::UnixListener;

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

/// Binds `path`, replacing a stale socket and refusing a live one.
pub fn bind(path: &Path, group: Option<&str>) -> Result<BoundSocket, BindError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::create_dir_all(dir)
                .map_err(|e| BindError::io("cannot create socket directory", dir, e))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o750))
                .map_err(|e| BindError::io("cannot set permissions on", dir, e))?;
        }
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
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))
        .map_err(|e| BindError::io("cannot set permissions on", path, e))?;
    if let Some(group) = group {
        chown_group(path, group)?;
    }
    Ok(BoundSocket {
        listener: Some(listener),
        guard,
    })
}

fn chown_group(path: &Path, group: &str) -> Result<(), BindError> {
    let gid = match group.parse::<u32>() {
        Ok(gid) => gid,
        Err(_) => {
            let name =
                CString::new(group).map_err(|_| BindError::NoSuchGroup(group.to_string()))?;
            // SAFETY: getgrnam reads a NUL-terminated name and returns a
            // pointer into static storage or null; we copy gr_gid at once.
            let entry = unsafe { libc::getgrnam(name.as_ptr()) };
            if entry.is_null() {
                return Err(BindError::NoSuchGroup(group.to_string()));
            }
            // SAFETY: non-null pointer just returned by getgrnam.
            unsafe { (*entry).gr_gid }
        }
    };
    std::os::unix::fs::chown(path, None, Some(gid))
        .map_err(|e| BindError::io("cannot give the socket to its group:", path, e))
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
