"""``litserve.utils`` under zeroserve's name: the helpers a model author calls."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import json
import logging
import multiprocessing
import os
import pdb
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, TextIO

from zeroserve.worker.api import LitAPIStatus
from zeroserve.worker.openai_spec import route_of

__all__ = [
    "ForkedPdb",
    "LitAPIStatus",
    "add_log_handler",
    "configure_logging",
    "is_package_installed",
    "set_log_level",
    "set_trace",
    "set_trace_if_debug",
    "wrap_litserve_start",
]


#: Requests ``wrap_litserve_start``'s proxy forwards at once.
MAX_REQUESTS_AT_ONCE = 256

#: The library's logger: every zeroserve module logs under it.
LIBRARY_LOGGER = "zeroserve"
_DEFAULT_LOG_FORMAT = (
    "%(asctime)s - %(processName)s[%(process)d] - %(name)s - %(levelname)s - "
    "%(filename)s:%(lineno)d - %(message)s"
)


def configure_logging(
    level: str | int = logging.INFO,
    format: str = _DEFAULT_LOG_FORMAT,
    stream: TextIO = sys.stdout,
    use_rich: bool = False,
) -> None:
    """LitServe's: zeroserve's own records to `stream` (standard output) at `level`, with one
    handler, instead of the processes' standard error."""
    if isinstance(level, str):
        level = getattr(logging, level.upper())
    library = logging.getLogger(LIBRARY_LOGGER)
    for old in library.handlers[:]:
        library.removeHandler(old)
    handler: logging.Handler | None = None
    if use_rich:
        try:
            from rich.logging import RichHandler
        except ImportError:
            library.warning("rich is not installed; using the plain handler")
        else:
            handler = RichHandler(rich_tracebacks=True, show_time=True, show_path=True)
    if handler is None:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(format))
    library.setLevel(level)
    library.addHandler(handler)
    library.propagate = False


def set_log_level(level: str | int) -> None:
    logging.getLogger(LIBRARY_LOGGER).setLevel(level)


def add_log_handler(handler: logging.Handler) -> None:
    logging.getLogger(LIBRARY_LOGGER).addHandler(handler)


def is_package_installed(package_name: str) -> bool:
    return importlib.util.find_spec(package_name) is not None


