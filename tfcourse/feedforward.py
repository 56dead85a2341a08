"""The position-wise feed-forward network (book: chapter 2, section 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse import _validate

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class FeedForward(nn.Module):
    r"""Two linear maps with a non-linearity between them, applied to each position on its own
    (Vaswani et al., 2017, section 3.3, Eq. 2):

    .. math:: \operatorname{FFN}(x) = \max(0,\, x W_1 + b_1)\, W_2 + b_2

    (B, T, C) -> (B, T, C) through a hidden width F = ``d_ff``. ``activation="gelu"`` is the
    choice of BERT and GPT (chapter 3). The layout (``linear1``, ``linear2``, dropout after the
    activation) is that of ``nn.TransformerEncoderLayer``, so its weights load directly.
    """

    def __init__(
        self, d_model: int, d_ff: int, *, dropout: float = 0.0, activation: str = "relu"
    ) -> None:
        super().__init__()
        _validate.integer(d_model, "d_model", 1)
        _validate.integer(d_ff, "d_ff", 1)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        self.activation = activation
        self.linear1 = nn.Linear(d_model, d_ff)  # W_1, b_1
        self.linear2 = nn.Linear(d_ff, d_model)  # W_2, b_2
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = ACTIVATIONS[self.activation](self.linear1(x))  # (B, T, F)
        return self.linear2(self.dropout(hidden))  # (B, T, C)
