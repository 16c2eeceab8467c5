"""One request as a worker process holds it, and the error that says the request itself is
unusable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zeroserve.common import protocol as p


@dataclass(slots=True)
class Job:
    """One request as a worker process holds it."""

    client: bytes
    rid: bytes
    meta: p.RequestMeta
    body: bytes
    deadline: float
    arrived: float
    #: Which broker sent it (the index of its link): the answer goes back there.
    link: int
    cancelled: bool = False
    #: The async loop's: the task serving this job, and the timer of its deadline.
    task: Any = None
    timer: Any = None
    #: Its span, when tracing is on and the request came with a trace context.
    span: Any = None
    #: Its body as the spec read it (request, context, framer), when that was done as it
    #: arrived (``Pipeline.refusal``): not read twice.
    opened: Any = None

    @property
    def key(self) -> tuple[int, bytes, bytes]:
        return (self.link, self.client, self.rid)


class RequestError(Exception):
    """The request itself is unusable: the client's fault. ``outs`` may say how to answer."""

    def __init__(self, status: int, message: str, outs: list[p.Answer] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.outs = outs
