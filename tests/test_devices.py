"""Worker processes on devices, as LitServe assigns them, each process seeing only its GPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cluster import Cluster, api, run_cli, wait_until

#: What `nvidia-smi -L` prints on a host with three GPUs.
FAKE_SMI = """#!/bin/sh
echo "GPU 0: Stand-in GPU (UUID: GPU-00000000-0000-0000-0000-000000000000)"
echo "GPU 1: Stand-in GPU (UUID: GPU-11111111-1111-1111-1111-111111111111)"
echo "GPU 2: Stand-in GPU (UUID: GPU-22222222-2222-2222-2222-222222222222)"
"""


@pytest.fixture
def three_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    smi = folder / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def answers_by_pid(cluster: Cluster, count: int) -> dict[int, dict]:
    seen: dict[int, dict] = {}

    def all_answered() -> bool:
        for _ in range(4 * count):
            answer = cluster.post({}).json()
            seen[answer["pid"]] = answer
        return len(seen) == count

    wait_until(all_answered, what=f"all {count} processes to answer")
    return seen


def launch(cluster: Cluster, *flags: str) -> None:
    cluster.broker()
    cluster.start("worker", "worker", "--broker", cluster.backend_endpoint, "--api",
                  api("DeviceAPI"), "--heartbeat-interval", "0.2", *flags)  # fmt: skip
    cluster.frontend()


def test_worker_k_runs_on_gpu_k_mod_n_and_sees_only_it(cluster: Cluster, three_gpus: None) -> None:
    launch(cluster, "--accelerator", "cuda", "--workers-per-device", "2")
    cluster.wait_healthy(6)
    workers = {w["pid"]: w["device"] for w in cluster.ready_workers()}
    assert sorted(workers.values()) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1", "cuda:2", "cuda:2"]
    for pid, answer in answers_by_pid(cluster, 6).items():
        assert answer["setup_device"] == "cuda:0"
        assert f"cuda:{answer['visible']}" == workers[pid]
    out = run_cli("status", "--broker", cluster.frontend_endpoint)
    assert "cuda:2" in out.stdout and "DEVICE" in out.stdout


def test_gpus_are_chosen_within_cuda_visible_devices(
    cluster: Cluster, three_gpus: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,1")
    launch(cluster)  # accelerator auto: GPUs are listed, so cuda
    cluster.wait_healthy(2)
    assert sorted(w["device"] for w in cluster.ready_workers()) == ["cuda:1", "cuda:2"]
    visible = {a["visible"] for a in answers_by_pid(cluster, 2).values()}
    assert visible == {"1", "2"}


def test_listed_devices_and_the_cpu(cluster: Cluster, three_gpus: None) -> None:
    launch(cluster, "--devices", "0,2")
    cluster.wait_healthy(2)
    assert sorted(w["device"] for w in cluster.ready_workers()) == ["cuda:0", "cuda:2"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--accelerator", "cuda"), "accelerator 'cuda': nvidia-smi lists no GPU"),
        (("--accelerator", "cpu", "--devices", "0,1"), "a list of devices needs GPUs"),
        (("--device", "cpu", "--accelerator", "cpu"), "--device names one device"),
    ],
)
def test_impossible_device_settings_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: tuple[str, ...], message: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    out = run_cli("worker", "--broker", "tcp://127.0.0.1:9", "--api", api("DeviceAPI"), *flags)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_a_real_gpu_model_runs_on_its_gpu(cluster: Cluster) -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed here")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    cluster.up("TorchGPUAPI", worker_args=("--accelerator", "cuda"))
    assert cluster.post({"x": 2.0}).json() == {"sum": 8.0, "device": "cuda:0"}
