//! Opening one tiberius connection: TCP with a timeout, TLS (rustls, system
//! roots plus `upstream.ca_files`) required unless the operator relaxed it
//! for a non-Azure host, LOGIN7 with the managed identity's access token,
//! and the classification of what went wrong (unreachable, TLS, token
//! refused, token expired, no database user, no such database, redirect).

use std::{path::PathBuf, time::Duration};

use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::SqlTarget;

/// An open, logged-in connection.
pub(crate) type Connection = Client<Compat<TcpStream>>;

/// How to open connections.
#[derive(Debug, Clone)]
pub(crate) struct ConnectSettings {
    pub connect_timeout: Duration,
    pub login_timeout: Duration,
    pub ca_files: Vec<PathBuf>,
}

/// Why a login did not produce a connection.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// No TCP connection (refused, unreachable, timed out).
    Unreachable(String),
    /// TLS failed (certificate not trusted, wrong name, ...).
    Tls(String),
    /// Error 18456 and what it says about the token.
    LoginRefused { reason: Refusal, message: String },
    /// Error 4060: the database does not exist or cannot be opened.
    NoDatabase(String),
    /// Azure SQL's redirect connection policy: log in at this host instead.
    Routed { host: String, port: u16 },
    /// Any other server error during login.
    Server { number: u32, message: String },
    /// The login did not finish in time.
    Timeout,
    /// The server spoke something tiberius could not follow.
    Protocol(String),
}

/// What an 18456 login failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server considers the token expired: worth one retry with a new one.
    Expired,
    /// The token was not accepted (audience, signature, issuer, ...).
    TokenRejected,
    /// The token is fine but its principal has no user in the database.
    NoUser,
}

/// Classifies an 18456 message. Azure SQL answers a principal without a
/// database user with exactly `Login failed for user '<token-identified
/// principal>'.`; anything said about the token itself beyond that names a
/// token problem.
pub(crate) fn classify_refusal(message: &str) -> Refusal {
    let detail = message
        .replace("<token-identified principal>", "")
        .to_ascii_lowercase();
    if detail.contains("expired") {
        Refusal::Expired
    } else if detail.contains("token")
        || detail.contains("audience")
        || detail.contains("signature")
    {
        Refusal::TokenRejected
    } else {
        Refusal::NoUser
    }
}

/// Opens a connection to `target` and logs in with `token`. `tls` false is
/// only ever passed for hosts the operator allowed explicitly.
pub(crate) async fn connect(
    target: &SqlTarget,
    token: &str,
    tls: bool,
    settings: &ConnectSettings,
) -> Result<Connection, ConnectError> {
    let mut config = Config::new();
    config.host(&target.host);
    config.port(target.port);
    config.database(&target.database);
    config.application_name("identity-gateway");
    config.authentication(AuthMethod::aad_token(token));
    // Timeouts are the gateway's (query timeout, caller deadline), not tiberius's.
    config.command_timeout(None);
    config.handshake_timeout(Some(settings.login_timeout));
    if tls {
        config.encryption(EncryptionLevel::Required);
        for file in &settings.ca_files {
            config.trust_cert_ca(file.display());
        }
    } else {
        config.encryption(EncryptionLevel::NotSupported);
    }
    let tcp = match tokio::time::timeout(
        settings.connect_timeout,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    {
        Err(_) => {
            return Err(ConnectError::Unreachable(format!(
                "no TCP connection within {:?}",
                settings.connect_timeout
            )))
        }
        Ok(Err(e)) => return Err(ConnectError::Unreachable(e.to_string())),
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    match tokio::time::timeout(
        settings.login_timeout + Duration::from_secs(1),
        Client::connect(config, tcp.compat_write()),
    )
    .await
    {
        Err(_) => Err(ConnectError::Timeout),
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(login_error(e)),
    }
}

fn login_error(e: tiberius::error::Error) -> ConnectError {
    use tiberius::error::Error;
    match e {
        Error::Server(token) => match token.code() {
            18456 => ConnectError::LoginRefused {
                reason: classify_refusal(token.message()),
                message: token.message().to_string(),
            },
            4060 => ConnectError::NoDatabase(token.message().to_string()),
            number => ConnectError::Server {
                number,
                message: token.message().to_string(),
            },
        },
        Error::Routing { host, port } => ConnectError::Routed { host, port },
        Error::Tls(message) => ConnectError::Tls(message),
        Error::Io {
            kind: std::io::ErrorKind::TimedOut,
            ..
        } => ConnectError::Timeout,
        Error::Io { message, .. } => {
            // rustls failures surface as I/O errors; keep their text.
            if message.to_ascii_lowercase().contains("certificate") {
                ConnectError::Tls(message)
            } else {
                ConnectError::Unreachable(message)
            }
        }
        Error::Protocol(message) if message.contains("encryption level") => ConnectError::Tls(
            "the server does not offer TLS (sql.require_tls is on; it can be turned off for \
             explicitly allowed non-Azure hosts only)"
                .into(),
        ),
        other => ConnectError::Protocol(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_apart() {
        assert_eq!(
            classify_refusal("Login failed for user '<token-identified principal>'."),
            Refusal::NoUser
        );
        assert_eq!(
            classify_refusal(
                "Login failed for user '<token-identified principal>'. Token is expired."
            ),
            Refusal::Expired
        );
        assert_eq!(
            classify_refusal(
                "Login failed for user '<token-identified principal>'. The token's audience is not valid for this server."
            ),
            Refusal::TokenRejected
        );
        assert_eq!(
            classify_refusal("Login failed for user 'NT AUTHORITY\\ANONYMOUS LOGON'."),
            Refusal::NoUser
        );
    }
}
