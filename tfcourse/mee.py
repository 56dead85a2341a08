r"""The Mixture of Embedding Experts, a text-to-video retrieval model (book: chapter 10).

Miech, Laptev and Sivic (2018), "Learning a Text-Video Embedding from Incomplete and Heterogeneous
Data", arXiv:1804.02516, section 3. A clip comes as M descriptor streams (appearance, motion,
audio, ...), any of which may be missing; a caption as one text feature vector. Each stream m has
an expert: a gated embedding unit g_m for the stream and one f_m for the text, into a shared
space of width E. The similarity of caption t and clip v is a weighted sum of per-stream cosine
similarities, with weights computed from the caption and renormalised over the streams the clip
has:

.. math::

    s(t, v) = \sum_m w_m(t, v)\, \langle f_m(t), g_m(v_m) \rangle, \qquad
    w_m(t, v) = \frac{\delta_m(v)\, e^{a_m^\top t}}{\sum_j \delta_j(v)\, e^{a_j^\top t}}

with δ_m(v) = 1 where clip v has stream m. A caption about motion can thus lean on the motion
expert, and a clip without audio is compared on the streams it has, not on zeros.

The baselines it is measured against, built from the same units: one stream alone
(:class:`SingleStreamEmbedding`) and all streams concatenated, missing ones filled with zeros
(:class:`ConcatenatedEmbedding`); :func:`train_retrieval` trains any of them.
:mod:`tfcourse.data.clips` generates the task, :mod:`tfcourse.retrieval` scores the rankings and
``python -m tfcourse.bench mee`` compares the models.

Glossary (the paper's symbols in brackets): Bt captions, Bv clips, M streams (experts), Dt text
feature width, Dm width of stream m, E embedding width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse import _validate


class ContextGating(nn.Module):
    r"""Context gating, (..., E) -> (..., E): each feature scaled by a gate computed from all of
    them (section 3): :math:`y = x \circ \sigma(W x + b)`."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.gate = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.gate(x))


class GatedEmbeddingUnit(nn.Module):
    r"""A gated embedding unit, (..., D) -> (..., E) of unit length (section 3):

    .. math:: y = \frac{z \circ \sigma(W_2 z + b_2)}{\lVert z \circ \sigma(W_2 z + b_2) \rVert_2},
        \qquad z = W_1 x + b_1
    """

    def __init__(self, in_features: int, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, width)  # W_1, b_1
        self.gating = ContextGating(width)  # W_2, b_2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.gating(self.linear(x)), dim=-1)


