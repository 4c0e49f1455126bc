"""The synchronous client: one method per RPC of ``identity_gateway.v1``.

Every failed call raises a :class:`~identity_gateway.errors.GatewayError`
subclass; streamed RPCs are iterators that raise the same way mid-stream.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import grpc

from . import _core as core
from ._core import CLIENT_DEFAULT, DEFAULT_TIMEOUT
from ._proto import gateway_pb2 as pb
from .errors import from_rpc_error
from .models import BlobProperties, DataLakeEntry, IdentityLike, ResourceGroup, Secret, ServiceSas, Token

__all__ = ["Client", "connect", "BlobStream", "SqlQuery"]

T = TypeVar("T")


def connect(
    socket_path: Optional[str] = None,
    *,
    target: Optional[str] = None,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
    options: Optional[Sequence[Tuple[str, Any]]] = None,
) -> "Client":
    """Opens a channel to the gateway.

    ``socket_path`` defaults to ``$IDENTITY_GATEWAY_SOCKET``, then
    ``/run/identity-gateway/gateway.sock``. ``target`` is any gRPC target
    instead (e.g. ``127.0.0.1:7777`` when the gateway also serves loopback TCP).
    ``timeout`` (seconds) is the default deadline of each call; ``None`` waits
    forever. The channel connects lazily, so a missing gateway shows up as
    :class:`~identity_gateway.errors.Unavailable` on the first call.
    """
    resolved, channel_options = core.channel_args(socket_path, target, options)
    return Client(grpc.insecure_channel(resolved, options=channel_options), timeout=timeout)


class Client(core.ClientBase):
    """A gateway client over an open ``grpc.Channel``. Use as a context manager or call :meth:`close`."""

    def __init__(self, channel: grpc.Channel, *, timeout: Optional[float] = DEFAULT_TIMEOUT) -> None:
        super().__init__(channel, timeout=timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The only I/O: one unary call, or one stream of converted messages.

    def _unary(self, call: "core.Call[T]", timeout: Any) -> T:
        method, deadline = self._method(call, timeout)
        try:
            reply = method(call.request, timeout=deadline)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return call.convert(reply)

    def _stream(self, call: "core.Call[T]", timeout: Any) -> Iterator[T]:
        method, deadline = self._method(call, timeout)
        stream = method(call.request, timeout=deadline)
        try:
            for message in stream:
                yield call.convert(message)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            stream.cancel()

    # ------------------------------------------------------------ tokens

    def get_token(self, resource: str, identity: IdentityLike = None, *, timeout: Any = CLIENT_DEFAULT) -> Token:
        """An access token for ``resource`` (e.g. ``https://vault.azure.net``; a
        trailing slash changes the audience). ``identity`` selects a
        user-assigned identity; ``None`` is the system-assigned one."""
        return self._unary(core.get_token(resource, identity), timeout)

    def watch_token(
        self, resource: str, identity: IdentityLike = None, *, timeout: Optional[float] = None
    ) -> Iterator[Token]:
        """The current token, then each refreshed one as the gateway renews it.
        Runs until the iterator is closed (``break`` out of the loop) or
        ``timeout`` seconds pass (default: no deadline)."""
        return self._stream(core.watch_token(resource, identity), timeout)

    # ------------------------------------------------------------ Key Vault

    def get_secret(
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
        """A Key Vault secret by ``vault_url`` (``https://myvault.vault.azure.net``)
        or ``vault_name`` (host derived from ``cloud``); ``version`` empty is the latest."""
        call = core.get_secret(
            name,
            vault_url=vault_url,
            vault_name=vault_name,
            version=version,
            cloud=cloud,
            identity=identity,
            bypass_cache=bypass_cache,
        )
        return self._unary(call, timeout)

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
    ) -> Iterator[DataLakeEntry]:
        """Every entry of an ADLS Gen1 or Gen2 directory, fetched page by page."""
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
    ) -> Iterator[Tuple[List[DataLakeEntry], str]]:
        """The listing as ``(entries, continuation)`` pages; a non-empty
        continuation can resume a later call."""
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

    def get_service_sas(
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
        """A service SAS for a blob (or a container when ``blob`` is empty).
        ``method`` is ``"user_delegation"`` (default) or ``"arm"`` (listServiceSas,
        which also needs ``subscription_id`` and ``resource_group``)."""
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
        return self._unary(call, timeout)

    def get_resource_group(
        self,
        subscription_id: str,
        name: str,
        *,
        cloud: Optional[str] = None,
        identity: IdentityLike = None,
        timeout: Any = CLIENT_DEFAULT,
    ) -> ResourceGroup:
        """The resource group ``name`` of ``subscription_id`` (ARM)."""
        call = core.get_resource_group(subscription_id, name, cloud=cloud, identity=identity)
        return self._unary(call, timeout)

    # ------------------------------------------------------------ Blob

    def read_blob(
        self,
        blob_url: str,
        *,
        offset: int = 0,
        length: int = 0,
        identity: IdentityLike = None,
        timeout: Any = CLIENT_DEFAULT,
    ) -> "BlobStream":
        """Starts a blob download. The returned stream has ``properties`` at
        once and yields the content as ``bytes`` chunks."""
        call = core.read_blob(blob_url, offset=offset, length=length, identity=identity)
        return BlobStream(self._stream(call, timeout))

    def read_blob_bytes(self, blob_url: str, **kwargs: Any) -> bytes:
        """The whole blob (or the ``offset``/``length`` range) in memory."""
        with self.read_blob(blob_url, **kwargs) as stream:
            return stream.read()

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
    ) -> "SqlQuery":
        """Runs T-SQL on Azure SQL with the identity's token and yields rows.

        ``parameters`` bind to ``@P1``, ``@P2``, ... (None, bool, int, float,
        Decimal, str, bytes, UUID, datetime, date, time). Rows are dicts keyed
        by column name (``row_type=tuple`` for tuples) with the same Python
        types; rows of every result set come in order, and the returned
        :class:`SqlQuery` tells which result set and columns are current.
        """
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
        return SqlQuery(self._stream(call, timeout), row_type)


def _entries(pages: Iterator[Tuple[List[DataLakeEntry], str]]) -> Iterator[DataLakeEntry]:
    try:
        for entries, _ in pages:
            yield from entries
    finally:
        pages.close()  # type: ignore[attr-defined]


class BlobStream:
    """A blob download in progress: ``properties``, then ``bytes`` chunks."""

    properties: BlobProperties

    def __init__(self, messages: Iterator[pb.ReadBlobResponse]) -> None:
        self._messages = messages
        try:
            self.properties, self._pending = core.blob_start(next(messages, None))
        except ValueError:
            self.close()
            raise

    def __iter__(self) -> Iterator[bytes]:
        if self._pending:
            pending, self._pending = self._pending, b""
            yield pending
        for message in self._messages:
            if message.data:
                yield message.data

    def read(self) -> bytes:
        """The rest of the content."""
        return b"".join(self)

    def close(self) -> None:
        close = getattr(self._messages, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "BlobStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqlQuery(core.SqlRows):
    """The rows of a running query; iterate it once.

    ``columns`` and ``result_set`` describe the result set the last row came
    from; ``summary`` is set once the stream has ended.
    """

    def __init__(self, messages: Iterator[pb.QuerySqlResponse], row_type: type) -> None:
        super().__init__(row_type)
        self._messages = messages
        self._rows = self._generate()

    def _generate(self) -> Iterator[Any]:
        for message in self._messages:
            yield from self._rows_of(message)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return next(self._rows)

    def fetchall(self) -> List[Any]:
        return list(self)

    def close(self) -> None:
        """Cancels the query if rows are still coming."""
        self._rows.close()
        close = getattr(self._messages, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "SqlQuery":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
