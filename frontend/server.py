"""Running the frontend: one HTTP server process, or several sharing the port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys
import time

from tornado.netutil import bind_sockets

from zeroserve.common.errors import ConfigError
from zeroserve.common.exits import Exit, final
from zeroserve.common.logs import configure_logging
from zeroserve.common.runtime import batch_io_threads, tune_gc
from zeroserve.common.supervisor import Supervisor
from zeroserve.common.tracing import Tracing
from zeroserve.common.tracing import setup as setup_tracing
from zeroserve.frontend.app import make_app
from zeroserve.frontend.broker_link import BrokerLink
from zeroserve.frontend.config import FrontendConfig
from zeroserve.frontend.http1 import Server
from zeroserve.frontend.shutdown import shutdown_route

log = logging.getLogger(__name__)

#: How long a stopping frontend waits for requests it is answering.
STOP_GRACE_S = 5.0
#: A broker refused this frontend (its worker port, another protocol version): final, as for
#: a worker launcher.


def listen(config: FrontendConfig) -> list:
    """The listening sockets, or a ConfigError that names the address (a port in use, say)."""
    try:
        return bind_sockets(config.port, config.host, reuse_port=config.processes > 1)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
        ) from None


def tls_context(config: FrontendConfig) -> ssl.SSLContext | None:
    """Tornado's ssl_options for HTTPS, or None for plain HTTP; a bad file is one line."""
    if config.certfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.certfile, config.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the certificate {config.certfile}"
            f"{f' with the key {config.keyfile}' if config.keyfile else ''}: {exc}"
        ) from None
    return context


async def serve(config: FrontendConfig, tracing: Tracing | None = None) -> int:
    """Serve HTTP until SIGTERM or SIGINT, or a broker's refusal (exit code Exit.REFUSED),
    then finish what is in flight (briefly) and leave."""
    tls = tls_context(config)
    sockets = listen(config)
    stop = asyncio.Event()
    refused: list[str] = []

    def on_refused(why: str) -> None:
        refused.append(why)
        stop.set()

    link = BrokerLink(config, on_refused=on_refused)
    link.start()
    router = make_app(link, config, tracing)
    server = Server(
        router,
        max_body_size=config.max_body_bytes,
        # Waiting on a client (between requests, for headers, for a body) is limited by this.
        idle_connection_timeout=config.idle_timeout_s,
        decompress_request=False,
        ssl_options=tls,
    )
    recent = asyncio.get_running_loop().create_task(router.front.recent.run())
    server.add_sockets(sockets)
    log.info(
        "frontend listening on %s://%s:%d; it serves once a broker answers (%s)",
        config.scheme,
        config.host,
        config.port,
        ", ".join(config.brokers),
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.drain()
    grace_s = min(STOP_GRACE_S, config.request_timeout_s)
    log.info(
        "draining: no new connections or requests; %d request(s) in flight get their answer "
        "(within %g s)",
        len(link.pending),
        grace_s,
    )
    deadline = time.monotonic() + grace_s
    while link.pending and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    link.close()
    recent.cancel()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(server.close_all_connections(), 1.0)
    log.info("frontend stopped")
    return Exit.REFUSED if refused else 0


def run_frontend_process(config: FrontendConfig) -> None:
    configure_logging(config.link.log_level, "frontend")
    batch_io_threads()
    tune_gc()
    tracing = setup_tracing("frontend")
    code = asyncio.run(serve(config, tracing))
    if tracing is not None:
        tracing.shutdown()
    if code:
        sys.exit(code)


def run_frontend(config: FrontendConfig) -> int:
    shutdown_route(config.shutdown_path)  # a missing shutdown key is one line here too
    if config.processes == 1:
        run_frontend_process(config)
        return 0
    tls_context(config)  # a bad certificate, or a port in use, is one line here, not a restart loop
    for sock in listen(config):
        sock.close()
    return Supervisor(
        "frontend",
        run_frontend_process,
        (config,),
        config.processes,
        stop_timeout_s=STOP_GRACE_S + 5,
        final_exits=final(Exit.REFUSED),
    ).run()
