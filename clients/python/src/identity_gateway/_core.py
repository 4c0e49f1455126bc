"""What the sync and asyncio clients share: everything but the I/O.

For each RPC, a function takes the client method's Python arguments,
validates them and returns a :class:`Call`: the stub method's name, the
request message and the conversion of each reply. The clients only send it
(``stub.X(request, timeout=...)`` or ``await stub.X(...)``) and map errors.
QuerySql rows and ReadBlob's first message are assembled here too.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable, Generic, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

from . import _convert as convert
from ._proto import gateway_pb2 as pb
from ._proto import gateway_pb2_grpc as pb_grpc
from .models import (
    BlobProperties,
    DataLakeEntry,
    IdentityLike,
    ResourceGroup,
    Secret,
    ServiceSas,
    SqlColumn,
    SqlSummary,
    Token,
)

T = TypeVar("T")

#: Deadline (seconds) of each call unless the client or the call says otherwise.
DEFAULT_TIMEOUT = 30.0


class _ClientDefault:
    def __repr__(self) -> str:
        return "<the client's timeout>"


#: ``timeout=`` default of every method: the client's timeout. ``None`` means no deadline.
CLIENT_DEFAULT: Any = _ClientDefault()

Duration = Union[timedelta, int, float, None]


def channel_args(
    socket_path: Optional[str], target: Optional[str], options: Optional[Sequence[Tuple[str, Any]]]
) -> Tuple[str, List[Tuple[str, Any]]]:
    """``(target, options)`` for ``grpc.insecure_channel`` / ``grpc.aio.insecure_channel``."""
    resolved = convert.resolve_target(socket_path, target)
    return resolved, convert.channel_options(resolved, options)


class ClientBase:
    """The channel, the stub and the default deadline of a client."""

    def __init__(self, channel: Any, *, timeout: Optional[float] = DEFAULT_TIMEOUT) -> None:
        self._channel = channel
        self._stub = pb_grpc.IdentityGatewayStub(channel)
        self._timeout = timeout

    def _method(self, call: "Call[Any]", timeout: Any) -> Tuple[Callable[..., Any], Optional[float]]:
        """The stub's method for ``call`` and the call's deadline."""
        return getattr(self._stub, call.method), self._timeout if timeout is CLIENT_DEFAULT else timeout


class Call(Generic[T]):
    """One RPC to make: stub method name, request, and ``convert`` for each
    reply (the reply of a unary RPC, every message of a streamed one)."""

    __slots__ = ("convert", "method", "request")

    def __init__(self, method: str, request: Any, convert: Callable[[Any], T]) -> None:
        self.method = method
        self.request = request
        self.convert = convert


def _raw(message: Any) -> Any:
    return message


# ------------------------------------------------------------ tokens


def get_token(resource: str, identity: IdentityLike) -> Call[Token]:
    return Call("GetToken", pb.GetTokenRequest(resource=resource, identity=convert.identity(identity)), convert.token)


def watch_token(resource: str, identity: IdentityLike) -> Call[Token]:
    request = pb.WatchTokenRequest(resource=resource, identity=convert.identity(identity))
    return Call("WatchToken", request, convert.token)


# ------------------------------------------------------------ Key Vault


def get_secret(
    name: str,
    *,
    vault_url: Optional[str],
    vault_name: Optional[str],
    version: str,
    cloud: Optional[str],
    identity: IdentityLike,
    bypass_cache: bool,
) -> Call[Secret]:
    if bool(vault_url) == bool(vault_name):
        raise ValueError("give exactly one of vault_url or vault_name")
    request = pb.GetSecretRequest(
        name=name,
        version=version,
        cloud=convert.enum_value(convert.CLOUDS, cloud, "cloud"),
        identity=convert.identity(identity),
        bypass_cache=bypass_cache,
    )
    if vault_url:
        request.vault_url = vault_url
    else:
        request.vault_name = vault_name or ""
    return Call("GetSecret", request, convert.secret)


# ------------------------------------------------------------ Data Lake


def data_lake_page(page: pb.ListDataLakeResponse) -> Tuple[List[DataLakeEntry], str]:
    """One ListDataLake message as ``(entries, continuation)``."""
    return [convert.data_lake_entry(e) for e in page.entries], page.continuation


def list_data_lake(
    account_url: str,
    path: str,
    *,
    filesystem: str,
    recursive: bool,
    generation: Union[None, int, str],
    page_size: int,
    continuation: str,
    identity: IdentityLike,
) -> Call[Tuple[List[DataLakeEntry], str]]:
    """ListDataLake; each message converts to a page (see :func:`data_lake_page`)."""
    request = pb.ListDataLakeRequest(
        account_url=account_url,
        generation=convert.enum_value(convert.GENERATIONS, generation, "generation"),
        filesystem=filesystem,
        path=path,
        recursive=recursive,
        page_size=page_size,
        continuation=continuation,
        identity=convert.identity(identity),
    )
    return Call("ListDataLake", request, data_lake_page)


# ------------------------------------------------------------ SAS and ARM


def get_service_sas(
    account: str,
    container: str,
    blob: str,
    *,
    permissions: str,
    expires_in: Duration,
    method: Optional[str],
    start: Optional[datetime],
    ip_range: str,
    allow_http: bool,
    subscription_id: str,
    resource_group: str,
    blob_endpoint: str,
    cloud: Optional[str],
    identity: IdentityLike,
) -> Call[ServiceSas]:
    request = pb.GetServiceSasRequest(
        method=convert.enum_value(convert.SAS_METHODS, method, "method"),
        account=account,
        container=container,
        blob=blob,
        permissions=permissions,
        ip_range=ip_range,
        allow_http=allow_http,
        subscription_id=subscription_id,
        resource_group=resource_group,
        blob_endpoint=blob_endpoint,
        identity=convert.identity(identity),
        cloud=convert.enum_value(convert.CLOUDS, cloud, "cloud"),
    )
    if expires_in is not None:
        request.expires_in.CopyFrom(convert.to_duration(expires_in))
    if start is not None:
        request.start.CopyFrom(convert.to_timestamp(start))
    return Call("GetServiceSas", request, convert.service_sas)


def get_resource_group(
    subscription_id: str, name: str, *, cloud: Optional[str], identity: IdentityLike
) -> Call[ResourceGroup]:
    request = pb.GetResourceGroupRequest(
        subscription_id=subscription_id,
        name=name,
        identity=convert.identity(identity),
        cloud=convert.enum_value(convert.CLOUDS, cloud, "cloud"),
    )
    return Call("GetResourceGroup", request, convert.resource_group)


# ------------------------------------------------------------ Blob


def read_blob(blob_url: str, *, offset: int, length: int, identity: IdentityLike) -> Call[pb.ReadBlobResponse]:
    """ReadBlob; the messages stay raw (see :func:`blob_start`)."""
    request = pb.ReadBlobRequest(blob_url=blob_url, offset=offset, length=length, identity=convert.identity(identity))
    return Call("ReadBlob", request, _raw)


def blob_start(first: Optional[pb.ReadBlobResponse]) -> Tuple[BlobProperties, bytes]:
    """The blob's properties and the first content bytes, from the stream's
    first message (``None`` if the stream ended at once)."""
    if first is None or not first.HasField("properties"):
        raise ValueError("the gateway's ReadBlob stream did not start with the blob's properties")
    return convert.blob_properties(first.properties), first.data


# ------------------------------------------------------------ SQL


def query_sql(
    server: str,
    database: str,
    query: str,
    parameters: Optional[Iterable[Any]],
    *,
    port: int,
    max_rows: int,
    query_timeout: Duration,
    row_type: type,
    identity: IdentityLike,
) -> Call[pb.QuerySqlResponse]:
    """QuerySql; the messages stay raw (see :class:`SqlRows`)."""
    if row_type not in (dict, tuple):
        raise ValueError("row_type must be dict or tuple")
    request = pb.QuerySqlRequest(
        server=server,
        port=port,
        database=database,
        query=query,
        parameters=convert.sql_parameters(parameters),
        identity=convert.identity(identity),
        max_rows=max_rows,
    )
    if query_timeout is not None:
        request.timeout.CopyFrom(convert.to_duration(query_timeout))
    return Call("QuerySql", request, _raw)


class SqlRows:
    """Turns QuerySql messages into rows, keeping track of the current result
    set: ``columns`` and ``result_set`` describe the result set the last row
    came from; ``summary`` is set once the stream has ended."""

    def __init__(self, row_type: type) -> None:
        self._as_dict = row_type is dict
        self.columns: List[SqlColumn] = []
        self.result_set: int = -1
        self.summary: Optional[SqlSummary] = None
        self._keys: List[str] = []

    def _rows_of(self, message: pb.QuerySqlResponse) -> Iterator[Any]:
        """The rows ``message`` carries (often none); a columns or done message
        updates ``columns``/``result_set`` or ``summary`` instead. Iterate it to the end."""
        event = message.WhichOneof("event")
        if event == "columns":
            self.result_set = message.columns.result_set
            self.columns = convert.sql_columns(message.columns)
            self._keys = convert.row_keys(self.columns)
        elif event == "rows":
            for row in message.rows.rows:
                values = tuple(convert.sql_value(v) for v in row.values)
                yield dict(zip(self._keys, values)) if self._as_dict else values
        elif event == "done":
            self.summary = convert.sql_summary(message.done)
