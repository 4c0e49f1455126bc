//! Dialing the gateway's Windows named pipe.
//!
//! - `ERROR_PIPE_BUSY` (every waiting instance just taken by a burst of
//!   clients) is retried with a short backoff for at most
//!   [`ConnectOptions::busy_timeout`](crate::ConnectOptions).
//! - The pipe's **owner** is checked before a byte is sent: whoever created
//!   the pipe's first instance owns it, and only a privileged process can
//!   name another account as owner. A pipe owned by another ordinary user
//!   is an impostor that squatted the name (it would receive our requests
//!   and answer with tokens of its choosing) and is refused. Accepted by
//!   default: SYSTEM, LocalService, NetworkService, virtual service accounts
//!   (`NT SERVICE\*`), BUILTIN\Administrators (elevated creators) and the
//!   calling user itself (a gateway the user runs, e.g. `--emulator`).
//!   The owner, unlike the server process's token, is readable by
//!   non-administrators: clients open the pipe with `READ_CONTROL`.
//! - The client opens the pipe with `SECURITY_IDENTIFICATION`, so the
//!   gateway may read who is calling but cannot act as the caller.

use std::{ffi::c_void, io, os::windows::io::AsRawHandle, ptr, time::Duration};

use tokio::net::windows::named_pipe::{ClientOptions, NamedPipeClient};
use windows_sys::Win32::{
    Foundation::{CloseHandle, LocalFree, ERROR_PIPE_BUSY, HANDLE},
    Security::{
        Authorization::{ConvertSidToStringSidW, GetSecurityInfo, SE_FILE_OBJECT},
        GetTokenInformation, TokenUser, OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID,
        TOKEN_QUERY, TOKEN_USER,
    },
    System::{
        Pipes::GetNamedPipeServerProcessId,
        Threading::{GetCurrentProcess, OpenProcessToken},
    },
};

use crate::ConnectOptions;

/// Owners a gateway pipe may have when the caller names none: LocalSystem,
/// LocalService, NetworkService, BUILTIN\Administrators.
const TRUSTED_OWNERS: &[&str] = &["S-1-5-18", "S-1-5-19", "S-1-5-20", "S-1-5-32-544"];
/// Virtual service accounts (`NT SERVICE\<name>`).
const SERVICE_ACCOUNT_PREFIX: &str = "S-1-5-80-";

/// Opens `name`, retrying while every instance is busy, and checks its owner.
pub(crate) async fn open(name: &str, options: &ConnectOptions) -> io::Result<NamedPipeClient> {
    let deadline = tokio::time::Instant::now() + options.busy_timeout;
    let mut delay = Duration::from_millis(2);
    let pipe = loop {
        match ClientOptions::new().open(name) {
            Ok(pipe) => break pipe,
            Err(e)
                if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(50));
            }
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "all pipe instances stayed busy for {:?} ({e})",
                        options.busy_timeout
                    ),
                ));
            }
            Err(e) => return Err(e),
        }
    };
    check_owner(&pipe, options)?;
    Ok(pipe)
}

fn check_owner(pipe: &NamedPipeClient, options: &ConnectOptions) -> io::Result<()> {
    let handle = pipe.as_raw_handle() as HANDLE;
    let owner = pipe_owner(handle)?;
    let trusted = match &options.pipe_owners {
        Some(expected) => expected.iter().any(|e| e.eq_ignore_ascii_case(&owner)),
        None => {
            TRUSTED_OWNERS.contains(&owner.as_str())
                || owner.starts_with(SERVICE_ACCOUNT_PREFIX)
                || current_user_sid().is_some_and(|me| me == owner)
        }
    };
    if trusted {
        return Ok(());
    }
    let mut pid = 0u32;
    // SAFETY: a connected client handle.
    let pid = if unsafe { GetNamedPipeServerProcessId(handle, &mut pid) } != 0 {
        format!(" (server process {pid})")
    } else {
        String::new()
    };
    let expected = match &options.pipe_owners {
        Some(list) => list.join(", "),
        None => "SYSTEM, a service account, Administrators or the calling user".into(),
    };
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "refusing the pipe: it is owned by {owner}{pid}, expected {expected}; another \
             local user may have created the pipe name before the gateway"
        ),
    ))
}

/// The pipe object's owner SID.
fn pipe_owner(handle: HANDLE) -> io::Result<String> {
    let mut owner: PSID = ptr::null_mut();
    let mut descriptor: PSECURITY_DESCRIPTOR = ptr::null_mut();
    // SAFETY: `handle` is open with READ_CONTROL; the system allocates
    // `descriptor` (freed below) and points `owner` into it.
    let rc = unsafe {
        GetSecurityInfo(
            handle,
            SE_FILE_OBJECT,
            OWNER_SECURITY_INFORMATION,
            &mut owner,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            &mut descriptor,
        )
    };
    if rc != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "cannot read the pipe's owner to check it is the gateway: {}",
                io::Error::from_raw_os_error(rc as i32)
            ),
        ));
    }
    let sid = sid_string(owner);
    // SAFETY: allocated by GetSecurityInfo.
    unsafe { LocalFree(descriptor) };
    sid.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the pipe has no owner; refusing it",
        )
    })
}

/// This process's user SID.
fn current_user_sid() -> Option<String> {
    let mut token: HANDLE = ptr::null_mut();
    // SAFETY: the pseudo-handle of this process; `token` is closed below.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return None;
    }
    let mut buffer = [0u64; 64];
    let mut needed = 0u32;
    // SAFETY: the buffer holds 512 bytes, enough for TOKEN_USER and any SID.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenUser,
            buffer.as_mut_ptr() as *mut c_void,
            std::mem::size_of_val(&buffer) as u32,
            &mut needed,
        )
    };
    // SAFETY: opened above.
    unsafe { CloseHandle(token) };
    if ok == 0 {
        return None;
    }
    // SAFETY: GetTokenInformation(TokenUser) filled a TOKEN_USER.
    let user = unsafe { &*(buffer.as_ptr() as *const TOKEN_USER) };
    sid_string(user.User.Sid)
}

fn sid_string(sid: PSID) -> Option<String> {
    if sid.is_null() {
        return None;
    }
    let mut text: *mut u16 = ptr::null_mut();
    // SAFETY: `sid` is valid; the system allocates `text`.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 || text.is_null() {
        return None;
    }
    // SAFETY: NUL-terminated UTF-16 from the system, freed right after.
    let out = unsafe {
        let len = (0..).take_while(|&i| *text.add(i) != 0).count();
        let s = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
        LocalFree(text as *mut c_void);
        s
    };
    Some(out)
}
