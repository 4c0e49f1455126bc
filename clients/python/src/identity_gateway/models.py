"""What the client hands back: plain dataclasses with Python types
(``datetime`` in UTC, ``timedelta``, ``Decimal``, ``uuid.UUID``), and the
identity selector callers pass in.

``repr`` never shows a token, a secret value or a SAS signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Dict, List, Mapping, Optional, Tuple, Union

__all__ = [
    "ManagedIdentity",
    "IdentityLike",
    "Token",
    "Secret",
    "DataLakeEntry",
    "ServiceSas",
    "ResourceGroup",
    "BlobProperties",
    "SqlColumn",
    "SqlSummary",
]


@dataclass(frozen=True)
class ManagedIdentity:
    """Which managed identity to use. All fields unset means system-assigned.

    Give at most one of ``client_id``, ``object_id`` (principal id) or
    ``resource_id`` (the ARM id of a user-assigned identity).
    """

    client_id: Optional[str] = None
    object_id: Optional[str] = None
    resource_id: Optional[str] = None

    def __post_init__(self) -> None:
        given = [n for n in ("client_id", "object_id", "resource_id") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(f"give at most one of client_id, object_id, resource_id (got {', '.join(given)})")

    @property
    def is_system_assigned(self) -> bool:
        return not (self.client_id or self.object_id or self.resource_id)


#: What ``identity=`` accepts: ``None`` (system-assigned), a
#: :class:`ManagedIdentity`, or a mapping such as ``{"client_id": "..."}``.
IdentityLike = Union[None, ManagedIdentity, Mapping[str, str]]


@dataclass(frozen=True)
class Token:
    """A bearer token. ``str(token)`` and ``repr`` do not show it; use ``access_token``."""

    access_token: str = field(repr=False)
    token_type: str
    expires_on: datetime
    resource: str

    @property
    def expires_on_epoch(self) -> int:
        """Expiry in whole seconds since the Unix epoch (what azure-core wants)."""
        return int(self.expires_on.timestamp())


@dataclass(frozen=True)
class Secret:
    """A Key Vault secret. ``repr`` does not show ``value``."""

    value: str = field(repr=False)
    id: str
    name: str
    version: str
    content_type: str
    enabled: bool
    created: Optional[datetime]
    updated: Optional[datetime]
    not_before: Optional[datetime]
    expires: Optional[datetime]
    tags: Dict[str, str]
    managed: bool


@dataclass(frozen=True)
class DataLakeEntry:
    """One file or directory of an ADLS listing."""

    name: str
    is_directory: bool
    length: int
    modified: Optional[datetime]
    owner: str
    group: str
    permissions: str


@dataclass(frozen=True)
class ServiceSas:
    """A service SAS. Treat ``sas_token`` and ``url`` as secrets; ``repr`` hides them."""

    sas_token: str = field(repr=False)
    url: str = field(repr=False)
    expires_on: Optional[datetime]
    signed_resource: str
    signed_permissions: str


@dataclass(frozen=True)
class ResourceGroup:
    id: str
    name: str
    type: str
    location: str
    provisioning_state: str
    managed_by: str
    tags: Dict[str, str]


@dataclass(frozen=True)
class BlobProperties:
    size: int
    content_type: str
    etag: str
    last_modified: Optional[datetime]


@dataclass(frozen=True)
class SqlColumn:
    name: str
    type: str
    nullable: bool


@dataclass(frozen=True)
class SqlSummary:
    """How a query ended: rows per result set, rows affected, whether ``max_rows`` cut it."""

    rows_per_result_set: Tuple[int, ...]
    rows_affected: Tuple[int, ...]
    truncated: bool


SqlColumns = List[SqlColumn]
