"""zeroserve's three processes and hops written plainly, with none of its features.

    python bare_chain.py PORT

A Tornado handler sends each body over a DEALER to a ROUTER/ROUTER broker
that hands it to one blocking DEALER worker (credit 4) and routes the answer
back: the same processes, sockets and hops as `cluster up`, without
metadata, heartbeats, deadlines, metrics, request ids or error handling. It
is not a server anyone should run; it shows what the hops cost when written
the obvious way (a RequestHandler, pyzmq's asyncio sockets), so that
zeroserve's own cost can be told from the design's.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import multiprocessing
import shutil
import signal
import sys
import tempfile

import tornado.web
import zmq
import zmq.asyncio

CREDIT = 4


def broker(front_url: str, back_url: str) -> None:
    ctx = zmq.Context()
    front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    front.bind(front_url)
    back.bind(back_url)
    poller = zmq.Poller()
    poller.register(front, zmq.POLLIN)
    poller.register(back, zmq.POLLIN)
    credit: dict[bytes, int] = {}
    queue: collections.deque[list[bytes]] = collections.deque()
    while True:
        events = dict(poller.poll())
        if back in events:
            while back.get(zmq.EVENTS) & zmq.POLLIN:
                worker, *rest = back.recv_multipart()
                if rest == [b"READY"]:
                    credit[worker] = CREDIT
                else:
                    credit[worker] += 1
                    front.send_multipart(rest)  # [client, rid, body]
        if front in events:
            while front.get(zmq.EVENTS) & zmq.POLLIN:
                queue.append(front.recv_multipart())  # [client, rid, body]
        while queue and credit:
            worker = max(credit, key=credit.__getitem__)
            if credit[worker] <= 0:
                break
            credit[worker] -= 1
            back.send_multipart([worker, *queue.popleft()])


def worker(back_url: str) -> None:
    sock = zmq.Context().socket(zmq.DEALER)
    sock.connect(back_url)
    sock.send(b"READY")
    while True:
        client, rid, body = sock.recv_multipart()
        answer = json.dumps({"output": json.loads(body)["input"] * 2}).encode()
        sock.send_multipart([client, rid, answer])


def frontend(port: int, front_url: str) -> None:
    async def main() -> None:
        sock = zmq.asyncio.Context().socket(zmq.DEALER)
        sock.connect(front_url)
        pending: dict[bytes, asyncio.Future] = {}
        ids = itertools.count()

        class Handler(tornado.web.RequestHandler):
            async def post(self) -> None:
                rid = next(ids).to_bytes(8, "big")
                pending[rid] = answer = asyncio.get_running_loop().create_future()
                await sock.send_multipart([rid, self.request.body])
                self.set_header("Content-Type", "application/json")
                self.finish(await answer)

        tornado.web.Application([(r"/predict", Handler)]).listen(port, "127.0.0.1")
        while True:
            rid, body = await sock.recv_multipart()
            pending.pop(rid).set_result(body)

    asyncio.run(main())


def run(port: int) -> None:
    folder = tempfile.mkdtemp(prefix="bare-chain-")
    front_url, back_url = f"ipc://{folder}/front", f"ipc://{folder}/back"
    spawn = multiprocessing.get_context("spawn")
    procs = [
        spawn.Process(target=broker, args=(front_url, back_url)),
        spawn.Process(target=worker, args=(back_url,)),
        spawn.Process(target=frontend, args=(port, front_url)),
    ]
    for proc in procs:
        proc.start()
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    for proc in procs:
        proc.kill()
        proc.join()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    run(int(sys.argv[1]))
