"""A request as the broker holds it, from acceptance until its terminal answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(eq=False, slots=True)
class BrokerRequest:
    frontend: bytes
    rid: bytes
    service: str
    #: Its metadata, unpacked once at acceptance (service, model, version, budget, trace).
    meta: dict[str, Any]
    #: The metadata frame as it arrived: passed on to each worker untouched (never re-packed).
    meta_frame: Any
    #: The body frame as it arrived; forwarded without a copy, again on a re-send.
    body: Any
    deadline: float
    #: When it was accepted (monotonic).
    accepted: float = 0.0
    attempt: int = 0
    #: Identity of the worker that holds it, or None while it waits in the queue.
    worker: bytes | None = None
    #: A stream has begun: the request can no longer be sent to another worker.
    started: bool = False
    #: Nobody waits for the answer any more (client gone or deadline passed).
    cancelled: bool = False
    #: Its deadline passed while a worker held it; the worker has a grace period to answer.
    expired: bool = False
    #: Times a request behind it went first, to a worker holding that one's model.
    passed: int = 0
    #: The version of its service it goes to (chosen when accepted), and whether its
    #: X-Model-Version header pinned it.
    version: str | None = None
    pinned: bool = False

    @property
    def key(self) -> tuple[bytes, bytes]:
        return (self.frontend, self.rid)
