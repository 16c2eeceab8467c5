"""The broker: routes requests from frontends to workers by credit, and answers back.

This module is the I/O glue: the peer rules are `peers.Peers`' and the request life cycle is
`inflight.Inflight`'s; neither touches a socket, both speak through this class.

One thread owns both ROUTER sockets. Each turn of the loop drains what
arrived, hands queued work to workers with free slots, and on every tick
sends heartbeats, purges silent peers and expires requests past their
deadline (the zguide's Majordomo broker, with credit instead of one job per
worker and without ever trusting a peer's frames).
"""

from __future__ import annotations

import enum
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections import Counter
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from zeroserve.broker.config import BrokerConfig
from zeroserve.broker.inflight import Inflight, Policy
from zeroserve.broker.peers import Peers
from zeroserve.broker.registry import (
    Registry,
    WorkerRecord,
)
from zeroserve.broker.requests import BrokerRequest
from zeroserve.broker.snapshot import build as build_snapshot
from zeroserve.common import protocol as p
from zeroserve.common.connection import HANDSHAKE_FAILED
from zeroserve.common.errors import ProtocolError, VersionMismatch
from zeroserve.common.frames import has_input, recv_frames, send_frames
from zeroserve.common.logs import LogThrottle
from zeroserve.common.security import (
    Authenticator,
    KeyDirectoryAuthenticator,
    TokenAuthenticator,
)
from zeroserve.common.snapshot import BrokerStatus, Snapshot
from zeroserve.common.tracing import Tracing
from zeroserve.common.version import version as zeroserve_version

log = logging.getLogger(__name__)

DRAIN_BATCH = 512
TICK_S = 0.05
SOCKET_HWM = 100_000


