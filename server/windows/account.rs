//! Windows account names and SIDs: an account name (`DOMAIN\user`,
//! `BUILTIN\Users`, `.\svc-app`, `NT AUTHORITY\NETWORK SERVICE`) or SID
//! string to the canonical SID string (`LookupAccountNameW`,
//! `ConvertStringSidToSidW`), and a binary SID to its string
//! (`ConvertSidToStringSidW`).
//!
//! Used where configuration names accounts: the pipe's clients
//! (`socket_group`, `pipe_access`) and the caller policy's `accounts`, whose
//! [`AccountResolver`] this module provides ([`policy_accounts`]). Names are
//! looked up when a configuration is loaded, never per call. Elsewhere than
//! Windows the policy gets `identity_gateway_service::SidStringsOnly`: SID
//! strings are kept, names refused.

use identity_gateway_service::AccountResolver;
#[cfg(not(windows))]
use identity_gateway_service::SidStringsOnly;

/// The account resolver the caller policy compiles with on this platform.
pub fn policy_accounts() -> &'static dyn AccountResolver {
    #[cfg(windows)]
    {
        &imp::LookupAccounts
    }
    #[cfg(not(windows))]
    {
        &SidStringsOnly
    }
}

#[cfg(windows)]
pub use imp::{resolve_account, sid_to_string, LookupAccounts};

#[cfg(windows)]
mod imp {
    use std::{ffi::c_void, ptr};

    use identity_gateway_service::account::is_sid_string;
    use windows_sys::Win32::{
        Foundation::{LocalFree, ERROR_INSUFFICIENT_BUFFER},
        Security::{
            Authorization::{ConvertSidToStringSidW, ConvertStringSidToSidW},
            LookupAccountNameW, SidTypeDeletedAccount, SidTypeDomain, SidTypeInvalid, SidTypeLabel,
            SidTypeUnknown, PSID, SID_NAME_USE,
        },
        System::WindowsProgramming::GetComputerNameW,
    };

    use super::AccountResolver;
    use crate::windows::wide;

    /// `LookupAccountNameW` on this machine (and its domain).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct LookupAccounts;

    impl AccountResolver for LookupAccounts {
        fn resolve(&self, entry: &str) -> Result<String, String> {
            resolve_account(entry)
        }
    }

    /// The canonical SID string of `entry`: a SID string (checked by
    /// Windows), or a user or group name looked up on this machine or its
    /// domain (`.\name` is this machine's local account).
    pub fn resolve_account(entry: &str) -> Result<String, String> {
        let entry = entry.trim();
        if is_sid_string(entry) {
            return sid_string(entry);
        }
        let name = match entry.strip_prefix(".\\") {
            Some(local) => format!("{}\\{local}", computer_name()?),
            None => entry.to_string(),
        };
        let wide_name = wide(&name);
        let mut sid = vec![0u8; 68];
        let mut sid_len = sid.len() as u32;
        let mut domain = vec![0u16; 256];
        let mut domain_len = domain.len() as u32;
        let mut kind: SID_NAME_USE = 0;
        loop {
            // SAFETY: buffers and their lengths match; the call fills them.
            let ok = unsafe {
                LookupAccountNameW(
                    ptr::null(),
                    wide_name.as_ptr(),
                    sid.as_mut_ptr() as *mut c_void,
                    &mut sid_len,
                    domain.as_mut_ptr(),
                    &mut domain_len,
                    &mut kind,
                )
            };
            if ok != 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(ERROR_INSUFFICIENT_BUFFER as i32)
                && (sid_len as usize > sid.len() || domain_len as usize > domain.len())
            {
                sid.resize(sid_len as usize, 0);
                domain.resize(domain_len as usize, 0);
                continue;
            }
            return Err(format!("unknown account '{entry}': {err}"));
        }
        if [
            SidTypeDomain,
            SidTypeDeletedAccount,
            SidTypeInvalid,
            SidTypeUnknown,
            SidTypeLabel,
        ]
        .contains(&kind)
        {
            return Err(format!(
                "'{entry}' is not a user or group (SID_NAME_USE {kind})"
            ));
        }
        // SAFETY: LookupAccountNameW wrote a SID into `sid`.
        unsafe { sid_to_string(sid.as_ptr() as *mut c_void) }
            .ok_or_else(|| format!("account '{entry}': cannot format its SID"))
    }

