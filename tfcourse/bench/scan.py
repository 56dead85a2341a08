"""The selective scan in a loop against the chunked scan (book: chapter 8).

    python -m tfcourse.bench scan [--lengths 256 1024 ...] [--device cuda] [--dtype bf16]

times forward plus backward of :func:`tfcourse.ssm.selective_scan_sequential` and
:func:`tfcourse.ssm.selective_scan_parallel` on the same inputs at each length T, with
(B, Cᵢ, N) = (2, 64, 16) by default, the scan of a Mamba layer of width 32, and prints both
times and their ratio. The two scans are timed alternately, call after call, so that a change in
the machine's load during the run reaches both. The timing is done here rather than with
:mod:`tfcourse.bench.measure`, whose malloc setting for memory figures would slow the chunked
scan's many medium-sized tensors.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from tfcourse import _validate
from tfcourse.runtime import default_device
from tfcourse.ssm import selective_scan_parallel, selective_scan_sequential

SCANS: dict[str, Callable[..., torch.Tensor]] = {
    "sequential": selective_scan_sequential, "parallel": selective_scan_parallel}
DEFAULT_LENGTHS = [128, 256, 512, 1024, 2048]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def scan_inputs(
    batch: int, T: int, d_inner: int, d_state: int, *, device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32, seed: int = 0,
) -> list[torch.Tensor]:
    """x, Δ (B, T, Cᵢ), A (Cᵢ, N), B, C (B, T, N) and D (Cᵢ,) as a Mamba layer at
    initialisation feeds its scan: Δ the softplus of noise plus a bias whose softplus is
    log-uniform in [0.001, 0.1], A = −(1 … N) in every channel, the rest standard normal."""
    gen = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.rand(d_inner, generator=gen) * math.log(100) + math.log(0.001))
    delta = F.softplus(torch.randn(batch, T, d_inner, generator=gen) + torch.log(torch.expm1(dt)))
    A = -torch.arange(1.0, d_state + 1).repeat(d_inner, 1)
    x = torch.randn(batch, T, d_inner, generator=gen)
    B, C = torch.randn(2, batch, T, d_state, generator=gen)
    D = torch.randn(d_inner, generator=gen)
    return [t.to(device, dtype) for t in (x, delta, A, B, C, D)]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _forward_backward(scan: Callable[..., torch.Tensor], inputs: list[torch.Tensor]) -> None:
    y = scan(*inputs)
    torch.autograd.grad(y.float().square().sum(), inputs)


def scan_speed(
    lengths: Sequence[int],
    *,
    d_inner: int = 64,
    d_state: int = 16,
    batch: int = 2,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    repeats: int = 3,
) -> list[dict]:
    """Rows ``{"length", "method", "seconds"}``, ``method`` one of :data:`SCANS`: the median time
    of ``repeats`` forward-and-backward passes (the gradients of the sum of squares of y with
    respect to all six inputs), after one untimed pass of each method, the methods alternating.
    Lengths are measured shortest first."""
    if not lengths:
        raise ValueError("lengths: expected at least one length, got none")
    lengths = sorted({_validate.integer(T, "lengths", 1) for T in lengths})
    _validate.integer(repeats, "repeats", 1)
    device = torch.device(device) if device is not None else default_device()
    rows = []
    for T in lengths:
        inputs = [t.requires_grad_() for t in scan_inputs(batch, T, d_inner, d_state,
                                                          device=device, dtype=dtype)]
        for scan in SCANS.values():
            _forward_backward(scan, inputs)  # warm-up
        times: dict[str, list[float]] = {method: [] for method in SCANS}
        for _ in range(repeats):
            for method, scan in SCANS.items():
                _synchronize(device)
                start = time.perf_counter()
                _forward_backward(scan, inputs)
                _synchronize(device)
                times[method].append(time.perf_counter() - start)
        rows += [{"length": T, "method": method, "seconds": statistics.median(times[method])}
                 for method in SCANS]
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tfcourse.bench scan")
    parser.add_argument("--lengths", type=int, nargs="+", default=DEFAULT_LENGTHS)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32",
                        help="of the inputs; both scans compute in float32")
    parser.add_argument("--d-inner", type=int, default=64)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else default_device()
    rows = scan_speed(args.lengths, d_inner=args.d_inner, d_state=args.d_state,
                      batch=args.batch, device=device, dtype=DTYPES[args.dtype],
                      repeats=args.repeats)

    where = f"{torch.get_num_threads()} CPU threads" if device.type == "cpu" else str(device)
    print(f"selective scan, forward and backward: B={args.batch}, Cᵢ={args.d_inner}, "
          f"N={args.d_state}, {args.dtype} inputs, on {where}; median of {args.repeats} calls, "
          f"the two scans alternating")
    print(f"{'T':>6} {'sequential ms':>14} {'parallel ms':>12} {'ratio':>7}")
    seconds = {(r["method"], r["length"]): r["seconds"] for r in rows}
    measured = sorted({r["length"] for r in rows})
    for T in measured:
        sequential, parallel = seconds["sequential", T], seconds["parallel", T]
        print(f"{T:>6} {sequential * 1e3:>14.2f} {parallel * 1e3:>12.2f} "
              f"{sequential / parallel:>6.1f}x")
    T = 1024 if 1024 in measured else measured[-1]
    ratio = seconds["sequential", T] / seconds["parallel", T]
    print(f"\nat T = {T}: the parallel scan is {ratio:.1f}x faster than the sequential one")
