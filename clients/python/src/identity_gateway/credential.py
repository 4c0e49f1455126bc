"""``GatewayCredential``: an azure-core ``TokenCredential`` backed by the
gateway, so any Azure SDK for Python gets its tokens from the machine's one
shared cache instead of calling IMDS itself.

Needs ``azure-core`` (``pip install "identity-gateway[azure]"``).
"""

from __future__ import annotations

from typing import Any, Optional

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

from . import _convert as convert
from .client import DEFAULT_TIMEOUT, Client, connect
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
    ) -> None:
        if client_id and identity:
            raise ValueError("give client_id or identity, not both")
        self._identity: IdentityLike = {"client_id": client_id} if client_id else identity
        convert.identity(self._identity)  # fail now, not on the first token
        self._owns_client = client is None
        self._client = client or connect(socket_path, target=target, timeout=timeout)

    def _fetch(self, scopes: tuple, claims: Optional[str], enable_cae: bool) -> Token:
        if claims:
            raise ValueError("managed identities cannot answer a claims challenge")
        del enable_cae  # CAE tokens are a no-op for managed identities, as in azure-identity.
        return self._client.get_token(convert.scope_to_resource(scopes), self._identity)

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
