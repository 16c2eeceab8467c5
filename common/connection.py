"""A peer's DEALER link to the broker, on an asyncio loop, with heartbeats and reconnection.

Workers and frontends both keep one: it sends heartbeats every interval,
declares the broker lost when it has been silent for interval x liveness
(the broker says its own interval in its heartbeats), then closes the socket
and opens a new one with back-off (the zguide's Paranoid Pirate).

A dropped connection (the broker killed, its port closed) is seen at once,
through ZeroMQ's socket monitor: the broker counts as lost that moment,
ZeroMQ reconnects on its own, and the owner greets the broker again when the
handshake succeeds. ZeroMQ's waits between attempts grow to one heartbeat
interval at most, so a broker back on its port is rejoined within one. The
heartbeat window stays for a broker that goes silent with its connection up
(stopped, or its host's link down). A broker lost and back says so in one
line each way.

A handshake the broker refuses (a wrong or missing token or key) is said once,
with where the token comes from, and tried again with back-off up to
REFUSED_BACKOFF_MAX_S, not by ZeroMQ many times a second. A broker host name
that does not resolve is said once too, and tried again each heartbeat (names
of containers and services often resolve only once they are up).

The socket is a plain pyzmq socket read by ``frames.EdgeReader`` on its
edge-triggered FD.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from zeroserve.common import protocol as p
from zeroserve.common.errors import ProtocolError
from zeroserve.common.frames import EdgeReader, has_input, send_frames
from zeroserve.common.link import LinkConfig, silence_limit_s
from zeroserve.common.logs import LogThrottle
from zeroserve.common.security import CurveKeys

log = logging.getLogger(__name__)


#: Messages a DEALER to the broker may queue either way before sends are refused.
DEALER_HWM = 100_000

HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
#: What the link's monitor reports: a connection ready, one dropped, one refused.
MONITORED = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | HANDSHAKE_FAILED
#: The longest wait before a handshake the broker refused is tried again.
REFUSED_BACKOFF_MAX_S = 30.0
#: Connections cut before their handshake ended, in a row, that count as a refusal.
CUT_SHORT_REFUSAL = 3
#: Where a peer's join token comes from, for the one line that says it is wrong.
TOKEN_HINT = (
    "the token is the one in the broker's --token-file, given to a peer as --token, "
    "--token-file or ZEROSERVE_TOKEN"
)


def endpoint_host(endpoint: str) -> str | None:
    """The host name of a tcp:// endpoint, or None for an address, a wildcard or another
    transport (nothing to resolve)."""
    if not endpoint.startswith("tcp://") or ":" not in endpoint[6:]:
        return None
    host = endpoint[6:].rsplit(":", 1)[0].strip("[]")
    if ";" in host:  # "source;destination": the destination is what is resolved
        host = host.rsplit(";", 1)[1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host if host and host != "*" else None
    return None


def open_dealer(
    context: zmq.Context,
    endpoint: str,
    keys: CurveKeys | None = None,
    *,
    routing_id: bytes | None = None,
    immediate: bool = False,
    reconnect_max_s: float = 8.0,
) -> zmq.Socket:
    """A DEALER connected to the broker, set up the same way for every peer.

    Reconnection waits double up to `reconnect_max_s` (0: no back-off).
    """
    sock = context.socket(zmq.DEALER)
    if routing_id is not None:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, DEALER_HWM)
    sock.setsockopt(zmq.RCVHWM, DEALER_HWM)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, int(reconnect_max_s * 1000))
    if immediate:
        sock.setsockopt(zmq.IMMEDIATE, 1)
    if keys is not None:
        keys.apply_client(sock)
    sock.connect(endpoint)
    return sock


class BrokerConnection:
    """One DEALER to the broker; the owner supplies what to say and what to do with answers."""

    def __init__(
        self,
        endpoint: str,
        *,
        table: Mapping[bytes, int],
        on_message: Callable[[bytes, list[Any]], None],
        on_connect: Callable[[], None],
        on_lost: Callable[[str], None],
        heartbeat_meta: Callable[[], dict[str, Any]],
        link: LinkConfig,
        keys: CurveKeys | None = None,
        reconnect_max_s: float = 8.0,
        immediate: bool = False,
        context: zmq.Context | None = None,
        name: str = "peer",
    ) -> None:
        self.endpoint = endpoint
        self.table = table
        self.on_message = on_message
        self.on_connect = on_connect
        self.on_lost = on_lost
        self.heartbeat_meta = heartbeat_meta
        self.heartbeat_interval_s = link.heartbeat_interval_s
        self.heartbeat_liveness = link.heartbeat_liveness
        self.reconnect_max_s = reconnect_max_s
        #: ZeroMQ's own reconnection waits: never longer than a heartbeat interval.
        self._zmq_reconnect_max_s = min(reconnect_max_s, link.heartbeat_interval_s)
        self.immediate = immediate
        self.keys = keys
        self.context = context or zmq.Context.instance()
        self.name = name
        self.broker_id: str | None = None
        self.broker_interval_s = link.heartbeat_interval_s
        #: True from the first message of a broker until it is declared lost.
        self.alive = False
        self.bad_messages = 0
        self._expires_at = 0.0
        self._sock: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        #: The connection dropped and ZeroMQ is making it again.
        self.dropped = False
        self._refused_log = LogThrottle(30.0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: EdgeReader | None = None
        self._task: asyncio.Task | None = None
        self._closed = False
        self._bad_log = LogThrottle()
        #: The owner was told the broker is lost, and nothing came from a broker since.
        self._lost_told = False
        self._restarted_from: str | None = None
        #: Handshakes refused in a row; while the socket is shut for them, when to reopen.
        self._refusals = 0
        self._reopen_at = 0.0
        #: The current connection's handshake succeeded; connections cut before theirs did.
        self._handshaken = False
        #: A message was dropped before the current connection's handshake ended (IMMEDIATE
        #: drops them): the greeting is said again once it ends.
        self._unsent = False
        self._cut_short = 0
        self._host = endpoint_host(endpoint)
        self._resolve_failed = False
        self._resolver: asyncio.Task | None = None

    # -- life cycle --------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._open()
        self._task = self._loop.create_task(self._heartbeat_loop())
        if self._host is not None:
            self._resolver = self._loop.create_task(self._watch_name(self._host))

    def close(self, goodbye: list[Any] | None = None) -> None:
        self._closed = True
        for task in (self._task, self._resolver):
            if task is not None:
                task.cancel()
        if self._sock is not None:
            if goodbye is not None:
                self.send(goodbye)
                self._sock.setsockopt(zmq.LINGER, 500)
            self._shut()

    def _open(self) -> None:
        sock = open_dealer(
            self.context,
            self.endpoint,
            self.keys,
            immediate=self.immediate,
            reconnect_max_s=self._zmq_reconnect_max_s,
        )
        self._sock = sock
        self.dropped = self._handshaken = self._unsent = False
        self._expires_at = time.monotonic() + self._expiry_s()
        assert self._loop is not None
        self._reader = EdgeReader(self._loop, sock, self._receive)
        self._monitor = sock.get_monitor_socket(MONITORED)
        self._loop.add_reader(self._monitor.fileno(), self._read_monitor)
        # Events that came before the reader was in place raise no edge: look once.
        self._loop.call_soon(self._read_monitor)
        self.on_connect()

    def _shut(self) -> None:
        sock, self._sock = self._sock, None
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            if self._loop is not None:
                self._loop.remove_reader(monitor.fileno())
            if sock is not None:
                sock.disable_monitor()
            monitor.close(0)
        if sock is not None:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            sock.close()

    def _expiry_s(self) -> float:
        return silence_limit_s(
            self.heartbeat_liveness, self.broker_interval_s, self.heartbeat_interval_s
        )

    # -- sending and receiving ----------------------------------------------

    def send(self, frames: list[Any]) -> bool:
        """Send without blocking; False when the message could not be queued."""
        sock = self._sock
        if sock is None:
            return False
        try:
            send_frames(sock, frames)
        except zmq.Again:
            if not self._handshaken:
                self._unsent = True
            return False
        if self._reader is not None:
            self._reader.after_send()
        return True

    def _receive(self, frames: list[bytes]) -> None:
        try:
            command, args = p.parse(frames, self.table)
            if command in (p.HEARTBEAT, p.ROUTES):
                self._note_broker(p.unpack_meta(args[0]))
            self._expires_at = time.monotonic() + self._expiry_s()
            self._lost_told = False
            if not self.alive:
                self.alive = True
                restarted, self._restarted_from = self._restarted_from, None
                log.info(
                    "%s: broker at %s is reachable%s",
                    self.name,
                    self.endpoint,
                    f" (a new one: {restarted} -> {self.broker_id})" if restarted else "",
                )
            self.on_message(command, args)
        except ProtocolError as exc:
            self.bad_messages += 1
            if self._bad_log.ready():
                log.warning("%s: dropped a bad message from the broker: %s", self.name, exc)
        except Exception:
            # A bug of ours must cost one message, never the process.
            log.exception("%s: internal error while handling a message; it was dropped", self.name)

    def _note_broker(self, meta: dict[str, Any]) -> None:
        interval = meta.get("heartbeat_interval_s")
        if isinstance(interval, (int, float)) and 0 < interval <= 3600:
            self.broker_interval_s = float(interval)
        broker_id = meta.get("broker_id")
        if isinstance(broker_id, str) and broker_id != self.broker_id:
            previous, self.broker_id = self.broker_id, broker_id
            if previous is None:
                return
            if not self.alive:
                self._restarted_from = previous  # said in the line that says it is back
            else:
                log.warning("%s: broker restarted (%s -> %s)", self.name, previous, broker_id)
            if not self._lost_told:
                self._tell_lost("the broker restarted")

    def _tell_lost(self, why: str) -> None:
        self._lost_told = True
        self.on_lost(why)

    # -- the connection itself ---------------------------------------------------

    def _read_monitor(self) -> None:
        monitor = self._monitor
        while monitor is not None and monitor is self._monitor and has_input(monitor):
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
            except (zmq.ZMQError, ValueError, KeyError):
                return
            self._on_event(event)

    def _on_event(self, event: int) -> None:
        if event == zmq.EVENT_DISCONNECTED:
            handshaken, self._handshaken = self._handshaken, False
            if not handshaken:
                # Cut before its handshake ended: a broker that wants a token this peer has
                # not, or no broker at all. A broker going down cuts one, not several in a row.
                self._cut_short += 1
                if self._cut_short >= CUT_SHORT_REFUSAL:
                    self._refused(self._cut_short)
                return
            if self.dropped:
                return
            self.dropped = True
            was_alive, self.alive = self.alive, False
            log.warning("%s: the connection to the broker at %s dropped", self.name, self.endpoint)
            if was_alive:
                self._tell_lost("the connection to the broker dropped")
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._handshaken = True
            self._refusals = self._cut_short = 0
            if self._unsent and not self.dropped:
                # The greeting said at open went nowhere (no connection yet): say it now,
                # not a heartbeat later.
                self._unsent = False
                self.on_connect()
                if self._reader is not None:
                    self._reader.kick()
            if self.dropped:
                self.dropped = False
                self._expires_at = time.monotonic() + self._expiry_s()
                log.debug("%s: connected to the broker at %s again", self.name, self.endpoint)
                self.on_connect()
                if self._reader is not None:
                    self._reader.kick()
        elif event & HANDSHAKE_FAILED:
            # Without detail it may be a connection cut mid-handshake (a broker going down):
            # with keys it counts from the second in a row; without keys it is never about a
            # token (a broker that wants one fails it with a protocol error, or cuts it).
            self._refusals += 1
            if event != zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL or (
                self.keys is not None and self._refusals >= 2
            ):
                self._refused(self._refusals)

    def _refused(self, times: int) -> None:
        """A refused handshake: said once, then tried again with back-off, not by ZeroMQ."""
        delay_s = min(REFUSED_BACKOFF_MAX_S, self.heartbeat_interval_s * 2 ** (times - 1))
        if self._refused_log.ready():
            has = (
                "has no join token, and the broker wants one (or what listens there is no "
                "zeroserve broker)"
                if self.keys is None
                else "has a join token (or CurveZMQ key) the broker does not admit"
            )
            log.error(
                "%s: the broker at %s refused the handshake: this peer %s; %s "
                "(trying again with back-off, up to every %g s)",
                self.name,
                self.endpoint,
                has,
                TOKEN_HINT,
                REFUSED_BACKOFF_MAX_S,
            )
        self._reopen_at = time.monotonic() + delay_s
        self._shut()  # the heartbeat loop reopens it after the wait

    # -- the clock -------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        backoff_s = self.heartbeat_interval_s
        while not self._closed:
            await asyncio.sleep(self.heartbeat_interval_s)
            if self._sock is None:  # shut after a refused handshake
                if time.monotonic() >= self._reopen_at:
                    self._open()
                continue
            self.send(p.heartbeat(self.heartbeat_meta()))
            if time.monotonic() <= self._expires_at or self.dropped:
                # A dropped connection is ZeroMQ's to make again; the monitor says when.
                backoff_s = self.heartbeat_interval_s
                continue
            was_alive, self.alive = self.alive, False
            log.warning(
                "%s: no word from the broker at %s for %.1f s; reconnecting in %.1f s",
                self.name,
                self.endpoint,
                self._expiry_s(),
                backoff_s,
            )
            if was_alive:
                self._tell_lost("the broker stopped answering")
            self._shut()
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, self.reconnect_max_s)
            if not self._closed:
                self._open()

    async def _watch_name(self, host: str) -> None:
        """While the broker is not reached, check its host name resolves: say once when it
        does not (ZeroMQ would try it again in silence), and once when it does again."""
        assert self._loop is not None
        while not self._closed:
            if not self.alive:
                try:
                    await self._loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
                except (OSError, UnicodeError) as exc:
                    if not self._resolve_failed:
                        self._resolve_failed = True
                        log.error(
                            "%s: cannot resolve the broker's host %r (of %s): %s; trying again "
                            "each heartbeat",
                            self.name,
                            host,
                            self.endpoint,
                            getattr(exc, "strerror", None) or exc,
                        )
                else:
                    if self._resolve_failed:
                        self._resolve_failed = False
                        log.info("%s: the broker's host %r resolves now", self.name, host)
            await asyncio.sleep(max(self.heartbeat_interval_s, 1.0))


def broker_links(
    endpoints: tuple[str, ...],
    *,
    on_message: Callable[[int, bytes, list[Any]], None],
    on_connect: Callable[[int], None],
    on_lost: Callable[[int, str], None],
    heartbeat_meta: Callable[[int], dict[str, Any]],
    **settings: Any,
) -> list[BrokerConnection]:
    """A link to each broker; each callback is told the link's index first."""
    return [
        BrokerConnection(
            endpoint,
            on_message=functools.partial(on_message, index),
            on_connect=functools.partial(on_connect, index),
            on_lost=functools.partial(on_lost, index),
            heartbeat_meta=functools.partial(heartbeat_meta, index),
            **settings,
        )
        for index, endpoint in enumerate(endpoints)
    ]
