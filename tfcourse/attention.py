"""Scaled dot-product attention and multi-head attention (book: chapter 1).

Shapes use the glossary of :mod:`tfcourse`: queries (..., T, D), keys (..., S, D),
values (..., S, D), scores and weights (..., T, S). Masks follow :mod:`tfcourse.masks`
(bool: True = attend).

Two paths compute the same function:

* :func:`scaled_dot_product_attention` writes the equation out and returns the weights, so that they
  can be inspected and plotted; it stores the (T, S) score matrix, so its memory grows as T·S.
* :func:`fused_scaled_dot_product_attention` calls PyTorch's fused kernel, which never stores that
  matrix; use it when the weights are not needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse import _validate
from tfcourse.kv_cache import KVCache
from tfcourse.masks import causal_mask, combine_masks


def _check_qkv(q: object, k: object, v: object) -> tuple[torch.Tensor, ...]:
    q = _validate.rank(_validate.floating(q, "q"), "q", (2,), "(..., T, D)")
    k = _validate.rank(_validate.floating(k, "k"), "k", (2,), "(..., S, D)")
    v = _validate.rank(_validate.floating(v, "v"), "v", (2,), "(..., S, D_v)")
    _validate.size(k, "k", -1, q.shape[-1], "D, the query width")
    _validate.size(v, "v", -2, k.shape[-2], "S, the number of keys")
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"q, k, v: leading (batch, head) dimensions do not broadcast: "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        ) from None
    for name, t in (("k", k), ("v", v)):
        _validate.same_device(name, t, "q", q)
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: expected dtype {q.dtype} like q, got {t.dtype}")
    return q, k, v


def _scores_shape(q: torch.Tensor, k: torch.Tensor) -> tuple[int, ...]:
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    return (*batch, q.shape[-2], k.shape[-2])


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Attention written out from the equation; returns ``(output, weights)``.

    .. math:: \operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(
              \frac{QK^\top}{\sqrt{d_k}} + M\right) V

    (Vaswani et al., 2017, Eq. 1; book: chapter 1, *Scaled dot-product attention*.) ``M`` is 0
    where ``mask`` allows and :math:`-\infty` where it blocks. A query whose keys are all blocked
    gets zero weights and a zero output, as PyTorch's fused kernel gives, rather than NaN.
    The softmax runs in at least float32, even for half-precision inputs.
    """
    q, k, v = _check_qkv(q, k, v)
    scores_shape = _scores_shape(q, k)
    if mask is not None:
        mask = _validate.mask(mask, "mask", scores_shape, "(..., T, S)")
        _validate.same_device("mask", mask, "q", q)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p: expected a probability in [0, 1), got {dropout_p}")

    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., T, S): QK^T / sqrt(d_k)
    scores = scores.to(torch.promote_types(q.dtype, torch.float32))  # half -> float32
    if mask is None:
        pass
    elif mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))  # + M, with M = -inf where blocked
    else:
        scores = scores + mask.to(scores.dtype)
    weights = torch.softmax(scores, dim=-1)  # (..., T, S), each row sums to 1 over the keys
    if mask is not None:  # a query with every key blocked has a row of NaN weights: make it 0
        weights = weights.masked_fill(torch.isneginf(scores).all(dim=-1, keepdim=True), 0.0)
    weights = weights.to(q.dtype)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights  # (..., T, D_v), (..., T, S)


def fused_scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    is_causal: bool = False,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """The same function through :func:`torch.nn.functional.scaled_dot_product_attention`.

    PyTorch picks a fused kernel (flash or memory-efficient attention) that computes the softmax
    block by block and never stores the (T, S) weights, so memory grows as T + S, not T·S.
    ``is_causal=True`` applies :func:`tfcourse.masks.causal_mask` without building it.
    """
    q, k, v = _check_qkv(q, k, v)
    if mask is not None:
        if is_causal:
            raise ValueError("mask: pass either mask or is_causal=True, not both")
        mask = _validate.mask(mask, "mask", _scores_shape(q, k), "(..., T, S)")
        _validate.same_device("mask", mask, "q", q)
        if mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p: expected a probability in [0, 1), got {dropout_p}")
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
    )


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, D): cut the last axis into H heads of width D = C / H.

    The reshape must split C, not T: ``x.view(B, H, T, D)`` would mix positions across heads.
    """
    x = _validate.rank(x, "x", 3, "(B, T, C)")
    B, T, C = x.shape
    if not isinstance(num_heads, int) or num_heads < 1 or C % num_heads:
        raise ValueError(f"num_heads: expected a positive divisor of C={C}, got {num_heads!r}")
    return x.view(B, T, num_heads, C // num_heads).transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D) -> (B, T, C): the inverse of :func:`split_heads`."""
    x = _validate.rank(x, "x", 4, "(B, H, T, D)")
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)  # (B, T, H, D) -> (B, T, C)


