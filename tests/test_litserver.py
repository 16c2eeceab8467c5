"""A LitServe server.py with its import changed runs whole: zeroserve.LitServer."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from cluster import ROOT, Cluster, start_server_py, wait_until

APP = ROOT / "tests" / "litserve_app" / "server.py"


@pytest.fixture
def served(tmp_path: Path):
    """The app's server.py, run as `python server.py PORT` from a folder of its own."""
    shutil.copy(APP, tmp_path / "server.py")
    proc, base = start_server_py(tmp_path, ZS_TEST_EVENTS=str(tmp_path / "events"))

    def healthy() -> bool:
        with contextlib.suppress(requests.ConnectionError):
            return requests.get(f"{base}/healthz", timeout=1).status_code == 200
        return False

    try:
        wait_until(healthy, timeout_s=60, what="the server's /healthz")
        # Every worker of both services is up.
        wait_until(
            lambda: requests.get(f"{base}/healthz?verbose=1", timeout=1).json()["workers"] >= 3,
            what="three workers",
        )
        yield proc, base, tmp_path
    finally:
        family = []
        with contextlib.suppress(psutil.Error):
            family = psutil.Process(proc.pid).children(recursive=True)
        for member in family:
            with contextlib.suppress(psutil.Error):
                member.kill()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)
        if proc.returncode not in (0, -9):
            print((tmp_path / "server.log").read_text())


def test_a_litserve_server_py_runs_with_its_import_changed(served) -> None:
    proc, base, folder = served
    answers = [
        requests.post(f"{base}/multiply", json={"input": i}, timeout=10).json() for i in range(12)
    ]
    assert [a["output"] for a in answers] == [3 * i for i in range(12)]
    assert {a["device"] for a in answers} == {"cpu"}
    # workers_per_device={"/multiply": 2}: two processes serve it.
    wait_until(
        lambda: len({requests.post(f"{base}/multiply", json={"input": 1}, timeout=10).json()["pid"]
                     for _ in range(20)}) == 2,
        what="both processes to answer",
    )  # fmt: skip
    with requests.post(f"{base}/count", json={"n": 3}, stream=True, timeout=10) as r:
        assert [json.loads(line) for line in r.iter_lines() if line] == [
            {"i": 0},
            {"i": 1},
            {"i": 2},
        ]
    info = requests.get(f"{base}/about", timeout=10).json()
    assert info["model"] == {"name": "multiplier", "version": 2}
    assert requests.get(f"{base}/health", timeout=10).status_code == 404
    assert "requests.post(" in (folder / "client.py").read_text()
    # LitServe's callback events, with LitServe's arguments.
    notes = (folder / "events").read_text().splitlines()
    assert "on_server_start LitServer" in notes
    assert "on_request 1 LitServer" in notes
    assert "on_before_predict MultiplyAPI" in notes
    assert "on_response LitServer" in notes
    family = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    wait_until(
        lambda: not [p for p in family if p.is_running() and p.status() != "zombie"],
        what="every process to stop",
    )


def _run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("middlewares=[object()]", "middlewares must be a list of tuples"),
        ("enable_shutdown_api=True, shutdown_path='stop'", "shutdown_path must start with '/'"),
        ("accelerator='tpu'", "accelerator must be one of auto, cpu, cuda, gpu, mps"),
        ("workers_per_device=[1, 2]", "workers_per_device has 2 value(s) for 1 API(s)"),
        ("timeout=0", "timeout must be seconds"),
        ("no_such_thing=1", "unexpected keyword argument 'no_such_thing'"),
    ],
)
def test_arguments_without_an_equivalent_are_refused(
    tmp_path: Path, arguments: str, message: str
) -> None:
    code = f"import zeroserve as ls\nls.LitServer(ls.LitAPI(), {arguments})"
    out = _run_python(code, tmp_path)
    assert out.returncode != 0
    assert message in out.stderr