class Broker:
    """Owns the broker's sockets and state; call ``bind`` then ``run``."""

    def __init__(
        self,
        config: BrokerConfig,
        context: zmq.Context | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self.tracing = tracing
        self.context = context or zmq.Context.instance()
        self.broker_id = secrets.token_hex(4)
        self.registry = Registry(config.max_queue)
        self.counters: Counter[str] = Counter()
        policy = Policy(
            max_attempts=config.max_attempts,
            default_timeout_s=config.default_timeout_s,
            retry_after_s=config.retry_after_s,
            deadline_grace_s=config.deadline_grace_s,
            model_routing=config.model_routing,
        )
        self.inflight = Inflight(self.registry, self, policy, self.counters)
        self.started_at = time.monotonic()
        self.peers = Peers(
            self.registry,
            self.inflight,
            self,
            self.counters,
            link=config.link,
            broker_id=self.broker_id,
        )
        self._next_heartbeat = 0.0
        for service, weights in config.weights.items():
            self.registry.set_weights(service, dict(weights))
        self._bad_logs = {"frontend": LogThrottle(), "worker": LogThrottle()}
        self.keys = config.link.server_keys()
        self.authenticator: Authenticator | None = None
        if config.link.token is not None:
            self.authenticator = TokenAuthenticator(self.context, config.link.token)
        elif self.keys is not None and config.link.authorized_keys is not None:
            self.authenticator = KeyDirectoryAuthenticator(
                self.context, config.link.authorized_keys
            )
        if self.authenticator is not None:
            self.authenticator.start()
        self.frontend: zmq.Socket = self._router()
        self.backend: zmq.Socket = self._router()
        #: Where refused handshakes are seen (a peer without the token or an admitted key).
        self.monitors: dict[zmq.Socket, str] = {}
        #: Frontends an answer could not reach (their connection is gone): their requests are
        #: dropped once the message at hand is handled.
        self._unreachable_frontends: set[bytes] = set()
        #: Workers a request could not reach (no connection has the name of their data socket,
        #: one being replaced, say): removed once the message at hand is handled, so that what
        #: they held goes to another worker, not lost until its deadline.
        self._unreachable_workers: set[bytes] = set()
        if self.keys is not None:
            for sock, side in ((self.frontend, "frontend"), (self.backend, "worker")):
                self.monitors[sock.get_monitor_socket(HANDSHAKE_FAILED)] = side
        self._refused_log = LogThrottle()
        self._wrong_port_log = LogThrottle()
        self.frontend_endpoint = ""
        self.backend_endpoint = ""

    def _router(self) -> zmq.Socket:
        sock = self.context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # Workers name their data sockets: one that reconnects takes its name back.
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.SNDHWM, SOCKET_HWM)
        sock.setsockopt(zmq.RCVHWM, SOCKET_HWM)
        if self.keys is not None:
            self.keys.apply_server(sock)
        return sock

    def bind(self) -> None:
        """Bind both sides; a port of 0 or * picks a free one (see the *_endpoint attributes)."""
        self.frontend_endpoint = _bind(self.frontend, self.config.frontend_bind)
        self.backend_endpoint = _bind(self.backend, self.config.backend_bind)
        log.info(
            "broker %s listening: frontends on %s, workers on %s%s",
            self.broker_id,
            self.frontend_endpoint,
            self.backend_endpoint,
            _security(self.config),
        )

    def close(self) -> None:
        for monitor in self.monitors:
            monitor.close(0)
        self.frontend.close(0)
        self.backend.close(0)
        if self.authenticator is not None:
            self.authenticator.stop()

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        for monitor in self.monitors:
            poller.register(monitor, zmq.POLLIN)
        next_tick = time.monotonic()
        while not stop.is_set():
            timeout_ms = max(0.0, (next_tick - time.monotonic()) * 1000)
            events = dict(poller.poll(math.ceil(timeout_ms)))
            if self.frontend in events:
                self._drain(self.frontend, self._on_frontend_message, "frontend")
            if self.backend in events:
                self._drain(self.backend, self._on_worker_message, "worker")
            for monitor, side in self.monitors.items():
                if monitor in events:
                    self._refused_handshakes(monitor, side)
            self._drop_unreachable()
            now = time.monotonic()
            if now >= next_tick:
                self._tick(now)
                self._drop_unreachable()
                next_tick = now + TICK_S
            if self.peers.routes_dirty:
                self._broadcast_routes()
        self._say_goodbye()

    def _drop_unreachable(self) -> None:
        """Peers a message could not reach: a frontend's requests are dropped (it re-sends
        what it still waits for); a worker is removed, its requests re-queued (a live one
        announces itself again at its next heartbeat)."""
        while self._unreachable_frontends:
            self.peers.drop_frontend(self._unreachable_frontends.pop(), "unreachable")
        while self._unreachable_workers:
            self.peers.unreachable_worker(self._unreachable_workers.pop(), time.monotonic())

    # -- receiving ---------------------------------------------------------

    def _drain(self, sock: zmq.Socket, handler: Any, side: str) -> None:
        """Handle what arrived; a bad message is counted and, where possible, answered."""
        for _ in range(DRAIN_BATCH):
            if not has_input(sock):
                return
            frames = recv_frames(sock, keep_large=True)
            sender = frames[0]
            try:
                handler(sender, frames[1:])
            except VersionMismatch as exc:
                self._bad_message(side, exc)
                self._send(sock, [sender, *p.refused(400, str(exc))])
            except ProtocolError as exc:
                self._bad_message(side, exc)
            except Exception:
                # A bug of ours must cost one message, never the broker.
                self.counters["internal_errors"] += 1
                log.exception("internal error while handling a message; it was dropped")

    def _on_frontend_message(self, client: bytes, frames: list[Any]) -> None:
        if _is_other_side(frames, WORKER_ONLY, p.FROM_WORKER):
            self._wrong_port(self.frontend, client, "worker")
            return
        command, args = p.parse(frames, p.FROM_FRONTEND)
        if command == p.REQUEST:
            if client not in self.registry.frontends:
                self.peers.touch_frontend(client, None, time.monotonic())
            self._on_request(client, args)
        elif command == p.HEARTBEAT:
            self.peers.on_frontend_heartbeat(client, p.unpack_meta(args[0]), time.monotonic())
        elif command == p.CANCEL:
            if self.inflight.cancel((client, p.identity(args[0]))):
                self.counters["cancelled"] += 1
        elif command == p.STATUS:
            self._send(self.frontend, p.status_reply(client, args[0], self.snapshot()))
        elif command == p.ROUTE:
            self._send(self.frontend, p.route_reply(client, args[0], self._on_route(args[1])))
        elif command == p.RETIRE:
            self._send(self.frontend, p.retire_reply(client, args[0], self._on_retire(args[1])))
        elif command == p.DISCONNECT:
            self.peers.drop_frontend(client)

    def _on_worker_message(self, sender: bytes, frames: list[Any]) -> None:
        """The worker port: a frontend's command here is refused; the rest is `Peers`'."""
        if _is_other_side(frames, FRONTEND_ONLY, p.FROM_FRONTEND):
            self._wrong_port(self.backend, sender, "frontend")
            return
        command, args = p.parse(frames, p.FROM_WORKER)
        self.peers.on_worker_message(sender, command, args, time.monotonic())

    def _wrong_port(self, sock: zmq.Socket, peer: bytes, role: str) -> None:
        """A peer of the other side on this port: refused, naming the port it wants, so that it
        stops with that one line instead of being misread."""
        why = self.wrong_port_message(role)
        self.counters["wrong_port"] += 1
        if self._wrong_port_log.ready():
            log.warning("refused a %s on the wrong port: %s", role, why)
        self._send(sock, [peer, *p.refused(421, why)])

    def wrong_port_message(self, role: str) -> str:
        """What a `role` ("worker" or "frontend") peer on the other side's port is told."""
        front, back = _port_of(self.frontend_endpoint), _port_of(self.backend_endpoint)
        if role == "worker":
            return (
                f"{front} is the broker's frontend port; workers connect to its worker port "
                f"({back})"
            )
        return (
            f"{back} is the broker's worker port; frontends and `cluster status` connect to its "
            f"frontend port ({front})"
        )

    def _refused_handshakes(self, monitor: zmq.Socket, side: str) -> None:
        while has_input(monitor):
            recv_monitor_message(monitor, zmq.NOBLOCK)
            self.counters["refused_handshakes"] += 1
            if self._refused_log.ready():
                log.warning(
                    "refused a %s connection: its handshake failed, so it has no join token, "
                    "a wrong one, or no admitted key (%d refused so far)",
                    side,
                    self.counters["refused_handshakes"],
                )

    def _bad_message(self, side: str, exc: Exception) -> None:
        """Count every bad message; log at most one a second per side so a flood cannot."""
        self.counters[f"bad_messages_{side}"] += 1
        if self._bad_logs[side].ready():
            log.warning(
                "dropped a bad message from a %s (%d so far): %s",
                side,
                self.counters[f"bad_messages_{side}"],
                exc,
            )

    # -- frontends -------------------------------------------------------

    def _on_request(self, client: bytes, args: list[Any]) -> None:
        rid = p.identity(args[0])
        try:
            meta = p.unpack_meta(args[1])
        except ProtocolError as exc:
            self.refuse(client, rid, 400, f"malformed request metadata: {exc}")
            raise
        # The metadata frame goes on to the worker as it came; only the hop frame is new.
        self.inflight.accept(client, rid, meta, args[2], time.monotonic(), meta_frame=args[1])

    # -- versions --------------------------------------------------------

    def set_weights(self, service: str, weights: dict[str, int]) -> None:
        """A service's traffic split between its versions (empty: the newest takes all)."""
        record = self.registry.set_weights(service, weights)
        log.info(
            "traffic of %r: %s",
            service,
            ", ".join(f"version {v} {w}" for v, w in record.weights.items())
            or "all to the newest version",
        )
        if len(record.queue):
            self.inflight.dispatch(record)

    def _on_route(self, frame: Any) -> p.RouteMeta:
        """`cluster route`: set the split here, answered with it (or with why not)."""
        try:
            asked = p.parse_route(frame)
        except ProtocolError as exc:
            return {"error": str(exc)}
        self.set_weights(asked["service"], asked["weights"])
        return {"service": asked["service"], "weights": asked["weights"]}

    def _on_retire(self, frame: Any) -> p.RetireMeta:
        """`cluster drain`: every worker of the version here takes no new work from now on,
        and is told to finish what it holds and exit."""
        try:
            asked = p.parse_retire(frame)
        except ProtocolError as exc:
            return {"error": str(exc)}
        name, version = asked["service"], asked["version"]
        told = self.peers.retire(name, version)
        if not told:
            known = ", ".join(sorted(self.registry.services)) or "none"
            return {
                "error": f"no worker of {name!r} has version {version!r} here"
                if name in self.registry.services
                else f"no service {name!r} here (services: {known})"
            }
        return {"service": name, "version": version, "workers": told}

    # -- the wire the request table speaks through -------------------------------------------

    def send_request(self, worker: WorkerRecord, request: BrokerRequest) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "request_id=%s to worker %s pid %s (attempt %d)",
                request.meta.get("request_id") or "-",
                worker.host,
                worker.pid,
                request.attempt,
            )
        sent = self._send(
            self.backend,
            p.request_to_worker(
                worker.identity,
                request.frontend,
                request.rid,
                request.meta_frame,
                request.body,
                timeout_ms=p.remaining_ms(request.deadline),
                attempt=request.attempt,
            ),
        )
        if sent is not Sent.OK:
            # Removed after the message at hand, not inside the request table's transition.
            self._unreachable_workers.add(worker.identity)
        if self.tracing is not None and "trace" in request.meta:
            self._trace_dispatch(worker, request)

    def _trace_dispatch(self, worker: WorkerRecord, request: BrokerRequest) -> None:
        """A span of the request's time here, from its acceptance to this worker."""
        assert self.tracing is not None
        waited_ns = int((time.monotonic() - request.accepted) * 1e9)
        now_ns = time.time_ns()
        span = self.tracing.remote_span(
            request.meta["trace"],
            "broker.dispatch",
            start_ns=now_ns - waited_ns,
            attributes={
                "zeroserve.service": request.service,
                "zeroserve.request_id": str(request.meta.get("request_id", "")),
                "zeroserve.attempt": request.attempt,
                "zeroserve.worker.host": worker.host,
                "zeroserve.worker.pid": worker.pid,
            },
        )
        if span is not None:
            span.end(end_time=now_ns)

    def send_cancel(self, worker: bytes, request: BrokerRequest) -> None:
        self._send(self.backend, p.cancel_to_worker(worker, request.frontend, request.rid))

    def forward(self, request: BrokerRequest, command: bytes, meta: Any, body: Any) -> None:
        frames = p.answer_to_frontend(request.frontend, command, request.rid, meta, body)
        if self._send(self.frontend, frames) is Sent.GONE:
            # Dropped after the message at hand, not inside the request table's transition.
            self._unreachable_frontends.add(request.frontend)

    def refuse(
        self,
        frontend: bytes,
        rid: bytes,
        status: int,
        why: str,
        retry_after_s: float | None = None,
    ) -> None:
        self._send(self.frontend, p.error(frontend, rid, status, why, retry_after_s))

    def to_worker_port(self, frames: list[Any]) -> None:
        self._send(self.backend, frames)

    def wrong_port(self, port: str, peer: bytes, role: str) -> None:
        self._wrong_port(self.frontend if port == "frontend" else self.backend, peer, role)

    def send_routes(self, frontend: bytes) -> None:
        self._send(self.frontend, [frontend, *self._routes_message()])

    def _send(self, sock: zmq.Socket, frames: list[Any]) -> Sent:
        try:
            send_frames(sock, frames)
        except zmq.Again:
            self.counters["send_dropped_full"] += 1
            return Sent.FULL
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self.counters["send_dropped_gone"] += 1
            return Sent.GONE
        return Sent.OK

    def _routes_message(self) -> list[Any]:
        return p.routes({"broker_id": self.broker_id, "services": self.registry.route_table()})

    def _broadcast_routes(self) -> None:
        self.peers.routes_dirty = False
        message = self._routes_message()
        for identity in list(self.registry.frontends):
            self._send(self.frontend, [identity, *message])

    # -- the clock -----------------------------------------------------------

    def _tick(self, now: float) -> None:
        self.peers.expire(now)
        for service in self.inflight.expire(now):
            self.inflight.dispatch(service)
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.config.link.heartbeat_interval_s
            beat = p.heartbeat(self.peers.heartbeat_meta())
            for worker in list(self.registry.workers.values()):
                self._send(self.backend, [worker.heartbeat_to, *beat])
            for identity in list(self.registry.frontends):
                self._send(self.frontend, [identity, *beat])

    def _say_goodbye(self) -> None:
        goodbye = p.disconnect("broker stopping")
        for worker in list(self.registry.workers.values()):
            self._send(self.backend, [worker.heartbeat_to, *goodbye])
        for identity in list(self.registry.frontends):
            self._send(self.frontend, [identity, *goodbye])

    # -- status ----------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The whole cluster as plain data, for ``cluster status``."""
        now = time.monotonic()
        broker: BrokerStatus = {
            "id": self.broker_id,
            "version": zeroserve_version(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "uptime_s": round(now - self.started_at, 3),
            "frontend_endpoint": self.frontend_endpoint,
            "backend_endpoint": self.backend_endpoint,
            "requests_held": len(self.inflight),
        }
        return build_snapshot(
            self.registry,
            broker,
            self.counters,
            model_routing=self.config.model_routing,
            now=now,
        )


class Sent(enum.Enum):
    """What became of a message the broker sent."""

    OK = "ok"
    #: The peer's queue is full (its high-water mark): dropped.
    FULL = "full"
    #: No connection has the peer's identity (ROUTER_MANDATORY): dropped.
    GONE = "gone"


#: Commands only a worker sends, and only a frontend (or a status client) sends.
WORKER_ONLY = frozenset({p.READY, p.DRAIN, p.LAUNCHER, *p.ANSWERS})
FRONTEND_ONLY = frozenset({p.REQUEST, p.STATUS, p.CANCEL})


def _is_other_side(frames: list[Any], commands: frozenset[bytes], table: dict[bytes, int]) -> bool:
    """A well-formed message that only the other side's peers send (a malformed one is a bad
    message, counted as such)."""
    if len(frames) < 2 or frames[1] not in commands:
        return False
    try:
        p.parse(frames, table)
    except ProtocolError:
        return False
    return True


def _port_of(endpoint: str) -> str:
    """A tcp:// endpoint's port; any other endpoint whole."""
    if endpoint.startswith("tcp://"):
        return endpoint.rsplit(":", 1)[-1]
    return endpoint


def _security(config: BrokerConfig) -> str:
    if config.link.token is not None:
        return "; peers join with its token (CurveZMQ)"
    if config.link.curve_secret_key is not None:
        return "; peers join with an authorized key (CurveZMQ)"
    return "; open to any peer that reaches it (--insecure)" if config.insecure else ""


def _bind(sock: zmq.Socket, endpoint: str) -> str:
    if endpoint.startswith("tcp://") and endpoint.rsplit(":", 1)[-1] in ("0", "*"):
        endpoint = endpoint.rsplit(":", 1)[0] + ":*"
    sock.bind(endpoint)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)
