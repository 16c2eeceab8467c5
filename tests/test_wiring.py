"""Wrong wiring is named at once: a peer on the other side's port, a wrong or missing join
token, a broker host that does not resolve. Each says what is wrong in one line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cluster import HEARTBEAT, Cluster, api, wait_until

WORKER_ON_FRONTEND_PORT = (
    "{front} is the broker's frontend port; workers connect to its worker port ({back})"
)
FRONTEND_ON_WORKER_PORT = (
    "{back} is the broker's worker port; frontends and `cluster status` connect to its "
    "frontend port ({front})"
)


def ports(cluster: Cluster) -> dict[str, str]:
    return {
        "front": cluster.frontend_endpoint.rsplit(":", 1)[1],
        "back": cluster.backend_endpoint.rsplit(":", 1)[1],
    }


def log_of(cluster: Cluster, name: str) -> str:
    return next(path.read_text() for n, _, path in cluster.procs if n == name)


def test_a_worker_given_the_frontend_port_stops_with_one_line_naming_the_worker_port(
    cluster: Cluster,
) -> None:
    cluster.broker()
    launcher = cluster.start(
        "worker", "worker", "--broker", cluster.frontend_endpoint, "--api", api("EchoAPI"),
        "--processes", "1", *HEARTBEAT,
    )  # fmt: skip
    assert launcher.wait(60) == 77
    text = log_of(cluster, "worker")
    assert text.count(WORKER_ON_FRONTEND_PORT.format(**ports(cluster))) == 1, text
    assert "unexpected command" not in text


def test_a_frontend_given_the_worker_port_stops_with_one_line_naming_the_frontend_port(
    cluster: Cluster,
) -> None:
    cluster.broker()
    frontend = cluster.start(
        "frontend", "frontend", "--broker", cluster.backend_endpoint, "--port", "0", *HEARTBEAT
    )
    assert frontend.wait(30) == 77
    text = log_of(cluster, "frontend")
    assert text.count(FRONTEND_ON_WORKER_PORT.format(**ports(cluster))) == 1, text
    assert "unexpected command" not in text


@pytest.mark.parametrize("token", ["wrong", None])
def test_a_refused_handshake_is_said_once_and_tried_again_with_back_off(
    cluster: Cluster, tmp_path: Path, token: str | None
) -> None:
    cluster.broker(token_file=tmp_path / "token")
    given = ("--token", "a-token-that-is-not-the-broker-s") if token else ()
    cluster.start(
        "frontend", "frontend", "--broker", cluster.frontend_endpoint, "--port", "0",
        *given, *HEARTBEAT,
    )  # fmt: skip
    said = (
        "has a join token (or CurveZMQ key) the broker does not admit"
        if token
        else ("has no join token, and the broker wants one")
    )
    wait_until(lambda: said in log_of(cluster, "frontend"), what="the refusal said")
    began = time.monotonic()
    time.sleep(4)  # the window the attempts are counted over
    refused = (cluster.status() or {}).get("counters", {}).get("refused_handshakes", 0)
    window_s = time.monotonic() - began + 1
    # ZeroMQ alone tries about 10 times a second; with back-off from a heartbeat (0.2 s here),
    # doubling, it is a handful in these seconds.
    assert refused <= 10, f"{refused} handshakes in {window_s:.1f} s"
    text = log_of(cluster, "frontend")
    assert text.count("refused the handshake") == 1, text
    assert "--token-file" in text


def test_a_broker_host_that_does_not_resolve_is_said_once(cluster: Cluster) -> None:
    cluster.start(
        "worker", "worker", "--broker", "tcp://no-such-host.invalid:5556", "--api",
        api("EchoAPI"), "--processes", "1", *HEARTBEAT,
    )  # fmt: skip
    said = "cannot resolve the broker's host 'no-such-host.invalid'"
    wait_until(lambda: said in log_of(cluster, "worker"), 60, "the name said")
    time.sleep(3)  # three more checks: each heartbeat, at least a second apart
    assert log_of(cluster, "worker").count(said) == 1
