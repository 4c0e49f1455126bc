//! The token exfiltration guard: a token for a service is only ever sent to a
//! host of that service's cloud suffix, or to a host the operator allowed in
//! config (private endpoints, the emulator). Checked before any token is fetched.

use url::Url;

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
    /// token. `field` names the request field for the error.
    pub fn check_url(&self, service: Service, field: &str, raw: &str) -> Result<Url, GatewayError> {
        let url = Url::parse(raw)
            .map_err(|e| GatewayError::invalid(field, format!("not an absolute URL ({e})")))?;
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
        let host = url
            .host_str()
            .ok_or_else(|| GatewayError::invalid(field, "URL has no host"))?
            .to_ascii_lowercase();
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
        let host = host.trim_end_matches('.').to_ascii_lowercase();
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
