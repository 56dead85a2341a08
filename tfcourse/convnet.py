"""A small convolutional network, the baseline of the vision chapters (book: chapter 4).

Two stages of two 3×3 convolutions with batch norm and ReLU, each followed by 2×2 max pooling,
then global average pooling and a linear head: the classic design of VGG (Simonyan and Zisserman,
2015) at toy size. Its locality and weight sharing are priors that a ViT must learn from data.
"""

from __future__ import annotations

import torch
from torch import nn

from tfcourse import _validate


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in in (in_channels, out_channels):
        layers += [nn.Conv2d(c_in, out_channels, 3, padding=1, bias=False),
                   nn.BatchNorm2d(out_channels), nn.ReLU()]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class ConvNet(nn.Module):
    """(B, K, I, I) -> (B, num_classes), I divisible by 4; ``width`` channels, then twice that."""

    def __init__(self, *, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        _validate.integer(in_channels, "in_channels", 1)
        _validate.integer(num_classes, "num_classes", 2)
        _validate.integer(width, "width", 1)
        self.in_channels = in_channels
        self.features = nn.Sequential(_stage(in_channels, width), _stage(width, 2 * width))
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = _validate.rank(_validate.floating(images, "images"), "images", 4, "(B, K, I, I)")
        _validate.size(images, "images", 1, self.in_channels, "K, the image channels")
        features = self.features(images)  # (B, 2·width, I/4, I/4)
        return self.head(features.mean(dim=(-2, -1)))  # global average pooling -> (B, classes)
