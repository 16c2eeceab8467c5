"""Sending a multipart message without blocking, at the least cost pyzmq allows.

``send_multipart`` combines its flags with enum arithmetic for every part
and, with ``copy=False``, wraps every small part in a new Frame; on the hot
path that costs more than the send itself. Here the flags are plain ints
worked out once, bytes are copied (cheap for the small frames of the
protocol) and zmq.Frame parts, such as a body received with ``copy=False``,
still go without a copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq

_MORE = int(zmq.SNDMORE) | int(zmq.NOBLOCK)
_LAST = int(zmq.NOBLOCK)


def send_frames(sock: zmq.Socket, frames: Sequence[Any]) -> None:
    """Send `frames` as one message; raises zmq.Again when it cannot be queued now.

    ZeroMQ queues a multipart message whole or not at all, so a refusal can
    only come on the first part.
    """
    send = sock.send
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        send(frame, _MORE if i < last else _LAST, copy=True)
