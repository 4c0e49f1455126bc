//! The one mapping from [`GatewayError`] to a gRPC [`Status`].

use tonic::{Code, Status};

use crate::error::GatewayError;

impl From<GatewayError> for Status {
    fn from(error: GatewayError) -> Self {
        let code = match &error {
            GatewayError::InvalidArgument { .. } => Code::InvalidArgument,
            GatewayError::IdentityUnavailable(_) => Code::FailedPrecondition,
            GatewayError::PermissionDenied(_) => Code::PermissionDenied,
            GatewayError::NotFound(_) => Code::NotFound,
            GatewayError::Throttled(_) => Code::ResourceExhausted,
            GatewayError::Unavailable(_) => Code::Unavailable,
            GatewayError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            GatewayError::Cancelled(_) => Code::Cancelled,
            GatewayError::Upstream(_) => Code::Internal,
            GatewayError::Unimplemented(_) => Code::Unimplemented,
        };
        Status::new(code, error.to_string())
    }
}
