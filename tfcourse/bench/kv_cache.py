"""Decoding with a KV cache against recomputing the prefix (book: chapter 3, *The KV cache*).

    python -m tfcourse.bench kv_cache [--tokens 256] [--device cuda]

generates the same tokens from the same :class:`~tfcourse.DecoderOnlyLM` twice, with the cache
(one new position per step) and without it (the whole prefix at every step), checks that both
produce the same tokens, and prints both times and their ratio, measured in alternation so that
both see the same machine load.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tfcourse.bench.measure import median_seconds
from tfcourse.language_models import DecoderOnlyLM
from tfcourse.runtime import default_device


def kv_cache_speedup(
    new_tokens: int = 256,
    *,
    prompt_len: int = 16,
    batch: int = 8,
    d_model: int = 256,
    num_heads: int = 8,
    num_layers: int = 6,
    vocab_size: int = 512,
    device: torch.device | str | None = None,
    repeats: int = 3,
) -> dict:
    """``{"cached_s", "recomputed_s", "speedup", "same_tokens"}`` for greedy generation of
    ``new_tokens`` tokens after a random prompt, with an untrained model (the work per step does
    not depend on the weights)."""
    device = torch.device(device) if device is not None else default_device()
    torch.manual_seed(0)
    model = DecoderOnlyLM(vocab_size, max_len=prompt_len + new_tokens, d_model=d_model,
                          num_heads=num_heads, num_layers=num_layers).to(device).eval()
    prompt = torch.randint(vocab_size, (batch, prompt_len), device=device)
    runs = {
        "cached": lambda: model.generate(prompt, new_tokens, greedy=True),
        "recomputed": lambda: model.generate(prompt, new_tokens, greedy=True, use_cache=False),
    }
    same = torch.equal(runs["cached"](), runs["recomputed"]())
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(median_seconds(run, device, repeats=1, warmup=0))
    cached, recomputed = (sorted(times[n])[len(times[n]) // 2] for n in ("cached", "recomputed"))
    return {"cached_s": cached, "recomputed_s": recomputed, "speedup": recomputed / cached,
            "same_tokens": same}


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tfcourse.bench kv_cache")
    parser.add_argument("--tokens", type=int, default=256, help="tokens to generate")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else default_device()
    print(f"greedy generation of {args.tokens} tokens after a 16-token prompt, B=8, "
          f"DecoderOnlyLM(C=256, H=8, L=6), float32, on {device}")
    row = kv_cache_speedup(args.tokens, device=device, repeats=args.repeats)
    print(f"with the KV cache {row['cached_s']:.2f} s, recomputing the prefix "
          f"{row['recomputed_s']:.2f} s: the cache is {row['speedup']:.1f}x faster; "
          f"same tokens: {row['same_tokens']}")
