"""Token Merging on the chapter-4 ViT: throughput against accuracy, and against the number of
tokens (book: chapter 5).

    python -m tfcourse.bench tome [--r 0 1 2 3 4] [--kinds constant decreasing]
                                  [--image-sizes 16 24 32] [--shares 0.125 0.25 ... 1]
                                  [--device cuda] [--dtype bf16] [--batch-size 512]

loads (or, the first time, trains: about two minutes on two cores) the chapter-4 ViT on the digits,
then prints, for the plain model and for :class:`~tfcourse.tome.ToMeViT` with each r and schedule,
the tokens after each block, the test accuracy, the throughput on one batch of test images and
the speed-up over the plain model. The throughputs are measured in one run, in alternation (each
round times every model once), so that the machine's load falls on all of them alike; each figure
is the best round.

Then the same for the number of tokens: the chapter-4 ViT trained on digits resized to each of
``--image-sizes`` pixels (4x4 patches: 16, 24, 32 px give 17, 37, 65 tokens; trained the first
time by :data:`~tfcourse.classification.TOKEN_SWEEP_TRAINING`, 5 to 10 minutes for the three on
two cores, then cached), each with ToMe at r = each share of the most its first block can merge,
and for each size the most merging that stays within 1 accuracy point
(:func:`most_merging_within`). ``--image-sizes`` with no size skips this part.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tfcourse.classification import (
    TOKEN_SWEEP_SIZES,
    accuracy,
    interleaved_throughput,
    train_token_sweep_vit,
)
from tfcourse.data.digits import load_digit_images
from tfcourse.runtime import default_device
from tfcourse.tome import ToMeViT, max_merges
from tfcourse.vit import VisionTransformer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# r in the sweep over tokens: these shares of what the first block can merge, max_merges(T_0)
SHARES = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0)


def tome_tradeoff(
    model: VisionTransformer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    rs: Sequence[int] = (0, 1, 2, 3, 4),
    kinds: Sequence[str] = ("constant",),
    batch_size: int = 512,
    repeats: int = 5,
    dtype: torch.dtype | None = None,
    proportional_attention: bool = True,
) -> list[dict]:
    """Rows ``{"r", "kind", "schedule", "tokens", "accuracy", "images_per_s", "speedup"}``: the
    plain ``model`` first (r and kind None), then ToMe for each kind and r (a schedule that
    repeats an earlier row's is left out). Accuracy is on all of ``images`` (N, K, I, I); the
    throughput on one batch of ``batch_size`` of them (cycled when N is smaller), on the model's
    device, under autocast to ``dtype`` when given; the speed-up is over the plain model."""
    device = next(model.parameters()).device
    batch = images[torch.arange(batch_size) % len(images)]  # (batch_size, K, I, I)
    runs: list[tuple[dict, nn.Module]] = [({"r": None, "kind": None, "schedule": None,
                                            "tokens": None}, model)]
    for kind in kinds:
        for r in rs:
            tome = ToMeViT(model, r, kind=kind, proportional_attention=proportional_attention)
            if any(row["schedule"] == tome.schedule for row, _ in runs):
                continue
            runs.append(({"r": r, "kind": kind, "schedule": tome.schedule,
                          "tokens": tome.token_counts}, tome))
    runs[0][0]["tokens"] = [model.pos_embed.shape[1]] * (len(model.blocks) + 1)
    autocast = torch.autocast(device.type, dtype=dtype or torch.float32,
                              enabled=dtype is not None)
    for row, module in runs:
        with autocast:
            row["accuracy"] = accuracy(module, images, labels, batch_size=batch_size)
    best = interleaved_throughput([module for _, module in runs], batch, repeats=repeats,
                                  dtype=dtype)
    for (row, _), speed in zip(runs, best, strict=True):
        row["images_per_s"], row["speedup"] = speed, speed / best[0]
    return [row for row, _ in runs]


def sweep_rs(num_tokens: int, shares: Sequence[float] = SHARES) -> list[int]:
    """r for each of ``shares`` (in (0, 1]) of the most a first block of ``num_tokens`` tokens can
    merge, :func:`~tfcourse.tome.max_merges`, rounded, at least 1; ascending, without repeats."""
    most = max_merges(num_tokens)
    if not shares or not all(isinstance(s, (int, float)) and 0 < s <= 1 for s in shares):
        raise ValueError(f"shares: expected numbers in (0, 1], got {list(shares)!r}")
    if most == 0:
        raise ValueError(f"num_tokens: expected at least 3 tokens (a class token and two to "
                         f"merge), got {num_tokens}")
    return sorted({max(1, round(share * most)) for share in shares})


def token_sweep(
    image_sizes: Sequence[int] = TOKEN_SWEEP_SIZES, *, shares: Sequence[float] = SHARES,
    kinds: Sequence[str] = ("constant",), batch_size: int = 512, repeats: int = 5,
    dtype: torch.dtype | None = None, device: str | torch.device | None = None,
    proportional_attention: bool = True, progress: bool = False,
) -> list[dict]:
    """ToMe against the number of tokens: for each of ``image_sizes``, the ViT of
    :func:`~tfcourse.classification.train_token_sweep_vit` (trained once, then cached), measured
    by :func:`tome_tradeoff` on its own test digits, with r from :func:`sweep_rs`. Returns the
    rows of :func:`tome_tradeoff`, each with ``"image_size"``, ``"num_tokens"`` (T_0) and
    ``"test_digits"`` added, size after size; the speed-ups are over the plain model of the same
    size, timed in the same interleaved rounds."""
    if isinstance(image_sizes, (str, bytes)) or not image_sizes:
        raise ValueError(f"image_sizes: expected at least one size, got {image_sizes!r}")
    rows = []
    for image_size in image_sizes:
        data = load_digit_images(image_size)
        model, _ = train_token_sweep_vit(image_size, data, device=device, progress=progress)
        num_tokens = model.pos_embed.shape[1]
        measured = tome_tradeoff(model, data.test_images, data.test_labels,
                                 rs=sweep_rs(num_tokens, shares), kinds=kinds,
                                 batch_size=batch_size, repeats=repeats, dtype=dtype,
                                 proportional_attention=proportional_attention)
        rows += [{"image_size": image_size, "num_tokens": num_tokens,
                  "test_digits": len(data.test_labels), **row} for row in measured]
    return rows


def most_merging_within(rows: Sequence[dict], max_drop: float = 1.0) -> dict | None:
    """Of the ToMe rows of one model (``rows`` as :func:`tome_tradeoff` returns them, the plain
    model first), the one that leaves the fewest tokens to the blocks (the fewest summed over
    them) among those whose accuracy is at most ``max_drop`` points below the plain model's and
    whose every smaller r of the same kind is too: the accuracy decides, not the timings, so the
    noise of the clock does not pick the winner. None if even the smallest r drops more."""
    if not rows or rows[0]["r"] is not None:
        raise ValueError("rows: expected the rows of tome_tradeoff, the plain model first")
    plain, candidates = rows[0]["accuracy"], []
    for kind in dict.fromkeys(row["kind"] for row in rows[1:]):
        for row in sorted((row for row in rows[1:] if row["kind"] == kind),
                          key=lambda row: row["r"]):
            if (plain - row["accuracy"]) * 100 > max_drop + 1e-9:
                break
            candidates.append(row)
    return min(candidates, key=lambda row: sum(row["tokens"][:-1]), default=None)


def _name(row: dict) -> str:
    return "ViT" if row["r"] is None else f"ToMe r={row['r']} {row['kind']}"


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    from tfcourse.classification import DIGITS_VIT, train_digits_vit

    parser = argparse.ArgumentParser(prog="python -m tfcourse.bench tome")
    parser.add_argument("--r", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="tokens merged per block")
    parser.add_argument("--kinds", nargs="+", default=["constant", "decreasing"],
                        choices=["constant", "decreasing"], help="merging schedules")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES),
                        help="fp32, or bf16/fp16 under autocast (on a GPU)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--no-proportional", action="store_true",
                        help="plain attention over merged tokens (no log-size term, Eq. 1)")
    parser.add_argument("--image-sizes", type=int, nargs="*", default=list(TOKEN_SWEEP_SIZES),
                        help="digit sizes in pixels of the sweep over tokens (4x4 patches); "
                        "none: skip it")
    parser.add_argument("--shares", type=float, nargs="+", default=list(SHARES),
                        help="r in the sweep: shares of the most the first block can merge")
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else default_device()
    dtype = None if args.dtype == "fp32" else DTYPES[args.dtype]

    data = load_digit_images(DIGITS_VIT["image_size"])
    model, _ = train_digits_vit(data, device=device, progress=False)
    rows = tome_tradeoff(model, data.test_images, data.test_labels, rs=args.r, kinds=args.kinds,
                         batch_size=args.batch_size, repeats=args.repeats, dtype=dtype,
                         proportional_attention=not args.no_proportional)
    tokens = model.pos_embed.shape[1]
    print(f"ToMe on the chapter-4 ViT ({tokens} tokens, L={len(model.blocks)}, "
          f"C={DIGITS_VIT['d_model']}), {len(data.test_labels)} test digits, {args.dtype}, "
          f"batch {args.batch_size}, on {device}, "
          f"{'plain' if args.no_proportional else 'proportional'} attention; accuracy change in "
          f"points and speed-up over the plain ViT, best of {args.repeats} interleaved rounds")
    print(f"{'model':<20} {'tokens after each block':<24} {'accuracy':>8} {'change':>7} "
          f"{'images/s':>9} {'speed-up':>8}")
    plain = rows[0]["accuracy"]
    for row in rows:
        counts = " ".join(str(t) for t in row["tokens"])
        change = "" if row["r"] is None else f"{(row['accuracy'] - plain) * 100:+.1f}"
        print(f"{_name(row):<20} {counts:<24} {row['accuracy'] * 100:>7.1f}% {change:>7} "
              f"{row['images_per_s']:>9.0f} {row['speedup']:>7.2f}x")
    if args.image_sizes:
        rows = token_sweep(args.image_sizes, shares=args.shares, kinds=args.kinds,
                           batch_size=args.batch_size, repeats=args.repeats, dtype=dtype,
                           device=device, proportional_attention=not args.no_proportional)
        _print_sweep(rows, args.shares, f"{args.dtype}, batch {args.batch_size}, best of "
                     f"{args.repeats} interleaved rounds per size")


def _print_sweep(rows: list[dict], shares: Sequence[float], timing: str) -> None:
    sizes = list(dict.fromkeys(row["image_size"] for row in rows))
    tested = {row["image_size"]: row["test_digits"] for row in rows}
    print(f"\nToMe against the number of tokens: the chapter-4 ViT (4x4 patches, the same width "
          f"and depth) trained by TOKEN_SWEEP_TRAINING on the digits at "
          f"{', '.join(map(str, sizes))} px; r = {', '.join(map(str, shares))} of the most the "
          f"first block can merge; "
          f"{timing}; {tested[sizes[0]]} test digits, so one digit is "
          f"{100 / tested[sizes[0]]:.2f} points")
    print(f"{'pixels':>6} {'tokens':>6}  {'model':<22} {'tokens after each block':<26} "
          f"{'accuracy':>8} {'change':>7} {'images/s':>9} {'speed-up':>8}")
    best = []
    for size in sizes:
        group = [row for row in rows if row["image_size"] == size]
        plain = group[0]["accuracy"]
        for row in group:
            counts = " ".join(str(t) for t in row["tokens"])
            change = "" if row["r"] is None else f"{(row['accuracy'] - plain) * 100:+.1f}"
            print(f"{size:>6} {row['num_tokens']:>6}  {_name(row):<22} {counts:<26} "
                  f"{row['accuracy'] * 100:>7.1f}% {change:>7} {row['images_per_s']:>9.0f} "
                  f"{row['speedup']:>7.2f}x")
        best.append((group, most_merging_within(group)))
    print("\nthe most merging within 1 point (and every smaller r within it too):")
    met = []
    for group, row in best:
        size, tokens = group[0]["image_size"], group[0]["num_tokens"]
        if row is None:
            print(f"  {tokens:>3} tokens ({size} px): even the smallest r loses more than 1 point")
            continue
        change = (row["accuracy"] - group[0]["accuracy"]) * 100
        print(f"  {tokens:>3} tokens ({size} px): {_name(row)}, accuracy {change:+.2f} points, "
              f"{row['speedup']:.2f}x")
        if row["speedup"] >= 1.8:
            met.append(f"{tokens} tokens ({row['speedup']:.2f}x)")
    print("the course's target, at least 1.8x at a drop of at most 1 point: "
          + (f"met at {', '.join(met)}" if met else "not met in this run"))
