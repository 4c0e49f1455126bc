//! The named pipe's security descriptor: who may open `\\.\pipe\identity-gateway`.
//!
//! Every pipe instance gets the same explicit owner, the account the gateway
//! runs as (SYSTEM for the service; clients check it, see client-rs), and
//! the same explicit, protected DACL (no inherited or default entries):
//!
//! - network logons (`NU`) are denied outright (the listener also sets
//!   `PIPE_REJECT_REMOTE_CLIENTS`);
//! - SYSTEM and BUILTIN\Administrators have full control;
//! - the configured clients (`socket_group` and `pipe_access`, default
//!   NT AUTHORITY\Authenticated Users) may read and write, but **not** create
//!   pipe instances: `FILE_GENERIC_READ | FILE_GENERIC_WRITE` less
//!   `FILE_CREATE_PIPE_INSTANCE` (`0x4`, which `FILE_GENERIC_WRITE` carries as
//!   `FILE_APPEND_DATA`), so a client cannot add a server instance of its
//!   own to the gateway's pipe and receive other clients' requests.
//!
//! The SDDL text is built by portable code (unit-tested on every platform);
//! only the conversion to a binary descriptor and account-name lookups are
//! Windows calls.

use std::fmt::Write as _;

/// Access mask of a client ACE: `FILE_GENERIC_READ | FILE_GENERIC_WRITE`
/// (`0x0012_019F`) without `FILE_CREATE_PIPE_INSTANCE` (`0x4`).
pub const CLIENT_ACCESS_MASK: u32 = 0x0012_019F & !FILE_CREATE_PIPE_INSTANCE;
/// `FILE_CREATE_PIPE_INSTANCE` (the pipe meaning of `FILE_APPEND_DATA`).
pub const FILE_CREATE_PIPE_INSTANCE: u32 = 0x4;
/// NT AUTHORITY\Authenticated Users: the clients when none are configured,
/// like IMDS, which any local process may call.
pub const AUTHENTICATED_USERS_SID: &str = "S-1-5-11";

/// The descriptor, in SDDL: owner `owner_sid` (the account the gateway runs
/// as, so clients can check who created the pipe; SYSTEM for the service)
/// and the protected DACL granting `client_sids` read/write.
///
/// Every entry must already be a SID string (see [`is_sid_string`]); the
/// caller resolves account names first, so nothing from the configuration is
/// ever spliced into the SDDL unchecked.
pub fn pipe_sddl(owner_sid: &str, client_sids: &[String]) -> Result<String, String> {
    if !is_sid_string(owner_sid) {
        return Err(format!(
            "owner '{owner_sid}' is not a SID (expected S-1-...)"
        ));
    }
    let mut sddl = format!("O:{owner_sid}D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;BA)");
    for sid in client_sids {
        if !is_sid_string(sid) {
            return Err(format!("'{sid}' is not a SID (expected S-1-...)"));
        }
        let _ = write!(sddl, "(A;;0x{CLIENT_ACCESS_MASK:x};;;{sid})");
    }
    Ok(sddl)
}

/// The configured clients of the pipe, in order, duplicates removed:
/// `socket_group` then `pipe_access`, or Authenticated Users when both are
/// empty. Entries are SIDs or account names (`DOMAIN\name`, `name`).
pub fn client_entries(socket_group: Option<&str>, pipe_access: &[String]) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    for entry in socket_group
        .into_iter()
        .chain(pipe_access.iter().map(String::as_str))
    {
        let entry = entry.trim();
        if !entry.is_empty() && !entries.iter().any(|e| e.eq_ignore_ascii_case(entry)) {
            entries.push(entry.to_string());
        }
    }
    if entries.is_empty() {
        entries.push(AUTHENTICATED_USERS_SID.to_string());
    }
    entries
}

pub use identity_gateway_service::account::is_sid_string;

#[cfg(windows)]
pub use imp::PipeSecurity;

#[cfg(windows)]
mod imp {
    use std::ptr;

    use windows_sys::Win32::{
        Foundation::LocalFree,
        Security::{
            Authorization::{
                ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
            },
            PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES,
        },
    };

    use super::pipe_sddl;
    use crate::windows::{account::resolve_account, wide};

    /// A self-relative security descriptor (from SDDL) that outlives every
    /// pipe instance created with it.
    #[derive(Debug)]
    pub struct PipeSecurity {
        descriptor: PSECURITY_DESCRIPTOR,
        sddl: String,
    }

    // SAFETY: the descriptor is immutable after creation and only read by
    // CreateNamedPipeW; it is freed once, on drop.
    unsafe impl Send for PipeSecurity {}
    // SAFETY: as above: shared read-only.
    unsafe impl Sync for PipeSecurity {}

