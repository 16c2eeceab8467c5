"""The `cluster` command line: help, refusals, and an unreachable broker."""

from __future__ import annotations

import dataclasses
import socket
from typing import Any

import click
import pytest
import requests

from zeroserve import cli
from zeroserve.broker.config import BrokerConfig
from zeroserve.common.link import LinkConfig
from zeroserve.frontend.config import FrontendConfig
from zeroserve.up import UpConfig
from zeroserve.worker.config import WorkerConfig

from cluster import Cluster, free_port, run_cli

run = run_cli
ECHO = "tests/apis.py:EchoAPI"


@pytest.mark.parametrize(
    "command", ["broker", "worker", "frontend", "up", "status", "route", "drain"]
)
def test_every_command_has_help(command: str) -> None:
    out = run(command, "--help")
    assert out.returncode == 0
    assert "--log-level" in out.stdout


def test_the_contract_flags_exist() -> None:
    expected = {
        "broker": ["--frontend-bind", "--backend-bind", "--max-queue", "--max-attempts"],
        "worker": ["--broker", "--api", "--processes", "--service"],
        "frontend": [
            "--broker",
            "--host",
            "--port",
            "--processes",
            "--max-body",
            "--request-timeout",
        ],
        "up": ["--api", "--host", "--port", "--workers"],
        "status": ["--broker", "--json", "--timeout"],
    }
    for command, flags in expected.items():
        text = run(command, "--help").stdout
        for flag in flags:
            assert flag in text, f"cluster {command} lacks {flag}"


def test_bad_arguments_are_refused() -> None:
    out = run("broker", "--max-queue", "zero")
    assert out.returncode == 2
    assert "Invalid value for '--max-queue'" in out.stderr
    out = run("worker", "--api", "x:y")
    assert out.returncode == 2
    assert "Missing option '--broker'" in out.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("route", "svc", "--weights", "1=90,2"), "write VERSION=WEIGHT"),
        (("route", "svc", "--weights", "1=0"), "at least one version needs a weight"),
        (("route", "svc", "--weights", "a b=1"), "bad version label"),
        (("route", "svc"), "give --weights V=W,... or --newest"),
        (("route", "svc", "--weights", "1=1", "--newest"), "give --weights V=W,... or --newest"),
        (("drain", "svc", "--version", "a b"), "1 to 64 letters"),
        (("drain", "svc"), "Missing option '--version'"),
        (("broker", "--weights", "1=90"), "write SERVICE:VERSION=WEIGHT"),
        (
            ("worker", "--broker", "tcp://127.0.0.1:1", "--api", ECHO, "--version", "a/b"),
            "--version",
        ),
    ],
)
def test_bad_versions_and_weights_are_one_line(args: tuple[str, ...], says: str) -> None:
    out = run(*args)
    assert out.returncode == 2, out.stderr
    assert says in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "args", [("route", "svc", "--weights", "1=1"), ("drain", "svc", "--version", "1")]
)
def test_route_and_drain_name_a_broker_that_does_not_answer_and_exit_1(
    args: tuple[str, ...],
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = run(*args, "--broker", endpoint, "--timeout", "0.3")
    assert out.returncode == 1
    assert out.stderr.startswith(f"{endpoint}: error: no answer from the broker")


def test_status_of_an_unreachable_broker_is_one_line_and_exit_1() -> None:
    out = run("status", "--broker", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.5")
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert "no answer from the broker" in out.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("worker", "--api", "x:y"),
        ("frontend",),
        ("status",),
    ],
)
def test_a_broker_address_without_a_scheme_is_one_line(args: tuple[str, ...]) -> None:
    out = run(*args, "--broker", "127.0.0.1:5556")
    assert out.returncode == 2
    assert "is not a ZeroMQ address: write tcp://HOST:PORT" in out.stderr
    assert "Traceback" not in out.stderr


def test_bench_counts_answers_completed_in_its_window() -> None:
    from zeroserve.bench import BenchConfig, BenchResult, _Answer, _Run

    result = BenchResult()
    window = _Run(BenchConfig("http://127.0.0.1:1/", warmup_s=0, duration_s=10), result)
    answer = _Answer()
    answer.status = 200
    window.record(answer, window.start_at - 5, window.start_at + 1)  # began before, ended in
    window.record(answer, window.start_at + 1, window.stop_at + 1)  # ended after: not counted
    assert result.statuses[200] == 1


def test_bench_fails_when_nothing_succeeds() -> None:
    port = free_port()
    out = run("bench", f"http://127.0.0.1:{port}/predict", "--duration", "0.5", timeout_s=30)
    assert out.returncode == 1
    assert "no request to" in out.stderr


def test_bench_with_nothing_measured_prints_no_nan() -> None:
    port = free_port()
    out = run("bench", f"http://127.0.0.1:{port}/predict", "--duration", "0.5", timeout_s=30)
    assert "p50 -, p90 -, p99 -" in out.stdout
    assert "nan" not in out.stdout


def test_bench_refuses_https_it_would_not_measure() -> None:
    out = run("bench", "https://127.0.0.1:1/predict", "--duration", "0.5", timeout_s=30)
    assert out.returncode == 2
    assert "speaks plain HTTP" in out.stderr


