"""asyncio versions of :func:`identity_gateway.connect` (an ``AsyncClient`` on
``grpc.aio``) and of ``GatewayCredential`` (azure-core's
``AsyncTokenCredential``). Same arguments, same exceptions, same types.

Requests, argument checks and replies are built by ``identity_gateway._core``,
as for the sync :class:`~identity_gateway.Client`; only the I/O is async here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Iterable, List, Optional, Sequence, Tuple, TypeVar, Union

import grpc
import grpc.aio

from .. import _core as core
from .._core import CLIENT_DEFAULT, DEFAULT_TIMEOUT
from .._proto import gateway_pb2 as pb
from ..client import Client
from ..errors import from_rpc_error
from ..models import BlobProperties, DataLakeEntry, IdentityLike, ResourceGroup, Secret, ServiceSas, Token

__all__ = ["AsyncClient", "AsyncBlobStream", "AsyncSqlQuery", "GatewayCredential", "connect"]

T = TypeVar("T")


def connect(
    socket_path: Optional[str] = None,
    *,
    target: Optional[str] = None,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
    options: Optional[Sequence[Tuple[str, Any]]] = None,
) -> "AsyncClient":
    """Like :func:`identity_gateway.connect`, on a ``grpc.aio`` channel. Call it
    from inside a running event loop."""
    resolved, channel_options = core.channel_args(socket_path, target, options)
    return AsyncClient(grpc.aio.insecure_channel(resolved, options=channel_options), timeout=timeout)


class AsyncClient(core.ClientBase):
    """The asyncio gateway client. ``async with`` it, or ``await close()``.

    Each method takes the arguments of the same :class:`~identity_gateway.Client`
    method; unary RPCs are coroutines, streamed ones async iterators."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: Optional[float] = DEFAULT_TIMEOUT) -> None:
        super().__init__(channel, timeout=timeout)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # The only I/O: one unary call, or one stream of converted messages.

    async def _unary(self, call: "core.Call[T]", timeout: Any) -> T:
        method, deadline = self._method(call, timeout)
        try:
            reply = await method(call.request, timeout=deadline)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return call.convert(reply)

    async def _stream(self, call: "core.Call[T]", timeout: Any) -> AsyncIterator[T]:
        method, deadline = self._method(call, timeout)
        stream = method(call.request, timeout=deadline)
        try:
            async for message in stream:
                yield call.convert(message)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            stream.cancel()

    # ------------------------------------------------------------ tokens

    async def get_token(self, resource: str, identity: IdentityLike = None, *, timeout: Any = CLIENT_DEFAULT) -> Token:
        return await self._unary(core.get_token(resource, identity), timeout)

    def watch_token(
        self, resource: str, identity: IdentityLike = None, *, timeout: Optional[float] = None
    ) -> AsyncIterator[Token]:
        return self._stream(core.watch_token(resource, identity), timeout)

    # ------------------------------------------------------------ Key Vault

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
        call = core.get_secret(
            name,
            vault_url=vault_url,
            vault_name=vault_name,
            version=version,
            cloud=cloud,
            identity=identity,
            bypass_cache=bypass_cache,
        )
        return await self._unary(call, timeout)

    # ------------------------------------------------------------ Data Lake

    def list_data_lake(
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
        call = core.list_data_lake(
            account_url,
            path,
            filesystem=filesystem,
            recursive=recursive,
            generation=generation,
            page_size=page_size,
            continuation=continuation,
            identity=identity,
        )
        return _entries(self._stream(call, timeout))

    def list_data_lake_pages(
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
    ) -> AsyncIterator[Tuple[List[DataLakeEntry], str]]:
        call = core.list_data_lake(
            account_url,
            path,
            filesystem=filesystem,
            recursive=recursive,
            generation=generation,
            page_size=page_size,
            continuation=continuation,
            identity=identity,
        )
        return self._stream(call, timeout)

    # ------------------------------------------------------------ SAS and ARM

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
        call = core.get_service_sas(
            account,
            container,
            blob,
            permissions=permissions,
            expires_in=expires_in,
            method=method,
            start=start,
            ip_range=ip_range,
            allow_http=allow_http,
            subscription_id=subscription_id,
            resource_group=resource_group,
            blob_endpoint=blob_endpoint,
            cloud=cloud,
            identity=identity,
        )
        return await self._unary(call, timeout)

    async def get_resource_group(
        self,
        subscription_id: str,
        name: str,
        *,
        cloud: Optional[str] = None,
        identity: IdentityLike = None,
        timeout: Any = CLIENT_DEFAULT,
    ) -> ResourceGroup:
        call = core.get_resource_group(subscription_id, name, cloud=cloud, identity=identity)
        return await self._unary(call, timeout)

    # ------------------------------------------------------------ Blob

    async def read_blob(
        self,
        blob_url: str,
        *,
        offset: int = 0,
        length: int = 0,
        identity: IdentityLike = None,
        timeout: Any = CLIENT_DEFAULT,
    ) -> "AsyncBlobStream":
        call = core.read_blob(blob_url, offset=offset, length=length, identity=identity)
        messages = self._stream(call, timeout)
        try:
            properties, first = core.blob_start(await messages.__anext__())
        except StopAsyncIteration:
            properties, first = core.blob_start(None)
        except BaseException:
            await messages.aclose()  # type: ignore[attr-defined]
            raise
        return AsyncBlobStream(properties, first, messages)

    async def read_blob_bytes(self, blob_url: str, **kwargs: Any) -> bytes:
        async with await self.read_blob(blob_url, **kwargs) as stream:
            return await stream.read()

    # ------------------------------------------------------------ SQL

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
        call = core.query_sql(
            server,
            database,
            query,
            parameters,
            port=port,
            max_rows=max_rows,
            query_timeout=query_timeout,
            row_type=row_type,
            identity=identity,
        )
        return AsyncSqlQuery(self._stream(call, timeout), row_type)


# The sync client's docstrings describe both (same arguments, same results).
for _name, _method in vars(AsyncClient).items():
    if callable(_method) and _method.__doc__ is None and getattr(Client, _name, None) is not None:
        _method.__doc__ = getattr(Client, _name).__doc__
del _name, _method


async def _entries(pages: AsyncIterator[Tuple[List[DataLakeEntry], str]]) -> AsyncIterator[DataLakeEntry]:
    try:
        async for entries, _ in pages:
            for entry in entries:
                yield entry
    finally:
        await pages.aclose()  # type: ignore[attr-defined]


class AsyncBlobStream:
    """``properties``, then the content as ``bytes`` chunks (``async for``).
    ``async with`` it, or ``await aclose()``."""

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
        """The rest of the content."""
        return b"".join([chunk async for chunk in self])

    async def aclose(self) -> None:
        await self._messages.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> "AsyncBlobStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncSqlQuery(core.SqlRows):
    """Like :class:`identity_gateway.SqlQuery`, for ``async for``; ``async with``
    it, or ``await aclose()``, to cancel a query whose rows are still coming."""

    def __init__(self, messages: AsyncIterator[pb.QuerySqlResponse], row_type: type) -> None:
        super().__init__(row_type)
        self._messages = messages
        self._rows = self._generate()

    async def _generate(self) -> AsyncIterator[Any]:
        async for message in self._messages:
            for row in self._rows_of(message):
                yield row

    def __aiter__(self) -> "AsyncSqlQuery":
        return self

    async def __anext__(self) -> Any:
        return await self._rows.__anext__()

    async def fetchall(self) -> List[Any]:
        return [row async for row in self]

    async def aclose(self) -> None:
        await self._rows.aclose()
        await self._messages.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> "AsyncSqlQuery":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def __getattr__(name: str) -> Any:
    # The async credential needs azure-core, an optional dependency.
    if name == "GatewayCredential":
        from ._credential import GatewayCredential

        return GatewayCredential
    raise AttributeError(f"module 'identity_gateway.aio' has no attribute {name!r}")
