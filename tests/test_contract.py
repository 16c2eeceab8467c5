"""The LitServe contract through real processes: start-up checks, callbacks, loggers, LitServe."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cluster import ROOT, Cluster, api, run_cli, wait_until


@pytest.mark.parametrize(
    ("api_name", "flags", "message"),
    [
        ("GeneratorWithoutStream", (), "predict is a generator, which needs stream=True"),
        ("StreamWithoutGenerator", (), "stream is True, so predict must yield"),
        ("EchoAPI", ("--stream",), "stream is True, so predict must yield"),
        ("ZeroBatch", (), "max_batch_size must be an integer of at least 1"),
        ("NoPredict", (), "does not implement predict"),
        ("AsyncFlagWithoutAsync", (), "enable_async is True, so predict must be async"),
        ("ChatWithPlainEncode", ("--spec", "openai"), "encode_response must be a generator"),
        ("StepWithoutLoop", (), "implements step: set loop = ContinuousBatchingLoop()"),
        ("StepsWithoutStream", (), "uses ContinuousBatchingLoop, which needs stream=True"),
        ("StepsWithoutCapacity", (), "implements step but not has_capacity"),
        ("LoopWithoutStep", (), "and has_finished(uid, token, max_sequence_length)"),
        ("OddSpecAPI", (), "was built with OddSpec, which is not served"),
    ],
)
def test_a_misconfigured_api_is_refused_at_start(
    api_name: str, flags: tuple[str, ...], message: str
) -> None:
    out = run_cli("worker", "--broker", "tcp://127.0.0.1:9", "--api", api(api_name), *flags)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_max_batch_size_flag_below_one_is_refused() -> None:
    out = run_cli("up", "--api", api("EchoAPI"), "--max-batch-size", "0")
    assert out.returncode == 2
    assert "--max-batch-size" in out.stderr


def _events(path: Path) -> list[tuple[str, float]]:
    rows = [line.rsplit(" ", 1) for line in path.read_text().splitlines()]
    return [(name, float(t)) for name, t in rows]


def test_callbacks_and_loggers_fire_in_order_after_their_work(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = tmp_path / "events"
    monkeypatch.setenv("ZS_TEST_EVENTS", str(events))
    cluster.up("LoggingAPI")
    assert cluster.post({"value": 7}).json()["echo"] == 7
    wait_until(lambda: "on_response" in events.read_text(), what="the answer's event")
    names = [name for name, _ in _events(events)]
    assert names[:3] == ["on_before_setup", "on_after_setup", "on_server_start"]
    assert names[3:] == [
        "on_request",
        "on_before_decode_request",
        "on_after_decode_request",
        "on_before_predict",
        "predict",
        "on_after_predict",
        "on_before_encode_response",
        "on_after_encode_response",
        "log seen=7",
        "on_response",
    ]
    times = dict(_events(events))
    assert times["on_after_predict"] >= times["predict"]


def test_a_callback_that_raises_hurts_no_request(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZS_TEST_EVENTS", str(tmp_path / "events"))
    monkeypatch.setenv("ZS_TEST_CALLBACK_RAISES", "1")
    cluster.up("EchoAPI", worker_args=("--callback", f"{api('RecordingCallback')}"))
    assert cluster.post({"value": 1}).json()["echo"] == 1
    assert cluster.post({"value": 2}).json()["echo"] == 2
    assert "callback RecordingCallback.on_after_decode_request raised" in cluster.logs()


LITSERVE_APIS = ROOT / "tests" / "apis_litserve.py"


def test_litserve_classes_run_unchanged(cluster: Cluster) -> None:
    pytest.importorskip("litserve")
    cluster.broker()
    cluster.frontend()
    for name in ("LitEcho", "LitBatched"):
        cluster.worker(f"{LITSERVE_APIS}:{name}", 1, "--service", name)
    cluster.wait_healthy(2)
    echo = cluster.post({"input": 21})
    assert echo.json()["output"] == 42 and echo.json()["device"] == "cpu"
    missing = cluster.post({"nothing": 1})
    assert (missing.status_code, missing.json()) == (
        422,
        {"detail": "input is missing"},
    )
    with ThreadPoolExecutor(8) as pool:
        doubled = list(pool.map(lambda i: cluster.post({"input": i}, "/double").json(), range(16)))
    assert [d["output"] for d in doubled] == [i * 2 for i in range(16)]
    assert max(d["batch"] for d in doubled) > 1


def test_a_litserve_streaming_class_with_context(cluster: Cluster) -> None:
    pytest.importorskip("litserve")
    cluster.up(f"{LITSERVE_APIS}:LitStreaming")
    with cluster.post({"n": 3}, stream=True) as r:
        pieces = [json.loads(line) for line in r.iter_lines() if line]
    assert pieces == [{"i": i, "context_kept": True} for i in range(3)]