def mixture_weights(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The weights w_m(t, v), (Bt, Bv, M): a softmax of the captions' ``logits`` (Bt, M) over the
    streams each clip has, ``present`` (Bv, M) bool. A clip must have at least one stream."""
    logits = _validate.rank(_validate.floating(logits, "logits"), "logits", 2, "(Bt, M)")
    present = _validate.tensor(present, "present")
    if present.dtype != torch.bool or present.ndim != 2 or present.shape[1] != logits.shape[1]:
        raise ValueError(f"present: expected a bool tensor (Bv, M) with M = {logits.shape[1]}, "
                         f"got {present.dtype} of shape {tuple(present.shape)}")
    if not bool(present.any(dim=1).all()):
        raise ValueError("present: every clip needs at least one stream; rows "
                         f"{(~present.any(dim=1)).nonzero().flatten().tolist()} have none")
    masked = logits[:, None, :].masked_fill(~present[None], float("-inf"))  # (Bt, Bv, M)
    return masked.softmax(dim=-1)


def _zero_filled(streams: Sequence[torch.Tensor], present: torch.Tensor) -> list[torch.Tensor]:
    """The streams with the rows of missing streams set to zero, whatever they held."""
    return [torch.where(present[:, m, None], x, 0) for m, x in enumerate(streams)]


class MixtureOfEmbeddingExperts(nn.Module):
    """Text and clip embeddings per stream, and their similarity matrix (section 3).

    ``stream_features`` gives Dm for each of the M streams. :meth:`forward` takes the captions'
    features (Bt, Dt), the clips' streams (a sequence of M tensors (Bv, Dm); a missing stream's
    row is ignored, whatever it holds) and ``present`` (Bv, M), and returns the (Bt, Bv)
    similarities: row i scores caption i against every clip.
    """

    def __init__(self, text_features: int, stream_features: Sequence[int], width: int) -> None:
        super().__init__()
        if len(stream_features) < 1:
            raise ValueError("stream_features: expected the width of at least one stream")
        self.text_units = nn.ModuleList(
            GatedEmbeddingUnit(text_features, width) for _ in stream_features)  # f_m
        self.stream_units = nn.ModuleList(
            GatedEmbeddingUnit(d, width) for d in stream_features)  # g_m
        self.mixture = nn.Linear(text_features, len(stream_features))  # a_m

    def forward(self, text: torch.Tensor, streams: Sequence[torch.Tensor],
                present: torch.Tensor) -> torch.Tensor:
        if len(streams) != len(self.stream_units):
            raise ValueError(f"streams: expected {len(self.stream_units)} tensors (one per "
                             f"stream), got {len(streams)}")
        weights = mixture_weights(self.mixture(text), present)  # (Bt, Bv, M)
        # A missing stream's weight is 0, and its row is zeroed before its expert sees it: a
        # NaN there would give a finite similarity but NaN gradients (0 * NaN in the backward).
        per_stream = torch.stack([
            f(text) @ g(x).T  # (Bt, E) @ (E, Bv) -> (Bt, Bv): cosines, both of unit length
            for f, g, x in zip(self.text_units, self.stream_units,
                               _zero_filled(streams, present), strict=True)
        ], dim=-1)  # (Bt, Bv, M)
        return (weights * per_stream).sum(dim=-1)


def ranking_loss(similarity: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    r"""The bidirectional max-margin ranking loss of a batch of matching pairs (section 3):
    caption i belongs to clip i, the diagonal of the (B, B) ``similarity``.

    .. math:: \frac{1}{B} \sum_i \sum_{j \ne i} [m + s_{ij} - s_{ii}]_+ + [m + s_{ji} - s_{ii}]_+
    """
    similarity = _validate.rank(_validate.floating(similarity, "similarity"), "similarity", 2,
                                "(B, B)")
    B = similarity.shape[0]
    if similarity.shape[1] != B:
        raise ValueError(f"similarity: expected a square (B, B) matrix of matching pairs, got "
                         f"{tuple(similarity.shape)}")
    positive = similarity.diagonal()  # (B,)
    off = ~torch.eye(B, dtype=torch.bool, device=similarity.device)
    to_clips = (margin + similarity - positive[:, None]).clamp(min=0)  # caption i, wrong clip j
    to_texts = (margin + similarity - positive[None, :]).clamp(min=0)  # clip j, wrong caption i
    return (to_clips + to_texts)[off].sum() / B


class SingleStreamEmbedding(nn.Module):
    """A baseline: one stream's expert alone, ``f(text) @ g(stream).T`` (Bt, Bv). A clip without
    that stream is scored on a zero-filled row. Takes the arguments of
    :class:`MixtureOfEmbeddingExperts`, and ``stream``, the index of the stream it uses."""

    def __init__(self, text_features: int, stream_features: Sequence[int], width: int,
                 stream: int) -> None:
        super().__init__()
        if not 0 <= stream < len(stream_features):
            raise ValueError(f"stream: expected an index in [0, {len(stream_features)}), "
                             f"got {stream!r}")
        self.stream = stream
        self.text_unit = GatedEmbeddingUnit(text_features, width)
        self.stream_unit = GatedEmbeddingUnit(stream_features[stream], width)

    def forward(self, text: torch.Tensor, streams: Sequence[torch.Tensor],
                present: torch.Tensor) -> torch.Tensor:
        x = _zero_filled(streams, present)[self.stream]
        return self.text_unit(text) @ self.stream_unit(x).T  # (Bt, E) @ (E, Bv)


class ConcatenatedEmbedding(nn.Module):
    """A baseline: all streams concatenated, missing ones zero-filled, into one gated embedding
    unit; the caption into another; their cosine (Bt, Bv). Takes the arguments of
    :class:`MixtureOfEmbeddingExperts`."""

    def __init__(self, text_features: int, stream_features: Sequence[int], width: int) -> None:
        super().__init__()
        self.text_unit = GatedEmbeddingUnit(text_features, width)
        self.stream_unit = GatedEmbeddingUnit(sum(stream_features), width)

    def forward(self, text: torch.Tensor, streams: Sequence[torch.Tensor],
                present: torch.Tensor) -> torch.Tensor:
        x = torch.cat(_zero_filled(streams, present), dim=1)  # (Bv, sum of Dm)
        return self.text_unit(text) @ self.stream_unit(x).T  # (Bt, E) @ (E, Bv)


def train_retrieval(
    model: nn.Module, text: torch.Tensor, streams: Sequence[torch.Tensor], present: torch.Tensor,
    *, epochs: int = 15, batch_size: int = 128, lr: float = 2e-3, margin: float = 0.2,
    seed: int = 0,
) -> list[float]:
    """Train ``model`` (any module mapping ``(text, streams, present)`` to (B, B) similarities)
    with Adam on :func:`ranking_loss`, in batches of matching pairs: row i of ``text`` (B, Dt)
    describes row i of each of the ``streams`` (B, Dm), whose ``present`` (B, M) marks the
    streams it has. Captioned images are more rows, with their motion and audio missing. The
    order of the pairs is drawn from ``seed``; the initial weights are the caller's. Returns the
    mean loss of each epoch."""
    text = _validate.rank(_validate.floating(text, "text"), "text", 2, "(B, Dt)")
    B = text.shape[0]
    for m, x in enumerate(streams):
        _validate.size(_validate.rank(x, f"streams[{m}]", 2, "(B, Dm)"), f"streams[{m}]", 0, B,
                       "B, like text")
    _validate.size(_validate.rank(present, "present", 2, "(B, M)"), "present", 0, B,
                   "B, like text")
    _validate.integer(epochs, "epochs", 1)
    _validate.integer(batch_size, "batch_size", 2)
    _validate.integer(seed, "seed")
    device = next(model.parameters()).device
    text, present = text.to(device), present.to(device)
    streams = [x.to(device) for x in streams]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for _ in range(epochs):
        order = torch.randperm(B, generator=generator).to(device)
        total, steps = 0.0, 0
        for rows in order.split(batch_size):
            if len(rows) < 2:  # a lone pair has no wrong pair to rank against
                continue
            similarity = model(text[rows], [x[rows] for x in streams], present[rows])
            loss = ranking_loss(similarity, margin)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        losses.append(total / steps)
    model.eval()
    return losses
