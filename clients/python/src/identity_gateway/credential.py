"""``GatewayCredential``: an azure-core ``TokenCredential`` backed by the
gateway, so any Azure SDK for Python gets its tokens from the machine's one
shared cache instead of calling IMDS itself.

Needs ``azure-core`` (``pip install "identity-gateway[azure]"``).
"""

from __future__ import annotations

from typing import Any, Optional

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

from . import _convert as convert
from ._token_cache import Clock, TokenCache
from .client import DEFAULT_TIMEOUT, Client, connect
from .errors import GatewayError
from .models import IdentityLike, Token

__all__ = ["GatewayCredential"]


class GatewayCredential:
    """A managed-identity credential served by identity-gateway.

    ``GatewayCredential()`` uses the system-assigned identity through the
    socket in ``$IDENTITY_GATEWAY_SOCKET`` (or the default one). Pass
    ``client_id=`` (like ``ManagedIdentityCredential``) or ``identity=`` for a
    user-assigned identity, ``socket_path=``/``target=`` for another gateway,
    or an existing ``client=`` to share its channel (it is then not closed by
    :meth:`close`).

    A scope ``X/.default`` asks for a token for resource ``X``. Claims
    challenges and tenant switches are not possible with managed identities
    and raise ``ValueError``, as the Azure SDK's own credential does.

    Like azure-identity's ``ManagedIdentityCredential``, the credential keeps
    the tokens it received, one per resource, and answers ``get_token`` and
    ``get_token_info`` from memory (no gRPC call) while the token has more
    than 5 minutes left (the refresh margin of azure-core's bearer policy).
    Within those 5 minutes of expiry it asks the gateway again, which still
    does all fetching and refreshing and owns the machine-wide cache and the
    IMDS limits. If that call fails while the cached token has not expired
    yet, the cached token is returned; once it has expired, the error is
    raised. The credential is thread-safe; the cache's lock is never held
    across a call, so different resources do not wait on each other, and concurrent
    misses for one resource each ask the gateway (which coalesces them).
    Tokens are never logged nor shown in a ``repr``.

    ``_clock`` (epoch seconds, default ``time.time``) is for tests.
    """

    def __init__(
        self,
        *,
        client_id: Optional[str] = None,
        identity: IdentityLike = None,
        socket_path: Optional[str] = None,
        target: Optional[str] = None,
        client: Optional[Client] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        _clock: Optional[Clock] = None,
    ) -> None:
        if client_id and identity:
            raise ValueError("give client_id or identity, not both")
        self._identity: IdentityLike = {"client_id": client_id} if client_id else identity
        convert.identity(self._identity)  # fail now, not on the first token
        self._owns_client = client is None
        self._client = client or connect(socket_path, target=target, timeout=timeout)
        self._cache = TokenCache(_clock)

    def _fetch(self, scopes: tuple, claims: Optional[str], enable_cae: bool) -> Token:
        if claims:
            raise ValueError("managed identities cannot answer a claims challenge")
        del enable_cae  # CAE tokens are a no-op for managed identities, as in azure-identity.
        resource = convert.scope_to_resource(scopes)
        cached = self._cache.fresh(resource)
        if cached is not None:
            return cached
        try:
            token = self._client.get_token(resource, self._identity)
        except GatewayError:
            stale = self._cache.unexpired(resource)
            if stale is None:
                raise
            return stale
        self._cache.store(resource, token)
        return token

    def get_token(
        self,
        *scopes: str,
        claims: Optional[str] = None,
        tenant_id: Optional[str] = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """azure-core's ``TokenCredential.get_token``."""
        del tenant_id, kwargs  # a managed identity lives in one tenant
        token = self._fetch(scopes, claims, enable_cae)
        return AccessToken(token.access_token, token.expires_on_epoch)

    def get_token_info(self, *scopes: str, options: Optional[TokenRequestOptions] = None) -> AccessTokenInfo:
        """azure-core's ``SupportsTokenInfo.get_token_info``."""
        options = options or {}
        token = self._fetch(scopes, options.get("claims"), bool(options.get("enable_cae")))
        return AccessTokenInfo(token.access_token, token.expires_on_epoch, token_type=token.token_type or "Bearer")

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> "GatewayCredential":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
