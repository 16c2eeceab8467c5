"""The loops that serve a worker process's requests, one module per kind.

``serving.py`` holds what they share (``ServingLoop``), ``batching.py`` the sync loop and
the blocking receive (``ThreadedLoop``) the continuous loop shares, ``async_loop.py`` the
asyncio one, ``continuous.py`` continuous batching, ``batcher.py`` when a batch closes.
"""

from __future__ import annotations

import enum


class LoopKind(enum.Enum):
    """Which loop serves an API, decided once from its methods (``loader.loop_kind``)."""

    #: ``predict`` is a plain function: one batch at a time.
    BATCHING = "batching"
    #: ``predict`` is ``async def`` or an async generator: every request a task.
    ASYNC = "async"
    #: The API's ``loop`` is a ``ContinuousBatchingLoop``: sequences joined between steps.
    CONTINUOUS = "continuous"

    def __str__(self) -> str:
        return self.value
