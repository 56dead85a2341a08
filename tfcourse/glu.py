r"""Gated linear units (book: chapter 6, "Gating").

A gated linear unit multiplies a linear map of its input, element by element, by a gate computed
from the same input: each output feature is let through in proportion to how open its gate is,
and the gate is learned. Dauphin et al. (2017, "Language Modeling with Gated Convolutional
Networks", Eq. 1) define it with a sigmoid gate,

.. math:: h(x) = (x W + b) \otimes \sigma(x V + c),

and Shazeer (2020, "GLU Variants Improve Transformer", section 2) swaps the sigmoid for other
functions: GELU gives GEGLU, Swish (SiLU) gives SwiGLU, ReLU gives ReGLU. The form
:math:`\sigma(W x + b) \odot x` is the special case where the value map is the identity
(:func:`simplified_glu`). Widths: C in, F out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse import _validate

# The gate's non-linearity, by the name of the unit it makes.
GATES = {"glu": torch.sigmoid, "geglu": F.gelu, "swiglu": F.silu, "reglu": F.relu,
         "bilinear": lambda x: x}


def _gate(variant: str):
    if variant not in GATES:
        raise ValueError(f"variant: expected one of {sorted(GATES)}, got {variant!r}")
    return GATES[variant]


class GLU(nn.Module):
    r"""A gated linear unit, (..., C) -> (..., F):
    :math:`\operatorname{gate}(x V + c) \otimes (x W + b)`.

    ``variant`` picks the gate: ``"glu"`` (sigmoid; Dauphin et al., 2017, Eq. 1), ``"geglu"``,
    ``"swiglu"``, ``"reglu"`` or ``"bilinear"`` (no non-linearity; Shazeer, 2020, Eqs. 1–5).
    ``gate_values`` returns the gate alone, for looking at what it learned.
    """

    def __init__(self, d_in: int, d_out: int, *, variant: str = "glu", bias: bool = True) -> None:
        super().__init__()
        _validate.integer(d_in, "d_in", 1)
        _validate.integer(d_out, "d_out", 1)
        self.activation = _gate(variant)
        self.variant = variant
        self.value = nn.Linear(d_in, d_out, bias=bias)  # W, b
        self.gate = nn.Linear(d_in, d_out, bias=bias)  # V, c

    def gate_values(self, x: torch.Tensor) -> torch.Tensor:
        """gate(x V + c), (..., F): how far each output feature is let through."""
        return self.activation(self.gate(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value(x) * self.gate_values(x)


def simplified_glu(x: torch.Tensor, gate: nn.Linear) -> torch.Tensor:
    r""":math:`\sigma(W x + b) \odot x`, (..., C) -> (..., C): a GLU whose value map is the
    identity, so the input itself is gated. ``gate`` is the linear map W, b (C -> C)."""
    x = _validate.floating(x, "x")
    if not isinstance(gate, nn.Linear) or gate.in_features != gate.out_features:
        raise ValueError(f"gate: expected a square nn.Linear (C -> C), got {gate!r}")
    _validate.size(x, "x", -1, gate.in_features, "C, the gate's width")
    return torch.sigmoid(gate(x)) * x