class MultiHeadAttention(nn.Module):
    r"""Multi-head attention (Vaswani et al., 2017, section 3.2.2; book: chapter 1).

    .. math:: \operatorname{MultiHead}(Q, K, V) = \operatorname{Concat}(\text{head}_1, \dots,
              \text{head}_h) W^O, \quad \text{head}_i = \operatorname{Attention}(QW_i^Q, KW_i^K,
              VW_i^V)

    The H projections :math:`W_i^Q` are stored side by side as one (C, C) linear map, so one matrix
    product projects every head at once and :func:`split_heads` then separates them.
    ``fused=True`` (the default) uses PyTorch's fused kernel, ``fused=False`` the explicit equation.
    """

    def __init__(
        self, d_model: int, num_heads: int, *, bias: bool = True, dropout: float = 0.0,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"d_model: expected a positive int, got {d_model!r}")
        if not isinstance(num_heads, int) or num_heads < 1 or d_model % num_heads:
            raise ValueError(
                f"num_heads: expected a positive divisor of d_model={d_model}, got {num_heads!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        self.d_model, self.num_heads, self.dropout, self.fused = d_model, num_heads, dropout, fused
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)  # W^Q of all heads
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)  # W^K
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)  # W^V
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # W^O

    def _project(
        self, query: torch.Tensor, key: torch.Tensor | None, value: torch.Tensor | None,
        mask: torch.Tensor | None, is_causal: bool, cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        key = query if key is None else key
        value = key if value is None else value
        for name, t in (("query", query), ("key", key), ("value", value)):
            _validate.rank(t, name, 3, "(B, T, C)")
            _validate.size(t, name, -1, self.d_model, "C = d_model")
        B, T, _ = query.shape
        if value.shape[:2] != key.shape[:2] or key.shape[0] != B:
            raise ValueError(
                f"key, value: expected shapes (B={B}, S, C) with the same S, got "
                f"key {tuple(key.shape)}, value {tuple(value.shape)}"
            )
        q = split_heads(self.q_proj(query), self.num_heads)  # (B, H, T, D)
        if cache is not None and cache.static and len(cache):
            k, v = cache.keys, cache.values  # cross-attention: projected on the first step
        else:
            k = split_heads(self.k_proj(key), self.num_heads)  # (B, H, S, D)
            v = split_heads(self.v_proj(value), self.num_heads)  # (B, H, S, D)
            if cache is not None:
                k, v = cache.append(k, v)  # (B, H, S_cached + S, D)
        S = k.shape[-2]
        if mask is not None:
            mask = _validate.mask(mask, "mask", (B, self.num_heads, T, S), "(B, H, T, S)")
        if is_causal:  # with a cache, the T queries are the last T of the S positions
            mask = combine_masks(mask, causal_mask(T, S, device=query.device))
        return q, k, v, mask

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        is_causal: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Attend from ``query`` (B, T, C) to ``key``/``value`` (B, S, C); self-attention when
        they are omitted. ``mask`` broadcasts to (B, H, T, S); ``is_causal`` adds the causal
        mask. With a :class:`~tfcourse.kv_cache.KVCache`, the new keys and values are appended
        to it and the queries attend to everything cached (chapter 3)."""
        q, k, v, mask = self._project(query, key, value, mask, is_causal, cache)
        dropout_p = self.dropout if self.training else 0.0
        if self.fused:
            out = fused_scaled_dot_product_attention(q, k, v, mask, dropout_p=dropout_p)
        else:
            out, _ = scaled_dot_product_attention(q, k, v, mask, dropout_p=dropout_p)
        return self.out_proj(merge_heads(out))  # (B, H, T, D) -> (B, T, C)

    @torch.no_grad()
    def attention_weights(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """The (B, H, T, S) weights each head puts on each key, for inspection and plots."""
        q, k, v, mask = self._project(query, key, None, mask, is_causal)
        return scaled_dot_product_attention(q, k, v, mask)[1]

    @torch.no_grad()
    def load_from_torch(self, reference: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of a ``torch.nn.MultiheadAttention`` of the same size into this
        module, so both compute the same function. Returns ``self``."""
        if not isinstance(reference, nn.MultiheadAttention):
            raise TypeError(
                f"reference: expected nn.MultiheadAttention, got {type(reference).__name__}"
            )
        if (reference.embed_dim, reference.num_heads) != (self.d_model, self.num_heads):
            raise ValueError(
                f"reference: expected embed_dim={self.d_model}, num_heads={self.num_heads}, got "
                f"embed_dim={reference.embed_dim}, num_heads={reference.num_heads}"
            )
        if reference.in_proj_weight is None:
            raise ValueError("reference: expected kdim == vdim == embed_dim (a packed in_proj)")
        has_bias = reference.in_proj_bias is not None
        if has_bias != (self.q_proj.bias is not None):
            raise ValueError(f"reference: bias={has_bias} but this module has the opposite")
        # in_proj_weight stacks W^Q, W^K, W^V: (3C, C) -> three (C, C)
        weights = reference.in_proj_weight.chunk(3)
        biases = reference.in_proj_bias.chunk(3) if has_bias else (None,) * 3
        projections = (self.q_proj, self.k_proj, self.v_proj)
        for proj, w, b in zip(projections, weights, biases, strict=True):
            proj.weight.copy_(w)
            if b is not None:
                proj.bias.copy_(b)
        self.out_proj.weight.copy_(reference.out_proj.weight)
        if has_bias:
            self.out_proj.bias.copy_(reference.out_proj.bias)
        return self

