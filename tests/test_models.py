"""Many models per service: the worker's LRU of loaded models, and the broker's model-aware
routing; units without sockets first, then real processes."""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from apis_models import ModelsAPI
from test_inflight import offer, reply, table

from zeroserve.broker.inflight import MAX_PASSED
from zeroserve.broker.queue import ServiceQueue
from zeroserve.broker.registry import ServiceRecord, WorkerRecord
from zeroserve.common.errors import ConfigError
from zeroserve.worker.config import WorkerConfig
from zeroserve.worker.loader import resolve_settings
from zeroserve.worker.models import DEFAULT_MAX_MODELS, ModelCache, UnknownModel

from cluster import Cluster, run_cli, wait_until

MODELS = str(Path(__file__).resolve().parent / "apis_models.py")


# -- the worker's cache, on its own -------------------------------------------------------


class Library:
    """load_model and unload_model of a fake API, recording their calls."""

    def __init__(self, known: set[str], delay_s: float = 0.0) -> None:
        self.known = known
        self.delay_s = delay_s
        self.calls: list[tuple[str, str]] = []

    async def load(self, model_id: str) -> Any:
        self.calls.append(("load", model_id))
        await asyncio.sleep(self.delay_s)  # a model's load time
        if model_id not in self.known:
            raise KeyError(model_id)
        return {"id": model_id}

    def unload(self, model_id: str, model: Any) -> None:
        assert model == {"id": model_id}
        self.calls.append(("unload", model_id))


async def invoke(func: Callable[..., Any], *args: Any) -> Any:
    result = func(*args)
    return await result if asyncio.iscoroutine(result) else result


async def use(cache: ModelCache, model_id: str) -> Any:
    model = await cache.acquire(model_id, invoke)
    await cache.release(model_id, invoke)
    return model


def test_cache_evicts_the_least_recently_used_and_unloads_it() -> None:
    lib = Library({"a", "b", "c"})
    cache = ModelCache(lib.load, lib.unload, 2, concurrent=True)

    async def scenario() -> None:
        for name in ("a", "b", "a", "c"):  # "a" was used after "b": "b" goes
            assert await use(cache, name) == {"id": name}

    asyncio.run(scenario())
    assert lib.calls == [("load", "a"), ("load", "b"), ("load", "c"), ("unload", "b")]
    assert cache.held == ("a", "c")
    assert (cache.hits, cache.misses, cache.loads, cache.evictions) == (1, 3, 3, 1)


def test_cache_loads_once_for_many_waiting_and_refuses_unknown_models() -> None:
    lib = Library({"a"}, delay_s=0.05)
    cache = ModelCache(lib.load, None, 2, concurrent=True)

    async def scenario() -> list[Any]:
        return await asyncio.gather(
            *(use(cache, "a") for _ in range(10)),
            *(use(cache, "nope") for _ in range(3)),
            return_exceptions=True,
        )

    results = asyncio.run(scenario())
    assert results[:10] == [{"id": "a"}] * 10
    assert all(isinstance(r, UnknownModel) and "'nope'" in str(r) for r in results[10:])
    assert lib.calls == [("load", "a"), ("load", "nope")]
    assert cache.held == ("a",)
    assert (cache.hits, cache.misses, cache.loads) == (0, 10, 1)  # "nope" counts for nothing


def test_a_model_whose_load_fails_is_no_longer_shown_as_held() -> None:
    """What a worker reports (``held``, loaded then loading) drops a load that failed, even
    when nothing else is loaded after it."""
    lib = Library({"a"})
    cache = ModelCache(lib.load, None, 2, concurrent=True)

    async def scenario() -> None:
        await use(cache, "a")
        with pytest.raises(UnknownModel):
            await use(cache, "nope")

    asyncio.run(scenario())
    assert cache.held == ("a",)


def test_cache_never_evicts_a_model_in_use() -> None:
    lib = Library({"a", "b"})
    cache = ModelCache(lib.load, lib.unload, 1, concurrent=True)

    async def scenario() -> None:
        await cache.acquire("a", invoke)
        await use(cache, "b")  # "a" is in use: "b", idle again, goes instead
        assert cache.held == ("a",)
        await cache.release("a", invoke)

    asyncio.run(scenario())
    assert lib.calls == [("load", "a"), ("load", "b"), ("unload", "b")]


