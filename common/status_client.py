"""Asking a broker one question on the port frontends use: its snapshot of the cluster
(``cluster status``), or an admin's change (``cluster route``, ``cluster drain``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import zmq

from zeroserve.common import protocol as p
from zeroserve.common.errors import ProtocolError, ZeroserveError
from zeroserve.common.security import CurveKeys
from zeroserve.common.snapshot import Snapshot


class BrokerUnreachable(ZeroserveError):
    """The broker did not answer in time."""


class BrokerSaidNo(ZeroserveError):
    """The broker answered, refusing what was asked (its reason is the message)."""


def _ask(
    endpoint: str, frames: list[Any], expect: bytes, timeout_s: float, keys: CurveKeys | None
) -> list[Any]:
    """One round trip on a fresh DEALER: the answer's frames after the command; raises
    BrokerUnreachable after ``timeout_s``."""
    context: zmq.Context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        keys.apply_client(sock)
    try:
        sock.connect(endpoint)
        sock.send_multipart(frames)
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            hint = (
                " (or it refused this token or key)"
                if keys is not None
                else " (a broker with a join token answers only peers that give it: --token)"
            )
            raise BrokerUnreachable(
                f"no answer from the broker at {endpoint} within {timeout_s:g} s{hint}"
            )
        command, args = p.parse(sock.recv_multipart(), p.TO_FRONTEND)
        if command == p.REFUSED:
            raise ProtocolError(f"the broker refused: {p.parse_refusal(args[0])[1]}")
        if command != expect:
            raise ProtocolError(f"expected {p.command_name(expect)}, got {p.command_name(command)}")
        return args
    finally:
        sock.close(0)


def fetch_status(endpoint: str, timeout_s: float = 3.0, keys: CurveKeys | None = None) -> Snapshot:
    """The broker's snapshot of the cluster."""
    return p.unpack_status(_ask(endpoint, p.status_request(), p.STATUS, timeout_s, keys)[1])


def set_weights(
    endpoint: str,
    service: str,
    weights: Mapping[str, int],
    timeout_s: float = 3.0,
    keys: CurveKeys | None = None,
) -> dict[str, int]:
    """Set `service`'s traffic split at the broker; returns it as the broker keeps it."""
    args = _ask(endpoint, p.route(b"route", service, weights), p.ROUTE, timeout_s, keys)
    answer = p.parse_route(args[1])
    if "error" in answer:
        raise BrokerSaidNo(f"the broker at {endpoint} refused: {answer['error']}")
    return answer.get("weights", {})


def retire(
    endpoint: str,
    service: str,
    version: str,
    timeout_s: float = 3.0,
    keys: CurveKeys | None = None,
) -> int:
    """Drain `version` of `service` at the broker; returns how many workers it told."""
    args = _ask(endpoint, p.retire(b"retire", service, version), p.RETIRE, timeout_s, keys)
    answer = p.parse_retire(args[1])
    if "error" in answer:
        raise BrokerSaidNo(f"the broker at {endpoint} refused: {answer['error']}")
    return answer.get("workers", 0)
