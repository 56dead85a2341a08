"""Token Merging, ToMe (Bolya et al., 2023, "Token Merging: Your ViT But Faster", ICLR; book:
chapter 5).

A trained Vision Transformer is made faster without retraining by merging, in every block, the r
most similar pairs of tokens: each layer then works on r fewer tokens than the one before. Merging
happens between the attention and the MLP of a block (section 3, *Strategy*); which tokens are
similar is read from the attention keys, averaged over the heads (section 3, *Token similarity*);
the pairs are found by bipartite soft matching (section 3, *Bipartite soft matching*); a merged
token is the size-weighted average of what it merges, and its size, the number of original patches
it stands for, weights its key in the softmax (section 3, *Tracking token size*, Eq. 1).

A layer merges at most half of its tokens, so the gain is bounded: the paper reports 2x the
throughput of off-the-shelf ViT-L and ViT-H for a drop of 0.2 to 0.3 accuracy points (abstract),
not the removal of almost every token.

The letters are those of the glossary in :mod:`tfcourse` (B, T, C, H, D; N patches; r tokens
merged by one layer), and three of this module's own: D', the width of the similarity metric (D
for the head-averaged keys); T_A = ⌈T / 2⌉, the tokens of set A, at the even positions 0, 2, 4...;
T_B = ⌊T / 2⌋, those of set B, at the odd positions. T_L is the number of tokens after the last
of the L blocks, T_0 the number before the first.

The class token, at position 0, is never merged; the token order after a merge is the class
token, the A tokens that were kept (in their original order), then the B tokens.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse import _validate
from tfcourse.attention import (
    fused_scaled_dot_product_attention,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)
from tfcourse.vit import VisionTransformer

SCHEDULES = ("constant", "decreasing")
_REDUCTIONS = ("sum", "mean")


def max_merges(num_tokens: int, *, protect_first: bool = True) -> int:
    """The most tokens one layer can merge out of ``num_tokens``: ⌊(T − p) / 2⌋, p = 1 when the
    first (class) token is protected, else 0.

    That is every mergeable token of set A when T − p is even and one fewer when it is odd, and
    never more than half of the tokens, so at least ⌈T / 2⌉ tokens stay (2 of 3 with a class
    token; a class token and one patch token are never merged further).
    """
    _validate.integer(num_tokens, "num_tokens", 1)
    return (num_tokens - int(bool(protect_first))) // 2


@dataclasses.dataclass(frozen=True)
class Matching:
    """Which tokens of a (B, T, ·) sequence bipartite soft matching merges, and into which.

    ``dest`` (B, T) is the position of each input token in the merged sequence of T − r tokens:
    the kept A tokens first, in their original order (so the class token stays at 0), then the B
    tokens, each with the A tokens merged into it. ``src`` and ``dst`` (B, r) are the sequence
    positions of the merged A tokens (even) and of the B tokens they merge into (odd), to draw
    the edges. :meth:`merge` applies the matching to any (B, T, C') tensor, in one scatter.
    """

    dest: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor

    @property
    def r(self) -> int:
        """The number of tokens this matching removes."""
        return self.src.shape[-1]

    @property
    def num_tokens(self) -> int:
        """T, the number of tokens that were matched."""
        return self.dest.shape[-1]

    def merge(self, x: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
        """(B, T, C') -> (B, T − r, C'): the tokens that share a destination are added
        (``reduce="sum"``) or averaged ("mean"). For the size-weighted average of section 3, use
        :func:`merge_tokens`."""
        x = self._check(x, "x")
        if reduce not in _REDUCTIONS:
            raise ValueError(f"reduce: expected one of {_REDUCTIONS}, got {reduce!r}")
        merged = self._merge(x)
        if reduce == "mean":
            merged = merged / self._merge(x.new_ones(*x.shape[:2], 1))  # ÷ tokens per slot
        return merged

    def _check(self, x: object, name: str) -> torch.Tensor:
        x = _validate.rank(x, name, 3, "(B, T, C')")
        _validate.size(x, name, 0, self.dest.shape[0], "B, the batch that was matched")
        _validate.size(x, name, 1, self.num_tokens, "T, the tokens that were matched")
        _validate.same_device(name, x, "the matching", self.dest)
        return x

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        """Steps 4 and 5 of bipartite soft matching as one scatter-add over the batch."""
        if self.r == 0:
            return x  # nothing merged: the tokens keep their order
        B, T, width = x.shape
        out = x.new_zeros(B * (T - self.r), width)  # (B·(T − r), C'): the batch's rows in a row
        out.index_add_(0, self._rows, x.reshape(B * T, width))  # (B·T, C') added in
        return out.view(B, T - self.r, width)  # (B, T − r, C')

    @functools.cached_property
    def _rows(self) -> torch.Tensor:
        """(B·T,): ``dest`` as rows of the (B·(T − r), C') output, batch row b offset by
        b·(T − r)."""
        B, T = self.dest.shape
        offsets = (T - self.r) * torch.arange(B, device=self.dest.device).unsqueeze(1)  # (B, 1)
        return (self.dest + offsets).reshape(B * T)


def bipartite_soft_matching(
    metric: torch.Tensor, r: int, *, protect_first: bool = True
) -> Matching:
    """Bipartite soft matching (Bolya et al., 2023, section 3): which r tokens to merge, and into
    which, from a per-token ``metric`` (B, T, D') (in ToMe the keys, averaged over the heads).

    1. split the tokens alternately into A (even positions) and B (odd positions);
    2. draw an edge from each A token to its most similar B token (cosine similarity);
    3. keep the r most similar edges;
    4. merge the tokens they join (:meth:`Matching.merge`, :func:`merge_tokens`);
    5. concatenate the two sets back together.

    With ``protect_first`` the first token (the class token) has its similarities set to −∞, so it
    is never merged and stays first. ``r`` is clamped to :func:`max_merges`; r = 0 gives a
    matching that leaves every tensor unchanged. The matching itself carries no gradient.
    """
    metric = _validate.rank(_validate.floating(metric, "metric"), "metric", 3, "(B, T, D')")
    _validate.integer(r, "r")
    B, T, _ = metric.shape
    if T < 1:
        raise ValueError(f"metric: expected at least one token, got shape {tuple(metric.shape)}")
    r = min(r, max_merges(T, protect_first=protect_first))
    device = metric.device
    if r == 0:
        empty = torch.zeros(B, 0, dtype=torch.long, device=device)
        return Matching(torch.arange(T, device=device).expand(B, T), empty, empty)
    with torch.no_grad():
        metric = F.normalize(metric, dim=-1)  # unit rows: dot products are cosine similarities
        a, b = metric[:, ::2], metric[:, 1::2]  # step 1: (B, T_A, D'), (B, T_B, D')
        scores = a @ b.transpose(1, 2)  # (B, T_A, T_B): cosine similarity of each A-B pair
        if protect_first:
            scores[:, 0] = float("-inf")  # the class token matches nothing
        best, match = scores.max(dim=-1)  # step 2: (B, T_A), each A token's best edge
        order = best.argsort(dim=-1, descending=True)  # (B, T_A), most similar edge first
        src = order[:, :r]  # step 3: (B, r), positions in A of the r most similar edges
        kept = order[:, r:].sort(dim=-1).values  # (B, T_A − r): ascending, the class token first
        dst = match.gather(1, src)  # (B, r): positions in B of the tokens they merge into
        # Steps 4-5 as one index: where each token goes in [kept A tokens; B tokens].
        T_A, T_B = a.shape[1], b.shape[1]
        offset = T_A - r  # the B tokens follow the kept A tokens
        dest = torch.empty(B, T, dtype=torch.long, device=device)
        dest_a = dest[:, ::2]  # (B, T_A), a view: the destinations of the A tokens
        dest_a.scatter_(1, kept, torch.arange(offset, device=device).expand(B, offset))
        dest_a.scatter_(1, src, dst + offset)  # a merged A token goes where its B token goes
        dest[:, 1::2] = torch.arange(offset, offset + T_B, device=device)  # (B, T_B)
    return Matching(dest, 2 * src, 2 * dst + 1)


def _check_size(size: torch.Tensor, name: str, batch: int, tokens: int) -> torch.Tensor:
    size = _validate.rank(_validate.floating(size, name), name, 3, "(B, T, 1)")
    _validate.size(size, name, 0, batch, "B")
    _validate.size(size, name, 1, tokens, "T, one size per token")
    _validate.size(size, name, 2, 1, "a single size per token")
    return size


def merge_tokens(
    x: torch.Tensor, size: torch.Tensor | None, matching: Matching
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Size-weighted merging (Bolya et al., 2023, section 3, *Tracking token size*):

    .. math:: x_\text{merged} = \frac{\sum_i s_i x_i}{\sum_i s_i}, \qquad
              s_\text{merged} = \sum_i s_i

    ``x`` (B, T, C'), ``size`` (B, T, 1) the number of original tokens each token stands for
    (None: all ones, as before the first merge). Returns ``(x, size)``, (B, T − r, C') and
    (B, T − r, 1). The sum of ``size * x`` over the tokens is the same before and after.
    """
    if not isinstance(matching, Matching):
        raise TypeError(f"matching: expected a Matching from bipartite_soft_matching, got "
                        f"{type(matching).__name__}")
    x = matching._check(_validate.floating(x, "x"), "x")
    if size is not None:
        size = _check_size(size, "size", x.shape[0], x.shape[1])
        _validate.same_device("size", size, "x", x)
    return _merge_weighted(x, size, matching)


def _merge_weighted(
    x: torch.Tensor, size: torch.Tensor | None, matching: Matching
) -> tuple[torch.Tensor, torch.Tensor]:
    if matching.r == 0:
        return x, (x.new_ones(*x.shape[:2], 1) if size is None else size)
    if size is None:  # all ones: Σ s_i x_i is Σ x_i
        size = x.new_ones(*x.shape[:2], 1)  # (B, T, 1)
        total = matching._merge(x)  # (B, T − r, C')
    else:
        size = size.to(x.dtype)
        total = matching._merge(x * size)  # (B, T − r, C'): Σ s_i x_i
    size = matching._merge(size)  # (B, T − r, 1): sizes add, Σ s_i
    return total / size, size


def proportional_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: torch.Tensor | None, *,
    fused: bool = True, dropout_p: float = 0.0,
) -> torch.Tensor:
    r"""Proportional attention (Bolya et al., 2023, section 3, Eq. 1):

    .. math:: A = \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{d}} + \log s\right)

    with :math:`s` the row vector of key sizes: a key that stands for s tokens gets the weight of
    s copies of itself, so attention over merged tokens is attention over the duplicated sequence.
    ``q`` (B, H, T, D), ``k`` and ``v`` (B, H, S, D), ``size`` (B, S, 1) or None (all ones, plain
    attention). ``log s`` is passed as an additive float mask to
    :func:`~tfcourse.attention.fused_scaled_dot_product_attention` (``fused=False``: the explicit
    :func:`~tfcourse.attention.scaled_dot_product_attention`). Returns (B, H, T, D).
    """
    k = _validate.rank(_validate.floating(k, "k"), "k", 4, "(B, H, S, D)")
    if size is not None:
        size = _check_size(size, "size", k.shape[0], k.shape[2])
        _validate.same_device("size", size, "k", k)
    return _attend(q, k, v, size, fused, dropout_p)


# PyTorch's attention kernels on the CPU run over the keys in vectors of 16 floats (AVX-512; 8 on
# AVX2) and handle what is left over one element at a time: 12 keys cost twice as much as 16. After
# a merge ToMe has such odd key counts, so _attend pads the keys with tokens of size 0, whose
# log-size, −∞, gives them no weight: the result is the same, faster.
_KEY_MULTIPLE = 16


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: torch.Tensor | None, fused: bool,
    dropout_p: float,
) -> torch.Tensor:
    bias = None
    if size is not None:
        # Eq. 1: + log s on the column of each key; (B, S, 1) -> (B, 1, 1, S), over H and T
        bias = size.log().transpose(1, 2).unsqueeze(1)
        S = k.shape[-2]
        pad = -S % _KEY_MULTIPLE
        if S < _KEY_MULTIPLE or pad <= _KEY_MULTIPLE // 2:  # a long tail: pad it away
            k = F.pad(k, (0, 0, 0, pad))  # (B, H, S + pad, D), zero keys
            v = F.pad(v, (0, 0, 0, pad))  # (B, H, S + pad, D), zero values
            bias = F.pad(bias, (0, pad), value=float("-inf"))  # size 0: weight 0
    if fused:
        return fused_scaled_dot_product_attention(q, k, v, bias, dropout_p=dropout_p)
    return scaled_dot_product_attention(q, k, v, bias, dropout_p=dropout_p)[0]


def merge_schedule(
    r: int, num_layers: int, *, kind: str = "constant", num_tokens: int | None = None,
    protect_first: bool = True,
) -> list[int]:
    """Tokens to merge in each of ``num_layers`` layers.

    ``kind="constant"``: r in every layer, the paper's default. ``kind="decreasing"``: the paper's
    decreasing schedule (section 4.1, *Merging schedule*; ``(r, -1)`` in the authors' code), linear
    from 2r in the first layer to 0 in the last. Each value is rounded to the nearest int, ties
    to even, which makes the total exactly L·r, as for the constant schedule (the authors' code
    truncates, which can total less). A single layer merges r under either kind.

    With ``num_tokens`` (T entering the first layer) the schedule is clamped layer by layer: a
    layer that receives T_l tokens merges at most :func:`max_merges` of them, ⌊(T_l − p) / 2⌋
    (p = 1 with a protected class token): never more than half of its tokens, and the count never
    falls below 2 with a class token (1 without). See :func:`clamp_schedule`.
    """
    _validate.integer(r, "r")
    _validate.integer(num_layers, "num_layers", 1)
    if kind not in SCHEDULES:
        raise ValueError(f"kind: expected one of {SCHEDULES}, got {kind!r}")
    if kind == "constant" or num_layers == 1:
        schedule = [r] * num_layers
    else:  # 2r (L − 1 − l) / (L − 1) for l = 0 .. L − 1, rounded exactly (Fraction: no float ties)
        schedule = [round(Fraction(2 * r * (num_layers - 1 - layer), num_layers - 1))
                    for layer in range(num_layers)]
    if num_tokens is None:
        return schedule
    return clamp_schedule(schedule, num_tokens, protect_first=protect_first)


def clamp_schedule(
    schedule: Sequence[int], num_tokens: int, *, protect_first: bool = True
) -> list[int]:
    """``schedule`` with each layer's r cut to what its tokens allow, :func:`max_merges` of the
    T_l tokens that layer receives (T_0 = ``num_tokens``, T_{l+1} = T_l − r_l)."""
    _validate.integer(num_tokens, "num_tokens", 1)
    if isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence):
        raise TypeError(f"schedule: expected a sequence of ints, got {type(schedule).__name__}")
    clamped, tokens = [], num_tokens
    for layer, r in enumerate(schedule):
        _validate.integer(r, f"schedule[{layer}]")
        r = min(r, max_merges(tokens, protect_first=protect_first))
        clamped.append(r)
        tokens -= r
    return clamped


