"""Exceptions: one class per gRPC status the gateway answers with.

Every exception is a :class:`GatewayError` carrying the gRPC ``code`` and the
gateway's ``message`` (which names the field or the upstream and never holds a
token or secret). Catch the subclass you can act on, or ``GatewayError``.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

import grpc

__all__ = [
    "GatewayError",
    "InvalidArgument",
    "IdentityUnavailable",
    "PermissionDenied",
    "NotFound",
    "Throttled",
    "Unavailable",
    "DeadlineExceeded",
    "Cancelled",
    "UpstreamError",
    "Unimplemented",
    "from_rpc_error",
]


class GatewayError(Exception):
    """The gateway (or the channel to it) refused or failed a call."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message


class InvalidArgument(GatewayError):
    """A request field is malformed, or names a host the gateway will not send a token to."""


class IdentityUnavailable(GatewayError):
    """The managed identity is not enabled, or the selected one is not assigned to this VM."""


class PermissionDenied(GatewayError):
    """The gateway's caller policy, or Azure RBAC / access policy, refused."""


class NotFound(GatewayError):
    """The secret, path, blob, resource group or SQL object does not exist."""


class Throttled(GatewayError):
    """Upstream kept throttling after the gateway's retries (RESOURCE_EXHAUSTED)."""


class Unavailable(GatewayError):
    """The gateway or its upstream could not be reached (is the gateway running?)."""


class DeadlineExceeded(GatewayError):
    """The call's deadline passed before an answer."""


class Cancelled(GatewayError):
    """The call was cancelled."""


class UpstreamError(GatewayError):
    """Upstream answered something the gateway could not make sense of (INTERNAL)."""


class Unimplemented(GatewayError):
    """This gateway build does not serve the RPC."""


_BY_CODE: Dict[grpc.StatusCode, Type[GatewayError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: IdentityUnavailable,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Throttled,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INTERNAL: UpstreamError,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
}


def from_rpc_error(error: grpc.RpcError) -> GatewayError:
    """The :class:`GatewayError` subclass for a failed call."""
    code: Optional[grpc.StatusCode] = error.code() if hasattr(error, "code") else None
    if code is None:
        code = grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else None
    return _BY_CODE.get(code, GatewayError)(code, details or "")
