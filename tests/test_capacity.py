"""A sync worker's capacity: two batches and at least 4, doubled once its requests are measured
fast (they still start within milliseconds), never for slow ones, never past --capacity."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from zeroserve.worker.config import WorkerConfig
from zeroserve.worker.loader import FAST_REQUEST_S, capacity_now, resolve_settings

from apis import EchoAPI
from cluster import Cluster, wait_until


def settings_of(api: object, **config: object):
    return resolve_settings(api, WorkerConfig(api="x:y", brokers=["tcp://127.0.0.1:1"], **config))


def test_the_rule() -> None:
    plain = settings_of(EchoAPI())
    assert plain.capacity == 4
    assert capacity_now(plain, False, None) == 4
    assert capacity_now(plain, False, FAST_REQUEST_S / 10) == 8
    assert capacity_now(plain, False, 0.1) == 4
    assert capacity_now(plain, True, FAST_REQUEST_S / 10) == 4


def worker_capacity(cluster: Cluster) -> int:
    workers = (cluster.status() or {}).get("workers", [])
    return workers[0]["capacity"] if workers else 0


def under_load(cluster: Cluster, payload: dict, capacity: int, what: str) -> None:
    """Four clients send `payload` until the worker's capacity in status is `capacity`."""
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            assert cluster.post(payload).status_code == 200

    with ThreadPoolExecutor(4) as pool:
        clients = [pool.submit(client) for _ in range(4)]
        try:
            wait_until(lambda: worker_capacity(cluster) == capacity, 30, what)
        finally:
            stop.set()
        for c in clients:
            c.result()


def test_a_fast_sync_worker_holds_twice_its_capacity_and_a_slow_one_does_not(
    cluster: Cluster,
) -> None:
    cluster.up()
    assert worker_capacity(cluster) == 4
    under_load(cluster, {"value": 1}, 8, "the capacity to double")
    slow = {"op": "sleep", "seconds": 0.05, "value": 2}
    under_load(cluster, slow, 4, "the capacity back to 4")
