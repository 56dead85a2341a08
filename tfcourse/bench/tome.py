"""Token Merging on the chapter-4 ViT: throughput against accuracy (book: chapter 5).

    python -m tfcourse.bench tome [--r 0 1 2 3 4] [--kinds constant decreasing]
                                  [--device cuda] [--dtype bf16] [--batch-size 512]

loads (or, the first time, trains: about two minutes on two cores) the chapter-4 ViT on the digits,
then prints, for the plain model and for :class:`~tfcourse.tome.ToMeViT` with each r and schedule,
the tokens after each block, the test accuracy, the throughput on one batch of test images and
the speed-up over the plain model. The throughputs are measured in one run, in alternation (each
round times every model once), so that the machine's load falls on all of them alike; each figure
is the best round.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tfcourse.classification import accuracy, interleaved_throughput
from tfcourse.runtime import default_device
from tfcourse.tome import ToMeViT
from tfcourse.vit import VisionTransformer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    from tfcourse.classification import DIGITS_VIT, train_digits_vit
    from tfcourse.data.digits import load_digit_images

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
        name = "ViT" if row["r"] is None else f"ToMe r={row['r']} {row['kind']}"
        counts = " ".join(str(t) for t in row["tokens"])
        change = "" if row["r"] is None else f"{(row['accuracy'] - plain) * 100:+.1f}"
        print(f"{name:<20} {counts:<24} {row['accuracy'] * 100:>7.1f}% {change:>7} "
              f"{row['images_per_s']:>9.0f} {row['speedup']:>7.2f}x")
