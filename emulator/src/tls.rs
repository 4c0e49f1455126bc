//! The emulator's test certificate authority: a CA made at start-up and leaf
//! certificates for loopback names, so fakes can serve real TLS (HTTPS, TDS)
//! and clients can trust exactly this CA.

use std::{fmt, sync::Arc};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A throwaway CA and one server certificate signed by it.
pub struct TestCa {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key_der: Vec<u8>,
    server_cert_pem: String,
    server_key_pem: String,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A CA plus a server certificate valid for `names` (DNS names or IPs),
    /// e.g. `["localhost", "127.0.0.1"]`.
    pub fn generate(names: &[&str]) -> Self {
        let ca_key = KeyPair::generate().expect("ECDSA key generation");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "identity-gateway emulator test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("ECDSA key generation");
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut server_params = CertificateParams::new(sans).expect("valid SANs");
        server_params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("localhost"),
        );
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("leaf signed by CA");
        Self {
            ca_pem: ca_cert.pem(),
            server_chain: vec![server_cert.der().clone()],
            server_key_der: server_key.serialize_der(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }

    /// The CA certificate clients should trust, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server certificate, PEM (for external servers such as Azurite).
    pub fn server_cert_pem(&self) -> &str {
        &self.server_cert_pem
    }

    /// The server key, PEM (for external servers such as Azurite).
    pub fn server_key_pem(&self) -> &str {
        &self.server_key_pem
    }

    /// A rustls server configuration presenting the server certificate, with
    /// the given ALPN protocols (e.g. `[b"h2", b"http/1.1"]`, or none for TDS).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("default TLS versions")
        .with_no_client_auth()
        .with_single_cert(self.server_chain.clone(), key)
        .expect("matching certificate and key");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}
