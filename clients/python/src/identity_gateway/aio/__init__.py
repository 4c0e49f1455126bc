"""asyncio versions of :func:`identity_gateway.connect` (an ``AsyncClient`` on
``grpc.aio``) and of ``GatewayCredential`` (azure-core's
``AsyncTokenCredential``). Same arguments, same exceptions, same types.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Iterable, List, Optional, Sequence, Tuple, Union

import grpc
import grpc.aio

from .. import _convert as convert
from .._proto import gateway_pb2 as pb
from .._proto import gateway_pb2_grpc as pb_grpc
from ..client import CLIENT_DEFAULT, DEFAULT_TIMEOUT
from ..errors import from_rpc_error
from ..models import (
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

__all__ = ["AsyncClient", "AsyncBlobStream", "AsyncSqlQuery", "GatewayCredential", "connect"]


def connect(
    socket_path: Optional[str] = None,
    *,
    target: Optional[str] = None,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
    options: Optional[Sequence[Tuple[str, Any]]] = None,
) -> "AsyncClient":
    """Like :func:`identity_gateway.connect`, on a ``grpc.aio`` channel. Call it
    from inside a running event loop."""
    resolved = convert.resolve_target(socket_path, target)
    channel = grpc.aio.insecure_channel(resolved, options=convert.channel_options(resolved, options))
    return AsyncClient(channel, timeout=timeout)


class AsyncClient:
    """The asyncio gateway client. ``async with`` it, or ``await close()``."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: Optional[float] = DEFAULT_TIMEOUT) -> None:
        self._channel = channel
        self._stub = pb_grpc.IdentityGatewayStub(channel)
        self._timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _deadline(self, timeout: Any) -> Optional[float]:
        return self._timeout if timeout is CLIENT_DEFAULT else timeout

    async def _unary(self, method: Any, request: Any, timeout: Any) -> Any:
        try:
            return await method(request, timeout=self._deadline(timeout))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def _stream(self, method: Any, request: Any, timeout: Any) -> AsyncIterator[Any]:
        call = method(request, timeout=self._deadline(timeout))
        try:
            async for message in call:
                yield message
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()

    async def get_token(self, resource: str, identity: IdentityLike = None, *, timeout: Any = CLIENT_DEFAULT) -> Token:
        request = pb.GetTokenRequest(resource=resource, identity=convert.identity(identity))
        return convert.token(await self._unary(self._stub.GetToken, request, timeout))

    async def watch_token(
        self, resource: str, identity: IdentityLike = None, *, timeout: Optional[float] = None
    ) -> AsyncIterator[Token]:
        request = pb.WatchTokenRequest(resource=resource, identity=convert.identity(identity))
        async for reply in self._stream(self._stub.WatchToken, request, timeout):
            yield convert.token(reply)

    async def get_secret(
        self,
        name: str,
        *,
        vault_url: Optional[str] = None,
        vault_name: Optional[str] = None,
        version: str = "",
        cloud: Optional[str] = None,
        identity: IdentityLike = None,
        bypass_cache: bool = False,
        timeout: Any = CLIENT_DEFAULT,
    ) -> Secret:
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
        return convert.secret(await self._unary(self._stub.GetSecret, request, timeout))

    async def list_data_lake(
        self,
        account_url: str,
        path: str = "",
        *,
        filesystem: str = "",
        recursive: bool = False,
        generation: Union[None, int, str] = None,
        page_size: int = 0,
        continuation: str = "",
        identity: IdentityLike = None,
        timeout: Any = CLIENT_DEFAULT,
    ) -> AsyncIterator[DataLakeEntry]:
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
        async for page in self._stream(self._stub.ListDataLake, request, timeout):
            for entry in page.entries:
                yield convert.data_lake_entry(entry)

    async def get_service_sas(
        self,
        account: str,
        container: str,
        blob: str = "",
        *,
        permissions: str = "r",
        expires_in: Union[timedelta, int, float, None] = None,
        method: Optional[str] = None,
        start: Optional[datetime] = None,
        ip_range: str = "",
        allow_http: bool = False,
        subscription_id: str = "",
        resource_group: str = "",
        blob_endpoint: str = "",
        cloud: Optional[str] = None,
        identity: IdentityLike = None,
        timeout: Any = CLIENT_DEFAULT,
    ) -> ServiceSas:
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
        return convert.service_sas(await self._unary(self._stub.GetServiceSas, request, timeout))

    async def get_resource_group(
        self,
        subscription_id: str,
        name: str,
        *,
        cloud: Optional[str] = None,
        identity: IdentityLike = None,
        timeout: Any = CLIENT_DEFAULT,
    ) -> ResourceGroup:
        request = pb.GetResourceGroupRequest(
            subscription_id=subscription_id,
            name=name,
            identity=convert.identity(identity),
            cloud=convert.enum_value(convert.CLOUDS, cloud, "cloud"),
        )
        return convert.resource_group(await self._unary(self._stub.GetResourceGroup, request, timeout))

    async def read_blob(
        self,
        blob_url: str,
        *,
        offset: int = 0,
        length: int = 0,
        identity: IdentityLike = None,
        timeout: Any = CLIENT_DEFAULT,
    ) -> "AsyncBlobStream":
        request = pb.ReadBlobRequest(
            blob_url=blob_url, offset=offset, length=length, identity=convert.identity(identity)
        )
        messages = self._stream(self._stub.ReadBlob, request, timeout)
        try:
            first = await messages.__anext__()
        except StopAsyncIteration:
            first = None
        if first is None or not first.HasField("properties"):
            await messages.aclose()
            raise ValueError("the gateway's ReadBlob stream did not start with the blob's properties")
        return AsyncBlobStream(convert.blob_properties(first.properties), first.data, messages)

    async def read_blob_bytes(self, blob_url: str, **kwargs: Any) -> bytes:
        stream = await self.read_blob(blob_url, **kwargs)
        return await stream.read()

    def query_sql(
        self,
        server: str,
        database: str,
        query: str,
        parameters: Optional[Iterable[Any]] = None,
        *,
        port: int = 0,
        max_rows: int = 0,
        query_timeout: Union[timedelta, int, float, None] = None,
        row_type: type = dict,
        identity: IdentityLike = None,
        timeout: Any = CLIENT_DEFAULT,
    ) -> "AsyncSqlQuery":
        """Rows as an async iterator (``async for row in gw.query_sql(...)``)."""
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
        return AsyncSqlQuery(self._stream(self._stub.QuerySql, request, timeout), row_type)


