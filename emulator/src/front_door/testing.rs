//! What the data-plane fakes' own tests share: an authority, a CA, a client
//! that trusts it, and tokens for a fixed principal.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{authority::Principal, tls::TestCa, TokenAuthority};

pub(crate) const OID: &str = "6a8f3c2e-1111-4222-8333-944455556666";
pub(crate) const OTHER_OID: &str = "0b0b0b0b-2222-4333-8444-955566667777";

pub(crate) struct Kit {
    pub(crate) authority: Arc<TokenAuthority>,
    pub(crate) ca: TestCa,
    pub(crate) http: reqwest::Client,
}

impl Kit {
    pub(crate) fn new() -> Self {
        let ca = TestCa::generate(&["localhost", "127.0.0.1"]);
        let root = reqwest::Certificate::from_pem(ca.ca_pem().as_bytes()).unwrap();
        let http = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(root)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            authority: Arc::new(TokenAuthority::generate(
                "dc822496-97fa-4380-991a-c8b4ba5d4f73",
            )),
            ca,
            http,
        }
    }

    /// A token for `audience` minted for `oid`.
    pub(crate) fn token_for(&self, oid: &str, audience: &str) -> String {
        let principal = Principal {
            client_id: "b84e06d3-aba1-4bcc-9626-2e0d76cba2ce".into(),
            object_id: oid.into(),
            mirid:
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
                    .into(),
        };
        self.authority
            .mint(
                &principal,
                audience,
                SystemTime::now(),
                Duration::from_secs(3600),
            )
            .0
    }

    /// A token for `audience` that expired an hour ago.
    pub(crate) fn expired_token(&self, audience: &str) -> String {
        let principal = Principal {
            client_id: "b84e06d3-aba1-4bcc-9626-2e0d76cba2ce".into(),
            object_id: OID.into(),
            mirid: "/subscriptions/s".into(),
        };
        self.authority
            .mint(
                &principal,
                audience,
                SystemTime::now() - Duration::from_secs(7200),
                Duration::from_secs(3600),
            )
            .0
    }
}