    impl PipeSecurity {
        /// Resolves `entries` (SIDs or account names) and builds the descriptor.
        pub fn new(entries: &[String]) -> Result<Self, String> {
            let sids = entries
                .iter()
                .map(|entry| resolve_account(entry))
                .collect::<Result<Vec<_>, _>>()?;
            let owner = crate::windows::caller::process_user_sid()
                .ok_or("cannot read the gateway's own account (process token)")?;
            let sddl = pipe_sddl(&owner, &sids)?;
            let text = wide(&sddl);
            let mut descriptor: PSECURITY_DESCRIPTOR = ptr::null_mut();
            // SAFETY: `text` is NUL-terminated; on success the system
            // allocates the descriptor, freed with LocalFree on drop.
            let ok = unsafe {
                ConvertStringSecurityDescriptorToSecurityDescriptorW(
                    text.as_ptr(),
                    SDDL_REVISION_1,
                    &mut descriptor,
                    ptr::null_mut(),
                )
            };
            if ok == 0 || descriptor.is_null() {
                return Err(format!(
                    "pipe security descriptor {sddl}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(Self { descriptor, sddl })
        }

        /// The descriptor as SDDL (for the startup log).
        pub fn sddl(&self) -> &str {
            &self.sddl
        }

        /// `SECURITY_ATTRIBUTES` pointing at the descriptor; valid while
        /// `self` lives.
        pub fn attributes(&self) -> SECURITY_ATTRIBUTES {
            SECURITY_ATTRIBUTES {
                nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
                lpSecurityDescriptor: self.descriptor,
                bInheritHandle: 0,
            }
        }
    }

    impl Drop for PipeSecurity {
        fn drop(&mut self) {
            // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW.
            unsafe { LocalFree(self.descriptor) };
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_sddl_converts_and_names_resolve() {
            let security = PipeSecurity::new(&["S-1-5-11".into(), "Administrators".into()])
                .expect("descriptor");
            assert!(
                security.sddl().contains("S-1-5-32-544"),
                "{}",
                security.sddl()
            );
            assert!(PipeSecurity::new(&["no-such-account-x1".into()]).is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_read_and_write_but_never_create_instances() {
        assert_eq!(CLIENT_ACCESS_MASK & FILE_CREATE_PIPE_INSTANCE, 0);
        // FILE_READ_DATA, FILE_WRITE_DATA, attributes, READ_CONTROL, SYNCHRONIZE.
        for bit in [0x1, 0x2, 0x80, 0x100, 0x2_0000, 0x10_0000] {
            assert_eq!(CLIENT_ACCESS_MASK & bit, bit, "bit {bit:#x}");
        }
        assert_eq!(CLIENT_ACCESS_MASK, 0x0012_019B);
    }

    #[test]
    fn the_dacl_is_protected_denies_the_network_and_grants_admins_and_clients() {
        let sddl = pipe_sddl(
            "S-1-5-18",
            &["S-1-5-11".into(), "S-1-5-21-1-2-3-1001".into()],
        )
        .unwrap();
        assert_eq!(
            sddl,
            "O:S-1-5-18D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;BA)\
             (A;;0x12019b;;;S-1-5-11)(A;;0x12019b;;;S-1-5-21-1-2-3-1001)"
        );
        // Deny first: Windows evaluates ACEs in order.
        assert!(sddl.find("(D;").unwrap() < sddl.find("(A;").unwrap());
    }

    #[test]
    fn no_sddl_can_be_injected_through_a_client_entry() {
        for bad in [
            "S-1-5-11)(A;;GA;;;WD",
            "WD",
            "S-1-",
            "S-1-5",
            "S-1-5-x",
            "S-1-5--11",
            "",
        ] {
            assert!(
                pipe_sddl("S-1-5-18", &[bad.to_string()]).is_err(),
                "{bad:?}"
            );
            assert!(pipe_sddl(bad, &[]).is_err(), "owner {bad:?}");
        }
        assert!(is_sid_string("S-1-5-32-544"));
        assert!(is_sid_string(
            "S-1-5-21-3623811015-3361044348-30300820-1013"
        ));
    }

    #[test]
    fn clients_default_to_authenticated_users() {
        assert_eq!(client_entries(None, &[]), vec!["S-1-5-11".to_string()]);
        assert_eq!(
            client_entries(
                Some("gateway-users"),
                &["Gateway-Users".into(), " CONTOSO\\app ".into(), "".into()]
            ),
            vec!["gateway-users".to_string(), "CONTOSO\\app".to_string()]
        );
    }
}
