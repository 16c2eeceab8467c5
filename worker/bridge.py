"""The sync/async bridge: the pipeline's stages are coroutines, run two ways.

Under the async loop (``concurrent``) an awaitable is awaited, so a coroutine stage suspends
its own request only. Under the sync loops the stages are driven to their end at once
(``drive``), which needs no event loop because nothing in them suspends there: an
awaitable a sync API returns runs to its end on a private loop instead.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)


class Bridge:
    """Awaits, iterates and closes what user code returns, the way the loop in use needs."""

    def __init__(self, concurrent: bool) -> None:
        #: True under the async loop: awaitables are awaited there instead of run to their end.
        self.concurrent = concurrent
        self._loop: asyncio.AbstractEventLoop | None = None

    async def settle(self, awaitable: Any) -> Any:
        """Await here under the async loop; run to its end on the private loop otherwise."""
        return (await awaitable) if self.concurrent else self.run(awaitable)

    def run(self, awaitable: Any) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(_await(awaitable))

    async def iterate(self, items: Any) -> AsyncIterator[Any]:
        """Iterate a result: a list, a generator, or an async generator."""
        if not inspect.isasyncgen(items):
            for item in items:
                yield item
        elif self.concurrent:
            async for item in items:
                yield item
        else:
            while True:
                try:
                    item = self.run(items.__anext__())
                except StopAsyncIteration:
                    return
                yield item

    async def close(self, name: str, *generators: Any) -> None:
        """Close what the stages left open; a generator that raises on closing is logged."""
        for gen in generators:
            try:
                if inspect.isasyncgen(gen):
                    if self.concurrent:
                        await gen.aclose()
                    else:
                        self.run(gen.aclose())
                elif inspect.isgenerator(gen):
                    gen.close()
            except Exception:
                log.exception("%s: closing a generator raised", name)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def drive(coroutine: Any) -> Any:
    """Run a coroutine that never suspends to its end, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise RuntimeError("the pipeline suspended outside an event loop")
