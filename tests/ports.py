"""Ports the tests' servers bind: below Linux's ephemeral range, a slice per xdist worker.

A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, where every
outgoing connection also takes its local port: between the moment a test picks one and the
moment its server binds it (a broker restarted on its port, a chaos run), a client connection
of another test may hold it. Below that range only these tests bind, each worker in its own
slice, in turn.
"""

from __future__ import annotations

import itertools
import os
import random
import socket

#: Linux's ephemeral ports start at 32768 by default; the slices end below it.
FIRST_PORT = 20000
SLICE = 1500

_worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
_start = FIRST_PORT + (int(_worker) if _worker.isdigit() else 0) % 8 * SLICE
#: Each process starts at a random place of its slice, so that two suites run at once (two
#: checkouts) seldom meet; the bind check skips a port bound now.
_offset = random.randrange(SLICE)
_ports = list(range(_start, _start + SLICE))
_turn = itertools.cycle(_ports[_offset:] + _ports[:_offset])


def free_port() -> int:
    """The next port of this worker's slice that nothing listens on right now."""
    for _ in range(SLICE):
        port = next(_turn)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_start}-{_start + SLICE - 1}")
