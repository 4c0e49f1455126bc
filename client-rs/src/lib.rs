//! Rust client for [identity-gateway]: managed-identity tokens (and Azure data)
//! from the machine's gateway over a Unix socket, a Windows named pipe or
//! loopback TCP.
//!
//! ```no_run
//! # async fn example() -> Result<(), identity_gateway_client::Error> {
//! use identity_gateway_client::{GatewayClient, Identity};
//!
//! let client = GatewayClient::connect("/run/identity-gateway/gateway.sock").await?;
//! let token = client.get_token("https://vault.azure.net").await?;
//! println!("token for {} expires at {:?}", token.resource, token.expires_on);
//! let user = client
//!     .get_token_for("https://storage.azure.com/", Identity::ClientId("<client-id>".into()))
//!     .await?;
//! # let _ = user; Ok(()) }
//! ```
//!
//! Every RPC of the gateway is also reachable, fully typed, through
//! [`GatewayClient::rpc`] and the generated [`proto`] types.
//!
//! [identity-gateway]: https://github.com/identity-gateway
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod connect;
mod error;
#[cfg(windows)]
mod pipe;
mod sql;

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use futures::{Stream, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use tonic::transport::Channel;

pub use connect::DEFAULT_SOCKET;
pub use error::Error;
pub use sql::{MalformedReply, Row, RowBatch, SqlEvent, SqlStream, Value};

/// Generated protobuf and gRPC types of `identity_gateway.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("identity_gateway.v1");
}

use proto::identity_gateway_client::IdentityGatewayClient;

/// Which managed identity to use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Identity {
    /// The VM's system-assigned identity.
    #[default]
    SystemAssigned,
    /// A user-assigned identity by client id.
    ClientId(String),
    /// A user-assigned identity by object (principal) id.
    ObjectId(String),
    /// A user-assigned identity by ARM resource id.
    ResourceId(String),
}

impl Identity {
    /// The proto form (`None` for system-assigned).
    pub fn to_proto(&self) -> Option<proto::Identity> {
        use proto::identity::Selector;
        let selector = match self {
            Identity::SystemAssigned => return None,
            Identity::ClientId(id) => Selector::ClientId(id.clone()),
            Identity::ObjectId(id) => Selector::ObjectId(id.clone()),
            Identity::ResourceId(id) => Selector::ResourceId(id.clone()),
        };
        Some(proto::Identity {
            selector: Some(selector),
        })
    }
}

/// An access token. `Debug` never prints the token itself.
#[derive(Clone)]
pub struct Token {
    /// The bearer token (a JWT).
    pub access_token: SecretString,
    /// Always "Bearer".
    pub token_type: String,
    /// When the token stops being valid.
    pub expires_on: SystemTime,
    /// The audience, exactly as requested.
    pub resource: String,
}

impl Token {
    /// The raw token, for an `Authorization: Bearer` header.
    pub fn secret(&self) -> &str {
        self.access_token.expose_secret()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"** redacted **")
            .field("token_type", &self.token_type)
            .field("expires_on", &self.expires_on)
            .field("resource", &self.resource)
            .finish()
    }
}

impl TryFrom<proto::GetTokenResponse> for Token {
    type Error = Error;
    fn try_from(reply: proto::GetTokenResponse) -> Result<Self, Error> {
        let expires_on = reply
            .expires_on
            .ok_or_else(|| Error::Malformed("reply has no expires_on".into()))
            .and_then(|ts| {
                SystemTime::try_from(ts)
                    .map_err(|e| Error::Malformed(format!("bad expires_on: {e}")))
            })?;
        Ok(Token {
            access_token: SecretString::from(reply.access_token),
            token_type: reply.token_type,
            expires_on,
            resource: reply.resource,
        })
    }
}

/// How to connect; the defaults suit almost everyone.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Windows: how long to keep retrying while every pipe instance is busy
    /// (`ERROR_PIPE_BUSY`). Default 5 s.
    pub busy_timeout: Duration,
    /// Windows: the SIDs the pipe's owner must be one of. `None` (the
    /// default) accepts SYSTEM, LocalService, NetworkService, virtual service
    /// accounts, Administrators and the calling user, and refuses a pipe
    /// another ordinary user created (an impostor squatting the name).
    pub pipe_owners: Option<Vec<String>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            pipe_owners: None,
        }
    }
}

/// A connection to the gateway. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    channel: Channel,
    rpc: IdentityGatewayClient<Channel>,
}

/// Replies up to this size are accepted (the gateway keeps row batches far
/// below it).
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

impl GatewayClient {
    /// Connects to `target`: a Unix socket path (`/run/...sock` or
    /// `unix:///run/...sock`), a Windows pipe (`\\.\pipe\name`), or a URL
    /// (`http://127.0.0.1:7777`).
    pub async fn connect(target: &str) -> Result<Self, Error> {
        Self::connect_with(target, &ConnectOptions::default()).await
    }

