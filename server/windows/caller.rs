//! Who is on the other end of a pipe connection: the client's process id
//! (`GetNamedPipeClientProcessId`) and, by impersonating the client for the
//! few calls it takes to read its token, its account: user SID and enabled
//! group SIDs, as the service crate's [`WindowsAccount`] the caller policy
//! matches. A token that cannot be read wholly (user and groups) leaves the
//! caller anonymous: a partial group list could let a later, wider rule
//! apply.
//!
//! The impersonation never spans an `.await`: impersonate, open the thread
//! token, revert, all on one thread; if reverting fails the process aborts
//! rather than go on serving under a client's identity.

use std::{ffi::c_void, os::windows::io::AsRawHandle, ptr, sync::Arc};

use identity_gateway_service::WindowsAccount;
use windows_sys::Win32::{
    Foundation::{CloseHandle, GetLastError, ERROR_INSUFFICIENT_BUFFER, HANDLE},
    Security::{
        GetTokenInformation, RevertToSelf, TokenGroups, TokenUser, TOKEN_GROUPS, TOKEN_QUERY,
        TOKEN_USER,
    },
    System::{
        Pipes::{GetNamedPipeClientProcessId, ImpersonateNamedPipeClient},
        SystemServices::{SE_GROUP_ENABLED, SE_GROUP_USE_FOR_DENY_ONLY},
        Threading::{GetCurrentProcess, GetCurrentThread, OpenProcessToken, OpenThreadToken},
    },
};

use super::account::sid_to_string;

/// SID of NT AUTHORITY\NETWORK, present in network logons' tokens.
pub const NETWORK_SID: &str = "S-1-5-2";

/// A pipe client as the server saw it at connect time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipeCaller {
    /// The client's process id, when Windows reported one.
    pub pid: Option<u32>,
    /// The client token's user and enabled group SIDs, shared by every call
    /// on the connection; `None` when the token could not be read.
    pub account: Option<Arc<WindowsAccount>>,
}

impl PipeCaller {
    /// True when the token carries NT AUTHORITY\NETWORK (a remote logon).
    pub fn is_network_logon(&self) -> bool {
        self.account
            .as_ref()
            .is_some_and(|a| a.has_sid(NETWORK_SID))
    }
}

/// The per-connection audit line's caller: `sid=... groups=... pid=...`.
impl std::fmt::Display for PipeCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.account {
            Some(account) => write!(f, "sid={} groups={}", account.user_sid, account.groups())?,
            None => f.write_str("sid=unknown")?,
        }
        if let Some(pid) = self.pid {
            write!(f, " pid={pid}")?;
        }
        Ok(())
    }
}

/// Identifies the client of a connected pipe instance. Call it once data
/// has arrived from the client (Windows lets a server impersonate only then).
pub fn identify(pipe: &impl AsRawHandle) -> PipeCaller {
    let handle = pipe.as_raw_handle() as HANDLE;
    let mut pid = 0u32;
    // SAFETY: `handle` is a connected pipe server handle we own.
    let pid = (unsafe { GetNamedPipeClientProcessId(handle, &mut pid) } != 0).then_some(pid);
    let token = match client_token(handle) {
        Ok(token) => token,
        Err(e) => {
            tracing::warn!(error = %e, ?pid, "cannot read the pipe client's token; to the policy it is anonymous");
            return PipeCaller { pid, account: None };
        }
    };
    let (Some(user_sid), Some(group_sids)) = (token_user(token.0), token_groups(token.0)) else {
        tracing::warn!(
            ?pid,
            "cannot read the pipe client's user or groups; to the policy it is anonymous"
        );
        return PipeCaller { pid, account: None };
    };
    PipeCaller {
        pid,
        account: Some(Arc::new(WindowsAccount {
            user_sid,
            group_sids,
        })),
    }
}

/// The user SID of this process (the account the gateway runs as).
pub fn process_user_sid() -> Option<String> {
    let mut token: HANDLE = ptr::null_mut();
    // SAFETY: the pseudo-handle of this process; the token is closed on drop.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return None;
    }
    let token = OwnedHandle(token);
    token_user(token.0)
}

struct OwnedHandle(HANDLE);

impl Drop for OwnedHandle {
    fn drop(&mut self) {
        // SAFETY: a handle this module opened.
        unsafe { CloseHandle(self.0) };
    }
}

/// Impersonates the client just long enough to open its token.
fn client_token(pipe: HANDLE) -> std::io::Result<OwnedHandle> {
    // SAFETY: `pipe` is a connected server end.
    if unsafe { ImpersonateNamedPipeClient(pipe) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut token: HANDLE = ptr::null_mut();
    // SAFETY: the current thread impersonates; OpenAsSelf = TRUE checks
    // access against the gateway's own identity.
    let opened = unsafe { OpenThreadToken(GetCurrentThread(), TOKEN_QUERY, 1, &mut token) };
    let open_error = std::io::Error::last_os_error();
    // SAFETY: ends the impersonation started above.
    if unsafe { RevertToSelf() } == 0 {
        tracing::error!(
            error = %std::io::Error::last_os_error(),
            "RevertToSelf failed after impersonating a pipe client; aborting"
        );
        std::process::abort();
    }
    if opened == 0 {
        return Err(open_error);
    }
    Ok(OwnedHandle(token))
}

/// The bytes of one token information class.
fn token_information(token: HANDLE, class: i32) -> Option<Vec<u64>> {
    let mut needed = 0u32;
    // SAFETY: a size query with no buffer.
    unsafe { GetTokenInformation(token, class, ptr::null_mut(), 0, &mut needed) };
    // SAFETY: reads the thread's last error.
    if needed == 0 || unsafe { GetLastError() } != ERROR_INSUFFICIENT_BUFFER {
        return None;
    }
    // u64 elements keep the buffer aligned for the structures inside.
    let mut buffer = vec![0u64; (needed as usize).div_ceil(8)];
    // SAFETY: the buffer holds `needed` bytes.
    let ok = unsafe {
        GetTokenInformation(
            token,
            class,
            buffer.as_mut_ptr() as *mut c_void,
            needed,
            &mut needed,
        )
    };
    (ok != 0).then_some(buffer)
}

fn token_user(token: HANDLE) -> Option<String> {
    let buffer = token_information(token, TokenUser)?;
    // SAFETY: GetTokenInformation(TokenUser) filled a TOKEN_USER.
    // and its SID lives in the same buffer.
    unsafe {
        let user = &*(buffer.as_ptr() as *const TOKEN_USER);
        sid_to_string(user.User.Sid)
    }
}

/// The enabled groups; `None` when the token's groups (or any of their
/// SIDs) could not be read.
fn token_groups(token: HANDLE) -> Option<Vec<String>> {
    let buffer = token_information(token, TokenGroups)?;
    // SAFETY: GetTokenInformation(TokenGroups) filled a TOKEN_GROUPS whose
    // array holds GroupCount entries.
    let groups = unsafe {
        let groups = &*(buffer.as_ptr() as *const TOKEN_GROUPS);
        std::slice::from_raw_parts(groups.Groups.as_ptr(), groups.GroupCount as usize)
    };
    groups
        .iter()
        .filter(|g| {
            g.Attributes & SE_GROUP_ENABLED as u32 != 0
                && g.Attributes & SE_GROUP_USE_FOR_DENY_ONLY as u32 == 0
        })
        // SAFETY: each group's SID lives in `buffer`.
        .map(|g| unsafe { sid_to_string(g.Sid) })
        .collect()
}
