"""Python client for identity-gateway: the VM's Azure managed identity,
brokered over gRPC on a Unix socket.

>>> import identity_gateway
>>> with identity_gateway.connect() as gw:
...     token = gw.get_token("https://vault.azure.net")

``GatewayCredential`` (needs azure-core) plugs the gateway into any Azure SDK
client; ``identity_gateway.aio`` has the asyncio versions of both.
"""

from .client import CLIENT_DEFAULT, DEFAULT_TIMEOUT, BlobStream, Client, SqlQuery, connect
from ._convert import DEFAULT_SOCKET, SOCKET_ENV
from .errors import (
    Cancelled,
    DeadlineExceeded,
    GatewayError,
    IdentityUnavailable,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Throttled,
    Unavailable,
    Unimplemented,
    UpstreamError,
)
from .models import (
    BlobProperties,
    DataLakeEntry,
    ManagedIdentity,
    ResourceGroup,
    Secret,
    ServiceSas,
    SqlColumn,
    SqlSummary,
    Token,
)

__version__ = "0.1.0"

__all__ = [
    "BlobProperties",
    "BlobStream",
    "CLIENT_DEFAULT",
    "Cancelled",
    "Client",
    "DEFAULT_SOCKET",
    "DEFAULT_TIMEOUT",
    "DataLakeEntry",
    "DeadlineExceeded",
    "GatewayCredential",
    "GatewayError",
    "IdentityUnavailable",
    "InvalidArgument",
    "ManagedIdentity",
    "NotFound",
    "PermissionDenied",
    "ResourceGroup",
    "SOCKET_ENV",
    "Secret",
    "ServiceSas",
    "SqlColumn",
    "SqlQuery",
    "SqlSummary",
    "Throttled",
    "Token",
    "Unavailable",
    "Unimplemented",
    "UpstreamError",
    "connect",
]


def __getattr__(name: str):
    # GatewayCredential needs azure-core, an optional dependency: import it
    # only when asked for.
    if name == "GatewayCredential":
        from .credential import GatewayCredential

        return GatewayCredential
    raise AttributeError(f"module 'identity_gateway' has no attribute {name!r}")