@dataclasses.dataclass
class ToMeOutput:
    """What :meth:`ToMeViT.forward_merged` returns.

    ``logits`` (B, num_classes); ``size`` (B, T_L, 1), the original tokens in each final token;
    ``source`` (B, T_L, T_0), 1 where original token j ended in final token i (None unless traced;
    with a class token, original token 0 is the class token and 1..N the patches);
    ``token_counts``, the tokens entering the first block and after each block's merge (L + 1).
    """

    logits: torch.Tensor
    size: torch.Tensor
    source: torch.Tensor | None
    token_counts: list[int]


class ToMeViT(nn.Module):
    """A trained :class:`~tfcourse.vit.VisionTransformer` run with Token Merging (Bolya et al.,
    2023, section 3), without retraining and without copying or changing its weights.

    In each block: attention (proportional attention, Eq. 1, when ``proportional_attention``)
    from the wrapped block's own projections; its residual; bipartite soft matching on the keys
    averaged over the heads; size-weighted merging of r tokens; then the block's MLP. The class
    token is protected and stays first. After the blocks: the final norm, then the class token,
    or for ``pool="mean"`` the size-weighted mean (the mean over the original patches), then the
    head. ``r`` is an int, expanded by :func:`merge_schedule` with ``kind``, or one int per
    block; either way clamped by :func:`clamp_schedule` (the result is ``self.schedule``). With
    r = 0 the logits are those of the plain model. (B, K, I, I) -> (B, num_classes).
    """

    def __init__(
        self, model: VisionTransformer, r: int | Sequence[int], *, kind: str = "constant",
        proportional_attention: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(model, VisionTransformer):
            raise TypeError(f"model: expected a tfcourse.vit.VisionTransformer, got "
                            f"{type(model).__name__}")
        self.model = model  # shared, not copied: the wrapper has no weights of its own
        self.protect_first = model.cls_token is not None
        self.proportional_attention = bool(proportional_attention)
        num_layers, num_tokens = len(model.blocks), model.pos_embed.shape[1]
        if isinstance(r, int) and not isinstance(r, bool):
            self.schedule = merge_schedule(r, num_layers, kind=kind, num_tokens=num_tokens,
                                           protect_first=self.protect_first)
        else:
            if kind not in SCHEDULES:
                raise ValueError(f"kind: expected one of {SCHEDULES}, got {kind!r}")
            if not isinstance(r, Sequence) or isinstance(r, (str, bytes)) or len(r) != num_layers:
                raise ValueError(f"r: expected an int >= 0 or a sequence of {num_layers} ints "
                                 f"(one per block), got {r!r}")
            self.schedule = clamp_schedule(list(r), num_tokens, protect_first=self.protect_first)

    @property
    def token_counts(self) -> list[int]:
        """Tokens entering the first block, then after each block's merge: L + 1 numbers."""
        counts = [self.model.pos_embed.shape[1]]
        for r in self.schedule:
            counts.append(counts[-1] - r)
        return counts

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K, I, I) -> (B, num_classes), the logits."""
        return self._run(images, trace_source=False).logits

    def forward_merged(self, images: torch.Tensor, *, trace_source: bool = True) -> ToMeOutput:
        """The logits with the final sizes, the token counts and, with ``trace_source``, which
        original token went into which final token: the source the paper tracks to draw its
        visualisations of merged patches; :func:`merged_patch_groups` makes it a label per patch."""
        return self._run(images, trace_source=trace_source)

    def _run(self, images: torch.Tensor, *, trace_source: bool) -> ToMeOutput:
        model = self.model
        x = model.embed(images)  # (B, T_0, C), the class token first
        B, T0, _ = x.shape
        size = None  # (B, T, 1) once a merge has happened; None means all ones
        # where each original token is now, (B, T_0), followed through every merge
        token_of = torch.arange(T0, device=x.device).expand(B, T0) if trace_source else None
        for block, r in zip(model.blocks, self.schedule, strict=True):
            x, size, token_of = self._block(block, x, size, token_of, r)
        x = model.norm(x)
        if model.pool == "cls" or size is None:
            pooled = model.pool_tokens(x)  # (B, C)
        else:  # the mean over the original patches: Σ s_i x_i / Σ s_i
            pooled = (size * x).sum(dim=1) / size.sum(dim=1)  # (B, C)
        if size is None:
            size = x.new_ones(B, T0, 1)
        source = None
        if token_of is not None:  # (B, T_0) -> (B, T_0, T_L) one-hot -> (B, T_L, T_0)
            source = F.one_hot(token_of, x.shape[1]).transpose(1, 2).to(x.dtype)
        return ToMeOutput(model.head(pooled), size, source, self.token_counts)

    def _block(
        self, block: nn.Module, x: torch.Tensor, size: torch.Tensor | None,
        token_of: torch.Tensor | None, r: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        attn, H = block.attn, block.attn.num_heads
        h = block.norm1(x)
        keys = attn.k_proj(h)  # (B, T, C): the keys of all heads side by side
        q = split_heads(attn.q_proj(h), H)  # (B, H, T, D)
        k = split_heads(keys, H)  # (B, H, T, D)
        v = split_heads(attn.v_proj(h), H)  # (B, H, T, D)
        weights = size  # None before the first merge: attention as in the plain model
        if size is not None and not self.proportional_attention:
            weights = torch.ones_like(size)  # plain attention: every size 1, log s = 0
        dropout_p = attn.dropout if self.training else 0.0
        out = _attend(q, k, v, weights, attn.fused, dropout_p)  # Eq. 1, (B, H, T, D)
        x = x + attn.out_proj(merge_heads(out))  # the attention residual, (B, T, C)
        if r > 0:  # merge between the attention and the MLP (section 3, Strategy)
            B, T, C = keys.shape
            metric = keys.view(B, T, H, C // H).mean(dim=2)  # (B, T, D): the heads' mean key
            matching = bipartite_soft_matching(metric, r, protect_first=self.protect_first)
            x, size = _merge_weighted(x, size, matching)  # (B, T − r, C), (B, T − r, 1)
            if token_of is not None:  # the source: follow each original token
                token_of = matching.dest.gather(1, token_of)  # (B, T_0)
        x = x + block.mlp(block.norm2(x))
        return x, size, token_of


def merged_patch_groups(source: torch.Tensor, *, class_token: bool = True) -> torch.Tensor:
    """(B, T_L, T_0) source map -> (B, N) labels: for each original patch, the index of the final
    token it was merged into. Patches with the same label were merged together; reshape to the
    patch grid, (B, I / P, I / P), to draw them over the image. With ``class_token``, original
    token 0 is the class token and is left out."""
    source = _validate.rank(source, "source", 3, "(B, T_L, T_0)")
    start = 1 if class_token else 0
    if source.shape[-1] <= start:
        raise ValueError(f"source: expected at least {start + 1} original tokens, got shape "
                         f"{tuple(source.shape)}")
    return source[:, :, start:].argmax(dim=1)  # (B, N)
