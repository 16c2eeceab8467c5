"""A peer's link to the broker (common/connection.py): what it says as it connects."""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio
from ports import free_port

from zeroserve.common import protocol as p
from zeroserve.common.connection import BrokerConnection
from zeroserve.common.link import LinkConfig

#: Far longer than the test waits: a greeting that came with a heartbeat would come too late.
HEARTBEAT_S = 600.0


async def _first_message_at_the_broker() -> list[bytes]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"

    def greet() -> None:
        link.send(p.heartbeat({"greeting": True}))

    link = BrokerConnection(
        endpoint,
        table=p.TO_FRONTEND,
        on_message=lambda command, args: None,
        on_connect=greet,
        on_lost=lambda why: None,
        heartbeat_meta=dict,
        link=LinkConfig(heartbeat_interval_s=HEARTBEAT_S),
        immediate=True,
    )
    context = zmq.asyncio.Context()
    link.start()  # nothing listens yet: the greeting said now finds no connection
    router = context.socket(zmq.ROUTER)
    router.bind(endpoint)
    try:
        frames = await asyncio.wait_for(router.recv_multipart(), 20)
        return frames[1:]
    finally:
        link.close()
        router.close(0)
        context.term()


def test_a_greeting_said_before_the_broker_listens_reaches_it_once_connected() -> None:
    """With IMMEDIATE, what is sent before the connection is up is dropped: the greeting is
    said again when the handshake ends, not a heartbeat interval later (a frontend started
    beside its broker would otherwise serve a heartbeat late)."""
    frames = asyncio.run(_first_message_at_the_broker())
    command, args = p.parse(frames, p.FROM_FRONTEND)
    assert command == p.HEARTBEAT
    assert p.unpack_meta(args[0]) == {"greeting": True}
