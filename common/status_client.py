"""Asking a broker for its snapshot of the cluster, as ``cluster status`` does."""

from __future__ import annotations

import zmq

from zeroserve.common import protocol as p
from zeroserve.common.errors import ProtocolError, ZeroserveError
from zeroserve.common.security import CurveKeys
from zeroserve.common.snapshot import Snapshot


class BrokerUnreachable(ZeroserveError):
    """The broker did not answer in time."""


def fetch_status(endpoint: str, timeout_s: float = 3.0, keys: CurveKeys | None = None) -> Snapshot:
    """One STATUS round trip on a fresh DEALER; raises BrokerUnreachable after ``timeout_s``."""
    context: zmq.Context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        keys.apply_client(sock)
    try:
        sock.connect(endpoint)
        sock.send_multipart(p.status_request())
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
        if command != p.STATUS:
            raise ProtocolError(f"expected STATUS, got {p.command_name(command)}")
        return p.unpack_status(args[1])
    finally:
        sock.close(0)
