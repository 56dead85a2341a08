"""RMSNorm, the normalisation of Mamba and Jamba (book: chapters 8 and 9).

Zhang and Sennrich (2019), "Root Mean Square Layer Normalization" (arXiv:1910.07467): LayerNorm
without re-centring and without bias. Each vector is divided by its root mean square and scaled
by a learned gain g:

    RMSNorm(x) = x / RMS(x) ⊙ g,   RMS(x) = √(mean_i x_i² + ε)

Shapes: (..., C) → (..., C), normalised over the last dimension.
"""

from __future__ import annotations

import torch
from torch import nn

from tfcourse import _validate


class RMSNorm(nn.Module):
    """x · rsqrt(mean(x²) + eps) · weight over the last dimension, of size ``dim``; the weight g
    starts at 1.

    Computed in float32 (float64 stays float64) and returned in the dtype of ``x``: in bfloat16,
    the mean of the squares would keep only 3 significant digits.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim = _validate.integer(dim, "dim", 1)
        if not eps > 0:
            raise ValueError(f"eps: expected a number > 0, got {eps!r}")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _validate.rank(_validate.floating(x, "x"), "x", (1,), "(..., C)")
        _validate.size(x, "x", -1, self.dim, "C, the normalised width")
        work = x.to(torch.promote_types(x.dtype, torch.float32))
        normed = work * torch.rsqrt(work.square().mean(-1, keepdim=True) + self.eps)  # x / RMS(x)
        return (normed * self.weight.to(work.dtype)).to(x.dtype)  # ⊙ g

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"
