"""The Vision Transformer (Dosovitskiy et al., 2021; book: chapter 4).

An image is cut into square patches, each patch is mapped to a vector, and a Transformer encoder
reads the sequence of patch vectors as it would read words. The letters are those of the
glossary in :mod:`tfcourse`: K image channels, I image height and width, P patch height and
width, N = (I / P)² patches. The token sequence has T = N + 1 positions with the class token,
N without it.
"""

from __future__ import annotations

import torch
from torch import nn

from tfcourse import _validate
from tfcourse.attention import MultiHeadAttention
from tfcourse.feedforward import FeedForward

POOLS = ("cls", "mean")


def _check_images(images: object, name: str, patch_size: int) -> torch.Tensor:
    images = _validate.rank(_validate.floating(images, name), name, 4, "(B, K, I, I)")
    height, width = images.shape[-2:]
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"{name}: expected height and width divisible by the patch size {patch_size}, got "
            f"{height}x{width}; resize or crop the images to a multiple of {patch_size}"
        )
    return images


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, K, I, I) -> (B, N, K·P·P): the patches, each flattened to one vector.

    Patches come in row-major order over the grid (left to right, then top to bottom), as
    ``Conv2d(...).flatten(2)`` orders its outputs. Each patch is flattened channel first, then
    pixel row, then pixel column: the order of ``conv.weight.reshape(C, -1)``, which makes
    :class:`PatchEmbedding` equal to a linear map of these vectors
    (:meth:`PatchEmbedding.as_linear`).
    """
    _validate.integer(patch_size, "patch_size", 1)
    images = _check_images(images, "images", patch_size)
    B, K, height, width = images.shape
    P = patch_size
    grid = images.reshape(B, K, height // P, P, width // P, P)  # (B, K, rows, P, cols, P)
    grid = grid.permute(0, 2, 4, 1, 3, 5)  # (B, rows, cols, K, P, P)
    return grid.reshape(B, (height // P) * (width // P), K * P * P)  # (B, N, K·P·P)


class PatchEmbedding(nn.Module):
    r"""Patches to vectors, :math:`x_p^i E` (Dosovitskiy et al., 2021, Eq. 1), as a convolution.

    A ``Conv2d`` with kernel size and stride P looks at each patch once, with no overlap, and
    computes ``weight · patch + bias``: the same as the linear map :math:`E` on the flattened patch
    (:func:`patchify`). (B, K, I, I) -> (B, N, C).
    """

    def __init__(self, image_size: int, patch_size: int, in_channels: int, d_model: int) -> None:
        super().__init__()
        for name, value in (("image_size", image_size), ("patch_size", patch_size),
                            ("in_channels", in_channels), ("d_model", d_model)):
            _validate.integer(value, name, 1)
        if image_size % patch_size:
            raise ValueError(f"patch_size: expected a divisor of image_size={image_size}, got "
                             f"{patch_size}")
        self.image_size, self.patch_size, self.in_channels = image_size, patch_size, in_channels
        self.num_patches = (image_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = _check_images(images, "images", self.patch_size)
        _validate.size(images, "images", 1, self.in_channels, "K, the image channels")
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"images: expected {self.image_size}x{self.image_size} pixels, got "
                             f"{images.shape[-2]}x{images.shape[-1]}")
        return self.proj(images).flatten(2).transpose(1, 2)  # (B, C, rows, cols) -> (B, N, C)

    @torch.no_grad()
    def as_linear(self) -> nn.Linear:
        """The same map as an ``nn.Linear`` on :func:`patchify`'s vectors, weights copied."""
        d_model = self.proj.out_channels
        linear = nn.Linear(self.in_channels * self.patch_size**2, d_model,
                           device=self.proj.weight.device, dtype=self.proj.weight.dtype)
        linear.weight.copy_(self.proj.weight.reshape(d_model, -1))  # (C, K, P, P) -> (C, K·P·P)
        linear.bias.copy_(self.proj.bias)
        return linear


