"""``litserve.connector`` under zeroserve's name: how many CUDA GPUs this host lists."""

from __future__ import annotations

from functools import lru_cache

from zeroserve.worker.devices import find_gpus

__all__ = ["check_cuda_with_nvidia_smi"]


@lru_cache(maxsize=1)
def check_cuda_with_nvidia_smi() -> int:
    """The GPUs ``nvidia-smi -L`` lists (and ``CUDA_VISIBLE_DEVICES`` allows); 0 without one."""
    return len(find_gpus())
