//! The token exfiltration guard: a token for a service is only ever sent to a
//! host of that service's cloud suffix, or to a host the operator allowed in
//! config (private endpoints, the emulator). Checked before any token is fetched.
//!
//! [`normalize_host`] is the one spelling of a host name the gateway uses: the
//! guard checks it, the caller policy compares it, and the request goes to it
//! (URLs that pass [`HostGuard::check_url`] come back with their host
//! normalised), so `victim.blob.core.windows.net.` cannot be checked as one
//! account and contacted as another.

use url::Url;

/// The canonical form of a host name: lower case, without the trailing
/// dot(s) of a fully qualified name. `Victim.Blob.Core.Windows.Net.` and
/// `victim.blob.core.windows.net` name the same host, so they must be one
/// string for the guard, the policy and the request.
pub fn normalize_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Rewrites `url`'s host to [`normalize_host`]'s form (IP addresses are
/// left alone).
pub fn normalize_url(url: &mut Url) {
    if let Some(url::Host::Domain(domain)) = url.host() {
        let normalized = normalize_host(domain);
        if normalized != domain {
            // A domain that parsed stays valid without its trailing dot.
            let _ = url.set_host(Some(&normalized));
        }
    }
}

use crate::{cloud::Service, error::GatewayError};

/// Decides whether a URL may receive a given service's token.
#[derive(Debug, Clone, Default)]
pub struct HostGuard {
    /// `host`, `host:port` or `*.suffix` patterns from config, lower-cased.
    allowed: Vec<String>,
    allow_http: bool,
}

impl HostGuard {
    pub fn new(allowed_hosts: &[String], allow_http: bool) -> Self {
        Self {
            allowed: allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            allow_http,
        }
    }

    /// Parses `raw` as an absolute URL and checks it may receive `service`'s
    /// token. `field` names the request field for the error. The URL comes
    /// back with its host normalised ([`normalize_host`]): send the request
    /// to it, and derive account names from it.
    pub fn check_url(&self, service: Service, field: &str, raw: &str) -> Result<Url, GatewayError> {
        let mut url = Url::parse(raw)
            .map_err(|e| GatewayError::invalid(field, format!("not an absolute URL ({e})")))?;
        normalize_url(&mut url);
        self.check(service, field, &url)?;
        Ok(url)
    }

    /// Checks a parsed URL (scheme, no credentials, host allowed for `service`).
    pub fn check(&self, service: Service, field: &str, url: &Url) -> Result<(), GatewayError> {
        if !url.username().is_empty() || url.password().is_some() {
            return Err(GatewayError::invalid(
                field,
                "URL must not carry credentials",
            ));
        }
        let host = normalize_host(
            url.host_str()
                .ok_or_else(|| GatewayError::invalid(field, "URL has no host"))?,
        );
        let port = url.port_or_known_default();
        self.check_host(service, field, &host, port, url.scheme())
    }

    /// Checks a bare host (e.g. a SQL server) for `service`.
    pub fn check_host(
        &self,
        service: Service,
        field: &str,
        host: &str,
        port: Option<u16>,
        scheme: &str,
    ) -> Result<(), GatewayError> {
        let host = normalize_host(host);
        let explicitly_allowed = self.is_allowed(&host, port);
        let of_service = service.host_suffixes().iter().any(|suffix| {
            if suffix.starts_with('.') {
                host.len() > suffix.len() && host.ends_with(suffix)
            } else {
                host == *suffix
            }
        });
        if !of_service && !explicitly_allowed {
            return Err(GatewayError::invalid(
                field,
                format!(
                    "host '{host}' is not a {} host (expected *{}) and is not in upstream.allowed_hosts; \
                     the gateway will not send it a token",
                    service.name(),
                    service.host_suffixes()[0]
                ),
            ));
        }
        match scheme {
            "https" | "tds" => Ok(()),
            "http" if self.allow_http && explicitly_allowed => Ok(()),
            other => Err(GatewayError::invalid(
                field,
                format!("scheme '{other}' is not allowed; tokens travel over https only"),
            )),
        }
    }

    fn is_allowed(&self, host: &str, port: Option<u16>) -> bool {
        self.allowed.iter().any(|pattern| {
            let (pat_host, pat_port) = match pattern.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
                    (h, p.parse::<u16>().ok())
                }
                _ => (pattern.as_str(), None),
            };
            let host_ok = match pat_host.strip_prefix("*.") {
                Some(suffix) => {
                    host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}"))
                }
                None => host == pat_host,
            };
            host_ok && (pat_port.is_none() || pat_port == port)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_suffixes_pass_and_lookalikes_fail() {
        let guard = HostGuard::default();
        assert!(guard
            .check_url(
                Service::KeyVault,
                "vault_url",
                "https://myvault.vault.azure.net"
            )
            .is_ok());
        for hostile in [
            "https://evil.example",
            "https://vault.azure.net.evil.example",
            "https://myvault.vault.azure.net@evil.example",
            "https://evilvault.azure.net",
            "http://myvault.vault.azure.net",
            "https://myvault.blob.core.windows.net",
        ] {
            let err = guard
                .check_url(Service::KeyVault, "vault_url", hostile)
                .unwrap_err();
            assert!(
                matches!(err, GatewayError::InvalidArgument { .. }),
                "{hostile}: {err}"
            );
        }
    }

    #[test]
    fn checked_urls_come_back_with_the_normalised_host() {
        let guard = HostGuard::default();
        let url = guard
            .check_url(
                Service::Storage,
                "blob_url",
                "https://Victim.Blob.Core.Windows.Net./appacct/x",
            )
            .unwrap();
        assert_eq!(url.host_str(), Some("victim.blob.core.windows.net"));
        assert_eq!(
            url.as_str(),
            "https://victim.blob.core.windows.net/appacct/x"
        );
        assert_eq!(
            normalize_host(" Db.Database.Windows.Net.. "),
            "db.database.windows.net"
        );
        let mut ip = Url::parse("https://127.0.0.1:8443/x").unwrap();
        normalize_url(&mut ip);
        assert_eq!(ip.as_str(), "https://127.0.0.1:8443/x");
    }

    #[test]
    fn allowed_hosts_match_host_port_and_wildcards() {
        let guard = HostGuard::new(
            &["127.0.0.1:8443".into(), "*.privatelink.test".into()],
            true,
        );
        assert!(guard
            .check_url(Service::Storage, "f", "https://127.0.0.1:8443/x")
            .is_ok());
        assert!(guard
            .check_url(Service::Storage, "f", "http://127.0.0.1:8443/x")
            .is_ok());
        assert!(guard
            .check_url(Service::Storage, "f", "https://127.0.0.1:9999/x")
            .is_err());
        assert!(guard
            .check_url(Service::Storage, "f", "https://a.privatelink.test/x")
            .is_ok());
        assert!(guard
            .check_url(Service::Storage, "f", "https://privatelink.test/x")
            .is_err());
    }
}

/// Properties of the guard against the `url` crate as the model of what a
/// URL's host, scheme and credentials are (bounded runs: 512 cases).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// The model: may `url` receive a Key Vault token from a guard with no
    /// allowed hosts?
    fn model_allows(url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        url.scheme() == "https"
            && url.username().is_empty()
            && url.password().is_none()
            && Service::KeyVault
                .host_suffixes()
                .iter()
                .any(|suffix| host.len() > suffix.len() && host.ends_with(suffix))
    }

    /// URL-shaped strings built from the pieces attackers combine: odd
    /// schemes, credentials, look-alike hosts, percent-escapes, ports.
    fn url_like() -> impl Strategy<Value = String> {
        let scheme = prop_oneof!["https", "http", "HTTPS", "ftp", "hTTps"];
        let userinfo = prop_oneof![
            Just(String::new()),
            Just("user@".to_string()),
            Just("user:pw@".to_string()),
            Just("myvault.vault.azure.net@".to_string()),
            "[a-z:%@]{1,8}@",
        ];
        let label = "[a-zA-Z0-9-]{1,10}";
        let suffix = prop_oneof![
            Just(".vault.azure.net"),
            Just(".VAULT.azure.NET"),
            Just(".vault.azure.net."),
            Just("vault.azure.net"),
            Just(".vault.azure.net.evil.example"),
            Just(".evil.example"),
            Just(".vault%2eazure.net"),
            Just(".vault.azure.net%00.evil"),
            Just(".managedhsm.azure.net"),
            Just(".vault.azure.cn"),
        ];
        let port = prop_oneof![
            Just(String::new()),
            Just(":443".into()),
            Just(":8443".into()),
            Just(":".into())
        ];
        let tail = prop_oneof![
            Just(String::new()),
            Just("/".into()),
            Just("/secrets/x?api-version=7.4".into()),
            Just("#@evil.example".into()),
            Just("\\@evil.example/".into()),
            "[/?#@a-z.%]{0,12}",
        ];
        (scheme, userinfo, label, suffix, port, tail)
            .prop_map(|(s, u, l, x, p, t)| format!("{s}://{u}{l}{x}{p}{t}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn the_guard_agrees_with_the_url_model(raw in url_like()) {
            let guard = HostGuard::default();
            let ours = guard.check_url(Service::KeyVault, "vault_url", &raw);
            let model = Url::parse(&raw).ok().is_some_and(|url| model_allows(&url));
            prop_assert_eq!(ours.is_ok(), model, "{}: {:?}", raw, ours);
        }

        #[test]
        fn arbitrary_input_never_panics_and_never_passes_unless_the_model_does(raw in ".{0,64}") {
            let guard = HostGuard::default();
            if guard.check_url(Service::KeyVault, "vault_url", &raw).is_ok() {
                let url = Url::parse(&raw).expect("accepted, so it parses");
                prop_assert!(model_allows(&url), "{}", raw);
            }
        }
    }
}