def test_bench_expecting_streams_fails_on_whole_answers(cluster: Cluster) -> None:
    cluster.up("EchoAPI")
    out = run("bench", cluster.url(), "--stream", "--duration", "0.5", timeout_s=30)
    assert out.returncode == 1, out.stdout
    assert "not streamed" in out.stdout


def test_keygen_never_overwrites_a_key(tmp_path) -> None:
    assert run("keygen", str(tmp_path), "--name", "broker").returncode == 0
    secret = (tmp_path / "broker.key_secret").read_bytes()
    again = run("keygen", str(tmp_path), "--name", "broker")
    assert again.returncode != 0
    assert "exists; keygen never overwrites a key" in again.stderr
    assert (tmp_path / "broker.key_secret").read_bytes() == secret


def test_a_frontend_without_its_broker_says_so_on_every_route(cluster: Cluster) -> None:
    cluster.frontend_endpoint = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    cluster.frontend()
    health = requests.get(cluster.url("/health?verbose=1"), timeout=5)
    served = cluster.post({"input": 1})
    assert (health.status_code, served.status_code) == (503, 503)
    assert health.json()["error"] == served.json()["detail"] == "the broker is not reachable"


@pytest.mark.parametrize("command", ["frontend", "up"])
def test_a_port_in_use_is_one_line_naming_it(command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run(command, "--port", str(port), timeout_s=30)
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_silent_peer_lives_the_longest_interval_in_play_times_liveness() -> None:
    link = LinkConfig(heartbeat_interval_s=0.5, heartbeat_liveness=4)
    assert link.silence_limit_s() == 2.0
    assert link.silence_limit_s(2.0) == 8.0  # the peer's interval is longer
    assert link.silence_limit_s(0.1, 0.0) == 2.0  # ours is


def test_the_exit_codes_that_mean_more_than_failure_are_named_once() -> None:
    from zeroserve.common.exits import MEANINGS, Exit, final

    assert (Exit.HUNG, Exit.DRAINED, Exit.REFUSED, Exit.SETUP_FAILED) == (75, 76, 77, 78)
    assert final(Exit.REFUSED) == {77: "was refused by the broker"}
    assert set(MEANINGS) == set(Exit)
    assert "(exit 78)" in " ".join(run_cli("worker", "--help").stdout.split())


def test_every_process_takes_one_link_config_checked_the_same_way() -> None:
    """Heartbeats, logging and CurveZMQ are one LinkConfig inside each process's config, and
    each flag's default is that config's field."""
    import dataclasses

    from zeroserve.broker.config import BrokerConfig
    from zeroserve.cli import default_of, take_link
    from zeroserve.common.errors import ConfigError
    from zeroserve.common.link import LinkConfig
    from zeroserve.frontend.config import FrontendConfig
    from zeroserve.up import UpConfig
    from zeroserve.worker.config import WorkerConfig

    for config in (BrokerConfig, FrontendConfig, WorkerConfig, UpConfig):
        names = {f.name for f in dataclasses.fields(config)}
        assert "link" in names and not names & {"heartbeat_interval_s", "log_level"}, config
    for bad in ({"heartbeat_interval_s": 0}, {"heartbeat_liveness": 0}, {"log_level": "LOUD"}):
        with pytest.raises(ConfigError):
            LinkConfig(**bad)
    with pytest.raises(ConfigError, match="go together"):
        BrokerConfig(link=LinkConfig(curve_secret_key="k"))
    with pytest.raises(ConfigError, match="broker's"):
        WorkerConfig(brokers=("x",), api="x", link=LinkConfig(authorized_keys="d"))
    options = {"heartbeat_interval_s": 0.5, "log_level": "DEBUG", "port": 1}
    assert take_link(options) == LinkConfig(heartbeat_interval_s=0.5, log_level="DEBUG")
    assert options == {"port": 1}
    assert default_of(LinkConfig, "heartbeat_interval_s") == 1.0
    for command in ("broker", "worker", "frontend", "up"):
        assert "--heartbeat-liveness" in run(command, "--help").stdout, command


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def test_every_flag_default_is_its_config_field() -> None:
    """A flag named like a field of its command's config has that field's default: each
    default is written once (flags with a default of their own are read with `default_of`)."""
    configs = {
        "broker": [BrokerConfig, LinkConfig],
        "worker": [WorkerConfig, LinkConfig],
        "frontend": [FrontendConfig, LinkConfig],
        "up": [UpConfig, WorkerConfig, FrontendConfig, LinkConfig],
    }
    compared, differ = 0, []
    for command, classes in configs.items():
        cmd = cli.main.commands[command]
        ctx = click.Context(cmd)
        for param in cmd.params:
            field = next(
                (f for c in classes for f in dataclasses.fields(c) if f.name == param.name), None
            )
            wanted = _field_default(field) if field is not None else dataclasses.MISSING
            if wanted is dataclasses.MISSING:
                continue
            given = param.get_default(ctx)
            if getattr(param, "multiple", False) and not isinstance(given, (list, tuple)):
                given = []  # click's "unset" for a repeatable flag: none given
            compared += 1
            if _as_list(given) != _as_list(wanted):
                differ.append(f"{command} --{param.name}: {given!r} != {wanted!r}")
    assert compared >= 60
    assert not differ, differ