    /// A SID string (already `S-1-...` by [`is_sid_string`]: Windows would
    /// also read SDDL aliases here) as Windows reads it, in canonical form.
    fn sid_string(entry: &str) -> Result<String, String> {
        let text = wide(entry);
        let mut sid: PSID = ptr::null_mut();
        // SAFETY: NUL-terminated input; the system allocates `sid`.
        if unsafe { ConvertStringSidToSidW(text.as_ptr(), &mut sid) } == 0 || sid.is_null() {
            return Err(format!(
                "'{entry}' is not a SID: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: a valid SID from ConvertStringSidToSidW.
        let canonical = unsafe { sid_to_string(sid) };
        // SAFETY: allocated by ConvertStringSidToSidW.
        unsafe { LocalFree(sid) };
        match canonical {
            Some(s) if is_sid_string(&s) => Ok(s),
            _ => Err(format!("'{entry}': cannot format the SID")),
        }
    }

    fn computer_name() -> Result<String, String> {
        let mut buffer = [0u16; 64];
        let mut len = buffer.len() as u32;
        // SAFETY: the buffer holds `len` characters.
        if unsafe { GetComputerNameW(buffer.as_mut_ptr(), &mut len) } == 0 {
            return Err(format!(
                "cannot read this computer's name for '.\\': {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(String::from_utf16_lossy(&buffer[..len as usize]))
    }

    /// `S-1-...` for a binary SID.
    ///
    /// # Safety
    ///
    /// `sid` must be null or point at a valid SID.
    pub unsafe fn sid_to_string(sid: *mut c_void) -> Option<String> {
        if sid.is_null() {
            return None;
        }
        let mut text: *mut u16 = ptr::null_mut();
        // SAFETY: `sid` points at a valid SID; the system allocates `text`.
        if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 || text.is_null() {
            return None;
        }
        // SAFETY: `text` is a NUL-terminated UTF-16 string from the system.
        let out = unsafe {
            let len = (0..).take_while(|&i| *text.add(i) != 0).count();
            String::from_utf16_lossy(std::slice::from_raw_parts(text, len))
        };
        // SAFETY: allocated by ConvertSidToStringSidW.
        unsafe { LocalFree(text as *mut c_void) };
        Some(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn well_known_names_resolve_to_their_sids() {
            assert_eq!(
                resolve_account("BUILTIN\\Administrators").unwrap(),
                "S-1-5-32-544"
            );
            assert_eq!(resolve_account("NT AUTHORITY\\SYSTEM").unwrap(), "S-1-5-18");
            assert_eq!(
                LookupAccounts.resolve("BUILTIN\\Users").unwrap(),
                "S-1-5-32-545"
            );
        }

        #[test]
        fn sid_strings_are_checked_and_made_canonical() {
            assert_eq!(resolve_account("s-1-5-32-544").unwrap(), "S-1-5-32-544");
            // Not SIDs, and no such accounts either; nor SDDL aliases.
            assert!(resolve_account("S-1-5-x").is_err());
            assert!(resolve_account("BA").is_err());
        }

        #[test]
        fn unknown_names_are_errors_naming_them() {
            let e = resolve_account("no-such-domain-x1\\no-such-account-x1").unwrap_err();
            assert!(
                e.contains("unknown account 'no-such-domain-x1\\no-such-account-x1'"),
                "{e}"
            );
        }
    }
}

#[cfg(all(test, not(windows)))]
mod tests {
    use super::*;

    #[test]
    fn off_windows_the_policy_takes_sid_strings_only() {
        let accounts = policy_accounts();
        assert_eq!(accounts.resolve("S-1-5-18").unwrap(), "S-1-5-18");
        assert!(accounts.resolve("BUILTIN\\Users").is_err());
    }
}
