//! The emulator's token authority: an RS256 signing key made at start-up,
//! minting managed-identity lookalike JWTs (v1 issuer, `aud` = resource
//! exactly, oid/tid/appid, `xms_mirid`) and verifying them for every other
//! fake, so a test proves the right token reached the right service.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Claims of a v1 managed-identity access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub aio: String,
    pub appid: String,
    pub appidacr: String,
    pub idp: String,
    pub idtyp: String,
    pub oid: String,
    pub rh: String,
    pub sub: String,
    pub tid: String,
    pub uti: String,
    pub ver: String,
    pub xms_mirid: String,
    pub xms_tcdt: String,
}

/// Who a token is minted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub client_id: String,
    pub object_id: String,
    /// ARM id of the identity (user-assigned) or of the host VM (system-assigned).
    pub mirid: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is not a JWT signed by the emulator's authority: {0}")]
    BadToken(String),
    #[error("the token's audience '{actual}' is not '{expected}'")]
    WrongAudience { expected: String, actual: String },
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
}

/// Signs and verifies tokens. The private key never leaves this struct.
pub struct TokenAuthority {
    tenant_id: String,
    key_id: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_pem: String,
}

impl fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("tenant_id", &self.tenant_id)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl TokenAuthority {
    /// A fresh 2048-bit RSA key for `tenant_id`.
    pub fn generate(tenant_id: &str) -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .expect("RSA key generation with aws-lc-rs");
        let private_pem = key.serialize_pem();
        let public_pem = key.public_key_pem();
        let key_id = {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(key.public_key_raw());
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                &digest[..20],
            )
        };
        Self {
            tenant_id: tenant_id.to_string(),
            key_id,
            encoding: EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("own PEM"),
            decoding: DecodingKey::from_rsa_pem(public_pem.as_bytes()).expect("own PEM"),
            public_pem,
        }
    }

    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The v1 issuer, `https://sts.windows.net/<tid>/`.
    pub fn issuer(&self) -> String {
        format!("https://sts.windows.net/{}/", self.tenant_id)
    }

    /// The verification key, as an SPKI PEM.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// Mints a token for `resource` that lives `lifetime` from `now`.
    /// Returns the JWT and its claims.
    pub fn mint(
        &self,
        principal: &Principal,
        resource: &str,
        now: SystemTime,
        lifetime: Duration,
    ) -> (String, Claims) {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            aud: resource.to_string(),
            iss: self.issuer(),
            iat,
            nbf: iat,
            exp: iat + lifetime.as_secs(),
            aio: random_id(48),
            appid: principal.client_id.clone(),
            appidacr: "2".into(),
            idp: self.issuer(),
            idtyp: "app".into(),
            oid: principal.object_id.clone(),
            rh: random_id(40),
            sub: principal.object_id.clone(),
            tid: self.tenant_id.clone(),
            uti: random_id(22),
            ver: "1.0".into(),
            xms_mirid: principal.mirid.clone(),
            xms_tcdt: "1589910443".into(),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".into());
        header.kid = Some(self.key_id.clone());
        header.x5t = Some(self.key_id.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding).expect("RS256 signing");
        (token, claims)
    }

    /// Checks signature, issuer, audience (exactly) and lifetime at `now`.
    pub fn verify(
        &self,
        token: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<Claims, VerifyError> {
        let mut validation = Validation::new(Algorithm::RS256);
        // Lifetime is checked below against the injected `now`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.set_issuer(&[self.issuer()]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| VerifyError::BadToken(e.to_string()))?;
        let claims = data.claims;
        if claims.aud != audience {
            return Err(VerifyError::WrongAudience {
                expected: audience.to_string(),
                actual: claims.aud,
            });
        }
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if now >= claims.exp {
            return Err(VerifyError::Expired);
        }
        if now + 300 < claims.nbf {
            return Err(VerifyError::NotYetValid);
        }
        Ok(claims)
    }

    /// Like [`verify`](Self::verify), accepting any of `audiences`.
    pub fn verify_any(
        &self,
        token: &str,
        audiences: &[&str],
        now: SystemTime,
    ) -> Result<Claims, VerifyError> {
        let mut last = None;
        for audience in audiences {
            match self.verify(token, audience, now) {
                Ok(claims) => return Ok(claims),
                Err(e @ VerifyError::WrongAudience { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| VerifyError::BadToken("no audience accepted".into())))
    }
}

fn random_id(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            client_id: "b84e06d3-aba1-4bcc-9626-2e0d76cba2ce".into(),
            object_id: "6a8f3c2e-1111-4222-8333-944455556666".into(),
            mirid:
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
                    .into(),
        }
    }

    #[test]
    fn minted_tokens_verify_only_for_their_audience_and_lifetime() {
        let authority = TokenAuthority::generate("72f988bf-86f1-41af-91ab-2d7cd011db47");
        let now = SystemTime::now();
        let (token, claims) = authority.mint(
            &principal(),
            "https://vault.azure.net",
            now,
            Duration::from_secs(600),
        );
        assert_eq!(
            claims.iss,
            "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/"
        );
        assert_eq!(
            authority
                .verify(&token, "https://vault.azure.net", now)
                .unwrap(),
            claims
        );
        assert!(matches!(
            authority.verify(&token, "https://vault.azure.net/", now),
            Err(VerifyError::WrongAudience { .. })
        ));
        assert_eq!(
            authority.verify(
                &token,
                "https://vault.azure.net",
                now + Duration::from_secs(601)
            ),
            Err(VerifyError::Expired)
        );
        let other = TokenAuthority::generate("72f988bf-86f1-41af-91ab-2d7cd011db47");
        assert!(matches!(
            other.verify(&token, "https://vault.azure.net", now),
            Err(VerifyError::BadToken(_))
        ));
        assert!(matches!(
            authority.verify("garbage", "x", now),
            Err(VerifyError::BadToken(_))
        ));
    }
}