def test_a_health_path_without_its_slash_is_one_line(tmp_path: Path) -> None:
    code = (
        "import zeroserve as ls\n"
        "if __name__ == '__main__':\n"
        "    ls.LitServer(ls.test_examples.SimpleLitAPI(), healthcheck_path='health').run(port=1)\n"
    )
    out = _run_python(code, tmp_path)
    assert out.returncode == 2
    assert "LitServer(healthcheck_path='health'): a path must start with '/'" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_run_that_cannot_start_ends_in_one_line(tmp_path: Path) -> None:
    code = (
        "import zeroserve as ls\n"
        "class A(ls.LitAPI):\n"
        "    def predict(self, x):\n"
        "        yield x\n"
        "if __name__ == '__main__':\n"
        "    ls.LitServer(A()).run(port=1, pretty_logs=True)\n"
    )
    (tmp_path / "bad.py").write_text(code)
    out = subprocess.run(
        [sys.executable, "bad.py"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 2
    assert "LitServer.run(pretty_logs=...) has no equivalent here" in out.stderr
    assert "Traceback" not in out.stderr


def test_litserves_api_key_guards_every_route_health_included(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIT_SERVER_API_KEY", "lit-secret")
    cluster.up("EchoAPI")
    assert cluster.post({"value": 1}).status_code == 401
    assert cluster.post({"value": 1}, headers={"X-API-Key": "wrong"}).status_code == 401
    assert cluster.post({"value": 1}, headers={"X-API-Key": "lit-secret"}).json()["echo"] == 1
    assert requests.get(cluster.url("/info"), timeout=5).status_code == 401
    info = requests.get(cluster.url("/info"), headers={"X-API-Key": "lit-secret"}, timeout=5)
    assert info.status_code == 200
    assert cluster.health() == 200  # with the key
    assert requests.get(cluster.url("/health"), timeout=5).status_code == 401
    # LitServe's key is X-API-Key only: as a Bearer token it is refused.
    assert (
        cluster.post({"value": 1}, headers={"Authorization": "Bearer lit-secret"}).status_code
        == 401
    )


def test_an_upload_arrives_with_litserves_attributes(cluster: Cluster) -> None:
    cluster.up(f"{ROOT / 'tests' / 'apis_litserve.py'}:LitUpload")
    answer = requests.post(
        cluster.url(),
        files={"content": ("notes.txt", b"hello world", "text/plain")},
        data={"note": "hi"},
        timeout=10,
    )
    assert answer.json() == {
        "name": "notes.txt",
        "type": "text/plain",
        "size": 11,
        "head": "hello",
        "note": "hi",
    }


@pytest.mark.parametrize("name", ["HealthFileAPI", "AsyncHealthFileAPI"])
def test_a_worker_whose_health_fails_takes_no_work(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    flag = tmp_path / "unhealthy"
    monkeypatch.setenv("ZS_TEST_UNHEALTHY", str(flag))
    cluster.up(name)
    assert cluster.post({"value": 1}).json()["echo"] == 1
    flag.touch()
    wait_until(lambda: cluster.health() == 503, what="/health to say 503")
    [worker] = (cluster.status() or {})["workers"]
    assert worker["state"] == "unhealthy"
    assert cluster.post({"value": 2}).status_code == 503
    flag.unlink()
    wait_until(lambda: cluster.health() == 200, what="/health to say 200 again")
    assert cluster.post({"value": 3}).json()["echo"] == 3


def test_an_api_that_takes_context_reads_headers_and_query(cluster: Cluster) -> None:
    cluster.broker()
    cluster.worker("HeadersAPI")
    cluster.worker("OtherRouteAPI")
    cluster.frontend("--api-key", "k")
    cluster.wait_healthy(2)
    key = {"Authorization": "Bearer k"}
    url = cluster.url("/predict?lang=en&n=2")
    answer = requests.post(url, json={}, headers={"X-Client": "cli/1", **key}, timeout=10)
    # The frontend's own key is not shown to user code.
    assert answer.json() == {"client": "cli/1", "authorization": None, "query": "lang=en&n=2"}
    # Only APIs that take context pay for headers.
    services = requests.get(cluster.url("/info"), headers=key, timeout=10).json()["services"]
    assert services["HeadersAPI"]["headers"] is True
    assert services["OtherRouteAPI"]["headers"] is False
    big = requests.post(
        cluster.url("/predict"), json={}, headers={"X-Big": "a" * 40_000, **key}, timeout=10
    )
    assert big.status_code == 431


def test_a_pydantic_annotated_request_is_validated_and_described(cluster: Cluster) -> None:
    cluster.up(f"{ROOT / 'tests' / 'apis_pydantic.py'}:OrderAPI")
    good = {"item": {"name": "flour", "weight_kg": 1.5}, "quantity": 4}
    assert cluster.post(good, path="/order").json() == {"item": "flour", "total_kg": 6.0}
    bad = cluster.post({"item": {"name": "flour", "weight_kg": -1}, "quantity": 400}, "/order")
    assert bad.status_code == 422
    errors = bad.json()["detail"]
    assert sorted(tuple(e["loc"]) for e in errors) == [
        ("body", "item", "weight_kg"),
        ("body", "quantity"),
    ]
    document = requests.get(cluster.url("/openapi.json"), timeout=10).json()
    body = document["paths"]["/order"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/Order"}
    schemas = document["components"]["schemas"]
    assert schemas["Order"]["properties"]["item"] == {"$ref": "#/components/schemas/Item"}
    assert set(schemas["Item"]["properties"]) == {"name", "weight_kg"}


BATCHED_EMBEDDINGS = """
import zeroserve as ls


class Embed(ls.LitAPI):
    def setup(self, device):
        pass

    def predict(self, batch):
        return [[0.0, 1.0] for _ in batch]

    def encode_response(self, output):
        return {"embeddings": output}


#: A batch waits longer for its second request than the test waits for its answer.
API = Embed(max_batch_size=2, batch_timeout=30, spec=ls.OpenAIEmbeddingSpec())
"""


def test_several_inputs_to_a_batching_embeddings_api_are_refused_as_they_arrive(
    cluster: Cluster, tmp_path: Path
) -> None:
    """LitServe refuses them before the request is queued; here too, not once its batch has
    waited its batch_timeout."""
    (tmp_path / "embed.py").write_text(BATCHED_EMBEDDINGS)
    cluster.up(f"{tmp_path / 'embed.py'}:API")
    answer = requests.post(
        cluster.url("/v1/embeddings"),
        json={"input": ["one", "two"], "model": "m"},
        timeout=15,
    )
    assert answer.status_code == 400
    assert "does not support dynamic batching" in answer.json()["detail"]
