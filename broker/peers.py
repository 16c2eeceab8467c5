"""The broker's peers: who a message on the ROUTERs comes from, what it may say, and when it
counts as gone.

There is no socket and no clock here. Three kinds of peer share the broker's ports: frontends
(on the frontend port), workers (a data socket and a control socket each, on the worker port)
and worker launchers (on the worker port too, told apart by their own command, LAUNCHER).
What has to be said goes to a ``PeerWire`` (the broker's sockets, or a stand-in in tests);
the time is always passed in.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol

from zeroserve.broker.inflight import Inflight
from zeroserve.broker.registry import (
    MAX_CAPACITY,
    FrontendRecord,
    Registry,
    WorkerRecord,
    parse_models,
    parse_ready,
)
from zeroserve.common import protocol as p
from zeroserve.common.link import LinkConfig
from zeroserve.common.logs import LogThrottle

log = logging.getLogger(__name__)


class PeerWire(Protocol):
    """What the peer rules need said, and to whom."""

    def to_worker_port(self, frames: list[Any]) -> None:
        """Send `frames` (the peer's identity first) on the worker port."""

    def wrong_port(self, port: str, peer: bytes, role: str) -> None:
        """Refuse a `role` peer that came to `port` ("frontend" or "worker")."""

    def send_routes(self, frontend: bytes) -> None:
        """Give a frontend the route table."""


class Peers:
    """The peer rules; the broker turns their decisions into sends through a ``PeerWire``."""

    def __init__(
        self,
        registry: Registry,
        inflight: Inflight,
        wire: PeerWire,
        counters: Counter[str],
        *,
        link: LinkConfig,
        broker_id: str,
    ) -> None:
        self.registry = registry
        self.inflight = inflight
        self.wire = wire
        self.counters = counters
        self.link = link
        self.broker_id = broker_id
        #: The route table changed since frontends last heard it.
        self.routes_dirty = False
        self._impostor_log = LogThrottle()

    def heartbeat_meta(self) -> dict[str, Any]:
        return {"broker_id": self.broker_id, "heartbeat_interval_s": self.link.heartbeat_interval_s}

    def expiry_of(self, meta: Mapping[str, Any] | None) -> float:
        """How long a peer may be silent, from the heartbeat interval it announced (when sane)
        and ours."""
        announced = (meta or {}).get("heartbeat_interval_s")
        sane = isinstance(announced, (int, float)) and 0 < announced <= 3600
        return self.link.silence_limit_s(float(announced) if sane else 0.0)  # type: ignore[arg-type]

    # -- the worker port ---------------------------------------------------

    def on_worker_message(self, sender: bytes, command: bytes, args: list[Any], now: float) -> None:
        """A parsed message from the worker port. A worker's data socket sends READY, answers,
        DRAIN and its goodbye; its control socket sends heartbeats (and a last goodbye) that
        name the worker; a launcher sends LAUNCHER (and its goodbye)."""
        if command == p.READY:
            self.on_ready(sender, p.unpack_meta(args[0]), now)
            return
        if command == p.LAUNCHER:
            self.touch_launcher(sender, p.parse_launcher(args[0]), now)
            return
        if command in p.ANSWERS or command == p.DRAIN:
            worker = self.registry.workers.get(sender)
            if worker is None:
                # A late message of a worker this broker forgot; its heartbeats bring it back.
                self.counters["dropped_answers"] += 1
                return
            worker.last_seen = now
            if command == p.DRAIN:
                self.on_drain(worker)
                return
            key = (p.identity(args[0]), p.identity(args[1]))
            if self.inflight.answer(worker, command, key, args[2:]):
                self.inflight.dispatch(self.registry.services[worker.service])
            return
        if command == p.HEARTBEAT:
            meta = p.unpack_meta(args[0])
            if "worker" not in meta:  # a frontend's: only a worker's names its worker
                self.wire.wrong_port("worker", sender, "frontend")
                return
            named = meta.pop("worker", None)
        else:
            meta = dict(p.parse_disconnect(args[0]))
            named = meta.get("worker")
            if self.registry.launchers.pop(sender, None) is not None:
                return
        identity = named if isinstance(named, bytes) and named else sender
        worker = self.registry.workers.get(identity)
        if worker is None:
            if command == p.HEARTBEAT:
                self.wire.to_worker_port([sender, *p.announce()])
            return
        if not self.speaks_for(worker, sender, command):
            return
        worker.last_seen = now
        if command == p.HEARTBEAT:
            self._on_worker_heartbeat(worker, meta)
        else:
            self.remove_worker(worker.identity, "said goodbye")

    def _on_worker_heartbeat(self, worker: WorkerRecord, meta: dict[str, Any]) -> None:
        worker.reported = meta
        self.set_health(worker, meta.get("healthy", True) is not False)
        capacity = meta.get("capacity")
        if isinstance(capacity, int) and not isinstance(capacity, bool):
            service = self.registry.service_of(worker)
            service.set_capacity(worker, min(max(capacity, 1), MAX_CAPACITY))
            if len(service.queue):
                self.inflight.dispatch(service)
        if "loaded_models" in meta:
            service = self.registry.service_of(worker)
            service.set_models(worker, parse_models(meta["loaded_models"]))

    def speaks_for(self, worker: WorkerRecord, sender: bytes, command: bytes) -> bool:
        """Only a worker's own sockets speak for it: its data socket, and the control socket
        its first heartbeat came from. Another that names it is refused and counted."""
        if sender in (worker.identity, worker.control):
            return True
        if worker.control is None and command == p.HEARTBEAT:
            worker.control = sender
            # Let the new control socket hear from the broker at once.
            self.wire.to_worker_port([sender, *p.heartbeat(self.heartbeat_meta())])
            return True
        self.counters["impostor_messages"] += 1
        if self._impostor_log.ready():
            log.warning(
                "refused a %s that names worker %s pid %s from a socket not its own (%d so far)",
                p.command_name(command),
                worker.host,
                worker.pid,
                self.counters["impostor_messages"],
            )
        return False

    def touch_launcher(self, sender: bytes, meta: p.LauncherMeta, now: float) -> None:
        """A launcher's LAUNCHER: it is (re)known, and hears its service's load back."""
        before = self.registry.launchers.get(sender)
        had_problem = before is not None and bool(before.problem)
        record, new = self.registry.touch_launcher(sender, meta, now, self.expiry_of(meta))
        if new:
            log.info(
                "worker launcher joined: %s pid %s runs %d process(es) of %s",
                record.host,
                record.pid,
                record.processes,
                record.api,
            )
        service = self.registry.services.get(record.service)
        load: p.LauncherMeta = {
            "broker_id": self.broker_id,
            "heartbeat_interval_s": self.link.heartbeat_interval_s,
            "queued": len(service.queue) if service is not None else 0,
            "in_flight": service.in_flight() if service is not None else 0,
        }
        self.wire.to_worker_port([sender, *p.launcher(load)])  # for its autoscaling
        if bool(record.problem) != had_problem:
            log.log(
                logging.WARNING if record.problem else logging.INFO,
                "worker launcher %s pid %s: %s",
                record.host,
                record.pid,
                record.problem or "its processes run again",
            )

    def set_health(self, worker: WorkerRecord, healthy: bool) -> None:
        """A worker whose health() fails takes no new work until it passes again."""
        if healthy == worker.healthy:
            return
        self.registry.service_of(worker).set_serving(worker, healthy=healthy)
        self.routes_dirty = True
        log.warning(
            "worker %s pid %s of %r is %s",
            worker.host,
            worker.pid,
            worker.service,
            "healthy again" if healthy else "unhealthy (its health() failed); no new work",
        )
        service = self.registry.services.get(worker.service)
        if healthy and service is not None:
            self.inflight.dispatch(service)

    def on_ready(self, identity: bytes, meta: dict[str, Any], now: float) -> None:
        ready = parse_ready(meta)
        name, session = p.session_of(identity)
        current = self.registry.sessions.get(name)
        if current is not None and p.session_of(current)[1] > session:
            # A late READY of a session its worker replaced: that socket is closed.
            self.counters["stale_ready"] += 1
            return
        if current is not None:
            # Its earlier session (or this one, again): what that held went nowhere.
            self.remove_worker(current, "announced itself again")
        conflict = self.registry.route_conflict(ready["service"], ready["routes"])
        if conflict:
            log.error("refused worker %s pid %s: %s", ready["host"], ready["pid"], conflict)
            self.wire.to_worker_port([identity, *p.refused(409, conflict)])
            return
        info = {k: v for k, v in meta.items() if k not in ("routes",) and _is_plain(v)}
        worker = self.registry.add_worker(identity, ready, info, now)
        worker.expiry_s = self.link.silence_limit_s(worker.heartbeat_interval_s)
        log.info(
            "worker joined: %s pid %s serves %r version %s on %s with %d slot(s)",
            worker.host,
            worker.pid,
            worker.service,
            worker.model_version,
            ", ".join(r["path"] for r in worker.routes),
            worker.capacity,
        )
        self.routes_dirty = True
        self.inflight.dispatch(self.registry.services[worker.service])

    def on_drain(self, worker: WorkerRecord) -> None:
        if not worker.draining:
            self.registry.service_of(worker).set_serving(worker, draining=True)
            self.routes_dirty = True
            log.info("worker %s pid %s is draining", worker.host, worker.pid)
        # Everything sent before this acknowledgement is on the wire already.
        self.wire.to_worker_port([worker.identity, *p.drain()])

    def retire(self, name: str, version: str) -> int:
        """Every worker of `version` of service `name` takes no new work from now on, and is
        told to finish what it holds and exit; how many were told."""
        service = self.registry.services.get(name)
        chosen = [
            w for w in (service.workers.values() if service else ()) if w.model_version == version
        ]
        if not chosen:
            return 0
        for worker in chosen:
            if not worker.draining:
                self.registry.service_of(worker).set_serving(worker, draining=True)
            self.wire.to_worker_port(p.retire_worker(worker.heartbeat_to))
        self.routes_dirty = True
        assert service is not None
        self.inflight.dispatch(service)  # its waiting requests go to another version
        log.info("version %s of %r drains: %d worker(s) told", version, name, len(chosen))
        return len(chosen)

    def remove_worker(self, identity: bytes, why: str) -> None:
        """Forget a worker; work it held and had not begun to answer goes to the queue's front."""
        worker = self.registry.remove_worker(identity)
        if worker is None:
            return
        self.routes_dirty = True
        held = len(worker.assigned)
        resent, failed = self.inflight.requeue(worker)
        level = logging.INFO if why == "said goodbye" and not held else logging.WARNING
        log.log(
            level,
            "worker %s pid %s removed (%s): %d request(s) re-queued, %d failed",
            worker.host,
            worker.pid,
            why,
            resent,
            failed,
        )
        self.inflight.dispatch(self.registry.services[worker.service])

    def unreachable_worker(self, identity: bytes, now: float) -> None:
        """A request could not be given to this worker: no connection has its name (it died,
        most often, and its launcher is starting another). It is removed at once, what it held
        re-queued. Was it its service's last, the service's requests wait in its queue for a
        replacement for as long as the lost worker's heartbeats would have kept it, rather than
        being refused at once; then what still waits is answered 503 (``Inflight``)."""
        worker = self.registry.workers.get(identity)
        if worker is None:
            return
        self.counters["unreachable_workers"] += 1
        service = self.registry.service_of(worker)
        self.remove_worker(identity, "a request could not reach it")
        if not service.has_ready_worker():
            service.awaiting_until = max(service.awaiting_until, now + worker.expiry_s)

    # -- the frontend port -------------------------------------------------

    def on_frontend_heartbeat(self, frontend: bytes, meta: dict[str, Any], now: float) -> None:
        if "worker" in meta:  # a worker's control socket: only a worker's names its worker
            self.wire.wrong_port("frontend", frontend, "worker")
            return
        self.touch_frontend(frontend, meta, now)

    def touch_frontend(self, identity: bytes, meta: dict[str, Any] | None, now: float) -> None:
        record = self.registry.frontends.get(identity)
        if record is None:
            record = FrontendRecord(
                identity=identity, host="", pid=0, expires_at=now, last_seen=now
            )
            self.registry.frontends[identity] = record
            _name_frontend(record, meta)
            log.info("frontend joined: %s pid %s", record.host or "?", record.pid or "?")
            self.wire.send_routes(identity)
        elif not record.pid:
            # It joined by a request (after a restart of this broker): its heartbeat names it.
            _name_frontend(record, meta)
        record.last_seen = now
        record.expires_at = now + self.expiry_of(meta)

    def drop_frontend(self, identity: bytes, why: str = "left") -> None:
        """A frontend said goodbye, or an answer could not reach it (its connection is gone, so
        it re-sends what it still waits for): its requests are cancelled."""
        record = self.registry.frontends.pop(identity, None)
        dropped = self.inflight.drop_frontend(identity)
        if record is not None or dropped:
            host, pid = (record.host, record.pid) if record is not None else ("?", "?")
            log.info("frontend %s: %s pid %s (%d request(s) dropped)", why, host, pid, dropped)

    def forget_frontend(self, identity: bytes) -> None:
        """A frontend silent past its limit gets no more routes or heartbeats, but its requests
        stay: one starved of CPU for a moment still waits for them, and a silence it did not
        choose must not lose them. An answer that cannot reach it drops them
        (`drop_frontend`); their deadlines bound the rest."""
        record = self.registry.frontends.pop(identity)
        log.info(
            "frontend silent: %s pid %s (%d request(s) kept until answered or past their deadline)",
            record.host,
            record.pid,
            self.inflight.held_for(identity),
        )

    # -- the clock -----------------------------------------------------------

    def expire(self, now: float) -> None:
        """Forget every peer silent past its limit."""
        for worker in self.registry.expired_workers(now):
            self.counters["dead_workers"] += 1
            self.remove_worker(worker.identity, "missed its heartbeats")
        for frontend in self.registry.expired_frontends(now):
            self.forget_frontend(frontend.identity)
        self.registry.expire_launchers(now)


def _name_frontend(record: FrontendRecord, meta: dict[str, Any] | None) -> None:
    host, pid = (meta or {}).get("host", ""), (meta or {}).get("pid", 0)
    if isinstance(host, str) and host:
        record.host = host[:255]
    if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
        record.pid = pid


def _is_plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None
