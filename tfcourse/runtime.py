"""Where and how code runs: device, dtype, seeds and CPU threads.

Nothing in :mod:`tfcourse` hard-codes a device or a dtype; these helpers pick sensible defaults
(CUDA when present, else the CPU) so that the same lesson runs on Colab's GPU and on Binder's CPU.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def default_device() -> torch.device:
    """CUDA when a GPU is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def has_native_bf16(device: torch.device | str | None = None) -> bool:
    """Whether ``device`` is a GPU with bfloat16 arithmetic units: NVIDIA's from Ampere on
    (compute capability 8: A100, L4, H100), and AMD's. ``torch.cuda.is_bf16_supported()`` also
    says yes to older GPUs such as Colab's T4, where bfloat16 is emulated, slowly."""
    device = torch.device(device) if device is not None else default_device()
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8


def autocast_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """The low-precision dtype worth using on ``device``: bfloat16 on a GPU with bfloat16 units,
    float16 on older GPUs, and float32 on the CPU (where half precision is slower, not faster)."""
    device = torch.device(device) if device is not None else default_device()
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if has_native_bf16(device) else torch.float16


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (every CUDA device included) so a run can be repeated."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds CUDA too


def pin_threads(num_threads: int | None = None) -> int:
    """Fix the number of CPU threads torch uses and return it.

    On a 2-core machine with another busy process, torch's default threading can slow work 10-20x,
    so lessons, tests and benchmarks pin it. ``num_threads`` defaults to the ``TFCOURSE_THREADS``
    environment variable, else to the number of cores this process may run on.
    """
    if num_threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        num_threads = int(os.environ.get("TFCOURSE_THREADS", 0)) or cores or 1
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads: expected a positive int, got {num_threads!r}")
    torch.set_num_threads(num_threads)
    return num_threads
