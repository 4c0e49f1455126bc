"""A sync face for ``identity_gateway.aio``, so that every RPC test runs, as
written for the sync client, against the asyncio client too.

:class:`Synced` wraps an async object and runs each await on one private
event loop: a coroutine result is awaited, an async iterator is iterated,
``with`` is ``async with`` and ``close()`` is ``aclose()`` where the async
object has one. Nothing is translated beyond that, so a test written for
``identity_gateway.Client`` fails here if the async client lacks a method,
returns another kind of thing, or is not an async context manager where
the sync one is a context manager.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable, Iterator

import identity_gateway.aio


class Runner:
    """One event loop, driven step by step from sync code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def sync(self, value: Any) -> Any:
        """``value`` awaited if it is awaitable, wrapped if it is async-iterable
        or an async context manager, as is otherwise."""
        if inspect.isawaitable(value):
            value = self.run(value)
        if hasattr(value, "__aiter__") or hasattr(value, "__aenter__"):
            return Synced(self, value)
        return value

    def connect(self, *args: Any, **kwargs: Any) -> "Synced":
        """``identity_gateway.aio.connect`` (inside the loop, as it must be)."""

        async def connect() -> Any:
            return identity_gateway.aio.connect(*args, **kwargs)

        return Synced(self, self.run(connect()))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()


class Synced:
    """A sync proxy of an async object (see the module docstring)."""

    def __init__(self, runner: Runner, target: Any) -> None:
        self._runner = runner
        self._target = target

    def __repr__(self) -> str:
        return f"Synced({self._target!r})"

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._runner.sync(value(*args, **kwargs))

        return call

    def close(self) -> None:
        aclose: Callable[[], Any] = getattr(self._target, "aclose", None) or self._target.close
        self._runner.run(aclose())

    def __enter__(self) -> Any:
        entered = self._runner.run(self._target.__aenter__())
        return self if entered is self._target else self._runner.sync(entered)

    def __exit__(self, *exc: object) -> None:
        self._runner.run(self._target.__aexit__(*exc))

    def __iter__(self) -> Iterator[Any]:
        iterator = self._target.__aiter__()
        while True:
            try:
                item = self._runner.run(iterator.__anext__())
            except StopAsyncIteration:
                return
            yield item

    def __next__(self) -> Any:
        try:
            return self._runner.run(self._target.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None
