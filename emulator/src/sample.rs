//! The emulator's sample tenant: one subscription, one resource group, one VM
//! with a system-assigned identity and one user-assigned identity named
//! `app-identity`. `--emulator` serves these; tests may use them or build
//! their own [`IdentitySet`].
//!
//! The ids are fixed so a banner, a test and a person reading a token all see
//! the same values from run to run.

use crate::{
    authority::Principal,
    imds::{IdentitySet, UserAssigned},
};

/// The sample tenant (the tokens' `tid`, and the issuer's path).
pub const TENANT_ID: &str = "dc822496-97fa-4380-991a-c8b4ba5d4f73";
/// The sample subscription.
pub const SUBSCRIPTION_ID: &str = "bc11a95a-f59f-49b7-9000-1ee2ebe3dc79";
/// The sample resource group.
pub const RESOURCE_GROUP: &str = "emulator-rg";
/// The sample VM, the host of the system-assigned identity.
pub const VM_NAME: &str = "emulator-vm";
/// ARM id of the VM as it appears in a system-assigned token's `xms_mirid`
/// (note the lower-case `resourcegroups`, as in real tokens).
pub const VM_RESOURCE_ID: &str = "/subscriptions/bc11a95a-f59f-49b7-9000-1ee2ebe3dc79/resourcegroups/emulator-rg/providers/Microsoft.Compute/virtualMachines/emulator-vm";

/// Client (application) id of the VM's system-assigned identity.
pub const SYSTEM_CLIENT_ID: &str = "652865a1-f931-4521-a1a5-055a83bce067";
/// Object (principal) id of the VM's system-assigned identity.
pub const SYSTEM_OBJECT_ID: &str = "72f5fd3e-9ee8-4f05-a3a0-60539e85b40e";

/// Name of the sample user-assigned identity.
pub const USER_IDENTITY_NAME: &str = "app-identity";
/// Client (application) id of `app-identity`.
pub const USER_CLIENT_ID: &str = "a5842c85-1131-4c68-b205-cabb41b6c022";
/// Object (principal) id of `app-identity`.
pub const USER_OBJECT_ID: &str = "f41c4f2f-5b73-41a8-a4dd-a6399fc02e06";
/// ARM id of `app-identity`, as the portal and ARM spell it (what callers pass
/// as `msi_res_id`).
pub const USER_RESOURCE_ID: &str = "/subscriptions/bc11a95a-f59f-49b7-9000-1ee2ebe3dc79/resourceGroups/emulator-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app-identity";

/// The VM's system-assigned identity.
pub fn system_principal() -> Principal {
    Principal {
        client_id: SYSTEM_CLIENT_ID.into(),
        object_id: SYSTEM_OBJECT_ID.into(),
        mirid: VM_RESOURCE_ID.into(),
    }
}

/// `app-identity`; its tokens' `xms_mirid` is [`USER_RESOURCE_ID`] exactly.
pub fn user_assigned() -> UserAssigned {
    UserAssigned {
        principal: Principal {
            client_id: USER_CLIENT_ID.into(),
            object_id: USER_OBJECT_ID.into(),
            mirid: USER_RESOURCE_ID.into(),
        },
        resource_id: USER_RESOURCE_ID.into(),
    }
}

/// The sample VM's identities: system-assigned plus `app-identity`.
pub fn identities() -> IdentitySet {
    IdentitySet {
        system: Some(system_principal()),
        user_assigned: vec![user_assigned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_ids_are_consistent() {
        assert!(VM_RESOURCE_ID.contains(SUBSCRIPTION_ID));
        assert!(VM_RESOURCE_ID.contains(RESOURCE_GROUP));
        assert!(VM_RESOURCE_ID.ends_with(VM_NAME));
        assert!(USER_RESOURCE_ID.contains(SUBSCRIPTION_ID));
        assert!(USER_RESOURCE_ID.ends_with(USER_IDENTITY_NAME));
        for id in [
            TENANT_ID,
            SUBSCRIPTION_ID,
            SYSTEM_CLIENT_ID,
            SYSTEM_OBJECT_ID,
            USER_CLIENT_ID,
            USER_OBJECT_ID,
        ] {
            let parsed = uuid::Uuid::parse_str(id).expect("a GUID");
            assert_eq!(parsed.hyphenated().to_string(), id, "lower-case GUID");
        }
        let set = identities();
        assert_eq!(set.user_assigned[0].principal.mirid, USER_RESOURCE_ID);
        assert_eq!(set.user_assigned[0].resource_id, USER_RESOURCE_ID);
    }
}