def settings_of(api: Any) -> Any:
    return resolve_settings(api, WorkerConfig(brokers=("x",), api="x"))


def test_the_settings_of_an_api_of_many_models_are_checked() -> None:
    class Zoo:
        def load_model(self, model_id: str) -> Any:
            return model_id

        def predict(self, x: Any, context: Any) -> Any:
            return x

    assert settings_of(Zoo()).max_models == DEFAULT_MAX_MODELS
    Zoo.max_models_per_worker = 5  # type: ignore[attr-defined]
    assert settings_of(Zoo()).max_models == 5
    for bad in (0, "2", True):
        Zoo.max_models_per_worker = bad  # type: ignore[attr-defined]
        with pytest.raises(ConfigError, match="max_models_per_worker must be an integer"):
            settings_of(Zoo())

    class One:
        max_models_per_worker = 2

        def predict(self, x: Any) -> Any:
            return x

    with pytest.raises(ConfigError, match="no load_model"):
        settings_of(One())
    assert settings_of(ModelsAPI()).max_models == 2


# -- the broker's pick, on its own -------------------------------------------------------------


def service_of(count: int, capacity: int = 2) -> tuple[ServiceRecord, list[WorkerRecord]]:
    service = ServiceRecord("svc", [{"path": "/predict"}], ServiceQueue(100))
    workers = []
    for i in range(count):
        worker = WorkerRecord(
            bytes([i + 1]), "svc", [], capacity, i, "h", {}, 1.0, 0.0, max_models=2
        )  # its API serves many models
        service.add(worker)
        workers.append(worker)
    return service, workers


def test_pick_prefers_a_holder_with_free_slots_then_the_least_loaded() -> None:
    service, (a, b, c) = service_of(3)
    service.set_models(b, frozenset({"m"}))
    assert service.pick("m") is b
    assert service.pick(None) is a  # no model: the plain round robin
    service.assign(b, (b"f", b"1"), "m")
    assert service.pick("m") is b  # one slot left
    service.assign(b, (b"f", b"2"), "m")
    assert service.pick("m") in (a, c)  # b is full: the least loaded instead
    service.release(b, (b"f", b"1"))
    assert service.pick("m") is b


def test_a_cold_burst_spreads_once_its_first_worker_is_full() -> None:
    service, workers = service_of(3, capacity=2)
    chosen = []
    for i in range(6):
        worker = service.pick("cold")
        assert worker is not None
        service.assign(worker, (b"f", bytes([i])), "cold")
        chosen.append(worker)
    # Two on the first (it loads; its second request waits for that load), then the next.
    assert [chosen.count(w) for w in workers] == [2, 2, 2]
    assert chosen[0] is chosen[1] and chosen[2] is chosen[3]
    assert service.holders("cold") == set(workers)


def test_a_worker_of_one_model_never_counts_as_holding_the_models_requests_name() -> None:
    service, (a,) = service_of(1)
    a.max_models = 0  # its API has no load_model: X-Model-Id means nothing to it
    service.assign(a, (b"f", b"1"), "m")
    assert not a.models and service.holders("m") == set()


def test_heartbeats_replace_what_a_worker_holds_and_a_leaver_holds_nothing() -> None:
    service, (a, b) = service_of(2)
    service.assign(a, (b"f", b"1"), "m")
    assert service.holders("m") == {a}
    service.set_models(a, frozenset({"n"}))  # its heartbeat: "m" was evicted (or refused)
    assert service.holders("m") == set() and service.holders("n") == {a}
    service.remove(a)
    assert service.holders("n") == set()
    assert service.pick("n") is b


def accept_for(inflight: Any, rid: bytes, model: str) -> None:
    offer(inflight, rid, {"service": "svc", "timeout_ms": 1000, "model": model})


def model_table(**kwargs: Any) -> tuple[Any, Any, list[WorkerRecord]]:
    """test_inflight's table, of workers whose API serves many models."""
    inflight, wire, workers = table(**kwargs)
    service = inflight.registry.services["svc"]
    for worker in workers:
        service.remove(worker)
        worker.max_models = 2
        service.add(worker)
    return inflight, wire, workers


def finish(inflight: Any, worker: WorkerRecord, rid: bytes) -> None:
    """The worker answers `rid`: the broker dispatches again, as it does on every answer."""
    assert reply(inflight, worker, rid)
    inflight.dispatch(inflight.registry.services["svc"])


