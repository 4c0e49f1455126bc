"""The synchronous client: one method per RPC of ``identity_gateway.v1``.

Every failed call raises a :class:`~identity_gateway.errors.GatewayError`
subclass; streamed RPCs are iterators that raise the same way mid-stream.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import grpc

from . import _convert as convert
from ._proto import gateway_pb2 as pb
from ._proto import gateway_pb2_grpc as pb_grpc
from .errors import from_rpc_error
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

__all__ = ["Client", "connect", "BlobStream", "SqlQuery"]

T = TypeVar("T")

#: Deadline (seconds) of each call unless the client or the call says otherwise.
DEFAULT_TIMEOUT = 30.0


class _ClientDefault:
    def __repr__(self) -> str:
        return "<the client's timeout>"


#: ``timeout=`` default of every method: the client's timeout. ``None`` means no deadline.
CLIENT_DEFAULT: Any = _ClientDefault()


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
    resolved = convert.resolve_target(socket_path, target)
    channel = grpc.insecure_channel(resolved, options=convert.channel_options(resolved, options))
    return Client(channel, timeout=timeout)


class Client:
    """A gateway client over an open ``grpc.Channel``. Use as a context manager or call :meth:`close`."""

    def __init__(self, channel: grpc.Channel, *, timeout: Optional[float] = DEFAULT_TIMEOUT) -> None:
        self._channel = channel
        self._stub = pb_grpc.IdentityGatewayStub(channel)
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _deadline(self, timeout: Any) -> Optional[float]:
        return self._timeout if timeout is CLIENT_DEFAULT else timeout

    def _unary(self, method: Callable[..., T], request: Any, timeout: Any) -> T:
        try:
            return method(request, timeout=self._deadline(timeout))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def _stream(self, method: Callable[..., Any], request: Any, timeout: Any) -> Iterator[Any]:
        call = method(request, timeout=self._deadline(timeout))
        try:
            for message in call:
                yield message
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()

    # ------------------------------------------------------------ tokens

    def get_token(self, resource: str, identity: IdentityLike = None, *, timeout: Any = CLIENT_DEFAULT) -> Token:
        """An access token for ``resource`` (e.g. ``https://vault.azure.net``; a
        trailing slash changes the audience). ``identity`` selects a
        user-assigned identity; ``None`` is the system-assigned one."""
        request = pb.GetTokenRequest(resource=resource, identity=convert.identity(identity))
        return convert.token(self._unary(self._stub.GetToken, request, timeout))

    def watch_token(
        self, resource: str, identity: IdentityLike = None, *, timeout: Optional[float] = None
    ) -> Iterator[Token]:
        """The current token, then each refreshed one as the gateway renews it.
        Runs until the iterator is closed (``break`` out of the loop) or
        ``timeout`` seconds pass (default: no deadline)."""
        request = pb.WatchTokenRequest(resource=resource, identity=convert.identity(identity))
        for reply in self._stream(self._stub.WatchToken, request, timeout):
            yield convert.token(reply)

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
        return convert.secret(self._unary(self._stub.GetSecret, request, timeout))

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
        for page in self.list_data_lake_pages(
            account_url,
            path,
            filesystem=filesystem,
            recursive=recursive,
            generation=generation,
            page_size=page_size,
            continuation=continuation,
            identity=identity,
            timeout=timeout,
        ):
            yield from page[0]

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
        for page in self._stream(self._stub.ListDataLake, request, timeout):
            yield [convert.data_lake_entry(e) for e in page.entries], page.continuation

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
        return convert.service_sas(self._unary(self._stub.GetServiceSas, request, timeout))

    def get_resource_group(
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
        return convert.resource_group(self._unary(self._stub.GetResourceGroup, request, timeout))

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
        request = pb.ReadBlobRequest(
            blob_url=blob_url, offset=offset, length=length, identity=convert.identity(identity)
        )
        return BlobStream(self._stream(self._stub.ReadBlob, request, timeout))

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
        return SqlQuery(self._stream(self._stub.QuerySql, request, timeout), row_type)


class BlobStream:
    """A blob download in progress: ``properties``, then ``bytes`` chunks."""

    def __init__(self, messages: Iterator[pb.ReadBlobResponse]) -> None:
        self._messages = messages
        first = next(messages, None)
        if first is None or not first.HasField("properties"):
            self.close()
            raise ValueError("the gateway's ReadBlob stream did not start with the blob's properties")
        self.properties: BlobProperties = convert.blob_properties(first.properties)
        self._pending = first.data

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


class SqlQuery:
    """The rows of a running query; iterate it once.

    ``columns`` and ``result_set`` describe the result set the last row came
    from; ``summary`` is set once the stream has ended.
    """

    def __init__(self, messages: Iterator[pb.QuerySqlResponse], row_type: type) -> None:
        self._messages = messages
        self._as_dict = row_type is dict
        self.columns: List[SqlColumn] = []
        self.result_set: int = -1
        self.summary: Optional[SqlSummary] = None
        self._keys: List[str] = []
        self._rows = self._generate()

    def _generate(self) -> Iterator[Any]:
        for message in self._messages:
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
