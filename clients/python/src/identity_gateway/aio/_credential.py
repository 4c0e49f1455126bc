"""The asyncio ``GatewayCredential`` (azure-core's ``AsyncTokenCredential``)."""

from __future__ import annotations

from typing import Any, Optional

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

from .. import _convert as convert
from .._token_cache import Clock, TokenCache
from ..client import DEFAULT_TIMEOUT
from ..errors import GatewayError
from ..models import IdentityLike, Token
from . import AsyncClient, connect


class GatewayCredential:
    """Like :class:`identity_gateway.credential.GatewayCredential`, for the
    ``azure.*.aio`` clients. The channel opens on first use, inside the
    caller's event loop. Tokens are cached in memory exactly as there (same
    5-minute refresh margin, same fallback to an unexpired token when the
    gateway cannot be asked); ``_clock`` is for tests."""

    def __init__(
        self,
        *,
        client_id: Optional[str] = None,
        identity: IdentityLike = None,
        socket_path: Optional[str] = None,
        target: Optional[str] = None,
        client: Optional[AsyncClient] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        _clock: Optional[Clock] = None,
    ) -> None:
        if client_id and identity:
            raise ValueError("give client_id or identity, not both")
        self._identity: IdentityLike = {"client_id": client_id} if client_id else identity
        convert.identity(self._identity)
        convert.resolve_target(socket_path, target)
        self._connect_args = (socket_path, target, timeout)
        self._owns_client = client is None
        self._client = client
        self._cache = TokenCache(_clock)

    async def _fetch(self, scopes: tuple, claims: Optional[str]) -> Token:
        if claims:
            raise ValueError("managed identities cannot answer a claims challenge")
        resource = convert.scope_to_resource(scopes)
        cached = self._cache.fresh(resource)
        if cached is not None:
            return cached
        if self._client is None:
            socket_path, target, timeout = self._connect_args
            self._client = connect(socket_path, target=target, timeout=timeout)
        try:
            token = await self._client.get_token(resource, self._identity)
        except GatewayError:
            stale = self._cache.unexpired(resource)
            if stale is None:
                raise
            return stale
        self._cache.store(resource, token)
        return token

    async def get_token(
        self,
        *scopes: str,
        claims: Optional[str] = None,
        tenant_id: Optional[str] = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        del tenant_id, enable_cae, kwargs
        token = await self._fetch(scopes, claims)
        return AccessToken(token.access_token, token.expires_on_epoch)

    async def get_token_info(self, *scopes: str, options: Optional[TokenRequestOptions] = None) -> AccessTokenInfo:
        token = await self._fetch(scopes, (options or {}).get("claims"))
        return AccessTokenInfo(token.access_token, token.expires_on_epoch, token_type=token.token_type or "Bearer")

    async def close(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> "GatewayCredential":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
