"""A peer's link to the broker (common/connection.py): what it says as it connects."""

from __future__ import annotations

import asyncio
import time

import zmq
import zmq.asyncio
from ports import free_port

from zeroserve.common import protocol as p
from zeroserve.common.connection import BrokerConnection
from zeroserve.common.link import LinkConfig
from zeroserve.common.supervisor import Supervisor
from zeroserve.worker.config import WorkerConfig
from zeroserve.worker.launcher import LauncherLink

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


def test_a_launchers_first_word_that_found_no_connection_is_said_at_the_next_tick() -> None:
    """A launcher started before its broker listens is shown by the broker within a tick of
    the connection, not a heartbeat interval later."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = WorkerConfig(
        brokers=(endpoint,),
        api="apis.py:EchoAPI",
        processes=1,
        link=LinkConfig(heartbeat_interval_s=HEARTBEAT_S),
    )
    supervisor = Supervisor("workers", target=print, args=(), count=1)
    link = LauncherLink(config, "EchoAPI", supervisor, environ={})
    link.tick()  # nothing listens yet: this LAUNCHER finds no connection
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(endpoint)
    try:
        deadline = time.monotonic() + 20
        while not router.poll(50):
            assert time.monotonic() < deadline, "no LAUNCHER came before the heartbeat"
            link.tick()  # as the supervisor's loop does, every 0.2 s at most
        _, *frames = router.recv_multipart()
        command, args = p.parse(frames, p.FROM_WORKER)
        assert command == p.LAUNCHER
        assert p.parse_launcher(args[0])["service"] == "EchoAPI"
    finally:
        link.close()
        router.close(0)
        context.term()
