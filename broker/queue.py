"""The broker's bounded FIFO of requests that wait for a worker of one service."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator

#: A request as the broker knows it: (frontend identity, request id).
RequestKey = tuple[bytes, bytes]


class ServiceQueue:
    """A bounded FIFO of request keys.

    ``push`` honours the bound; ``push_front`` does not, because a request
    handed back by a dead worker was accepted already and must not be lost.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._keys: deque[RequestKey] = deque()

    def __len__(self) -> int:
        return len(self._keys)

    def full(self) -> bool:
        return len(self._keys) >= self.max_size

    def push(self, key: RequestKey) -> None:
        self._keys.append(key)

    def push_front(self, key: RequestKey) -> None:
        self._keys.appendleft(key)

    def peek(self) -> RequestKey | None:
        return self._keys[0] if self._keys else None

    def front(self, count: int) -> Iterator[RequestKey]:
        """The first `count` keys, oldest first."""
        return itertools.islice(self._keys, count)

    def pop(self) -> RequestKey | None:
        return self._keys.popleft() if self._keys else None

    def remove(self, key: RequestKey) -> bool:
        try:
            self._keys.remove(key)
        except ValueError:
            return False
        return True
