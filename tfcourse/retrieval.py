r"""Retrieval metrics: where the right item lands when a query ranks every candidate (book:
chapter 10).

A similarity matrix ``similarity`` (Bt, Bv) scores caption i against clip j; caption i belongs
to clip ``targets[i]`` (by default clip i: the diagonal, one caption a clip). Text-to-clip
retrieval ranks the clips of each row, clip-to-text retrieval the captions of each column.

* **Rank** of the right item, counted from 1. Ties are broken **pessimistically**: every wrong
  item scoring at least as high as the right one is counted ahead of it,

  .. math:: r_i = 1 + \#\{\, j \ne t_i : s_{ij} \ge s_{i t_i} \,\}

  so a model that gives every pair the same score ranks the right item last, not first. (The
  optimistic count, with > instead of ≥, would give such a model R@1 = 100 %.) A clip with
  several captions takes the best-placed of them: its rank is one plus the number of wrong
  captions scoring at least as high as its best caption.
* **R@K**, recall at K: the percentage of queries whose right item has rank ≤ K.
* **Median rank**: the median of the ranks (for an even count, the mean of the two middle ones,
  as NumPy's ``median``); lower is better, 1 is perfect.

These are the figures that Miech, Laptev and Sivic (2018, arXiv:1804.02516) report, as does the
text-video retrieval literature since.

Glossary: Bt captions (text queries), Bv clips, K a cut-off of the ranked list.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tfcourse import _validate


def _checked(similarity: object, targets: object) -> tuple[torch.Tensor, torch.Tensor]:
    similarity = _validate.rank(_validate.floating(similarity, "similarity"), "similarity", 2,
                                "(Bt, Bv)")
    if not bool(similarity.isfinite().all()):
        raise ValueError("similarity: expected finite scores, got NaN or infinity")
    Bt, Bv = similarity.shape
    if targets is None:
        if Bt != Bv:
            raise ValueError(f"similarity: without targets, expected a square (B, B) matrix "
                             f"whose diagonal holds the matching pairs, got {(Bt, Bv)}")
        return similarity, torch.arange(Bt, device=similarity.device)
    targets = _validate.rank(targets, "targets", 1, "(Bt,) clip of each caption")
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise TypeError(f"targets: expected integer clip indices, got dtype {targets.dtype}")
    _validate.size(targets, "targets", 0, Bt, "Bt, the rows of similarity")
    if Bt and not (0 <= int(targets.min()) and int(targets.max()) < Bv):
        raise ValueError(f"targets: expected clip indices in [0, {Bv}), got values from "
                         f"{int(targets.min())} to {int(targets.max())}")
    if len(targets.unique()) != Bv:
        raise ValueError(f"targets: expected at least one caption for each of the {Bv} clips, "
                         f"got captions for {len(targets.unique())}")
    return similarity, targets.to(similarity.device)


def text_to_clip_ranks(similarity: torch.Tensor,
                       targets: torch.Tensor | None = None) -> torch.Tensor:
    """The rank (Bt,) int64 of each caption's clip among all clips (ties pessimistic)."""
    similarity, targets = _checked(similarity, targets)
    right = similarity.gather(1, targets[:, None])  # (Bt, 1)
    return (similarity >= right).sum(dim=1)  # the right clip counts itself: 1 + the wrong ones


def clip_to_text_ranks(similarity: torch.Tensor,
                       targets: torch.Tensor | None = None) -> torch.Tensor:
    """The rank (Bv,) int64 of each clip's best-placed caption among all captions (ties
    pessimistic)."""
    similarity, targets = _checked(similarity, targets)
    Bv = similarity.shape[1]
    mine = targets[:, None] == torch.arange(Bv, device=similarity.device)  # (Bt, Bv)
    best = similarity.masked_fill(~mine, float("-inf")).amax(dim=0)  # (Bv,) best right caption
    return 1 + ((similarity >= best) & ~mine).sum(dim=0)


def recall_at(ranks: torch.Tensor, k: int) -> float:
    """R@K: the percentage of ``ranks`` (Q,) at most ``k``."""
    ranks = _validate.rank(ranks, "ranks", 1, "(Q,)")
    _validate.integer(k, "k", 1)
    if len(ranks) == 0:
        raise ValueError("ranks: expected at least one rank, got none")
    return 100.0 * (ranks <= k).double().mean().item()


def median_rank(ranks: torch.Tensor) -> float:
    """The median of ``ranks`` (Q,); for an even count, the mean of the two middle ranks."""
    ranks = _validate.rank(ranks, "ranks", 1, "(Q,)")
    if len(ranks) == 0:
        raise ValueError("ranks: expected at least one rank, got none")
    return torch.quantile(ranks.double(), 0.5).item()


def retrieval_metrics(
    similarity: torch.Tensor, targets: torch.Tensor | None = None, *,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, dict[str, float]]:
    """``{"text_to_clip": {"R@1": ..., "R@5": ..., "R@10": ..., "median_rank": ...},
    "clip_to_text": {...}}``: R@K in percent for each K of ``ks``, and the median rank."""
    return {
        direction: {**{f"R@{k}": recall_at(ranks, k) for k in ks},
                    "median_rank": median_rank(ranks)}
        for direction, ranks in (("text_to_clip", text_to_clip_ranks(similarity, targets)),
                                 ("clip_to_text", clip_to_text_ranks(similarity, targets)))
    }
