"""Which device each worker process of a host gets: LitServe's accelerator, devices and
workers per device.

GPUs are found as LitServe finds them (``nvidia-smi -L``, within
``CUDA_VISIBLE_DEVICES`` when it is set) and worker k gets device k mod n.
Unlike LitServe, a process sees only its own GPU: its
``CUDA_VISIBLE_DEVICES`` names that one before the user's module is
imported, so ``setup`` receives ``cuda:0`` and nothing in the process can
touch another's memory, while the cluster reports the physical device
(``cuda:3``).
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence

from zeroserve.common.errors import ConfigError

ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")


def find_gpus() -> list[str]:
    """The indices of the GPUs this host may use, as ``nvidia-smi -L`` lists them."""
    try:
        listed = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    ids = [
        line.split(":", 1)[0].split()[1] for line in listed.splitlines() if line.startswith("GPU ")
    ]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        allowed = [v.strip() for v in visible.split(",") if v.strip()]
        ids = [i for i in ids if i in allowed]
    return ids


def _has_mps() -> bool:
    if platform.system() != "Darwin" or platform.machine() not in ("arm64", "arm"):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.backends.mps.is_available())


def choose_accelerator(accelerator: str, gpus: Sequence[str]) -> str:
    """``auto``: cuda where GPUs are listed, mps on Apple silicon with torch, else cpu."""
    if accelerator not in ACCELERATORS:
        raise ConfigError(
            f"accelerator must be one of {', '.join(ACCELERATORS)}, not {accelerator!r}"
        )
    if accelerator in ("auto", "gpu"):
        if gpus:
            return "cuda"
        if _has_mps():
            return "mps"
        if accelerator == "gpu":
            raise ConfigError("accelerator 'gpu': no GPU found (nvidia-smi lists none)")
        return "cpu"
    if accelerator == "cuda" and not gpus:
        raise ConfigError(
            "accelerator 'cuda': nvidia-smi lists no GPU"
            + (" within CUDA_VISIBLE_DEVICES" if "CUDA_VISIBLE_DEVICES" in os.environ else "")
        )
    return accelerator


def plan_devices(
    accelerator: str,
    devices: int | Sequence[int] | None,
    workers_per_device: int,
    processes: int | None,
    default_processes: int,
) -> list[str]:
    """One device name per worker process: ``cpu``, ``mps`` or the physical ``cuda:N``.

    `devices` is a count or a list of GPU indices (None: every one found); `processes`, when
    given, overrides devices x workers_per_device.
    """
    gpus = find_gpus() if accelerator in ("auto", "gpu", "cuda") else []
    kind = choose_accelerator(accelerator, gpus)
    if kind != "cuda":
        if isinstance(devices, Sequence):
            raise ConfigError(f"a list of devices needs GPUs; the accelerator is {kind}")
        count = processes or (
            (devices or 1) * workers_per_device
            if devices is not None or workers_per_device > 1
            else default_processes
        )
        return [kind] * count
    if devices is None:
        chosen = gpus
    elif isinstance(devices, int):
        if devices > len(gpus):
            raise ConfigError(f"devices={devices}, but only {len(gpus)} GPU(s) are listed")
        chosen = gpus[:devices]
    else:
        missing = [str(d) for d in devices if str(d) not in gpus]
        if missing:
            raise ConfigError(f"no GPU {', '.join(missing)} here (listed: {', '.join(gpus)})")
        chosen = [str(d) for d in devices]
    count = processes or len(chosen) * workers_per_device
    return [f"cuda:{chosen[k % len(chosen)]}" for k in range(count)]


def isolate(device: str) -> str:
    """Before the user's module is imported: let this process see only its own GPU, and
    return the name its code uses for it."""
    if not device.startswith("cuda:"):
        return device
    os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
    return "cuda:0"