def test_a_free_worker_takes_a_queued_request_of_a_model_it_holds_first() -> None:
    inflight, wire, (a, b) = model_table(capacity=1, workers=2)
    accept_for(inflight, b"1", "m")  # to a: it holds "m" now
    accept_for(inflight, b"2", "n")  # to b: it holds "n" now
    accept_for(inflight, b"3", "m")  # both busy: queued
    accept_for(inflight, b"4", "n")
    finish(inflight, b, b"2")  # b is free: "4" (its model) goes before the older "3"
    assert wire.requests[-1] == (b.identity, b"4", 1)
    finish(inflight, a, b"1")
    assert wire.requests[-1] == (a.identity, b"3", 1)


def test_the_oldest_request_is_passed_over_a_bounded_number_of_times() -> None:
    inflight, wire, (_, b) = model_table(capacity=1, workers=2, max_queue=100)
    accept_for(inflight, b"a", "m")  # a holds "m", b holds "n"
    accept_for(inflight, b"b", "n")
    accept_for(inflight, b"old", "m")
    for i in range(MAX_PASSED + 1):
        accept_for(inflight, bytes([i]), "n")
    served = [b"b"]
    for _ in range(MAX_PASSED + 1):  # b keeps finishing and taking "n" requests
        finish(inflight, b, served[-1])
        served.append(wire.requests[-1][1])
    assert served[-1] == b"old"  # then the oldest, though b loads "m" for it


def test_model_blind_routing_ignores_the_model() -> None:
    inflight, wire, (a, b) = model_table(capacity=2, workers=2, model_routing=False)
    for rid in (b"1", b"2", b"3"):
        accept_for(inflight, rid, "m")
    assert {w for w, _, _ in wire.requests} == {a.identity, b.identity}
    assert not a.models and not b.models


# -- real processes ------------------------------------------------------------------------


def ask(c: Cluster, model: str | None, x: float = 1, **kwargs: Any) -> requests.Response:
    headers = {"X-Model-Id": model} if model is not None else {}
    return c.post({"x": x}, headers=headers, **kwargs)


def events(log: Path) -> list[tuple[int, str, str]]:
    if not log.exists():
        return []
    return [
        (int(pid), event, model)
        for pid, event, model in map(str.split, log.read_text().split("\n")[:-1])
    ]


@pytest.fixture
def model_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "models.log"
    monkeypatch.setenv("MODELS_LOG", str(log))
    return log


def test_each_request_is_answered_by_its_model_and_unknown_ones_are_404(
    cluster: Cluster, model_log: Path
) -> None:
    cluster.up(f"{MODELS}:ModelsAPI")
    assert ask(cluster, "double", 21).json()["y"] == 42
    assert ask(cluster, "triple", 2).json()["y"] == 6
    refused = ask(cluster, "nope")
    assert refused.status_code == 404
    assert "'nope'" in refused.json()["detail"]
    missing = ask(cluster, None)
    assert missing.status_code == 400 and "X-Model-Id" in missing.json()["detail"]
    too_long = ask(cluster, "m" * 300)
    assert too_long.status_code == 400 and "X-Model-Id" in too_long.json()["detail"]
    assert ask(cluster, "double", 5).json()["y"] == 10  # still serving, "double" still held
    assert [(e, m) for _, e, m in events(model_log)] == [("load", "double"), ("load", "triple")]


def test_the_least_recently_used_model_is_evicted_and_unloaded(
    cluster: Cluster, model_log: Path
) -> None:
    cluster.up(f"{MODELS}:ModelsAPI")
    for model in ("double", "triple", "double", "tenfold", "triple"):
        assert ask(cluster, model).status_code == 200
    assert [(e, m) for _, e, m in events(model_log)] == [
        ("load", "double"),
        ("load", "triple"),
        ("load", "tenfold"),
        ("unload", "triple"),  # "double" was used after it
        ("load", "triple"),
        ("unload", "double"),
    ]


def test_a_burst_for_a_cold_model_loads_it_once(
    cluster: Cluster, model_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELS_LOAD_S", "0.5")
    cluster.up(f"{MODELS}:AsyncModelsAPI")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: ask(cluster, "half", i), range(32)))
    assert [a.json()["y"] for a in answers] == [i * 0.5 for i in range(32)]
    assert [(e, m) for _, e, m in events(model_log)] == [("load", "half")]


