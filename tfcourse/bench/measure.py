"""Timing and peak-memory measurement on the CPU and on CUDA."""

from __future__ import annotations

import ctypes
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    fn: Callable[[], object], device: torch.device, *, repeats: int = 5, warmup: int = 1
) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after ``warmup`` untimed runs.

    The median, not the mean, because a shared machine adds occasional long outliers.
    """
    if repeats < 1:
        raise ValueError(f"repeats: expected at least 1, got {repeats}")
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


_STATUS = Path("/proc/self/status")
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def _return_freed_memory() -> None:
    """Make glibc serve blocks of 64 KiB and more by mmap, so that freed tensors go back to the
    system instead of being reused unseen by later calls (this affects the whole process)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
    except (OSError, AttributeError):
        pass  # not glibc: figures may then read low


def _resident_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", _STATUS.read_text()).group(1))


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float | None:
    """Memory that ``fn()`` needs at its peak beyond what was in use before, in MiB (measured on
    a second call, after a warm-up call).

    On CUDA this is the allocator's exact peak. On a Linux CPU it is the rise of the process's
    resident-memory high-water mark (reset through ``/proc/self/clear_refs`` before the call),
    with glibc set to return freed blocks to the system so that reused memory is counted.
    Elsewhere it returns ``None``.
    """
    fn()  # warm up: first calls also allocate one-off buffers (thread pools, kernel caches)
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
        before = _resident_kib("VmRSS")
    except OSError:
        return None
    fn()
    return max(_resident_kib("VmHWM") - before, 0) / 1024


_return_freed_memory()  # at import, so that no freed block is reused unseen
