"""Handwritten digits, real data that ships with scikit-learn (book: chapters 4 to 6).

``sklearn.datasets.load_digits`` holds 1,797 grey images of 8×8 pixels, the test part of the UCI
"Optical Recognition of Handwritten Digits" set (Alpaydin and Kaynak, 1998), written by 13 people
on forms of the US National Institute of Standards and Technology. It lies on disk with
scikit-learn, so nothing is downloaded. The images are scaled to [0, 1] and resized (bilinear) so
that they cut into patches, and split once, stratified by class, into a training and a test set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tfcourse import _validate
from tfcourse.data.batching import batches_from_tensors, step_generator


@dataclasses.dataclass(frozen=True)
class DigitImages:
    """Images (N, 1, I, I) float32 in [0, 1] and labels (N,) int64 of a training and a test set."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    def __repr__(self) -> str:
        size = self.train_images.shape[-1]
        return (f"DigitImages({len(self.train_labels)} train, {len(self.test_labels)} test, "
                f"{size}x{size} pixels)")


def load_digit_images(
    image_size: int = 16, *, test_fraction: float = 0.2, seed: int = 0
) -> DigitImages:
    """The digits at ``image_size`` × ``image_size`` pixels, split into train and test.

    The split takes ``test_fraction`` of each class for the test set, drawn with ``seed``.
    """
    from sklearn.datasets import load_digits  # imported here: only the vision chapters need it

    _validate.integer(image_size, "image_size", 8)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    _validate.integer(seed, "seed")
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8)
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear",
                               align_corners=False).clamp_(0.0, 1.0)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    test = torch.zeros(len(labels), dtype=torch.bool)
    for digit in labels.unique():
        rows = (labels == digit).nonzero().squeeze(1)
        rows = rows[torch.randperm(len(rows), generator=generator)]
        test[rows[: round(test_fraction * len(rows))]] = True
    return DigitImages(images[~test], labels[~test], images[test], labels[test])


def random_shift(
    images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Move each image by a random whole number of pixels in [-max_shift, max_shift] along each
    axis, filling with zeros (the background): the light augmentation of the vision chapters."""
    images = _validate.rank(_validate.floating(images, "images"), "images", 4, "(B, K, I, I)")
    _validate.integer(max_shift, "max_shift")
    if max_shift == 0:
        return images
    B, _, height, width = images.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (2, B), generator=generator)
    padded = F.pad(images, (max_shift,) * 4)  # (B, K, I + 2m, I + 2m)
    rows = torch.arange(height)[None, :] + max_shift - shifts[0][:, None]  # (B, I)
    cols = torch.arange(width)[None, :] + max_shift - shifts[1][:, None]  # (B, I)
    rows, cols = rows.to(images.device), cols.to(images.device)
    batch = torch.arange(B, device=images.device)[:, None, None]
    picked = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, I, I, K)
    return picked.permute(0, 3, 1, 2).contiguous()


def digit_batches(
    data: DigitImages, batch_size: int, *, seed: int = 0, max_shift: int = 1
) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """``batches(step) -> (images, labels)`` from the training set, reshuffled every epoch and
    shifted by up to ``max_shift`` pixels, a deterministic function of the step (for
    :class:`tfcourse.Trainer`)."""
    base = batches_from_tensors(data.train_images, data.train_labels, batch_size=batch_size,
                                seed=seed)
    _validate.integer(max_shift, "max_shift")

    def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = base(step)
        return random_shift(images, max_shift, step_generator(seed + 1, step)), labels

    return batches
