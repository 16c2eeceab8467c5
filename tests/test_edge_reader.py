"""frames.EdgeReader: what ZeroMQ's edge-triggered descriptor would lose is still read."""

from __future__ import annotations

import asyncio

import zmq

from zeroserve.common.frames import EdgeReader, recv_frames, send_frames


def _pair() -> tuple[zmq.Context, zmq.Socket, zmq.Socket]:
    context = zmq.Context()
    a, b = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    a.bind("inproc://edge")
    b.connect("inproc://edge")
    return context, a, b


def test_reads_what_came_before_it_what_comes_after_and_in_batches() -> None:
    context, a, b = _pair()
    got: list[list[bytes]] = []

    async def scenario() -> None:
        for i in range(5):
            send_frames(a, [b"early", str(i).encode()])
        reader = EdgeReader(asyncio.get_running_loop(), b, got.append, batch=2)
        while len(got) < 5:  # no edge will come for these: the reader looked once by itself
            await asyncio.sleep(0.01)  # poll
        send_frames(a, [b"late"])
        while len(got) < 6:
            await asyncio.sleep(0.01)  # poll
        # A send on the reader's socket may take in what arrived, edge and all.
        send_frames(a, [b"after"])
        send_frames(b, [b"ping"])
        reader.after_send()
        while len(got) < 7:
            await asyncio.sleep(0.01)  # poll
        reader.close()
        send_frames(a, [b"closed"])
        await asyncio.sleep(0.05)  # a window for what a closed reader must not take in

    try:
        asyncio.run(asyncio.wait_for(scenario(), 10))
    finally:
        assert recv_frames(a) == [b"ping"]
        for sock in (a, b):
            sock.close(0)
        context.term()
    assert got == [[b"early", str(i).encode()] for i in range(5)] + [[b"late"], [b"after"]]
