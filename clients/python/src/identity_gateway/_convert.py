"""Python values <-> the generated protobuf messages, shared by the sync and
async clients. Nothing here does I/O."""

from __future__ import annotations

import os
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from google.protobuf import duration_pb2, timestamp_pb2

from ._proto import gateway_pb2 as pb
from .models import (
    BlobProperties,
    DataLakeEntry,
    IdentityLike,
    ManagedIdentity,
    ResourceGroup,
    Secret,
    ServiceSas,
    SqlColumn,
    SqlSummary,
    Token,
)

#: Where a system install listens.
DEFAULT_SOCKET = "/run/identity-gateway/gateway.sock"
#: Overrides the socket path when none is passed.
SOCKET_ENV = "IDENTITY_GATEWAY_SOCKET"

_INT64 = (-(2**63), 2**63 - 1)

# Accepted spellings (case, '-' and '_' ignored) of the request enums.
CLOUDS = {
    None: pb.CLOUD_UNSPECIFIED,
    "public": pb.CLOUD_AZURE_PUBLIC,
    "azurepublic": pb.CLOUD_AZURE_PUBLIC,
    "usgovernment": pb.CLOUD_AZURE_US_GOVERNMENT,
    "azureusgovernment": pb.CLOUD_AZURE_US_GOVERNMENT,
    "china": pb.CLOUD_AZURE_CHINA,
    "azurechina": pb.CLOUD_AZURE_CHINA,
}
GENERATIONS = {
    None: pb.DATA_LAKE_GENERATION_UNSPECIFIED,
    1: pb.DATA_LAKE_GENERATION_GEN1,
    "gen1": pb.DATA_LAKE_GENERATION_GEN1,
    2: pb.DATA_LAKE_GENERATION_GEN2,
    "gen2": pb.DATA_LAKE_GENERATION_GEN2,
}
SAS_METHODS = {
    None: pb.SAS_METHOD_UNSPECIFIED,
    "userdelegation": pb.SAS_METHOD_USER_DELEGATION,
    "arm": pb.SAS_METHOD_ARM_LIST_SERVICE_SAS,
    "armlistservicesas": pb.SAS_METHOD_ARM_LIST_SERVICE_SAS,
}


def resolve_target(socket_path: Optional[str] = None, target: Optional[str] = None) -> str:
    """The gRPC target: ``target`` as given (e.g. ``127.0.0.1:7777``), else
    ``unix:`` + ``socket_path``, ``$IDENTITY_GATEWAY_SOCKET`` or the default socket."""
    if socket_path and target:
        raise ValueError("give socket_path or target, not both")
    if target:
        return target
    path = socket_path or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    return "unix:" + os.path.abspath(os.fspath(path))


def channel_options(target: str, options: Optional[Sequence[Tuple[str, Any]]]) -> List[Tuple[str, Any]]:
    """Channel options for ``target``: the caller's, as given (the gateway
    accepts the socket path gRPC core sends as ``:authority``)."""
    merged = list(options or ())
    return merged


def scope_to_resource(scopes: Sequence[str]) -> str:
    """azure-core scopes -> the managed-identity resource: exactly one scope,
    with a trailing ``/.default`` dropped (what ManagedIdentityCredential does)."""
    if len(scopes) != 1:
        raise ValueError(f"managed identities take exactly one scope, got {len(scopes)}")
    scope = scopes[0]
    return scope[: -len("/.default")] if scope.endswith("/.default") else scope


def identity(value: IdentityLike) -> Optional[pb.Identity]:
    if value is None:
        return None
    if isinstance(value, Mapping):
        unknown = set(value) - {"client_id", "object_id", "resource_id"}
        if unknown:
            raise ValueError(f"unknown identity keys {sorted(unknown)}: use client_id, object_id or resource_id")
        value = ManagedIdentity(**value)
    if not isinstance(value, ManagedIdentity):
        raise TypeError(f"identity must be None, a ManagedIdentity or a mapping, not {type(value).__name__}")
    if value.client_id:
        return pb.Identity(client_id=value.client_id)
    if value.object_id:
        return pb.Identity(object_id=value.object_id)
    if value.resource_id:
        return pb.Identity(resource_id=value.resource_id)
    return None


def enum_value(table: Dict[Any, int], value: Any, what: str) -> int:
    key = value.lower().replace("-", "").replace("_", "") if isinstance(value, str) else value
    if key in table:
        return table[key]
    raise ValueError(f"unknown {what} {value!r}; expected one of {[k for k in table if k is not None]}")


def to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(timezone.utc))
    return ts


def to_duration(value: Union[timedelta, int, float]) -> duration_pb2.Duration:
    if not isinstance(value, timedelta):
        value = timedelta(seconds=value)
    d = duration_pb2.Duration()
    d.FromTimedelta(value)
    return d


def from_timestamp(message: Any, name: str) -> Optional[datetime]:
    if not message.HasField(name):
        return None
    return getattr(message, name).ToDatetime(tzinfo=timezone.utc)


def token(reply: pb.GetTokenResponse) -> Token:
    return Token(
        access_token=reply.access_token,
        token_type=reply.token_type,
        expires_on=reply.expires_on.ToDatetime(tzinfo=timezone.utc),
        resource=reply.resource,
    )


