"""Token embeddings and position encodings (book: chapter 2, sections 1 and 2).

Shapes: tokens (B, T) of ids below V; embeddings (B, T, C). ``offset`` is the position of the
first token, which is not 0 when decoding continues a sequence held in a KV cache.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tfcourse import _validate


def _even_width(d_model: object) -> int:
    if not isinstance(d_model, int) or isinstance(d_model, bool) or d_model < 2 or d_model % 2:
        raise ValueError(f"d_model: expected an even int >= 2, got {d_model!r}")
    return d_model


def sinusoidal_encoding(
    num_positions: int,
    d_model: int,
    *,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""The (T, C) table of Vaswani et al. (2017, section 3.5):

    .. math:: PE_{(pos, 2i)} = \sin(pos\, \omega_i), \quad PE_{(pos, 2i+1)} = \cos(pos\,
              \omega_i), \quad \omega_i = \text{base}^{-2i/C}

    Computed in float64 and returned in ``dtype``, so that large positions keep their precision.
    """
    _validate.integer(num_positions, "num_positions", 1)
    _even_width(d_model)
    if not base > 1:
        raise ValueError(f"base: expected a number > 1, got {base!r}")
    pos = torch.arange(num_positions, dtype=torch.float64, device=device)[:, None]  # (T, 1)
    omega = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64, device=device) / d_model)
    angle = pos * omega  # (T, C/2): pos * omega_i
    # (T, C/2, 2) -> (T, C): sin in the even channel of each pair, cos in the odd one
    return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(num_positions, d_model).to(dtype)


def shift_rotation(k: int, d_model: int, *, base: float = 10000.0) -> torch.Tensor:
    r"""The (C, C) float64 matrix :math:`R_k` with :math:`PE_{pos+k} = R_k PE_{pos}` for every
    position: one 2x2 rotation by the angle :math:`\omega_i k` per channel pair (chapter 2,
    Eq. 2.2)."""
    if not isinstance(k, int) or isinstance(k, bool):
        raise ValueError(f"k: expected an int offset, got {k!r}")
    _even_width(d_model)
    omega = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    cos, sin = (omega * k).cos(), (omega * k).sin()  # (C/2,)
    rotation = torch.zeros(d_model, d_model, dtype=torch.float64)
    even, odd = torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)
    rotation[even, even], rotation[even, odd] = cos, sin  # sin(a + b) = sin a cos b + cos a sin b
    rotation[odd, even], rotation[odd, odd] = -sin, cos  # cos(a + b) = cos a cos b - sin a sin b
    return rotation


class TokenEmbedding(nn.Module):
    r"""Token ids (B, T) -> vectors (B, T, C), multiplied by :math:`\sqrt{C}` when ``scale``
    (Vaswani et al., 2017, section 3.4).

    The table starts as N(0, 1/C), the size it has when tied to an output layer, so that with the
    scale a token vector has norm about :math:`\sqrt{C}`, comparable to the sinusoidal encoding's
    :math:`\sqrt{C/2}` (chapter 2, section 1).
    """

    def __init__(self, vocab_size: int, d_model: int, *, scale: bool = True) -> None:
        super().__init__()
        _validate.integer(vocab_size, "vocab_size", 1)
        _validate.integer(d_model, "d_model", 1)
        self.vocab_size, self.d_model, self.scale = vocab_size, d_model, scale
        self.weight = nn.Parameter(torch.randn(vocab_size, d_model) / math.sqrt(d_model))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = _validate.tensor(tokens, "tokens")
        if tokens.is_floating_point() or tokens.dtype == torch.bool:
            raise TypeError(f"tokens: expected integer token ids, got dtype {tokens.dtype}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(
                f"tokens: expected ids in [0, vocab_size={self.vocab_size}), got values from "
                f"{tokens.min().item()} to {tokens.max().item()}"
            )
        x = self.weight[tokens]  # (..., C)
        return x * math.sqrt(self.d_model) if self.scale else x

    def extra_repr(self) -> str:
        return f"{self.vocab_size}, {self.d_model}, scale={self.scale}"


def _check_positions(x: torch.Tensor, d_model: int, offset: int) -> torch.Tensor:
    x = _validate.rank(_validate.floating(x, "x"), "x", 3, "(B, T, C)")
    _validate.size(x, "x", -1, d_model, "C = d_model")
    _validate.integer(offset, "offset")
    return x


class SinusoidalPositionalEncoding(nn.Module):
    """Adds :func:`sinusoidal_encoding` of positions ``offset .. offset + T - 1`` to (B, T, C)
    inputs; no parameters, defined at every position."""

    def __init__(self, d_model: int, *, base: float = 10000.0) -> None:
        super().__init__()
        self.d_model, self.base = _even_width(d_model), base

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        x = _check_positions(x, self.d_model, offset)
        T = x.shape[1]
        table = sinusoidal_encoding(offset + T, self.d_model, base=self.base, dtype=x.dtype,
                                    device=x.device)
        return x + table[offset:]  # (B, T, C) + (T, C)


class LearnedPositionalEmbedding(nn.Module):
    """Adds a learned (max_len, C) table of position vectors to (B, T, C) inputs (as in BERT and
    GPT); positions past ``max_len`` have no vector and raise an error."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.max_len = _validate.integer(max_len, "max_len", 1)
        self.d_model = _validate.integer(d_model, "d_model", 1)
        # N(0, 1/2): the size of a sinusoidal entry, so a row has norm about sqrt(C/2)
        self.weight = nn.Parameter(torch.randn(max_len, d_model) / math.sqrt(2))

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        x = _check_positions(x, self.d_model, offset)
        T = x.shape[1]
        if offset + T > self.max_len:
            raise ValueError(
                f"x: positions {offset} to {offset + T - 1} go past max_len={self.max_len}"
            )
        return x + self.weight[offset:offset + T]  # (B, T, C) + (T, C)

    def extra_repr(self) -> str:
        return f"{self.max_len}, {self.d_model}"
