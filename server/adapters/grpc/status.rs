//! The one mapping from [`GatewayError`] to a gRPC [`Status`].

use identity_gateway_core::GatewayError;
use tonic::{Code, Status};

/// The status a failed operation answers with; the message is the error's,
/// written for the caller (never a token, secret or signature).
pub fn status(error: GatewayError) -> Status {
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
        _ => Code::Unknown,
    };
    Status::new(code, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_its_code_and_keeps_the_message() {
        let cases = [
            (
                GatewayError::invalid("resource", "is required"),
                Code::InvalidArgument,
            ),
            (
                GatewayError::IdentityUnavailable("x".into()),
                Code::FailedPrecondition,
            ),
            (
                GatewayError::PermissionDenied("x".into()),
                Code::PermissionDenied,
            ),
            (GatewayError::NotFound("x".into()), Code::NotFound),
            (GatewayError::Throttled("x".into()), Code::ResourceExhausted),
            (GatewayError::Unavailable("x".into()), Code::Unavailable),
            (
                GatewayError::DeadlineExceeded("x".into()),
                Code::DeadlineExceeded,
            ),
            (GatewayError::Upstream("x".into()), Code::Internal),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let name = error.code_name();
            let status = status(error);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), message);
            assert_eq!(format!("{code:?}"), name);
        }
    }
}