def secret(reply: pb.GetSecretResponse) -> Secret:
    return Secret(
        value=reply.value,
        id=reply.id,
        name=reply.name,
        version=reply.version,
        content_type=reply.content_type,
        enabled=reply.enabled,
        created=from_timestamp(reply, "created"),
        updated=from_timestamp(reply, "updated"),
        not_before=from_timestamp(reply, "not_before"),
        expires=from_timestamp(reply, "expires"),
        tags=dict(reply.tags),
        managed=reply.managed,
    )


def data_lake_entry(entry: pb.DataLakeEntry) -> DataLakeEntry:
    return DataLakeEntry(
        name=entry.name,
        is_directory=entry.is_directory,
        length=entry.length,
        modified=from_timestamp(entry, "modified"),
        owner=entry.owner,
        group=entry.group,
        permissions=entry.permissions,
    )


def service_sas(reply: pb.GetServiceSasResponse) -> ServiceSas:
    return ServiceSas(
        sas_token=reply.sas_token,
        url=reply.url,
        expires_on=from_timestamp(reply, "expires_on"),
        signed_resource=reply.signed_resource,
        signed_permissions=reply.signed_permissions,
    )


def resource_group(reply: pb.GetResourceGroupResponse) -> ResourceGroup:
    return ResourceGroup(
        id=reply.id,
        name=reply.name,
        type=reply.type,
        location=reply.location,
        provisioning_state=reply.provisioning_state,
        managed_by=reply.managed_by,
        tags=dict(reply.tags),
    )


def blob_properties(props: pb.BlobProperties) -> BlobProperties:
    return BlobProperties(
        size=props.size,
        content_type=props.content_type,
        etag=props.etag,
        last_modified=from_timestamp(props, "last_modified"),
    )


# ---------------------------------------------------------------- SQL values


def sql_parameter(value: Any, position: int) -> pb.SqlValue:
    """A Python value as the ``@P<position>`` parameter. Naive datetimes are taken as UTC."""
    where = f"parameter @P{position}"
    if value is None:
        return pb.SqlValue(null=0)
    if isinstance(value, bool):
        return pb.SqlValue(bool=value)
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"{where}: {value} does not fit in a 64-bit integer")
        return pb.SqlValue(int=value)
    if isinstance(value, float):
        return pb.SqlValue(float=value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{where}: {value} is not a finite decimal")
        return pb.SqlValue(decimal=format(value, "f"))
    if isinstance(value, str):
        return pb.SqlValue(string=value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return pb.SqlValue(bytes=bytes(value))
    if isinstance(value, uuid.UUID):
        return pb.SqlValue(guid=str(value).upper())
    if isinstance(value, datetime):
        return pb.SqlValue(timestamp=to_timestamp(value))
    if isinstance(value, date):
        return pb.SqlValue(date=value.isoformat())
    if isinstance(value, time):
        if value.tzinfo is not None:
            raise ValueError(f"{where}: SQL time has no time zone; pass a naive time")
        return pb.SqlValue(time=value.isoformat())
    raise TypeError(f"{where}: cannot send a {type(value).__name__} to SQL")


def sql_parameters(values: Optional[Iterable[Any]]) -> List[pb.SqlValue]:
    return [sql_parameter(v, i) for i, v in enumerate(values or (), start=1)]


def _time(text: str) -> time:
    # SQL time carries up to 7 fractional digits; Python keeps 6.
    whole, _, fraction = text.partition(".")
    hh, mm, ss = (int(p) for p in whole.split(":"))
    micro = int((fraction + "000000")[:6]) if fraction else 0
    return time(hh, mm, ss, micro)


def sql_value(value: pb.SqlValue) -> Any:
    """A result value as a Python value."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null":
        return None
    if kind in ("bool", "int", "float", "string", "bytes"):
        return getattr(value, kind)
    if kind == "decimal":
        return Decimal(value.decimal)
    if kind == "guid":
        return uuid.UUID(value.guid)
    if kind == "timestamp":
        return value.timestamp.ToDatetime(tzinfo=timezone.utc)
    if kind == "date":
        return date.fromisoformat(value.date)
    if kind == "time":
        return _time(value.time)
    raise ValueError(f"unknown SQL value kind {kind!r}")


def sql_columns(message: pb.SqlResultSetColumns) -> List[SqlColumn]:
    return [SqlColumn(name=c.name, type=c.type, nullable=c.nullable) for c in message.columns]


def row_keys(columns: Sequence[SqlColumn]) -> List[str]:
    """Dict keys for a result set: the column names; an unnamed or repeated
    column is keyed ``column<N>`` (1-based position)."""
    keys: List[str] = []
    seen = set()
    for n, column in enumerate(columns, start=1):
        key = column.name if column.name and column.name not in seen else f"column{n}"
        seen.add(key)
        keys.append(key)
    return keys


def sql_summary(done: pb.SqlQueryDone) -> SqlSummary:
    return SqlSummary(
        rows_per_result_set=tuple(done.rows_per_result_set),
        rows_affected=tuple(done.rows_affected),
        truncated=done.truncated,
    )
