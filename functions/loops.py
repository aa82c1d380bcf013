"""Resources bound to an event loop (connection pools, HTTP clients): one per running loop, made lazily
inside it. A deployed instance runs one loop (uvicorn), so it holds one of each; tests and the local
server may run several loops, and each gets its own instead of sharing one across loops."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")

class PerLoop(Generic[T]):
    """`get()` returns this loop's resource, made by `make()` on first use; `aclose()` closes this loop's,
    `close_all()` every loop's (from outside any of them)."""

    def __init__(self, make: Callable[[], Coroutine[Any, Any, T]],
                 close: Callable[[T], Coroutine[Any, Any, None]]) -> None:
        self._make = make
        self._close = close
        self._items: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()
        self._making: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[T]] = (
            weakref.WeakKeyDictionary())

    async def get(self) -> T:
        loop = asyncio.get_running_loop()
        item = self._items.get(loop)
        if item is not None:
            return item
        pending = self._making.get(loop)
        if pending is not None:  # another request of this loop is making it: wait for that one
            return await asyncio.shield(pending)
        future: asyncio.Future[T] = loop.create_future()
        self._making[loop] = future
        try:
            item = await self._make()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        finally:
            self._making.pop(loop, None)
        self._items[loop] = item
        future.set_result(item)
        return item

    def peek(self) -> T | None:
        """This loop's resource if it exists (never makes one)."""
        with contextlib.suppress(RuntimeError):
            return self._items.get(asyncio.get_running_loop())
        return None

    def replace(self, item: T) -> T | None:
        """Use `item` on this loop from now on; returns the one it replaces (tests inject faults this way)."""
        loop = asyncio.get_running_loop()
        old = self._items.get(loop)
        self._items[loop] = item
        return old

    async def aclose(self) -> None:
        item = self._items.pop(asyncio.get_running_loop(), None)
        if item is not None:
            await self._close(item)

    def close_all(self, timeout: float = 10.0) -> None:
        """Close every loop's resource: on its loop when that loop still runs elsewhere, else on a loop of our
        own when it is stopped but not closed; a closed loop's resource is dropped."""
        items = list(self._items.items())
        self._items.clear()
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, item in items:
            if loop.is_closed() or loop is current:
                continue
            if loop.is_running():
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(self._close(item), loop).result(timeout)
            else:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(self._close(item))
