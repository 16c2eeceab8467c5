"""Test hosts on one machine: Linux network namespaces joined by veth pairs and a bridge.

Each host has its own network stack and address (10.213.77.N/24, only inside
these namespaces) and runs its processes in its own UTS namespace, so that
they see their own hostname. The bridge lives in a namespace of its own, so
the machine's own network is never touched. Everything is removed on close.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

CLIENT = Path(__file__).resolve().parent / "netns_client.py"
SUBNET = "10.213.77"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def unavailable_reason() -> str | None:
    """Why this machine cannot build the topology, or None when it can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"zsprobe{os.getpid() % 100000}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"`ip netns add` failed here: {exc}"
    _ip("netns", "del", probe)
    return None


class Topology:
    def __init__(self, logs: Path) -> None:
        self.prefix = f"zs{os.getpid() % 10000}"
        self.logs = logs
        self.hosts: dict[str, int] = {}
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        #: The status askers started on hosts, by host (Topology.status).
        self._askers: dict[str, subprocess.Popen] = {}
        self.switch = f"{self.prefix}-sw"
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def address(self, host: str) -> str:
        return f"{SUBNET}.{self.hosts[host]}"

    def _port(self, host: str) -> str:
        return f"{self.prefix}p{self.hosts[host]}"

    def add_host(self, host: str) -> str:
        number = len(self.hosts) + 1
        self.hosts[host] = number
        ns, inner, outer = self.ns(host), f"{self.prefix}i{number}", self._port(host)
        _ip("netns", "add", ns)
        _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", outer, "netns", self.switch)
        _ip("-n", ns, "link", "set", inner, "name", "eth0")
        _ip("-n", ns, "addr", "add", f"{SUBNET}.{number}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "set", outer, "master", "br0")
        _ip("-n", self.switch, "link", "set", outer, "up")
        return self.address(host)

    def set_link(self, host: str, up: bool) -> None:
        """Plug or unplug a host's cable at the switch."""
        _ip("-n", self.switch, "link", "set", self._port(host), "up" if up else "down")

    def shape(self, host: str) -> str:
        """Slow a host's link: 100 ms of delay with netem where the kernel has it, else a
        narrow token bucket, which delays every message by its queueing instead."""
        ns = self.ns(host)
        netem = ["tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "100ms"]
        tbf = ["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "96kbit"]
        tbf += ["burst", "1600", "latency", "2s"]
        for kind, argv in (("netem delay 100ms", netem), ("tbf rate 96kbit", tbf)):
            done = subprocess.run(
                ["ip", "netns", "exec", ns, *argv], capture_output=True, check=False
            )
            if done.returncode == 0:
                return kind
        raise RuntimeError("neither netem nor tbf could shape the link")

    def start(self, host: str, name: str, *argv: str) -> subprocess.Popen:
        """Run a command on `host`, under the hostname `host`, in a process group of its own."""
        log = self.logs / f"{host}-{name}-{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    *("ip", "netns", "exec", self.ns(host), "unshare", "--uts"),
                    *("sh", "-c", 'hostname "$0" && exec "$@"', host, *argv),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((f"{host}/{name}", proc, log))
        return proc

    def cluster(self, host: str, name: str, *args: str) -> subprocess.Popen:
        return self.start(host, name, sys.executable, "-m", "zeroserve", *args)

    def client(self, host: str, *args: str, timeout_s: float = 120) -> Any:
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns(host), sys.executable, str(CLIENT), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            return None
        return json.loads(done.stdout)

    def status(self, host: str, endpoint: str, token_file: Path) -> dict[str, Any] | None:
        """A broker's status, asked from `host` by one process kept there for the test's polls
        (a process started for each would cost its start each time)."""
        asker = self._askers.get(host)
        if asker is None or asker.poll() is not None:
            asker = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(host), sys.executable, str(CLIENT), "statuses"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            self._askers[host] = asker
        assert asker.stdin is not None and asker.stdout is not None
        asker.stdin.write(f"{endpoint} {token_file}\n")
        asker.stdin.flush()
        answer = asker.stdout.readline()
        return json.loads(answer) if answer else None

    def run_cli(self, host: str, *args: str, timeout_s: float = 60) -> str:
        """Run a `cluster` command on `host` to its end; return what it printed."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns(host), sys.executable, "-m", "zeroserve", *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        )
        return done.stdout

    def client_background(self, host: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            ["ip", "netns", "exec", self.ns(host), sys.executable, str(CLIENT), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def logs_text(self) -> str:
        return "\n".join(
            f"----- {name} -----\n{path.read_text(errors='replace')[-4000:]}"
            for name, _, path in self.procs
        )

    def close(self) -> None:
        for asker in self._askers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(asker.pid, signal.SIGKILL)
            asker.wait(10)
        for _, proc, _ in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for _, proc, _ in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        for host in list(self.hosts):
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", self.ns(host))
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", self.switch)
