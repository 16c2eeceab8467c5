"""The `cluster` command line: help, refusals, and an unreachable broker."""

from __future__ import annotations

import pytest

from cluster import free_port, run_cli

run = run_cli


@pytest.mark.parametrize("command", ["broker", "worker", "frontend", "up", "status"])
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


def test_status_of_an_unreachable_broker_is_one_line_and_exit_1() -> None:
    out = run("status", "--broker", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.5")
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert "no answer from the broker" in out.stderr
