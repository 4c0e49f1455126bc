//! The gateway's one error type. Every module returns [`GatewayError`]; the api
//! layer turns it into a gRPC status in exactly one place (`api::status`).
//!
//! Messages are written for the caller: they name the field or the upstream
//! and say what to do. They never contain a token, secret, key or SAS
//! signature.

/// What went wrong, by the gRPC status it maps to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A request field is malformed, or names a host the gateway will not send a
    /// token to. `field` is the proto field path (e.g. `parameters[2]`).
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The managed identity is not enabled, or the selected user-assigned
    /// identity is not assigned to this VM.
    #[error("{0}")]
    IdentityUnavailable(String),
    /// The gateway's caller policy or Azure (RBAC, access policy) refused.
    #[error("{0}")]
    PermissionDenied(String),
    /// The named secret, path, blob, group or SQL object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Upstream kept throttling after the retries the policy allows.
    #[error("{0}")]
    Throttled(String),
    /// The upstream could not be reached or kept failing.
    #[error("{0}")]
    Unavailable(String),
    /// The caller's deadline passed first.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The caller cancelled.
    #[error("{0}")]
    Cancelled(String),
    /// Upstream answered something the gateway cannot make sense of.
    #[error("{0}")]
    Upstream(String),
    /// The RPC is declared but not served by this build.
    #[error("{0}")]
    Unimplemented(String),
}

impl GatewayError {
    /// The gRPC status code name this error maps to (`InvalidArgument`,
    /// `PermissionDenied`, ...), for audit lines and metrics labels.
    pub fn code_name(&self) -> &'static str {
        match self {
            Self::InvalidArgument { .. } => "InvalidArgument",
            Self::IdentityUnavailable(_) => "FailedPrecondition",
            Self::PermissionDenied(_) => "PermissionDenied",
            Self::NotFound(_) => "NotFound",
            Self::Throttled(_) => "ResourceExhausted",
            Self::Unavailable(_) => "Unavailable",
            Self::DeadlineExceeded(_) => "DeadlineExceeded",
            Self::Cancelled(_) => "Cancelled",
            Self::Upstream(_) => "Internal",
            Self::Unimplemented(_) => "Unimplemented",
        }
    }

    /// Shorthand for [`GatewayError::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias used across the gateway.
pub type Result<T, E = GatewayError> = std::result::Result<T, E>;
