"""The cost of Hyena against attention as the sequence grows (book: chapter 7).

    python -m tfcourse.bench hyena [--lengths 256 512 ...] [--device cuda] [--dtype bf16]

times one causal token-mixing layer of width C at each length T, forward only: attention
explicit (which stores the (T, T) weights) and fused, the Hyena operator (its filters generated
at every call, as in training), and the FFT convolution alone, the part that sets Hyena's growth.
Then it fits the growth exponent p of time ∝ T^p to each method and prints the length from which
Hyena is faster than attention. Attention costs O(T²) (p → 2); Hyena's FFT convolutions cost
O(T log T) (Poli et al., 2023, section 3.3), which a fit over a few octaves reads as p ≈ 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from tfcourse import _validate
from tfcourse.attention import (
    fused_scaled_dot_product_attention,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)
from tfcourse.hyena import HyenaOperator, fft_causal_conv
from tfcourse.masks import causal_mask
from tfcourse.runtime import default_device

METHODS = ("attention (explicit)", "attention (fused)", "Hyena operator", "FFT convolution")
DEFAULT_LENGTHS = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class _CausalSelfAttention(nn.Module):
    """q, k, v projections, causal attention over H heads, output projection: (B, T, C) →
    (B, T, C). ``fused`` picks PyTorch's kernel with ``is_causal=True`` (no (T, T) tensor at
    all) over the explicit equation with a (T, T) causal mask."""

    def __init__(self, d_model: int, heads: int, *, fused: bool) -> None:
        super().__init__()
        self.heads, self.fused = heads, fused
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B,H,T,D)
        if self.fused:
            out = fused_scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out, _ = scaled_dot_product_attention(q, k, v, causal_mask(x.shape[1], device=x.device))
        return self.out_proj(merge_heads(out))


def hyena_vs_attention(
    lengths: Sequence[int],
    *,
    d_model: int = 64,
    heads: int = 4,
    batch: int = 1,
    order: int = 2,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    repeats: int = 3,
    max_call_seconds: float = 2.0,
    max_scores_mib: float = 1024,
) -> list[dict]:
    """Rows ``{"length", "method", "seconds", "peak_mib"}``, ``method`` one of :data:`METHODS`,
    for a causal token-mixing layer of width ``d_model`` on (batch, T, d_model) inputs, forward
    only. ``seconds`` is the median of ``repeats`` calls, or one call when ``repeats`` calls
    would take longer than ``max_call_seconds`` (a long call is steady enough alone).

    Lengths are measured shortest first. A method stops after a call longer than
    ``max_call_seconds``, and explicit attention is not run where its batch · heads · T² scores
    would take more than ``max_scores_mib``: those lengths have no row.
    """
    # imported here: measure changes malloc settings for the whole process (see in_fresh_process),
    # and the lesson imports this module's fitting functions without measuring
    from tfcourse.bench.measure import median_seconds, peak_memory_mib

    if not lengths:
        raise ValueError("lengths: expected at least one length, got none")
    lengths = sorted({_validate.integer(T, "lengths", 1) for T in lengths})
    _validate.integer(repeats, "repeats", 1)
    _validate.integer(batch, "batch", 1)
    _validate.integer(heads, "heads", 1)
    if d_model % heads:
        raise ValueError(f"heads: expected a divisor of d_model = {d_model}, got {heads}")
    device = torch.device(device) if device is not None else default_device()
    torch.manual_seed(0)
    layers = {
        "attention (explicit)": _CausalSelfAttention(d_model, heads, fused=False),
        "attention (fused)": _CausalSelfAttention(d_model, heads, fused=True),
        "Hyena operator": HyenaOperator(d_model, max(lengths), order=order),
    }
    layers = {name: layer.to(device, dtype).eval() for name, layer in layers.items()}
    score_bytes = torch.promote_types(dtype, torch.float32).itemsize  # the softmax's dtype
    stopped: set[str] = set()
    rows = []
    with torch.no_grad():
        for T in lengths:
            x = torch.randn(batch, T, d_model, device=device, dtype=dtype)
            u = torch.randn(batch, d_model, T, device=device, dtype=dtype)  # (B, C, T)
            k = torch.randn(d_model, T, device=device, dtype=dtype)  # (C, T)
            runs: dict[str, Callable[[], object]] = {
                name: partial(layer, x) for name, layer in layers.items()}
            runs["FFT convolution"] = partial(fft_causal_conv, u, k)
            if batch * heads * T**2 * score_bytes / 2**20 > max_scores_mib:
                stopped.add("attention (explicit)")
            for method in METHODS:
                if method in stopped:
                    continue
                peak = peak_memory_mib(runs[method], device)  # also warms up
                seconds = median_seconds(runs[method], device, repeats=1, warmup=0)
                if seconds * repeats <= max_call_seconds:
                    seconds = median_seconds(runs[method], device, repeats=repeats, warmup=0)
                if seconds > max_call_seconds:
                    stopped.add(method)
                rows.append({"length": T, "method": method, "seconds": seconds,
                             "peak_mib": peak})
    return rows


def growth_exponent(rows: Sequence[dict], method: str, lo: int, hi: int) -> float:
    """The least-squares slope p of log(seconds) against log(length) over the rows of ``method``
    with lo ≤ length ≤ hi: time ∝ T^p over that range.

        p = Σ (x − x̄)(y − ȳ) / Σ (x − x̄)²,   x = log T, y = log seconds
    """
    points = [(math.log(r["length"]), math.log(r["seconds"])) for r in rows
              if r["method"] == method and lo <= r["length"] <= hi]
    if len(points) < 2:
        raise ValueError(f"method: expected at least two rows of {method!r} with "
                         f"{lo} <= length <= {hi}, got {len(points)}")
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in points)
    variance = sum((x - mean_x) ** 2 for x, _ in points)
    if variance == 0:
        raise ValueError(f"method: expected rows of {method!r} at two different lengths, got "
                         f"{len(points)} at one length")
    return covariance / variance


def crossover_length(rows: Sequence[dict], faster: str, slower: str) -> int | None:
    """The shortest length from which ``faster`` takes less time than ``slower`` at that length
    and at every longer length where both were measured; ``None`` if there is none."""
    seconds = {(r["method"], r["length"]): r["seconds"] for r in rows}
    common = sorted(T for method, T in seconds if method == faster and (slower, T) in seconds)
    crossover = None
    for T in reversed(common):  # from the longest back, while `faster` stays ahead
        if seconds[faster, T] >= seconds[slower, T]:
            break
        crossover = T
    return crossover


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tfcourse.bench hyena")
    parser.add_argument("--lengths", type=int, nargs="+", default=DEFAULT_LENGTHS)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fit-from", type=int, default=1024,
                        help="shortest length in the exponent fits (shorter ones measure "
                             "fixed overheads more than growth)")
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else default_device()
    rows = hyena_vs_attention(args.lengths, device=device, dtype=DTYPES[args.dtype],
                              repeats=args.repeats)

    print(f"one causal token-mixing layer, B=1, C=64, attention H=4, Hyena order 2, forward "
          f"only, {args.dtype}, on {device}; — where not run")
    print(f"{'':>6}" + "".join(f" {method:>21}" for method in METHODS))
    print(f"{'T':>6}" + f" {'ms':>10} {'MiB':>10}" * len(METHODS))
    cell = {(r["method"], r["length"]): r for r in rows}
    for T in sorted(set(args.lengths)):
        line = f"{T:>6}"
        for method in METHODS:
            r = cell.get((method, T))
            line += (f" {'—':>10} {'—':>10}" if r is None else
                     f" {r['seconds'] * 1e3:>10.2f} {_mib(r['peak_mib']):>10}")
        print(line)

    print(f"\ngrowth exponent p of time ∝ T^p, least squares from T = {args.fit_from}:")
    for method in reversed(METHODS):
        reached = [r["length"] for r in rows
                   if r["method"] == method and r["length"] >= args.fit_from]
        if len(reached) < 2:
            print(f"  {method:<21} n/a (fewer than two lengths measured)")
            continue
        p = growth_exponent(rows, method, args.fit_from, max(reached))
        print(f"  {method:<21} T = {min(reached)}..{max(reached)}: p = {p:.2f}")

    print()
    for slower in ("attention (fused)", "attention (explicit)"):
        reached = [r["length"] for r in rows if r["method"] == slower]
        if not reached:
            print(f"Hyena operator against {slower}: not compared ({slower} was not run)")
            continue
        T = crossover_length(rows, "Hyena operator", slower)
        print(f"Hyena operator faster than {slower}: "
              + ("at no measured length" if T is None else f"from T = {T} on")
              + f" (compared up to T = {max(reached)})")


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"
