//! The client's error type: one variant per gRPC status the gateway uses.

use tonic::{Code, Status};

/// Why a call failed. Messages come from the gateway and name the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Could not connect to the gateway.
    #[error("cannot connect to identity-gateway at {target}: {message}")]
    Connect {
        /// The socket, pipe or URL.
        target: String,
        /// Why.
        message: String,
    },
    /// A request field was rejected (the message names it).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The managed identity is not enabled or not assigned to this VM.
    #[error("identity unavailable: {0}")]
    IdentityUnavailable(String),
    /// Gateway policy or Azure refused.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Azure throttled even after the gateway's retries.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The gateway or an upstream is unreachable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The deadline passed.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The gateway does not implement this RPC.
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// Any other status.
    #[error("{code:?}: {message}")]
    Other {
        /// The gRPC code.
        code: Code,
        /// The gateway's message.
        message: String,
    },
    /// The gateway answered something this client cannot read.
    #[error("malformed reply: {0}")]
    Malformed(String),
}

impl Error {
    /// The gRPC code this error corresponds to.
    pub fn code(&self) -> Code {
        match self {
            Error::Connect { .. } => Code::Unavailable,
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::IdentityUnavailable(_) => Code::FailedPrecondition,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::NotFound(_) => Code::NotFound,
            Error::Throttled(_) => Code::ResourceExhausted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Other { code, .. } => *code,
            Error::Malformed(_) => Code::Internal,
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        let message = status.message().to_string();
        match status.code() {
            Code::InvalidArgument => Error::InvalidArgument(message),
            Code::FailedPrecondition => Error::IdentityUnavailable(message),
            Code::PermissionDenied => Error::PermissionDenied(message),
            Code::NotFound => Error::NotFound(message),
            Code::ResourceExhausted => Error::Throttled(message),
            Code::Unavailable => Error::Unavailable(message),
            Code::DeadlineExceeded => Error::DeadlineExceeded(message),
            Code::Unimplemented => Error::Unimplemented(message),
            code => Error::Other { code, message },
        }
    }
}