class ViTBlock(nn.Module):
    r"""One pre-LN encoder block (Dosovitskiy et al., 2021, Eqs. 2–3):

    .. math:: z'_\ell = \operatorname{MSA}(\operatorname{LN}(z_{\ell-1})) + z_{\ell-1}, \qquad
              z_\ell = \operatorname{MLP}(\operatorname{LN}(z'_\ell)) + z'_\ell

    with a GELU MLP. (B, T, C) -> (B, T, C).
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = FeedForward(d_model, d_ff, dropout=dropout, activation="gelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # Eq. 2
        return x + self.mlp(self.norm2(x))  # Eq. 3


class VisionTransformer(nn.Module):
    r"""ViT: patch embedding, class token, learned positions, pre-LN blocks, final norm, head.

    .. math:: z_0 = [x_\text{class};\, x_p^1 E;\, \dots;\, x_p^N E] + E_\text{pos}, \qquad
              y = \operatorname{head}(\operatorname{LN}(z_L^0))

    (Dosovitskiy et al., 2021, Eqs. 1–4; book: chapter 4.) ``pool="cls"`` classifies from the
    class token, at position 0; ``pool="mean"`` has no class token and classifies from the mean of
    the N patch tokens (the choice of Beyer et al., 2022). (B, K, I, I) -> (B, num_classes).
    """

    def __init__(
        self, *, image_size: int, patch_size: int, in_channels: int = 1, num_classes: int = 10,
        d_model: int = 64, num_heads: int = 4, num_layers: int = 4, d_ff: int = 128,
        pool: str = "cls", dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool: expected one of {POOLS}, got {pool!r}")
        _validate.integer(num_classes, "num_classes", 2)
        _validate.integer(num_layers, "num_layers", 1)
        self.pool = pool
        self.patch_embed = PatchEmbedding(image_size, patch_size, in_channels, d_model)
        num_tokens = self.patch_embed.num_patches + (pool == "cls")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.randn(1, num_tokens, d_model) * 0.02)  # E_pos
        self.blocks = nn.ModuleList(
            ViTBlock(d_model, num_heads, d_ff, dropout=dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K, I, I) -> z_0, (B, T, C): patch vectors, the class token first, plus positions."""
        x = self.patch_embed(images)  # (B, N, C)
        if self.cls_token is not None:
            cls = self.cls_token.expand(x.shape[0], -1, -1)  # (1, 1, C) -> (B, 1, C)
            x = torch.cat([cls, x], dim=1)  # (B, N + 1, C)
        return x + self.pos_embed

    def pool_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, C): the class token, or the mean of the tokens."""
        return x[:, 0] if self.pool == "cls" else x.mean(dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images)
        for block in self.blocks:
            x = block(x)
        return self.head(self.pool_tokens(self.norm(x)))  # (B, num_classes)

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor) -> torch.Tensor:
        """(L, B, H, T, T): the attention weights of every head of every block."""
        x = self.embed(images)
        maps = []
        for block in self.blocks:
            maps.append(block.attn.attention_weights(block.norm1(x)))  # (B, H, T, T)
            x = block(x)
        return torch.stack(maps)


def attention_rollout(maps: torch.Tensor, *, residual: bool = True) -> torch.Tensor:
    r"""How much each output token draws on each input token through the whole stack
    (Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers", section 3).

    Each layer's weights are averaged over the heads, the residual connection is added as an
    identity and the rows renormalised, :math:`\hat A_\ell = \tfrac12 (\bar A_\ell + I)`, and the
    layers are multiplied in order, :math:`\tilde A = \hat A_L \cdots \hat A_1`. ``maps`` is
    (L, B, H, T, T) from :meth:`VisionTransformer.attention_maps`; returns (B, T, T), rows summing
    to 1. Row 0 of a class-token model says which patches the classification draws on.
    """
    maps = _validate.rank(_validate.floating(maps, "maps"), "maps", 5, "(L, B, H, T, T)")
    _validate.size(maps, "maps", -1, maps.shape[-2], "T, the same as the queries")
    T = maps.shape[-1]
    rollout = torch.eye(T, dtype=maps.dtype, device=maps.device).expand(maps.shape[1], T, T)
    for layer in maps:
        mixed = layer.mean(dim=1)  # (B, H, T, T) -> (B, T, T): the heads averaged
        if residual:
            mixed = 0.5 * (mixed + torch.eye(T, dtype=maps.dtype, device=maps.device))
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed @ rollout
    return rollout
