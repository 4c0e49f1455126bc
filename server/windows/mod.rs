//! Windows specifics, kept out of the portable modules: the pipe's security
//! descriptor ([`pipe_security`], portable SDDL plus the Windows conversion),
//! account names and SIDs ([`account`]: lookups for the pipe's clients and
//! the caller policy's `accounts`), who is calling on the pipe ([`caller`]),
//! the Service Control Manager
//! integration ([`service`]), the Event Log ([`eventlog`]) and the
//! `%ProgramData%\identity-gateway` directory with its restrictive ACL.
//!
//! Nothing here decides policy or serves RPCs; the transport and the API read
//! what these modules find out.

pub mod account;
pub mod pipe_security;

#[cfg(windows)]
pub mod caller;
#[cfg(windows)]
pub mod eventlog;
#[cfg(windows)]
pub mod service;

use std::path::PathBuf;

/// The service's name in the Service Control Manager and the Event Log.
pub const SERVICE_NAME: &str = "identity-gateway";
/// The default pipe.
pub const DEFAULT_PIPE: &str = r"\\.\pipe\identity-gateway";
/// The DACL of `%ProgramData%\identity-gateway` (config, header file, logs):
/// SYSTEM and Administrators only, inherited by everything created inside.
pub const DATA_DIR_SDDL: &str = "D:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)";

/// `%ProgramData%\identity-gateway`: config, identity header file, logs.
/// The ProgramData known folder, not the environment variable: a service's
/// environment and an installer's shell must agree on the place.
pub fn data_dir() -> PathBuf {
    program_data()
        .or_else(|| {
            std::env::var_os("ProgramData")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"))
        .join(SERVICE_NAME)
}

#[cfg(windows)]
fn program_data() -> Option<PathBuf> {
    use std::os::windows::ffi::OsStringExt;
    use windows_sys::Win32::{
        System::Com::CoTaskMemFree,
        UI::Shell::{FOLDERID_ProgramData, SHGetKnownFolderPath},
    };
    let mut path: *mut u16 = std::ptr::null_mut();
    // SAFETY: the system allocates `path` (freed below, even on failure).
    let hr =
        unsafe { SHGetKnownFolderPath(&FOLDERID_ProgramData, 0, std::ptr::null_mut(), &mut path) };
    let out = (hr >= 0 && !path.is_null()).then(|| {
        // SAFETY: a NUL-terminated UTF-16 string from the system.
        let wide = unsafe {
            let len = (0..).take_while(|&i| *path.add(i) != 0).count();
            std::slice::from_raw_parts(path, len)
        };
        PathBuf::from(std::ffi::OsString::from_wide(wide))
    });
    // SAFETY: allocated by SHGetKnownFolderPath (null is allowed).
    unsafe { CoTaskMemFree(path as *const std::ffi::c_void) };
    out
}

#[cfg(not(windows))]
fn program_data() -> Option<PathBuf> {
    None
}

/// Where the service writes its rotating log files.
pub fn log_dir() -> PathBuf {
    data_dir().join("logs")
}

/// `text` as a NUL-terminated UTF-16 string for Win32 calls.
pub fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(std::iter::once(0)).collect()
}

/// Creates `dir` (and parents) if needed and gives it [`DATA_DIR_SDDL`], so
/// the header secret, the config and the logs inside are readable by
/// SYSTEM and Administrators only.
#[cfg(windows)]
pub fn secure_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::ptr;

    use windows_sys::Win32::{
        Foundation::LocalFree,
        Security::{
            Authorization::{
                ConvertStringSecurityDescriptorToSecurityDescriptorW, SetNamedSecurityInfoW,
                SDDL_REVISION_1, SE_FILE_OBJECT,
            },
            GetSecurityDescriptorDacl, ACL, DACL_SECURITY_INFORMATION,
            PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR,
        },
    };

    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let sddl = wide(DATA_DIR_SDDL);
    let mut descriptor: PSECURITY_DESCRIPTOR = ptr::null_mut();
    // SAFETY: NUL-terminated input; the system allocates the descriptor.
    if unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut descriptor,
            ptr::null_mut(),
        )
    } == 0
    {
        return Err(format!(
            "{DATA_DIR_SDDL}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut present = 0;
    let mut defaulted = 0;
    let mut dacl: *mut ACL = ptr::null_mut();
    // SAFETY: `descriptor` is valid; `dacl` points into it.
    let ok =
        unsafe { GetSecurityDescriptorDacl(descriptor, &mut present, &mut dacl, &mut defaulted) };
    let path = wide(&dir.to_string_lossy());
    let result = if ok == 0 {
        Err(std::io::Error::last_os_error().to_string())
    } else {
        // SAFETY: `path` is NUL-terminated, `dacl` lives in `descriptor`.
        let rc = unsafe {
            SetNamedSecurityInfoW(
                path.as_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                ptr::null_mut(),
                ptr::null_mut(),
                dacl,
                ptr::null(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(rc as i32).to_string())
        }
    };
    // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW.
    unsafe { LocalFree(descriptor) };
    result.map_err(|e| format!("cannot restrict access to {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_is_under_program_data() {
        assert!(data_dir().ends_with(SERVICE_NAME));
        assert!(log_dir().starts_with(data_dir()));
        assert_eq!(wide("ab"), vec![0x61, 0x62, 0]);
    }
}
