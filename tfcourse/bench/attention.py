"""Attention cost against sequence length (book: chapter 1, *The cost of attention*).

    python -m tfcourse.bench attention [--lengths 256 512 ...] [--device cuda]

prints, for each length, the time and peak memory of the explicit path (which stores the (T, T)
weights) and the fused path (PyTorch's kernel, which does not), then the speed of
:class:`tfcourse.MultiHeadAttention` against :class:`torch.nn.MultiheadAttention` loaded with the
same weights, as a ratio measured side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tfcourse.attention import (
    MultiHeadAttention,
    fused_scaled_dot_product_attention,
    scaled_dot_product_attention,
)
from tfcourse.bench.measure import median_seconds, peak_memory_mib
from tfcourse.runtime import default_device


def attention_cost(
    lengths: Sequence[int],
    *,
    batch: int = 1,
    heads: int = 8,
    head_dim: int = 64,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    repeats: int = 3,
) -> list[dict]:
    """Rows ``{"length", "path", "seconds", "peak_mib"}`` for self-attention over (B, H, T, D)
    inputs, with ``path`` "explicit" or "fused"."""
    device = torch.device(device) if device is not None else default_device()
    rows = []
    with torch.no_grad():
        for length in lengths:
            q, k, v = torch.randn(3, batch, heads, length, head_dim, device=device, dtype=dtype)
            paths = {"explicit": scaled_dot_product_attention,
                     "fused": fused_scaled_dot_product_attention}
            for path, attend in paths.items():
                def run(attend=attend, q=q, k=k, v=v):
                    return attend(q, k, v)

                peak = peak_memory_mib(run, device)  # first, before timing warms any cache
                seconds = median_seconds(run, device, repeats=repeats)
                rows.append({"length": length, "path": path, "seconds": seconds, "peak_mib": peak})
    return rows


def mha_comparison(
    length: int = 1024,
    *,
    batch: int = 4,
    d_model: int = 256,
    heads: int = 8,
    device: torch.device | str | None = None,
    repeats: int = 10,
) -> list[dict]:
    """Rows ``{"module", "seconds"}`` for the fused :class:`MultiHeadAttention` ("tfcourse") and
    ``nn.MultiheadAttention`` ("torch") with the same weights on the same input, timed in
    alternation so that both see the same machine load."""
    device = torch.device(device) if device is not None else default_device()
    reference = nn.MultiheadAttention(d_model, heads, batch_first=True).to(device).eval()
    ours = MultiHeadAttention(d_model, heads).to(device).eval().load_from_torch(reference)
    x = torch.randn(batch, length, d_model, device=device)
    modules = {
        "tfcourse": lambda: ours(x),
        "torch": lambda: reference(x, x, x, need_weights=False),
    }
    times: dict[str, list[float]] = {name: [] for name in modules}
    with torch.no_grad():
        for _ in range(repeats):
            for name, fn in modules.items():
                times[name].append(median_seconds(fn, device, repeats=1))
    return [{"module": name, "seconds": sorted(t)[len(t) // 2]} for name, t in times.items()]


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tfcourse.bench attention")
    parser.add_argument("--lengths", type=int, nargs="+",
                        default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else default_device()

    print(f"attention over (B=1, H=8, T, D=64), float32, on {device}")
    print(f"{'T':>6} {'explicit ms':>12} {'fused ms':>9} {'speed-up':>9} "
          f"{'explicit MiB':>13} {'fused MiB':>10}")
    rows = attention_cost(args.lengths, device=device, repeats=args.repeats)
    for length in args.lengths:
        e, f = (next(r for r in rows if r["length"] == length and r["path"] == p)
                for p in ("explicit", "fused"))
        print(f"{length:>6} {e['seconds'] * 1e3:>12.2f} {f['seconds'] * 1e3:>9.2f} "
              f"{e['seconds'] / f['seconds']:>8.2f}x {_mib(e['peak_mib']):>13} "
              f"{_mib(f['peak_mib']):>10}")

    print("\nmulti-head self-attention, B=4, T=1024, C=256, H=8, same weights, same input")
    ours, theirs = mha_comparison(device=device)
    ratio = theirs["seconds"] / ours["seconds"]
    print(f"tfcourse.MultiHeadAttention {ours['seconds'] * 1e3:.2f} ms, "
          f"nn.MultiheadAttention {theirs['seconds'] * 1e3:.2f} ms: "
          f"tfcourse runs at {ratio:.2f}x the speed of nn.MultiheadAttention")


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"
