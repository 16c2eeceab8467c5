"""Interpreter and ZeroMQ settings of the long-running processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zeroserve.common.runtime import GC_YOUNG_THRESHOLD, IO_THREADS_ENV

from cluster import Cluster, wait_until, worker_pids

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux policies")


def io_thread_policies(pid: int) -> list[int]:
    """The scheduling policy of each ZeroMQ I/O thread of process `pid`."""
    policies = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().startswith("ZMQbg/IO"):
            policies.append(os.sched_getscheduler(int(task.name)))
    return policies


def test_tune_gc_freezes_start_up_and_collects_the_young_less_often() -> None:
    code = (
        "import gc; from zeroserve.common.runtime import tune_gc; "
        "before = gc.get_threshold(); tune_gc(); after = gc.get_threshold(); "
        "print(gc.get_freeze_count() > 0, after[0], after[1:] == before[1:])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", str(GC_YOUNG_THRESHOLD), "True"]


@linux_only
def test_every_process_runs_its_io_threads_under_sched_batch(cluster: Cluster) -> None:
    cluster.up("EchoAPI")
    assert cluster.post({"value": 1}).status_code == 200
    roles = {name: proc for name, proc, _ in cluster.procs}
    pids = {
        "broker": roles["broker"].pid,
        "frontend": roles["frontend"].pid,
        **{f"worker {pid}": pid for pid in worker_pids(roles["worker"])},
    }
    assert len(pids) == 3
    for role, pid in pids.items():
        policies = io_thread_policies(pid)
        assert policies, f"{role} has no ZeroMQ I/O thread"
        assert set(policies) == {os.SCHED_BATCH}, f"{role}: {policies}"


@linux_only
@pytest.mark.parametrize(
    ("setting", "policy"), [("batch", getattr(os, "SCHED_BATCH", 3)), ("normal", 0)]
)
def test_the_io_thread_policy_can_be_left_alone(setting: str, policy: int) -> None:
    code = (
        "import sys, zmq; from zeroserve.common.runtime import batch_io_threads; "
        "context = zmq.Context(); print(batch_io_threads(context)); "
        "sock = context.socket(zmq.DEALER); sys.stdin.readline()"
    )
    env = {**os.environ, IO_THREADS_ENV: setting}
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        set_it = proc.stdout.readline().strip()
        wait_until(lambda: io_thread_policies(proc.pid), what="the I/O thread")
        policies = io_thread_policies(proc.pid)
        proc.stdin.write("\n")
    assert (set_it, policies) == (str(setting == "batch"), [policy])
