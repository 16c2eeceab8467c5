"""Sending and receiving a multipart message without blocking, at the least cost pyzmq allows.

On the hot path pyzmq's convenience layer costs more than ZeroMQ itself:
``send_multipart`` combines flags with enum arithmetic for every part,
``Socket.send``/``recv`` add Python frames around the compiled ones, and
every ``getsockopt`` (RCVMORE after each part, say) looks its option up in
an Enum. Here the compiled methods are called directly with plain int
flags, and a received part says itself whether more follow. Small parts
are copied (cheaper than tracking them); parts of ``ZERO_COPY_BYTES`` or
more, and zmq.Frame parts, go without a copy, so a large body is never
copied on its way out; the broker receives them without a copy too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import zmq
from zmq.backend import Socket as _CompiledSocket

_MORE = int(zmq.SNDMORE) | int(zmq.NOBLOCK)
_LAST = int(zmq.NOBLOCK)
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_send = _CompiledSocket.send
_recv: Any = _CompiledSocket.recv
_get: Any = _CompiledSocket.get

#: Parts at least this large are sent without a copy.
ZERO_COPY_BYTES = 64 * 1024


def send_frames(sock: zmq.Socket, frames: Sequence[Any]) -> None:
    """Send `frames` as one message; raises zmq.Again when it cannot be queued now.

    ZeroMQ queues a multipart message whole or not at all, so a refusal can
    only come on the first part.
    """
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        copy = not isinstance(frame, zmq.Frame) and len(frame) < ZERO_COPY_BYTES
        _send(sock, frame, _MORE if i < last else _LAST, copy)


def has_input(sock: zmq.Socket) -> bool:
    """A message waits: read without the exception an empty non-blocking receive raises."""
    return bool(_get(sock, _EVENTS) & _POLLIN)


def recv_frames(sock: zmq.Socket, *, block: bool = False, keep_large: bool = False) -> list[Any]:
    """Receive one whole message as bytes; raises zmq.Again when none is waiting (`block`:
    none came within the socket's receive timeout). With `keep_large`, parts of
    ``ZERO_COPY_BYTES`` or more stay zmq.Frame objects, never copied (what only forwards
    them: the broker).

    The parts of a message arrive together, so none after the first can block.
    """
    part = _recv(sock, 0 if block else _NOBLOCK, False)
    parts = [part.bytes]
    while part.more:
        part = _recv(sock, _NOBLOCK, False)
        parts.append(part if keep_large and len(part) >= ZERO_COPY_BYTES else part.bytes)
    return parts


class EdgeReader:
    """A socket read on an asyncio loop through ZeroMQ's edge-triggered descriptor.

    The descriptor signals only a change, so the reader drains until nothing waits (a batch
    at a time, so other callbacks run between), looks once when put in place (what came
    before raised no edge), and once more after a send that took input in with it
    (``after_send``): a send can swallow the edge.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: zmq.Socket,
        on_frames: Callable[[list[Any]], None],
        batch: int = 512,
    ) -> None:
        self._loop, self._sock, self._on_frames, self._batch = loop, sock, on_frames, batch
        self._due = self._closed = False
        self._fd = sock.FD
        loop.add_reader(self._fd, self._drain)
        self.kick()

    def kick(self) -> None:
        """Look for input soon, whatever the descriptor says."""
        if not self._due and not self._closed:
            self._due = True
            self._loop.call_soon(self._drain)

    def after_send(self) -> None:
        if has_input(self._sock):
            self.kick()

    def close(self) -> None:
        """Stop reading (before the socket closes)."""
        if not self._closed:
            self._closed = True
            if not self._loop.is_closed():
                self._loop.remove_reader(self._fd)

    def _drain(self) -> None:
        self._due = False
        sock = self._sock
        for _ in range(self._batch):
            if self._closed or not has_input(sock):
                return
            self._on_frames(recv_frames(sock))
        self.kick()