class ForkedPdb(pdb.Pdb):
    """pdb in a worker process, whose standard input is not the terminal's."""

    def interaction(self, *args: object, **kwargs: object) -> None:
        stdin = sys.stdin
        try:
            with open("/dev/stdin") as sys.stdin:
                super().interaction(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            sys.stdin = stdin


def set_trace() -> None:
    """Stop in the debugger here, also inside a worker process."""
    ForkedPdb().set_trace(sys._getframe().f_back)


def set_trace_if_debug(
    debug_env_var: str = "LITSERVE_DEBUG", debug_env_var_value: str = "1"
) -> None:
    """``set_trace()`` when the environment variable has that value."""
    if os.environ.get(debug_env_var) == debug_env_var_value:
        set_trace()


class _Proxy:
    """An ASGI app that hands each request to a running zeroserve over HTTP, so that an
    ASGI test client (``TestClient(server.app)``, httpx's ``ASGITransport``) reaches the
    real processes."""

    def __init__(self, base: str, paths: set[str], started: Any, routed: Any) -> None:
        self.base = base
        self.paths = paths
        #: Waits until the server answers; called before the first request.
        self.started = started
        #: Waits until every API's route is served; called before the first request to one.
        self.routed = routed
        self.waited_start = self.waited = False
        #: Each request waits for its answer in a thread of its own: as many at once as the
        #: test sends (asyncio's default executor would hold all but a few back, so that a
        #: batch meant to fill at once fills only after its timeout).
        self._fetchers: concurrent.futures.ThreadPoolExecutor | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        loop = asyncio.get_running_loop()
        if self._fetchers is None:
            self._fetchers = concurrent.futures.ThreadPoolExecutor(
                MAX_REQUESTS_AT_ONCE, thread_name_prefix="zeroserve-proxy"
            )
        if not self.waited_start:
            await loop.run_in_executor(self._fetchers, self.started)
            self.waited_start = True
        if not self.waited and scope["path"] in self.paths:
            await loop.run_in_executor(self._fetchers, self.routed)
            self.waited = True
        status, headers, content = await loop.run_in_executor(
            self._fetchers, self._fetch, scope, body
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _fetch(self, scope: dict, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        path = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            path += b"?" + scope["query_string"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        headers.pop("host", None)
        # ASGI bodies have no declared length: urllib declares the one it sends.
        headers.pop("content-length", None)
        request = urllib.request.Request(
            self.base + path.decode("latin-1"), data=body or None, headers=headers,
            method=scope["method"],
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, raw, content = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, raw, content = error.code, error.headers, error.read()
        skip = {"transfer-encoding", "connection", "content-length"}
        pairs = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in raw.items()
            if k.lower() not in skip
        ]
        pairs.append((b"content-length", str(len(content)).encode()))
        return status, pairs, content

    def close(self) -> None:
        if self._fetchers is not None:
            self._fetchers.shutdown(wait=False, cancel_futures=True)


def _serve(server: Any, port: int, api_key: str | None, shutdown_key: str | None) -> None:
    from zeroserve import server as server_module

    # A fork of the test's process: its standard streams may be the test runner's capture
    # objects, in this process's memory; what the server prints goes to the descriptors.
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115

    if api_key:
        os.environ["LIT_SERVER_API_KEY"] = api_key
    server_module.SHUTDOWN_API_KEY = shutdown_key
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")


def _wait_for(probe: urllib.request.Request, done: Any, process: Any) -> None:
    """Poll the info endpoint until ``done(routes)``; the server's end is an error."""
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(probe, timeout=2) as response:
                if done(set(json.load(response).get("routes", {}))):
                    return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if process.exitcode is not None:
            raise RuntimeError(f"the server stopped with exit code {process.exitcode}")
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not become ready within 120 s")
        time.sleep(0.05)


@contextlib.contextmanager
def wrap_litserve_start(server: Any, worker_monitor: bool = False) -> Iterator[Any]:
    """LitServe's pytest helper: start ``server`` for the block, its processes real, and set
    ``server.app`` to an ASGI app that reaches it, for ``TestClient(server.app)``.

    ``zeroserve.server.LIT_SERVER_API_KEY``, when a test sets it, is the server's key.
    """
    from zeroserve import server as server_module
    from zeroserve.up import free_port

    port = free_port()
    api_key = getattr(server_module, "LIT_SERVER_API_KEY", None)
    keys = (api_key, getattr(server_module, "SHUTDOWN_API_KEY", None))
    # Forked on Linux (elsewhere, as macOS's system libraries, a fork is not safe): the server
    # process then has the test's module (and what it imports) in hand, where a spawned one
    # would import it all again, the server's objects through a pipe. Everything it starts in
    # turn is spawned or executed afresh.
    method = "fork" if sys.platform == "linux" else "spawn"
    context: Any = multiprocessing.get_context(method)
    process = context.Process(target=_serve, args=(server, port, *keys), name="LitServer")
    process.start()
    base = f"http://127.0.0.1:{port}"
    # As LitServe's, it returns once the server is started, not ready: the proxy holds the
    # first request until the frontend answers (so servers started one after another start
    # side by side), and a request to an API's route until a worker serves it (LitServe's
    # queue holds it); the health check says "not ready" until the workers are set up.
    probe = urllib.request.Request(
        base + server.info_path, headers={"X-API-Key": api_key} if api_key else {}
    )
    paths = {route_of(api) for api in server.apis}
    proxy = _Proxy(
        base,
        paths,
        lambda: _wait_for(probe, lambda routes: True, process),
        lambda: _wait_for(probe, paths.issubset, process),
    )
    try:
        server.app = proxy
        yield server
    finally:
        proxy.close()
        if process.pid is not None and process.exitcode is None:
            os.kill(process.pid, signal.SIGTERM)
            process.join(15)
            if process.exitcode is None:
                process.kill()
                process.join()
