"""The in-process token cache both ``GatewayCredential`` classes (sync and
asyncio) keep, so that repeated ``get_token`` calls are answered from memory
instead of costing a gRPC round trip each.

It owns the tokens one credential received, keyed by resource, and the
decision of when to ask the gateway again. It does no I/O and never fetches
or refreshes on its own: the gateway stays the one that talks to IMDS and
keeps the machine-wide cache; this one only saves the local call.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Dict, Optional

from .models import Token

#: Seconds before expiry at which a cached token is no longer handed out and
#: the gateway is asked again (azure-core's bearer policy and azure-identity
#: use the same 5 minutes).
REFRESH_MARGIN = 300.0

#: Epoch seconds now; injected so tests move time instead of sleeping.
Clock = Callable[[], float]


class TokenCache:
    """Tokens by resource. Thread-safe: a lock guards the map, held only for
    the dictionary access and never across a call to the gateway (so it is
    harmless in asyncio code, and different resources never wait on each
    other)."""

    __slots__ = ("_clock", "_lock", "_margin", "_tokens")

    def __init__(self, clock: Optional[Clock] = None, refresh_margin: float = REFRESH_MARGIN) -> None:
        self._clock: Clock = clock or time.time
        self._margin = refresh_margin
        self._lock = threading.Lock()
        self._tokens: Dict[str, Token] = {}

    def __repr__(self) -> str:
        # Resources only: a token never appears in a repr.
        with self._lock:
            resources = sorted(self._tokens)
        return f"TokenCache(resources={resources!r})"

    def fresh(self, resource: str) -> Optional[Token]:
        """The cached token for ``resource`` if it has more than the refresh
        margin left, else ``None`` (ask the gateway)."""
        with self._lock:
            token = self._tokens.get(resource)
        if token is not None and token.expires_on_epoch - self._clock() > self._margin:
            return token
        return None

    def unexpired(self, resource: str) -> Optional[Token]:
        """The cached token for ``resource`` if it has not expired yet: what
        to answer with when the gateway cannot be asked (as azure-identity
        does), else ``None``."""
        with self._lock:
            token = self._tokens.get(resource)
        if token is not None and token.expires_on_epoch > self._clock():
            return token
        return None

    def store(self, resource: str, token: Token) -> None:
        """Keeps ``token`` unless the cache already holds a later-expiring one
        (concurrent misses may come back in any order)."""
        with self._lock:
            current = self._tokens.get(resource)
            if current is None or token.expires_on >= current.expires_on:
                self._tokens[resource] = token