    /// [`connect`](Self::connect) with explicit [`ConnectOptions`].
    pub async fn connect_with(target: &str, options: &ConnectOptions) -> Result<Self, Error> {
        let channel = connect::channel(target, options).await?;
        Ok(Self::from_channel(channel))
    }

    /// Connects to `$IDENTITY_GATEWAY_SOCKET` (on Windows also
    /// `$IDENTITY_GATEWAY_PIPE`), or the default socket (pipe on Windows).
    pub async fn connect_default() -> Result<Self, Error> {
        let target = std::env::var("IDENTITY_GATEWAY_SOCKET")
            .ok()
            .or_else(|| {
                cfg!(windows)
                    .then(|| std::env::var("IDENTITY_GATEWAY_PIPE").ok())
                    .flatten()
            })
            .unwrap_or_else(|| DEFAULT_SOCKET.to_string());
        Self::connect(&target).await
    }

    /// Wraps an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            rpc: IdentityGatewayClient::new(channel.clone())
                .max_decoding_message_size(MAX_REPLY_BYTES),
            channel,
        }
    }

    /// The generated client, for every RPC with full control of the request.
    pub fn rpc(&self) -> IdentityGatewayClient<Channel> {
        self.rpc.clone()
    }

    /// A token for `resource` with the system-assigned identity.
    pub async fn get_token(&self, resource: &str) -> Result<Token, Error> {
        self.get_token_for(resource, Identity::SystemAssigned).await
    }

    /// A token for `resource` with the given identity.
    pub async fn get_token_for(&self, resource: &str, identity: Identity) -> Result<Token, Error> {
        let request = proto::GetTokenRequest {
            resource: resource.to_string(),
            identity: identity.to_proto(),
        };
        let reply = self.rpc().get_token(request).await?.into_inner();
        Token::try_from(reply)
    }

    /// The current token for `resource`, then every refreshed one.
    pub async fn watch_token(
        &self,
        resource: &str,
        identity: Identity,
    ) -> Result<impl Stream<Item = Result<Token, Error>> + Send + 'static, Error> {
        let request = proto::WatchTokenRequest {
            resource: resource.to_string(),
            identity: identity.to_proto(),
        };
        let stream = self.rpc().watch_token(request).await?.into_inner();
        Ok(stream.map(|item| item.map_err(Error::from).and_then(Token::try_from)))
    }

    /// Runs a query (QuerySql) and streams its results. Row batches are read
    /// in place: see [`RowBatch`]. (`rpc().query_sql` gives the generated
    /// types instead, at the cost of an allocation per row and text cell.)
    ///
    /// ```no_run
    /// # async fn example(client: identity_gateway_client::GatewayClient)
    /// #     -> Result<(), identity_gateway_client::Error> {
    /// use identity_gateway_client::{proto::QuerySqlRequest, SqlEvent, Value};
    ///
    /// let mut results = client
    ///     .query_sql(QuerySqlRequest {
    ///         server: "myserver.database.windows.net".into(),
    ///         database: "orders".into(),
    ///         query: "SELECT id, customer FROM dbo.orders WHERE region = @P1".into(),
    ///         parameters: vec![identity_gateway_client::proto::SqlValue {
    ///             kind: Some(identity_gateway_client::proto::sql_value::Kind::String("EU".into())),
    ///         }],
    ///         ..Default::default()
    ///     })
    ///     .await?;
    /// while let Some(event) = results.next_event().await? {
    ///     if let SqlEvent::Rows(batch) = event {
    ///         for row in batch.rows() {
    ///             if let (Some(Value::Int(id)), Some(Value::String(customer))) = (row.get(0), row.get(1)) {
    ///                 println!("{id}: {customer}");
    ///             }
    ///         }
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn query_sql(&self, request: proto::QuerySqlRequest) -> Result<SqlStream, Error> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(MAX_REPLY_BYTES);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unknown(format!("Service was not ready: {e}")))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/identity_gateway.v1.IdentityGateway/QuerySql",
        );
        let stream = grpc
            .server_streaming(tonic::Request::new(request), path, sql::QuerySqlCodec)
            .await?
            .into_inner();
        Ok(SqlStream::new(stream))
    }

    /// A Key Vault secret's value and metadata.
    pub async fn get_secret(
        &self,
        vault_url: &str,
        name: &str,
    ) -> Result<proto::GetSecretResponse, Error> {
        let request = proto::GetSecretRequest {
            vault: Some(proto::get_secret_request::Vault::VaultUrl(
                vault_url.to_string(),
            )),
            name: name.to_string(),
            ..Default::default()
        };
        Ok(self.rpc().get_secret(request).await?.into_inner())
    }
}