def test_a_batch_never_mixes_models(cluster: Cluster) -> None:
    cluster.up(f"{MODELS}:BatchModelsAPI")
    names = ["double", "triple"]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: ask(cluster, names[i % 2], i).json(), range(48)))
    for i, answer in enumerate(answers):
        assert answer["batch_models"] == [names[i % 2]]
        assert answer["y"] == i * (2 if i % 2 == 0 else 3)


def test_requests_go_to_the_worker_holding_their_model(cluster: Cluster, model_log: Path) -> None:
    cluster.up(f"{MODELS}:ModelsAPI", processes=2)
    pids = {
        model: {ask(cluster, model).json()["pid"] for _ in range(6)}
        for model in ("double", "triple", "double", "triple")
    }
    assert len(pids["double"]) == 1 and len(pids["triple"]) == 1
    assert pids["double"] != pids["triple"]  # the second model went to the idle worker
    assert sorted(m for _, e, m in events(model_log) if e == "load") == ["double", "triple"]
    # status: each worker with the model it holds, and its hit rate
    wait_until(
        lambda: (
            sorted(m for w in cluster.ready_workers() for m in w["models"]) == ["double", "triple"]
        ),
        what="status to show the models held",
    )
    wait_until(
        lambda: all(w["reported"].get("model_hits") == 11 for w in cluster.ready_workers()),
        what="the heartbeats to report the hits",
    )
    shown = run_cli("status", "--broker", cluster.frontend_endpoint).stdout
    assert "HIT RATE" in shown and "92%" in shown and "double" in shown
    metrics = requests.get(cluster.url("/metrics"), timeout=10).text
    assert "zeroserve_worker_model_loads_total{host=" in metrics
    assert "zeroserve_worker_model_hit_ratio{" in metrics


def test_model_blind_routing_spreads_a_model_over_the_workers(
    cluster: Cluster, model_log: Path
) -> None:
    cluster.up(f"{MODELS}:ModelsAPI", processes=2, broker_args=("--no-model-routing",))
    pids = {ask(cluster, "double").json()["pid"] for _ in range(6)}
    assert len(pids) == 2  # the round robin: both workers load it
    assert sorted(
        collections.Counter(m for _, e, m in events(model_log) if e == "load").values()
    ) == [2]


def test_a_cold_burst_is_shared_by_the_workers_each_loading_once(
    cluster: Cluster, model_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELS_LOAD_S", "0.3")
    cluster.up(f"{MODELS}:ModelsAPI", processes=2)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda i: ask(cluster, "tenfold", i).json(), range(12)))
    assert [a["y"] for a in answers] == [i * 10 for i in range(12)]
    assert len({a["pid"] for a in answers}) == 2  # not all behind the first worker's load
    loads = [pid for pid, e, _ in events(model_log) if e == "load"]
    assert len(loads) == len(set(loads)) == 2


def test_the_openai_routes_take_the_model_from_the_body_or_the_header(cluster: Cluster) -> None:
    cluster.up(f"{MODELS}:ChatModelsAPI", worker_args=("--spec", "openai"))
    url = cluster.url("/v1/chat/completions")

    def chat(model: str, **kwargs: Any) -> requests.Response:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        return requests.post(url, json=body, timeout=30, **kwargs)

    answer = chat("triple")
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "TRIPLE heard hi"
    header = chat("ignored", headers={"X-Model-Id": "half"})
    assert header.json()["choices"][0]["message"]["content"] == "HALF heard hi"
    refused = chat("nope")
    assert refused.status_code == 404
    assert "nope" in refused.text


def test_the_readme_example_answers_as_shown(cluster: Cluster, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    source = re.search(r"```python\n(# zoo_api\.py\n.*?)```", readme, flags=re.DOTALL)
    assert source is not None, "the README's Many models example is gone"
    path = tmp_path / "zoo_api.py"
    path.write_text(source.group(1))
    cluster.up(f"{path}:ZooAPI")
    answer = cluster.post({"input": 14}, headers={"X-Model-Id": "triple"})
    assert answer.json() == {"output": 42, "model": "triple"}
    assert '# {"output":42,"model":"triple"}' in readme
    refused = cluster.post({"input": 1}, headers={"X-Model-Id": "nope"})
    assert refused.status_code == 404 and refused.json() == {"detail": "model 'nope' not found"}