class AsyncBlobStream:
    """``properties``, then the content as ``bytes`` chunks (``async for``)."""

    def __init__(self, properties: BlobProperties, first: bytes, messages: AsyncIterator[pb.ReadBlobResponse]) -> None:
        self.properties = properties
        self._pending = first
        self._messages = messages

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._pending:
            pending, self._pending = self._pending, b""
            yield pending
        async for message in self._messages:
            if message.data:
                yield message.data

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self])

    async def aclose(self) -> None:
        await self._messages.aclose()  # type: ignore[attr-defined]


class AsyncSqlQuery:
    """Like :class:`identity_gateway.SqlQuery`, for ``async for``."""

    def __init__(self, messages: AsyncIterator[pb.QuerySqlResponse], row_type: type) -> None:
        self._messages = messages
        self._as_dict = row_type is dict
        self.columns: List[SqlColumn] = []
        self.result_set = -1
        self.summary: Optional[SqlSummary] = None
        self._keys: List[str] = []
        self._rows = self._generate()

    async def _generate(self) -> AsyncIterator[Any]:
        async for message in self._messages:
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

    def __aiter__(self) -> "AsyncSqlQuery":
        return self

    async def __anext__(self) -> Any:
        return await self._rows.__anext__()

    async def fetchall(self) -> List[Any]:
        return [row async for row in self]

    async def aclose(self) -> None:
        await self._rows.aclose()
        await self._messages.aclose()  # type: ignore[attr-defined]


def __getattr__(name: str) -> Any:
    # The async credential needs azure-core, an optional dependency.
    if name == "GatewayCredential":
        from ._credential import GatewayCredential

        return GatewayCredential
    raise AttributeError(f"module 'identity_gateway.aio' has no attribute {name!r}")
