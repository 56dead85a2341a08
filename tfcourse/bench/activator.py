"""Activator against the ViT at equal parameters: FLOPs and throughput (book: chapter 6).

    python -m tfcourse.bench activator [--device cuda] [--dtype bf16] [--batch-size 512]

For two pairs of untrained models (speed does not depend on the weights), prints parameters,
MFLOP per image and images per second, and the throughput ratio Activator / ViT:

* ``digits``: the chapter's models, 16×16 digits, P = 4, N = 16 patches, C = 64, 6 blocks each;
* ``cifar``: the released Activator (32×32×3, P = 4, N = 64, C = 256, F = 512, 4 blocks,
  2.64 M parameters) against a ViT of the same width with 5 blocks (the same parameters).

The throughputs are measured in one run, in alternation
(:func:`~tfcourse.classification.interleaved_throughput`); each figure is the best round.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tfcourse.activator import ActivatorClassifier
from tfcourse.classification import (
    DIGITS_ACTIVATOR,
    DIGITS_VIT,
    flops_per_image,
    interleaved_throughput,
)
from tfcourse.runtime import default_device
from tfcourse.vit import VisionTransformer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CIFAR = dict(image_size=32, patch_size=4, in_channels=3, num_classes=10, d_model=256)


def model_pairs() -> dict[str, tuple[nn.Module, nn.Module]]:
    """``{setting: (ViT, Activator)}``, untrained, with matched parameter counts."""
    torch.manual_seed(0)
    return {
        "digits": (VisionTransformer(**DIGITS_VIT), ActivatorClassifier(**DIGITS_ACTIVATOR)),
        "cifar": (VisionTransformer(**CIFAR, num_heads=4, num_layers=5, d_ff=512),
                  ActivatorClassifier(**CIFAR, d_hidden=512, num_layers=4, dropout=0.0)),
    }


def activator_vs_vit(
    *, settings: Sequence[str] = ("digits", "cifar"), batch_size: int = 512, repeats: int = 5,
    device: str | torch.device | None = None, dtype: torch.dtype | None = None,
) -> list[dict]:
    """Rows ``{"setting", "model", "parameters", "mflop", "images_per_s", "ratio"}``, the ViT
    then Activator for each setting; ``ratio`` is the images per second over the ViT's."""
    device = torch.device(device) if device is not None else default_device()
    pairs = model_pairs()
    rows, models, batches = [], [], []
    for setting in settings:
        if setting not in pairs:
            raise ValueError(f"settings: expected names from {sorted(pairs)}, got {setting!r}")
        for model in pairs[setting]:
            size = model.patch_embed.image_size
            channels = model.patch_embed.in_channels
            images = torch.rand(batch_size, channels, size, size, generator=torch.Generator()
                                .manual_seed(0))
            rows.append({"setting": setting, "model": type(model).__name__,
                         "parameters": sum(p.numel() for p in model.parameters()),
                         "mflop": flops_per_image(model, images[:1]) / 1e6})
            models.append(model.to(device))
            batches.append(images)
    speeds = interleaved_throughput(models, batches, repeats=repeats, dtype=dtype)
    for i, row in enumerate(rows):  # each ViT is followed by its Activator
        vit_speed = speeds[i - 1] if row["model"] == "ActivatorClassifier" else speeds[i]
        row["images_per_s"], row["ratio"] = speeds[i], speeds[i] / vit_speed
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tfcourse.bench activator")
    parser.add_argument("--settings", nargs="+", default=["digits", "cifar"],
                        choices=["digits", "cifar"])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES),
                        help="fp32, or bf16/fp16 under autocast (on a GPU)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
    args = parser.parse_args(argv)
    dtype = None if args.dtype == "fp32" else DTYPES[args.dtype]
    device = torch.device(args.device) if args.device else default_device()
    rows = activator_vs_vit(settings=args.settings, batch_size=args.batch_size,
                            repeats=args.repeats, device=device, dtype=dtype)
    print(f"Activator against the ViT at equal parameters, untrained, {args.dtype}, batch "
          f"{args.batch_size}, on {device}; best of {args.repeats} interleaved rounds")
    print(f"{'setting':<8} {'model':<20} {'parameters':>10} {'MFLOP/image':>11} "
          f"{'images/s':>9} {'vs ViT':>7}")
    for row in rows:
        print(f"{row['setting']:<8} {row['model']:<20} {row['parameters']:>10,} "
              f"{row['mflop']:>11.1f} {row['images_per_s']:>9.0f} {row['ratio']:>6.2f}x")
